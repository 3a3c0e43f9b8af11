//! The open-file limit a number of clients needs, raised as Redis' `adjustOpenFilesLimit` raises
//! it: at start for `listen.max_clients`, and for a `CONFIG SET maxclients` through the proxy,
//! which a node refuses with "The operating system is not able to handle the specified number of
//! clients, try with N" when its limit cannot be raised far enough.
//!
//! A client takes one descriptor (two while it holds a node connection of its own, in a
//! transaction or a blocking command); Redis keeps 32 beside its clients' and so does the proxy's
//! arithmetic, so that the proxy answers as a node of the same limits does.

use std::sync::Mutex;

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Descriptors kept beside the clients' (Redis' `CONFIG_MIN_RESERVED_FDS`): listeners, node
/// connections, the metrics endpoint.
const RESERVED: u32 = 32;

/// Held while the limit is read and raised: two sessions raising it at once (the runtime may
/// have several threads) must not leave the smaller of their limits set.
static ADJUSTING: Mutex<()> = Mutex::new(());

/// The step by which Redis lowers a limit it failed to set.
const STEP: u64 = 16;

/// Raises the soft limit of open files so that `clients` fit, as far as the process may (the
/// hard limit; beyond it with the privilege to raise that too). `Ok` when they fit, else
/// `Err(n)`: the clients the limit reached serves, Redis' "try with n". The files wanted are
/// Redis' `unsigned int` sum, which wraps: from 4294967264 clients on it asks for fewer than 32
/// files and so changes nothing (a node takes such a `maxclients`).
pub fn make_room_for(clients: u32) -> Result<(), u64> {
    let wanted = u64::from(clients.wrapping_add(RESERVED));
    let _adjusting = ADJUSTING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let limit = getrlimit(Resource::Nofile);
    let soft = limit.current.unwrap_or(u64::MAX);
    let reached = best_limit(wanted, soft, |files| {
        // The hard limit is never lowered (Redis sets both to what it asks).
        let maximum = limit.maximum.map(|hard| hard.max(files));
        setrlimit(Resource::Nofile, Rlimit { current: Some(files), maximum }).is_ok()
    });
    if reached >= wanted { Ok(()) } else { Err(reached.saturating_sub(u64::from(RESERVED))) }
}

/// The limit Redis ends with when it needs `wanted` files under a soft limit of `soft`: `wanted`,
/// else the largest of `wanted - 16`, `wanted - 32` … above `soft` that `try_set` takes, else
/// `soft`. Found by halving (what can be set is every limit up to a ceiling), not by Redis' walk
/// down in steps of 16, which for a large `wanted` takes millions of system calls.
fn best_limit(wanted: u64, soft: u64, mut try_set: impl FnMut(u64) -> bool) -> u64 {
    if soft >= wanted {
        return wanted;
    }
    // Candidates `wanted - STEP * k` for k in 0..=steps, all above `soft`.
    let steps = (wanted - soft - 1) / STEP;
    let mut taken = None;
    let (mut low, mut high) = (0, steps);
    while low <= high {
        let k = low + (high - low) / 2;
        if try_set(wanted - STEP * k) {
            taken = Some(k);
            match k.checked_sub(1) {
                Some(smaller) => high = smaller,
                None => break,
            }
        } else {
            low = k + 1;
        }
    }
    // Each limit taken is larger than the one before it: the last one set is the best.
    taken.map_or(soft, |k| wanted - STEP * k)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `best_limit` ends with against a ceiling, and the limit last set.
    fn against(wanted: u64, soft: u64, ceiling: u64) -> (u64, Option<u64>) {
        let mut last = None;
        let best = best_limit(wanted, soft, |files| {
            let taken = files <= ceiling;
            if taken {
                last = Some(files);
            }
            taken
        });
        (best, last)
    }

    /// Redis' walk: from `wanted` down in steps of 16 while above `soft`.
    fn walk(wanted: u64, soft: u64, ceiling: u64) -> u64 {
        if soft >= wanted {
            return wanted;
        }
        let mut best = wanted;
        while best > soft {
            if best <= ceiling {
                return best;
            }
            if best < STEP {
                return soft;
            }
            best -= STEP;
        }
        best.max(soft)
    }

    #[test]
    fn the_limit_reached_is_the_one_redis_walks_down_to() {
        for (wanted, soft, ceiling) in
            [(10_032, 20_000, 20_000), (30_032, 1_024, 20_000), (30_033, 1_024, 20_000), (4_000_000_032, 1_024, 20_000)]
        {
            let (best, last) = against(wanted, soft, ceiling);
            assert_eq!(best, walk(wanted, soft, ceiling), "{wanted} {soft} {ceiling}");
            if best > soft && best < wanted {
                assert_eq!(last, Some(best), "the best limit is the one left set");
            }
        }
        // Nothing above the soft limit can be set: the soft limit stays.
        assert_eq!(against(30_032, 20_000, 20_000), (20_000, None));
        assert_eq!(against(50, 20, 10), (20, None));
    }
}
