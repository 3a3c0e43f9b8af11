//! The chaos driver: every few seconds one random node is killed (and restarted), paused
//! (SIGSTOP, then SIGCONT), or cut off the network (from the other nodes only, or from the proxy
//! too), or a slot is migrated; then it waits until the cluster has settled and the proxy writes
//! to every master again before the next event. Each event is recorded in [`Soak::events`] with
//! the slots it put at risk and what was measured.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use redis::Value;
use redisforge_proxy::slot::key_slot;
use redisforge_tests::rng::Rng;
use redisforge_tests::{Cluster, Isolation, Proxy, connect, wait_until};

use crate::shared::{Kind, Soak};

/// How long the cluster and the proxy get to recover after an event.
const SETTLE: Duration = Duration::from_secs(40);
/// No new event starts later than this before the end of the soak.
const LAST_EVENT_BEFORE_END: Duration = Duration::from_secs(12);

/// Injects events until `until` (partitions only where the cluster runs in namespaces).
pub fn run(cluster: &Cluster, proxy: &Proxy, soak: &Soak, until: Instant, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut kinds = vec![Kind::Kill, Kind::Pause, Kind::Migration];
    if cluster.is_partitionable() {
        kinds.extend([Kind::SplitFromNodes, Kind::SplitFromEveryone]);
    }
    // Every kind once first, in random order; then at random.
    let mut first: Vec<Kind> = kinds.clone();
    for i in (1..first.len()).rev() {
        first.swap(i, rng.below(i + 1));
    }
    let mut round = 0;
    while Instant::now() + LAST_EVENT_BEFORE_END < until {
        let kind = first.get(round).copied().unwrap_or_else(|| kinds[rng.below(kinds.len())]);
        round += 1;
        match kind {
            Kind::Migration => migrate(cluster, proxy, soak, &mut rng),
            fault => inject(cluster, proxy, soak, fault, &mut rng),
        }
        thread::sleep(Duration::from_millis(800 + rng.below(1200) as u64));
    }
}

/// The slots `node` serves as a master now (all false for a replica).
fn slots_of(cluster: &Cluster, node: &str) -> Arc<Vec<bool>> {
    let mut slots = vec![false; 16384];
    for r in cluster.slot_ranges().iter().filter(|r| r.master == node) {
        slots[usize::from(r.start)..=usize::from(r.end)].iter_mut().for_each(|s| *s = true);
    }
    Arc::new(slots)
}

fn inject(cluster: &Cluster, proxy: &Proxy, soak: &Soak, kind: Kind, rng: &mut Rng) {
    let nodes = cluster.nodes();
    let node = nodes[rng.below(nodes.len())].clone();
    let slots = slots_of(cluster, &node);
    let was_master = slots.iter().any(|&s| s);
    let event = soak.open(kind, &node, Arc::clone(&slots));
    let start = Instant::now();
    // Paused shorter or longer than the node timeout (2 s): a stall, or a failover.
    let hold = Duration::from_millis(match kind {
        Kind::Pause => 1000 + rng.below(3000) as u64,
        _ => 2500 + rng.below(2500) as u64,
    });
    match kind {
        Kind::Kill => cluster.kill(&node),
        Kind::Pause => cluster.pause(&node),
        Kind::SplitFromNodes => cluster.isolate(&node, Isolation::FromNodes),
        Kind::SplitFromEveryone => cluster.isolate(&node, Isolation::FromEveryone),
        Kind::Migration => unreachable!("migrations are not faults"),
    }
    thread::sleep(hold);
    if kind == Kind::Kill && was_master {
        // A master without persistence that comes back before its replica took over would serve
        // the last RDB it loaded as a replica, or nothing: Redis' documented hazard, which
        // operators avoid by not restarting such masters at once. Restart it once replaced.
        let replaced = wait_until(SETTLE, Duration::from_millis(100), || {
            let first = slots.iter().position(|&s| s).unwrap_or(0) as u16;
            cluster.slot_ranges().iter().any(|r| (r.start..=r.end).contains(&first) && r.master != node)
        });
        if !replaced {
            soak.wrong(format!("the replica of killed master {node} was not promoted"));
        }
    }
    match kind {
        Kind::Kill => cluster.restart(&node),
        Kind::Pause => cluster.resume(&node),
        _ => cluster.heal(&node),
    }
    let settled = cluster.try_wait_state_ok(SETTLE);
    let served = settled.is_ok().then(|| proxy_writes_everywhere(cluster, proxy)).flatten();
    let note = format!(
        "({}) for {hold:?}; settled after {:?}{}",
        if was_master { "master" } else { "replica" },
        start.elapsed(),
        served.map_or_else(
            || " (the proxy did not write everywhere)".to_owned(),
            |t| format!(", proxy writes everywhere {:?} after the start", t - start)
        ),
    );
    soak.close(event, note.clone());
    if let Err(why) = settled {
        soak.wrong(format!(
            "{kind:?} of {node} {note}: the cluster did not settle: {why}\n{}\n{}",
            cluster.views(),
            cluster.log_tails(30)
        ));
    } else if served.is_none() {
        soak.wrong(format!("{kind:?} of {node} {note}: writes through the proxy did not recover"));
    }
}

/// Moves one slot holding soak keys to another master, under load.
fn migrate(cluster: &Cluster, proxy: &Proxy, soak: &Soak, rng: &mut Rng) {
    let key = format!("soak:c{}:s{}", rng.below(crate::CLIENTS), rng.below(crate::client::STRINGS));
    let slot = key_slot(key.as_bytes());
    let from = cluster.node_for_slot(slot);
    let Some(to) = cluster.masters().into_iter().find(|m| *m != from) else { return };
    let event = soak.open(Kind::Migration, &from, Arc::new(vec![false; 16384]));
    let start = Instant::now();
    cluster.migrate_slot(slot, &from, &to);
    let took = start.elapsed();
    let moved = wait_until(Duration::from_secs(10), Duration::from_millis(50), || cluster.node_for_slot(slot) == to);
    let served = proxy_writes_everywhere(cluster, proxy);
    soak.close(event, format!("slot {slot} ({key}) {from} -> {to} in {took:?}"));
    if !moved || served.is_none() {
        soak.wrong(format!("migration of slot {slot}: moved {moved}, proxy served {}", served.is_some()));
    }
}

/// Waits until a SET through the proxy succeeds on a key of every master; when it did.
fn proxy_writes_everywhere(cluster: &Cluster, proxy: &Proxy) -> Option<Instant> {
    // A key in the widest range of each master.
    let mut widest: std::collections::BTreeMap<String, (u16, u16)> = std::collections::BTreeMap::new();
    for r in cluster.slot_ranges() {
        let best = widest.entry(r.master.clone()).or_insert((r.start, r.end));
        if r.end - r.start > best.1 - best.0 {
            *best = (r.start, r.end);
        }
    }
    let keys: Vec<String> = widest
        .values()
        .filter_map(|&(start, end)| {
            (0..100_000).map(|i| format!("soak:probe:{i}")).find(|k| (start..=end).contains(&key_slot(k.as_bytes())))
        })
        .collect();
    let mut con = None;
    let ok = wait_until(SETTLE, Duration::from_millis(20), || {
        if con.is_none() {
            con = connect(&proxy.addr()).ok();
        }
        let Some(c) = con.as_mut() else { return false };
        let mut broken = false;
        let all = keys.iter().all(|k| match redis::cmd("SET").arg(k).arg("probe").query::<Value>(c) {
            Ok(Value::Okay) => true,
            Err(e) => {
                broken = e.is_io_error() || e.is_timeout();
                false
            }
            _ => false,
        });
        if broken {
            con = None;
        }
        all
    });
    ok.then(Instant::now)
}
