//! The messages a subscription connection and the connections it replaced delivered last, so that
//! none is delivered twice.
//!
//! A cluster passes a PUBLISH from node to node over the cluster bus, each node on its own time.
//! When a subscription's node dies, the proxy subscribes again on another node, which may receive
//! a message over the bus only after that new subscription, although the dead node had already
//! delivered it: seen in the soak test with a stalled node, 10 ms between publish and kill. When
//! the subscriptions move off a node that works, the old connection stays subscribed beside the
//! new one for a while (`pubsub/replaced.rs`), and every message of that overlap comes from both,
//! one far behind the other at times (more than 512 messages behind, on a loaded CI machine at
//! ~10,000 messages a second).
//!
//! So each copy counts for the connection (the *source*) that sent it: the client got a message
//! as many times as the source that sent it most often did in the last [`REMEMBER_FOR`], and a
//! copy is passed on only when its source has now sent it more often than that. Pub/sub promises
//! at-most-once delivery, and copies of a message published again with the same payload cannot be
//! told apart: the proxy errs towards dropping. A payload repeated within [`REMEMBER_FOR`] (a
//! heartbeat) may be lost for up to that long after a replacement or a move, where the new
//! connection missed the first ones; at-most-once allows that around a failover, a duplicate it
//! does not.

use std::collections::{HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::{Duration, Instant};

use smallvec::SmallVec;

/// How long a delivered message is remembered: far longer than the bus takes between live nodes.
pub(super) const REMEMBER_FOR: Duration = Duration::from_secs(2);
/// At most this many messages are remembered per connection while no other connection delivers
/// the same ones (the usual case), so that a busy channel costs a fixed amount of memory whatever
/// its rate.
const CAPACITY: usize = 512;
/// At most this many while the connections it replaced may still deliver copies: a connection
/// that moved off a working node beside its replacement, a dead node's bus copies reaching its
/// successor late. One copy of each message is remembered until the others arrive, however far
/// behind scheduling and the cluster bus put them (more than 512 messages on a loaded machine).
/// About 4 MiB at most (entries and table), for a few seconds, per replaced subscription
/// connection of a busy channel; given back when the replaced connections' frames are no longer
/// expected ([`Delivered::end_overlap`]).
const OVERLAP_CAPACITY: usize = 32_768;
/// The sources told apart: the connection and its latest predecessors. Copies from an older one
/// (replaced this often within [`REMEMBER_FOR`]) are passed on only when no source sent them.
const SOURCES: usize = 8;

/// What one subscription connection and the connections it replaced lately delivered.
#[derive(Debug, Default)]
pub(super) struct Delivered {
    /// The fingerprints of the messages passed on to the client, oldest first, with when.
    passed: VecDeque<(u64, Instant)>,
    /// Per fingerprint in `passed`: how often it was passed on and sent by each source.
    copies: HashMap<u64, Copies>,
    /// The links (tag parts) of the connections this one replaced, latest first: sources 1, 2, …
    /// (source 0 is this connection).
    links: SmallVec<[u32; 2]>,
    /// Until when a connection this one replaced may still deliver copies (see
    /// [`OVERLAP_CAPACITY`]); the session ends it earlier once their frames are no longer
    /// expected.
    overlap_until: Option<Instant>,
}

/// One message's copies within [`REMEMBER_FOR`].
#[derive(Debug, Default)]
struct Copies {
    /// How many of them the client got.
    passed: u32,
    /// Per source, how many of them it sent, never more than `passed`. Forgetting the oldest takes
    /// one from every source that sent any: right for a source that sent the oldest, and for one
    /// that did not (it subscribed later) it undercounts, which can only drop a later copy of the
    /// same payload, never pass one twice.
    sent: SmallVec<[u32; 4]>,
}

impl Delivered {
    /// Whether a message of this connection is a copy of one already delivered; if not, it is
    /// remembered as delivered.
    pub fn already_delivered(&mut self, frame: &[u8], now: Instant) -> bool {
        !self.copy_from(Some(0), frame, now)
    }

    /// A message of the replaced connection `link` that arrived after its replacement took over:
    /// whether it is news to the client (no other connection delivered it yet); if so it is
    /// remembered as that connection's delivery, for the other copies to be recognised.
    pub fn late_from(&mut self, link: u32, frame: &[u8], now: Instant) -> bool {
        self.expect_overlap(now);
        let source = self.links.iter().position(|l| *l == link).map(|at| at + 1);
        self.copy_from(source, frame, now)
    }

    /// A connection this one replaced may deliver beside it from `now` on (it moved off a working
    /// node, its replacement was confirmed while it stays subscribed, one of its frames came
    /// late): messages are remembered up to [`OVERLAP_CAPACITY`] for [`REMEMBER_FOR`] more.
    pub fn expect_overlap(&mut self, now: Instant) {
        let until = now + REMEMBER_FOR;
        self.overlap_until = Some(self.overlap_until.map_or(until, |at| at.max(until)));
    }

    /// What the replacement of this connection (`link`) checks its messages against: everything
    /// delivered lately, this connection now its latest predecessor, whose copies (late from the
    /// cluster bus, or from the connection itself when it moved and stays subscribed meanwhile)
    /// are remembered up to [`OVERLAP_CAPACITY`] until [`Delivered::end_overlap`].
    pub fn hand_over(&mut self, link: u32, now: Instant) -> Delivered {
        let mut replacement = std::mem::take(self);
        for copies in replacement.copies.values_mut() {
            copies.sent.insert(0, 0);
            copies.sent.truncate(SOURCES);
        }
        replacement.links.insert(0, link);
        replacement.links.truncate(SOURCES - 1);
        replacement.expect_overlap(now);
        replacement
    }

    /// No connection this one replaced sends frames any more: forgets what is too old to be
    /// copied still, and gives back the memory the overlap took (a connection that goes quiet
    /// would keep it otherwise).
    pub fn end_overlap(&mut self, now: Instant) {
        self.overlap_until = None;
        self.forget_before(now);
        self.bound(now);
    }

    /// A copy from `source` (`None`: a source no longer told apart): whether it is news to the
    /// client; if so it is remembered as passed on.
    fn copy_from(&mut self, source: Option<usize>, frame: &[u8], now: Instant) -> bool {
        self.forget_before(now);
        let print = fingerprint(frame);
        let copies = self.copies.entry(print).or_default();
        let news = match source {
            Some(source) => {
                if copies.sent.len() <= source {
                    copies.sent.resize(source + 1, 0);
                }
                copies.sent[source] += 1;
                copies.sent[source] > copies.passed
            }
            None => copies.passed == 0,
        };
        if news {
            copies.passed += 1;
            self.passed.push_back((print, now));
            self.bound(now);
        }
        news
    }

    /// Keeps at most [`CAPACITY`] messages, [`OVERLAP_CAPACITY`] during an overlap; gives back
    /// the room an overlap took once it is over.
    fn bound(&mut self, now: Instant) {
        if self.overlap_until.is_some_and(|until| now >= until) {
            self.overlap_until = None;
        }
        let capacity = if self.overlap_until.is_some() { OVERLAP_CAPACITY } else { CAPACITY };
        while self.passed.len() > capacity {
            self.forget_oldest();
        }
        if capacity == CAPACITY && self.passed.capacity() > 4 * CAPACITY {
            self.passed.shrink_to(CAPACITY);
            self.copies.shrink_to(CAPACITY);
        }
    }

    fn forget_before(&mut self, now: Instant) {
        while self.passed.front().is_some_and(|(_, at)| now.duration_since(*at) > REMEMBER_FOR) {
            self.forget_oldest();
        }
    }

    /// Forgets the oldest message passed on, and one copy of it from every source that sent one.
    fn forget_oldest(&mut self) {
        let Some((print, _)) = self.passed.pop_front() else { return };
        let Some(copies) = self.copies.get_mut(&print) else { return };
        copies.passed = copies.passed.saturating_sub(1);
        for sent in copies.sent.iter_mut() {
            *sent = sent.saturating_sub(1);
        }
        if copies.passed == 0 {
            self.copies.remove(&print);
        }
    }
}

fn fingerprint(frame: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    frame.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests;
