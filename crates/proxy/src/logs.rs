//! Rate-limited logging: an error storm (a node flapping, a client hammering bad passwords) must
//! not fill the disk, yet the first occurrences and the size of the storm stay visible.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Allows at most `per_second` events per wall-clock second for one call site, and reports how
/// many were suppressed once logging resumes.
///
/// Lock-free: two atomics, touched only when something is about to be logged.
#[derive(Debug)]
pub struct RateLimit {
    per_second: u64,
    /// Second (since the epoch) the count belongs to.
    second: AtomicU64,
    /// Events seen in `second`.
    count: AtomicU64,
    /// Events dropped since the last one allowed.
    suppressed: AtomicU64,
}

impl RateLimit {
    /// A limiter allowing `per_second` events each second.
    pub const fn new(per_second: u64) -> RateLimit {
        RateLimit { per_second, second: AtomicU64::new(0), count: AtomicU64::new(0), suppressed: AtomicU64::new(0) }
    }

    /// `Some(suppressed)` when this event may be logged (with how many were dropped before it),
    /// `None` when it must be dropped.
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
    }

    fn allow_at(&self, now: u64) -> Option<u64> {
        if self.second.swap(now, Ordering::Relaxed) != now {
            self.count.store(0, Ordering::Relaxed);
        }
        if self.count.fetch_add(1, Ordering::Relaxed) < self.per_second {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// Logs through `tracing` at most as often as the limiter allows, adding `suppressed = N` when
/// earlier events were dropped. Each call site gets its own limiter.
#[macro_export]
macro_rules! log_limited {
    ($per_second:expr, $level:ident, $($arg:tt)+) => {{
        static LIMIT: $crate::logs::RateLimit = $crate::logs::RateLimit::new($per_second);
        if let Some(suppressed) = LIMIT.allow() {
            if suppressed > 0 {
                tracing::$level!(suppressed, $($arg)+);
            } else {
                tracing::$level!($($arg)+);
            }
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_then_counts_what_it_dropped() {
        let limit = RateLimit::new(3);
        assert_eq!(limit.allow_at(100), Some(0));
        assert_eq!(limit.allow_at(100), Some(0));
        assert_eq!(limit.allow_at(100), Some(0));
        assert_eq!(limit.allow_at(100), None);
        assert_eq!(limit.allow_at(100), None);
        // A new second: logging resumes and reports the two dropped events once.
        assert_eq!(limit.allow_at(101), Some(2));
        assert_eq!(limit.allow_at(101), Some(0));
    }
}
