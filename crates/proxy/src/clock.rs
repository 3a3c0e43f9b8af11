//! The clock a request's latency is measured with: the monotonic clock as whole nanoseconds.
//!
//! Every request is timed from the read that completed it to the release of its reply, so an
//! unpipelined request reads the clock twice and subtracts once. `std::time::Instant` costs ~35
//! instructions per read through glibc's wrapper and ~37 per subtraction (`Timespec::sub_timespec`
//! normalises seconds and nanoseconds and checks for underflow); a `u64` of nanoseconds read from
//! the vDSO through rustix costs a handful for both (`bench/RESULTS.md`, 2026-12-07's seventh
//! part). The clock is `CLOCK_MONOTONIC`, the one `Instant` reads, so the two never disagree on
//! order; values are only compared with each other, never with an `Instant`.

use std::time::Duration;

use rustix::time::{ClockId, clock_gettime};

/// A point of the monotonic clock, in nanoseconds since an unspecified start (the host's boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tick(u64);

impl Tick {
    /// Now.
    #[inline]
    pub fn now() -> Tick {
        let now = clock_gettime(ClockId::Monotonic);
        // The monotonic clock's fields are never negative.
        Tick((now.tv_sec as u64).wrapping_mul(1_000_000_000).wrapping_add(now.tv_nsec as u64))
    }

    /// Seconds from `earlier` to this tick; 0 when `earlier` is later.
    #[inline]
    pub fn seconds_since(self, earlier: Tick) -> f64 {
        self.0.saturating_sub(earlier.0) as f64 * 1e-9
    }

    /// The tick `after` later.
    pub fn after(self, after: Duration) -> Tick {
        Tick(self.0.saturating_add(u64::try_from(after.as_nanos()).unwrap_or(u64::MAX)))
    }
}

/// A duration as Redis' settings in seconds show it: a part of a second counts as a whole one (so
/// that a timeout of the config file under a second does not read as 0, off).
pub fn whole_seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_follow_the_monotonic_clock_instants_read() {
        let (instant, tick) = (std::time::Instant::now(), Tick::now());
        std::thread::sleep(Duration::from_millis(20));
        let (elapsed, later) = (instant.elapsed().as_secs_f64(), Tick::now());
        let seconds = later.seconds_since(tick);
        assert!(seconds >= 0.020, "{seconds}");
        // Both read CLOCK_MONOTONIC: they differ only by the reads' own order and cost.
        assert!((seconds - elapsed).abs() < 0.05, "{seconds} against {elapsed}");
        assert!(later > tick);
        assert_eq!(tick.seconds_since(later), 0.0);
    }

    #[test]
    fn after_adds_and_saturates() {
        let tick = Tick(5);
        assert_eq!(tick.after(Duration::from_nanos(10)), Tick(15));
        assert_eq!(tick.after(Duration::MAX), Tick(u64::MAX));
        assert!((Tick(3_500_000_000).seconds_since(Tick(1_000_000_000)) - 2.5).abs() < 1e-12);
    }

    #[test]
    fn whole_seconds_round_a_part_of_a_second_up() {
        assert_eq!(whole_seconds(Duration::ZERO), 0);
        assert_eq!(whole_seconds(Duration::from_millis(500)), 1);
        assert_eq!(whole_seconds(Duration::from_secs(60)), 60);
        assert_eq!(whole_seconds(Duration::from_millis(1500)), 2);
    }
}
