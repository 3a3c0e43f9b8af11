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

use std::collections::VecDeque;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::{Duration, Instant};

/// How long a delivered message is remembered, and how long a replacement connection checks
/// against what its predecessor delivered: far longer than the bus takes between live nodes.
pub(super) const REMEMBER_FOR: Duration = Duration::from_secs(2);
/// At most this many messages are remembered per connection, so a busy channel costs a fixed
/// amount of memory (16 bytes each) whatever its rate.
const CAPACITY: usize = 512;

/// Fingerprints of the message frames delivered in the last [`REMEMBER_FOR`], oldest first.
#[derive(Debug, Default)]
pub(super) struct RecentMessages {
    delivered: VecDeque<(u64, Instant)>,
}

impl RecentMessages {
    /// Notes a message frame passed on to the client.
    pub fn remember(&mut self, frame: &[u8], now: Instant) {
        self.forget_before(now);
        if self.delivered.len() == CAPACITY {
            self.delivered.pop_front();
        }
        self.delivered.push_back((fingerprint(frame), now));
    }

    /// Whether `frame` was delivered recently; if so the memory of it is used up, so that a second
    /// copy published on purpose is passed on.
    pub fn take(&mut self, frame: &[u8], now: Instant) -> bool {
        self.forget_before(now);
        let print = fingerprint(frame);
        match self.delivered.iter().position(|(p, _)| *p == print) {
            Some(at) => {
                self.delivered.remove(at);
                true
            }
            None => false,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.delivered.is_empty()
    }

    /// Both memories in one, oldest first, the oldest dropped beyond the capacity.
    fn merged(self, other: RecentMessages) -> RecentMessages {
        let mut delivered: Vec<(u64, Instant)> = self.delivered.into_iter().chain(other.delivered).collect();
        delivered.sort_by_key(|(_, at)| *at);
        let excess = delivered.len().saturating_sub(CAPACITY);
        RecentMessages { delivered: delivered.into_iter().skip(excess).collect() }
    }

    fn forget_before(&mut self, now: Instant) {
        while self.delivered.front().is_some_and(|(_, at)| now.duration_since(*at) > REMEMBER_FOR) {
            self.delivered.pop_front();
        }
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
    /// What the replaced connection delivered, checked until the instant.
    predecessor: Option<(RecentMessages, Instant)>,
}

impl Delivered {
    /// Whether a message of this connection is a copy of one its predecessor delivered; if not,
    /// it is remembered as delivered by this one.
    pub fn already_delivered(&mut self, frame: &[u8], now: Instant) -> bool {
        if let Some((before, until)) = &mut self.predecessor {
            if now < *until && before.take(frame, now) {
                return true;
            }
            if now >= *until || before.is_empty() {
                self.predecessor = None;
            }
        }
        self.own.remember(frame, now);
        false
    }

    /// A message of the replaced connection that arrived after the replacement took over: whether
    /// it is news to the client (this connection did not deliver it yet); if so it counts as the
    /// predecessor's delivery, for the new node's copy to be recognised.
    pub fn late_from_predecessor(&mut self, frame: &[u8], now: Instant) -> bool {
        if self.own.take(frame, now) {
            return false;
        }
        let (before, until) = self.predecessor.get_or_insert_with(|| (RecentMessages::default(), now));
        before.remember(frame, now);
        *until = (*until).max(now + REMEMBER_FOR);
        true
    }

    /// What a replacement of this connection checks its messages against: what this one delivered
    /// and what its own predecessor did, if that is still checked (a connection that moved may
    /// still be delivering).
    pub fn hand_over(&mut self, now: Instant) -> Delivered {
        let own = std::mem::take(&mut self.own);
        let predecessor = match self.predecessor.take().filter(|(_, until)| now < *until) {
            Some((before, until)) => Some((own.merged(before), until.max(now + REMEMBER_FOR))),
            None if own.is_empty() => None,
            None => Some((own, now + REMEMBER_FOR)),
        };
        Delivered { own: RecentMessages::default(), predecessor }
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
        recent.remember(A, now);
        recent.remember(A, now);
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
        recent.remember(A, then);
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
        recent.remember(A, now);
        for i in 0..CAPACITY {
            recent.remember(format!("{i}").as_bytes(), now);
        }
        assert_eq!(recent.delivered.len(), CAPACITY);
        assert!(!recent.take(A, now), "the oldest message made room");
    }
}
