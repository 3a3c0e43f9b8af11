//! Blocking pops under faults: a pusher RPUSHes increasing numbers onto its own list, a popper
//! BLPOPs them off on another connection. Popped numbers must come in increasing order, each
//! once, and every acknowledged push must be popped or still be in the list at the end. The
//! exceptions are Redis' asynchronous replication again, only around a fault of the list's
//! master ([`Soak::at_risk`]): a pop or a push the old master acknowledged and did not replicate
//! is undone by the failover (the number comes again, or never).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use redis::{Connection, Value};
use redisforge_proxy::slot::key_slot;
use redisforge_tests::connect;

use crate::shared::Soak;

/// How long a BLPOP blocks before it answers nil.
const BLOCK_SECS: u64 = 1;

/// What a pusher and its popper saw.
#[derive(Debug, Default)]
pub struct Queue {
    pub pushed: u64,
    pub popped: u64,
    /// Numbers popped a second time after a failover undid the first pop.
    pub repeated: u64,
    /// Acknowledged pushes that never came out, lost by a failover.
    pub lost: u64,
}

fn list(id: usize) -> String {
    format!("soak:q{id}")
}

/// Runs a pusher and a popper on list `id` until the soak stops, drains the list, and checks.
pub fn run(id: usize, addr: &str, soak: &Arc<Soak>, deadline: Instant) -> Queue {
    let pusher = {
        let (addr, soak) = (addr.to_owned(), Arc::clone(soak));
        thread::spawn(move || push(id, &addr, &soak, deadline))
    };
    let popped = pop(id, addr, soak, deadline);
    let (acked, last) = pusher.join().expect("pusher thread");
    check(id, soak, &acked, last, &popped)
}

/// RPUSHes 1, 2, 3 … every few milliseconds; returns each acknowledged push with its time, and
/// the last number sent.
fn push(id: usize, addr: &str, soak: &Soak, deadline: Instant) -> (Vec<(u64, Instant)>, u64) {
    let key = list(id);
    let mut con: Option<Connection> = None;
    let mut acked = Vec::new();
    let mut seq = 0u64;
    while !soak.stopped() && Instant::now() < deadline {
        seq += 1;
        let sent = Instant::now();
        let Some(c) = connection(&mut con, addr, soak, &format!("pusher {id}")) else { continue };
        let result = redis::cmd("RPUSH").arg(&key).arg(seq).query::<Value>(c);
        soak.ops.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(Value::Int(_)) => acked.push((seq, Instant::now())),
            Ok(Value::ServerError(e)) => soak.failed(sent, format!("pusher {id}: {e:?}")),
            Ok(other) => soak.wrong(format!("pusher {id}: RPUSH {key}: {other:?}")),
            Err(e) => {
                con = None;
                soak.failed(sent, format!("pusher {id}: {e}"));
            }
        }
        thread::sleep(Duration::from_millis(5));
    }
    (acked, seq)
}

/// BLPOPs until the soak has stopped and the list is empty; returns what came out, in order.
fn pop(id: usize, addr: &str, soak: &Soak, deadline: Instant) -> Vec<(u64, Instant)> {
    let key = list(id);
    let mut con: Option<Connection> = None;
    let mut popped = Vec::new();
    // After the stop the popper drains: it ends at the first BLPOP that times out.
    while Instant::now() < deadline + Duration::from_secs(10) {
        let sent = Instant::now();
        let Some(c) = connection(&mut con, addr, soak, &format!("popper {id}")) else { continue };
        let result = redis::cmd("BLPOP").arg(&key).arg(BLOCK_SECS).query::<Value>(c);
        soak.ops.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(Value::Nil) if soak.stopped() => break,
            Ok(Value::Nil) => {}
            Ok(Value::Array(pair)) => match pair.as_slice() {
                [Value::BulkString(k), Value::BulkString(v)] if *k == key.as_bytes() => {
                    match std::str::from_utf8(v).ok().and_then(|v| v.parse().ok()) {
                        Some(n) => popped.push((n, Instant::now())),
                        None => soak.wrong(format!("popper {id}: BLPOP {key} gave {v:?}")),
                    }
                }
                _ => soak.wrong(format!("popper {id}: BLPOP {key}: {pair:?}")),
            },
            Ok(Value::ServerError(e)) => soak.failed(sent, format!("popper {id}: {e:?}")),
            Ok(other) => soak.wrong(format!("popper {id}: BLPOP {key}: {other:?}")),
            Err(e) => {
                con = None;
                soak.failed(sent, format!("popper {id}: {e}"));
            }
        }
    }
    popped
}

/// The worker's connection through the proxy, opened when there is none; `None` (recorded as a
/// failure, after a short pause) when the proxy cannot be reached.
fn connection<'a>(con: &'a mut Option<Connection>, addr: &str, soak: &Soak, who: &str) -> Option<&'a mut Connection> {
    if con.is_none() {
        match connect(addr) {
            Ok(c) => *con = Some(c),
            Err(e) => {
                soak.failed(Instant::now(), format!("{who}: {e}"));
                thread::sleep(Duration::from_millis(100));
                return None;
            }
        }
    }
    con.as_mut()
}

fn check(id: usize, soak: &Soak, acked: &[(u64, Instant)], last: u64, popped: &[(u64, Instant)]) -> Queue {
    let slot = key_slot(list(id).as_bytes());
    let mut queue = Queue { pushed: acked.len() as u64, popped: popped.len() as u64, ..Queue::default() };
    for pair in popped.windows(2) {
        let ((before, before_at), (now, now_at)) = (pair[0], pair[1]);
        if now > before {
            continue;
        }
        if soak.at_risk(slot, before_at, now_at) {
            queue.repeated += 1;
        } else {
            soak.wrong(format!(
                "popper {id}: {now} popped at {} after {before} at {}, away from any fault",
                soak.at(now_at),
                soak.at(before_at)
            ));
        }
    }
    let end = Instant::now();
    let seen: std::collections::HashSet<u64> = popped.iter().map(|p| p.0).collect();
    for &(n, at) in acked.iter().filter(|(n, _)| !seen.contains(n)) {
        if soak.at_risk(slot, at, end) {
            queue.lost += 1;
        } else {
            soak.wrong(format!("queue {id}: push of {n} acknowledged at {} never popped", soak.at(at)));
        }
    }
    if let Some(&(n, _)) = popped.iter().find(|p| p.0 > last || p.0 == 0) {
        soak.wrong(format!("popper {id}: popped {n}, never pushed"));
    }
    queue
}
