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

    fn forget_before(&mut self, now: Instant) {
        while self.delivered.front().is_some_and(|(_, at)| now.duration_since(*at) > REMEMBER_FOR) {
            self.delivered.pop_front();
        }
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
