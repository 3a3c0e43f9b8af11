//! The messages a subscription connection delivered last, so that its replacement does not deliver
//! them again.
//!
//! A cluster passes a PUBLISH from node to node over the cluster bus, each node on its own time.
//! When a subscription's node dies, the proxy subscribes again on another node, which may receive
//! a message over the bus only after that new subscription, although the dead node had already
//! delivered it: seen in the soak test with a stalled node, 10 ms between publish and kill. Pub/sub
//! promises at-most-once delivery, so the replacement drops, for a short while, a message that is
//! byte for byte one the old connection delivered just before it died. The price is that an
//! identical message published again within that moment is lost, which at-most-once allows around
//! a failover; a duplicate it does not.

use std::collections::{HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::{Duration, Instant};

/// How long a delivered message is remembered, and how long a replacement connection checks
/// against what its predecessor delivered: far longer than the bus takes between live nodes.
pub(super) const REMEMBER_FOR: Duration = Duration::from_secs(2);
/// At most this many messages are remembered per connection while no other connection delivers
/// the same ones (the usual case), so that a busy channel costs a fixed amount of memory whatever
/// its rate: enough for the copies a dead node's successor may still get over the cluster bus.
const CAPACITY: usize = 512;
/// At most this many while a replaced connection delivers beside its replacement (a connection
/// that moved off a working node overlaps its replacement, see `pubsub::replaced`): every message
/// of the overlap comes twice, and one copy must be remembered until the other arrives, however far
/// behind scheduling and the cluster bus put it — 512 did not cover a loaded machine's lag at
/// ~10,000 messages a second. About 3 MiB at most, for two seconds, per moving connection.
const OVERLAP_CAPACITY: usize = 65_536;

/// Fingerprints of the message frames delivered in the last [`REMEMBER_FOR`], oldest first, with a
/// count per fingerprint, so that a lookup costs the same however many are remembered.
#[derive(Debug, Default)]
pub(super) struct RecentMessages {
    delivered: VecDeque<(u64, Instant)>,
    counts: HashMap<u64, Counts>,
}

/// One fingerprint's entries in [`RecentMessages::delivered`]: a take uses the oldest entry not
/// taken yet, and forgetting drops the oldest entry, so the `taken` ones are always the oldest.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    untaken: u32,
    taken: u32,
}

impl RecentMessages {
    /// Notes a message frame passed on to the client, the oldest forgotten beyond `capacity`.
    fn remember(&mut self, frame: &[u8], now: Instant, capacity: usize) {
        self.forget_before(now);
        while self.delivered.len() >= capacity && self.forget_oldest() {}
        self.push(fingerprint(frame), now);
    }

    /// Whether `frame` was delivered recently; if so the memory of it is used up, so that a second
    /// copy published on purpose is passed on.
    fn take(&mut self, frame: &[u8], now: Instant) -> bool {
        self.forget_before(now);
        match self.counts.get_mut(&fingerprint(frame)) {
            Some(counts) if counts.untaken > 0 => {
                counts.untaken -= 1;
                counts.taken += 1;
                true
            }
            _ => false,
        }
    }

    /// Whether nothing is left to take.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.counts.values().all(|c| c.untaken == 0)
    }

    fn push(&mut self, print: u64, at: Instant) {
        self.delivered.push_back((print, at));
        self.counts.entry(print).or_default().untaken += 1;
    }

    /// Drops the oldest entry; false when there is none.
    fn forget_oldest(&mut self) -> bool {
        let Some((print, _)) = self.delivered.pop_front() else { return false };
        if let Some(counts) = self.counts.get_mut(&print) {
            if counts.taken > 0 {
                counts.taken -= 1;
            } else {
                counts.untaken -= 1;
            }
            if counts.taken == 0 && counts.untaken == 0 {
                self.counts.remove(&print);
            }
        }
        true
    }

    fn forget_before(&mut self, now: Instant) {
        while self.delivered.front().is_some_and(|(_, at)| now.duration_since(*at) > REMEMBER_FOR) {
            self.forget_oldest();
        }
    }

    /// The entries not taken yet, oldest first.
    fn untaken_entries(self) -> impl Iterator<Item = (u64, Instant)> {
        let mut skip: HashMap<u64, u32> = self.counts.into_iter().map(|(print, c)| (print, c.taken)).collect();
        self.delivered.into_iter().filter(move |(print, _)| match skip.get_mut(print) {
            Some(taken) if *taken > 0 => {
                *taken -= 1;
                false
            }
            _ => true,
        })
    }

    /// Both memories in one, oldest first, the oldest dropped beyond [`OVERLAP_CAPACITY`].
    fn merged(self, other: RecentMessages) -> RecentMessages {
        let mut entries: Vec<(u64, Instant)> = self.untaken_entries().chain(other.untaken_entries()).collect();
        entries.sort_by_key(|(_, at)| *at);
        let excess = entries.len().saturating_sub(OVERLAP_CAPACITY);
        let mut merged = RecentMessages::default();
        for (print, at) in entries.into_iter().skip(excess) {
            merged.push(print, at);
        }
        merged
    }
}

/// What one subscription connection delivered lately and, on a replacement, what the connection
/// it replaced delivered: the memory [`RecentMessages`] keeps, per connection.
///
/// A replaced connection's frames can still reach the session after its replacement took over:
/// those already queued, and those its task read before it saw it was dropped. They are messages
/// the old node delivered, so they are passed on, but remembered as the predecessor's: the new
/// node's copy of one of them is then dropped like any other copy of a predecessor's message.
#[derive(Debug, Default)]
pub(super) struct Delivered {
    own: RecentMessages,
    /// What the replaced connection delivered, and until when it is checked: while the replaced
    /// connection may still deliver beside this one (the overlap), and [`REMEMBER_FOR`] after.
    predecessor: Option<(RecentMessages, Instant)>,
}

impl Delivered {
    /// Whether a message of this connection is a copy of one its predecessor delivered; if not,
    /// it is remembered as delivered by this one.
    pub fn already_delivered(&mut self, frame: &[u8], now: Instant) -> bool {
        if self.predecessor.as_ref().is_some_and(|(_, until)| now >= *until) {
            self.predecessor = None;
        }
        let capacity = match &mut self.predecessor {
            Some((before, _)) => match before.take(frame, now) {
                true => return true,
                false => OVERLAP_CAPACITY,
            },
            None => CAPACITY,
        };
        self.own.remember(frame, now, capacity);
        false
    }

    /// A message of the replaced connection that arrived after the replacement took over: whether
    /// it is news to the client (this connection did not deliver it yet); if so it counts as the
    /// predecessor's delivery, for the new node's copy to be recognised.
    pub fn late_from_predecessor(&mut self, frame: &[u8], now: Instant) -> bool {
        if self.own.take(frame, now) {
            return false;
        }
        let before = self.expect_predecessor(now);
        before.remember(frame, now, OVERLAP_CAPACITY);
        true
    }

    /// The replaced connection may deliver beside this one from `now` on (its replacement was
    /// confirmed while it stays subscribed, or one of its frames came late): its messages are
    /// checked, and this one's remembered up to [`OVERLAP_CAPACITY`], for [`REMEMBER_FOR`] more.
    pub fn expect_predecessor(&mut self, now: Instant) -> &mut RecentMessages {
        let (before, until) = self.predecessor.get_or_insert_with(|| (RecentMessages::default(), now));
        *until = (*until).max(now + REMEMBER_FOR);
        before
    }

    /// What a replacement of this connection checks its messages against: what this one delivered
    /// and what its own predecessor did, if that is still checked (a connection that moved may
    /// still be delivering).
    pub fn hand_over(&mut self, now: Instant) -> Delivered {
        let own = std::mem::take(&mut self.own);
        let predecessor = match self.predecessor.take().filter(|(_, until)| now < *until) {
            Some((before, until)) => (own.merged(before), until.max(now + REMEMBER_FOR)),
            None => (own, now + REMEMBER_FOR),
        };
        Delivered { own: RecentMessages::default(), predecessor: Some(predecessor) }
    }
}

fn fingerprint(frame: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    frame.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &[u8] = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$1\r\na\r\n";
    const B: &[u8] = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$1\r\nb\r\n";

    #[test]
    fn a_remembered_message_is_taken_once() {
        let now = Instant::now();
        let mut recent = RecentMessages::default();
        recent.remember(A, now, CAPACITY);
        recent.remember(A, now, CAPACITY);
        assert!(!recent.take(B, now));
        assert!(recent.take(A, now));
        assert!(recent.take(A, now));
        assert!(!recent.take(A, now), "two deliveries excuse two copies, not three");
        assert!(recent.is_empty());
    }

    #[test]
    fn old_messages_are_forgotten() {
        let then = Instant::now();
        let mut recent = RecentMessages::default();
        recent.remember(A, then, CAPACITY);
        let later = then + REMEMBER_FOR + Duration::from_millis(1);
        assert!(!recent.take(A, later));
        assert!(recent.is_empty());
    }

    #[test]
    fn a_replacement_drops_the_new_nodes_copy_of_what_the_old_connection_delivered() {
        let now = Instant::now();
        let mut old = Delivered::default();
        assert!(!old.already_delivered(A, now));
        let mut replacement = old.hand_over(now);
        assert!(replacement.already_delivered(A, now), "the new node's copy of A");
        assert!(!replacement.already_delivered(B, now));
        assert!(!replacement.already_delivered(A, now), "A published again is news");
    }

    #[test]
    fn a_late_frame_of_the_replaced_connection_counts_as_its_delivery() {
        let now = Instant::now();
        // The old connection delivered nothing before it was replaced; then one of its messages,
        // on its way meanwhile, arrives, and after it the new node's copy.
        let mut replacement = Delivered::default().hand_over(now);
        assert!(replacement.late_from_predecessor(A, now), "passed on: the client did not have it");
        assert!(replacement.already_delivered(A, now), "the new node's copy is dropped");
        // The other way round: the new node's copy first, the old connection's late one dropped.
        assert!(!replacement.already_delivered(B, now));
        assert!(!replacement.late_from_predecessor(B, now));
        // A late frame extends the check past the hand-over's window.
        let later = now + REMEMBER_FOR - Duration::from_millis(1);
        assert!(replacement.late_from_predecessor(A, later));
        assert!(replacement.already_delivered(A, later + Duration::from_millis(10)));
    }

    #[test]
    fn a_second_replacement_still_knows_what_the_first_ones_predecessor_delivered() {
        let now = Instant::now();
        let mut old = Delivered::default();
        assert!(!old.already_delivered(A, now));
        let mut first = old.hand_over(now);
        assert!(!first.already_delivered(B, now), "the first replacement delivers B");
        let mut second = first.hand_over(now);
        assert!(second.already_delivered(A, now), "the old connection's A");
        assert!(second.already_delivered(B, now), "the first replacement's B");
    }

    #[test]
    fn memory_is_bounded_by_count() {
        let now = Instant::now();
        let mut recent = RecentMessages::default();
        recent.remember(A, now, CAPACITY);
        for i in 0..CAPACITY {
            recent.remember(format!("{i}").as_bytes(), now, CAPACITY);
        }
        assert_eq!(recent.delivered.len(), CAPACITY);
        assert!(!recent.take(A, now), "the oldest message made room");
    }

    /// One message of the channel, numbered.
    fn numbered(seq: usize) -> Vec<u8> {
        let payload = seq.to_string();
        format!("*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n${}\r\n{payload}\r\n", payload.len()).into_bytes()
    }

    #[test]
    fn an_overlap_far_behind_its_other_half_still_delivers_each_message_once() {
        // Both connections deliver the same 20,000 messages, one 5,000 behind the other (the
        // lag a loaded machine put between them at ~10,000 messages a second): the later copy of
        // each is dropped, either way round.
        const LAG: usize = 5_000;
        for replacement_ahead in [true, false] {
            let now = Instant::now();
            let mut replacement = Delivered::default().hand_over(now);
            replacement.expect_predecessor(now);
            let mut passed = 0;
            for seq in 0..20_000 + LAG {
                let (ahead, behind) = (seq < 20_000).then_some(seq).zip(seq.checked_sub(LAG)).unzip();
                let ahead = ahead.map(numbered);
                let behind = behind.map(numbered);
                let (new, old) = if replacement_ahead { (ahead, behind) } else { (behind, ahead) };
                passed += usize::from(new.is_some_and(|f| !replacement.already_delivered(&f, now)));
                passed += usize::from(old.is_some_and(|f| replacement.late_from_predecessor(&f, now)));
            }
            assert_eq!(passed, 20_000, "replacement ahead: {replacement_ahead}");
        }
    }

    #[test]
    fn the_overlap_memory_shrinks_back_when_the_overlap_is_over() {
        let now = Instant::now();
        let mut replacement = Delivered::default().hand_over(now);
        for seq in 0..2 * CAPACITY {
            assert!(!replacement.already_delivered(&numbered(seq), now));
        }
        assert_eq!(replacement.own.delivered.len(), 2 * CAPACITY, "remembered in full during the overlap");
        let later = now + REMEMBER_FOR + Duration::from_millis(1);
        assert!(!replacement.already_delivered(&numbered(0), later));
        assert!(replacement.predecessor.is_none());
        for seq in 1..2 * CAPACITY {
            assert!(!replacement.already_delivered(&numbered(seq), later));
        }
        assert_eq!(replacement.own.delivered.len(), CAPACITY, "bounded again once the overlap is over");
    }
}
