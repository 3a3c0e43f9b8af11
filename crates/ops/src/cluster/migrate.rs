//! The slot-migration engine shared by `add`, `remove`, `rebalance` and `check --fix`.
//!
//! One slot moves in the order `redis-cli --cluster` uses: `SETSLOT s IMPORTING src` on the
//! target, `SETSLOT s MIGRATING dst` on the source, batches of `GETKEYSINSLOT` + `MIGRATE … KEYS`
//! until the slot is empty, then `SETSLOT s NODE dst` on the target, the source and every other
//! master. Clients keep working throughout: the source answers `-ASK` for keys already moved.
//!
//! # Safe to re-run
//! A run killed at any point leaves each slot in one of the states [`close_open_slots`] finishes:
//! importing only (nothing moved yet: the mark is dropped), migrating + importing (keys are moved
//! on and the slot assigned to the importing node), migrating towards a node that already owns it
//! (finished the same way). MIGRATE moves each key atomically, without `REPLACE`; a `BUSYKEY`
//! reply means a copy already exists on the target: identical copies (same `DUMP`) are resolved by
//! deleting the source copy, different ones stop the run with [`ClusterError::KeyConflict`].

use std::collections::BTreeMap;
use std::time::Duration;

use redis::Value;

use super::ClusterError;
use super::node::{NodeError, Pool, split_addr};
use super::plan::Move;
use super::state::{ClusterState, OpenSlot, short};
use crate::progress::{Progress, Unit};
use redisforge_cluster::nodes::NodeLine;

/// `MIGRATE` timeout (milliseconds) per I/O step between the nodes; below the client's 10 s read
/// timeout, so the node gives up (and says why) before we do.
const MIGRATE_TIMEOUT_MS: &str = "5000";
/// Retries of a MIGRATE the target refused as transient (200 ms apart).
const TRANSIENT_RETRIES: u32 = 25;

/// Knobs of a migration run.
#[derive(Debug, Clone, Copy)]
pub struct MoveOpts {
    /// Keys per `MIGRATE`.
    pub batch: usize,
}

/// What a run did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    /// Slots assigned to their new owner.
    pub slots: usize,
    /// Keys moved.
    pub keys: usize,
}

/// Finishes or cancels every slot left open (see the module docs for the rules) and returns one
/// line per action taken.
///
/// # Errors
/// [`ClusterError::OpenSlot`] for layouts no rule covers (several nodes migrating one slot,
/// markers pointing at unknown nodes); node errors and key conflicts while finishing.
pub fn close_open_slots(pool: &mut Pool, state: &ClusterState, opts: MoveOpts) -> Result<Vec<String>, ClusterError> {
    let mut by_slot: BTreeMap<u16, Vec<OpenSlot>> = BTreeMap::new();
    for open in state.open_slots() {
        by_slot.entry(open.slot).or_default().push(open);
    }
    let mut actions = Vec::new();
    for (slot, marks) in by_slot {
        let migrating: Vec<&OpenSlot> = marks.iter().filter(|m| m.migrating).collect();
        let importing: Vec<&OpenSlot> = marks.iter().filter(|m| !m.migrating).collect();
        let node = |id: &str| {
            state.view.by_id(id).cloned().ok_or_else(|| ClusterError::OpenSlot {
                slot,
                why: format!("it points at node {} which the cluster does not know", short(id)),
            })
        };
        let action = match (migrating.as_slice(), importing.as_slice()) {
            ([m], [i]) if m.peer == i.node && i.peer == m.node => {
                finish(pool, state, slot, &node(&m.node)?, &node(&i.node)?, opts)?;
                format!("slot {slot}: finished the migration to {}", node(&i.node)?.addr())
            }
            ([m], []) => {
                let (src, dst) = (node(&m.node)?, node(&m.peer)?);
                if state.claims(&dst.id, slot) || count_keys(pool, &dst.addr(), slot)? > 0 {
                    // The target already owns the slot or holds keys of it: only forward is safe.
                    if !state.claims(&dst.id, slot) {
                        set_slot(pool, &dst.addr(), slot, "IMPORTING", &src.id)?;
                    }
                    finish(pool, state, slot, &src, &dst, opts)?;
                    format!("slot {slot}: finished the migration to {}", dst.addr())
                } else {
                    set_slot(pool, &src.addr(), slot, "STABLE", "")?;
                    format!("slot {slot}: nothing had moved; cleared MIGRATING on {}", src.addr())
                }
            }
            ([], [i]) => {
                let dst = node(&i.node)?;
                if count_keys(pool, &dst.addr(), slot)? == 0 {
                    set_slot(pool, &dst.addr(), slot, "STABLE", "")?;
                    format!("slot {slot}: nothing had moved; cleared IMPORTING on {}", dst.addr())
                } else {
                    // Keys already arrived: finish towards the importing node from the owner.
                    let owner_id = state.view.slot_owners()[usize::from(slot)].map(str::to_owned).ok_or_else(|| {
                        ClusterError::OpenSlot { slot, why: "it is importing but no node owns it".into() }
                    })?;
                    let src = node(&owner_id)?;
                    set_slot(pool, &src.addr(), slot, "MIGRATING", &dst.id)?;
                    finish(pool, state, slot, &src, &dst, opts)?;
                    format!("slot {slot}: keys were on {}; finished the migration there", dst.addr())
                }
            }
            _ => {
                let list: Vec<String> = marks
                    .iter()
                    .map(|m| {
                        let dir = if m.migrating { "migrating to" } else { "importing from" };
                        format!("{} {dir} {}", state.addr_of(&m.node).unwrap_or_default(), short(&m.peer))
                    })
                    .collect();
                return Err(ClusterError::OpenSlot {
                    slot,
                    why: format!("no safe automatic fix for {}; close it by hand", list.join(", ")),
                });
            }
        };
        eprintln!("fix: {action}");
        actions.push(action);
    }
    Ok(actions)
}

/// Runs `moves` in order with progress on stderr labelled `label`.
///
/// # Errors
/// Node errors, [`ClusterError::KeyConflict`]; the run stops at the first, leaving at most one slot
/// open, which a re-run finishes.
pub fn run_moves(
    pool: &mut Pool,
    state: &ClusterState,
    moves: &[Move],
    opts: MoveOpts,
    label: &str,
) -> Result<Stats, ClusterError> {
    let mut stats = Stats::default();
    let mut progress = Progress::new(label, moves.len() as u64, Unit::Slots);
    for mv in moves {
        let find = |id: &str| {
            state.view.by_id(id).cloned().ok_or_else(|| ClusterError::UnknownNode {
                node: id.to_owned(),
                why: "planned move names a node the seed does not know".into(),
            })
        };
        let (src, dst) = (find(&mv.from)?, find(&mv.to)?);
        set_slot(pool, &dst.addr(), mv.slot, "IMPORTING", &src.id)?;
        set_slot(pool, &src.addr(), mv.slot, "MIGRATING", &dst.id)?;
        stats.keys += finish(pool, state, mv.slot, &src, &dst, opts)?;
        stats.slots += 1;
        let note = format!("{} keys moved, slot {} {} -> {}", stats.keys, mv.slot, src.addr(), dst.addr());
        progress.add(1, &note);
    }
    progress.finish();
    Ok(stats)
}

/// Moves the remaining keys of `slot` from `src` to `dst`, then assigns the slot to `dst` on
/// `dst`, `src` and every other master (the last best effort: gossip carries it too). Returns
/// the number of keys moved.
fn finish(
    pool: &mut Pool,
    state: &ClusterState,
    slot: u16,
    src: &NodeLine,
    dst: &NodeLine,
    opts: MoveOpts,
) -> Result<usize, ClusterError> {
    let moved = move_keys(pool, slot, src, dst, opts)?;
    set_slot(pool, &dst.addr(), slot, "NODE", &dst.id)?;
    // Once the target owns the slot, a source that has just given away its last slot may already
    // have turned into a replica (Redis' replica migration): it no longer owns anything, so its
    // refusal of SETSLOT is the outcome we wanted.
    if let Err(e) = set_slot(pool, &src.addr(), slot, "NODE", &dst.id)
        && !e.to_string().contains("only with masters")
    {
        return Err(e.into());
    }
    for other in state.masters() {
        if other.id != src.id
            && other.id != dst.id
            && let Err(e) = set_slot(pool, &other.addr(), slot, "NODE", &dst.id)
        {
            eprintln!("warning: {e} (the cluster bus will propagate the new owner)");
        }
    }
    Ok(moved)
}

fn move_keys(
    pool: &mut Pool,
    slot: u16,
    src: &NodeLine,
    dst: &NodeLine,
    opts: MoveOpts,
) -> Result<usize, ClusterError> {
    let src_addr = src.addr();
    let (host, port) = split_addr(&dst.addr())?;
    let auth = pool.connector().migrate_auth();
    let batch = opts.batch.max(1).to_string();
    let slot_arg = slot.to_string();
    let total = count_keys(pool, &src_addr, slot)?;
    // Every round moves or resolves at least one key, so this bounds the loop; the slack covers
    // keys written by clients while we migrate.
    let max_rounds = total / opts.batch.max(1) + total + 100;
    let mut moved = 0;
    for _ in 0..max_rounds {
        let keys: Vec<Vec<u8>> = pool.query(&src_addr, &["CLUSTER", "GETKEYSINSLOT", &slot_arg, &batch])?;
        if keys.is_empty() {
            return Ok(moved);
        }
        let mut args: Vec<Vec<u8>> = [host.as_str(), &port.to_string(), "", "0", MIGRATE_TIMEOUT_MS]
            .iter()
            .map(|a| a.as_bytes().to_vec())
            .collect();
        args.extend(auth.iter().map(|a| a.as_bytes().to_vec()));
        args.push(b"KEYS".to_vec());
        args.extend(keys.iter().cloned());
        let what = format!("MIGRATE slot {slot} to {} ({} keys)", dst.addr(), keys.len());
        let mut migrate = vec![b"MIGRATE".to_vec()];
        migrate.extend(args);
        match migrate_with_retry(pool, &src_addr, &what, &migrate) {
            Ok(_) => moved += keys.len(),
            Err(e) if e.reply_text().is_some_and(|t| t.contains("BUSYKEY")) => {
                moved += resolve_busy(pool, slot, &src_addr, dst, &keys)?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ClusterError::OpenSlot {
        slot,
        why: format!("keys kept appearing on {src_addr} after {max_rounds} MIGRATE rounds; re-run to finish"),
    })
}

/// One MIGRATE, retried for a few seconds while the target answers `CLUSTERDOWN` or `TRYAGAIN`
/// (a node that has just joined or just changed its slot map).
fn migrate_with_retry(pool: &mut Pool, src: &str, what: &str, args: &[Vec<u8>]) -> Result<Value, NodeError> {
    let mut attempt = 0;
    loop {
        match pool.with(src, |n| n.query_as::<Value, _>(what, args)) {
            Err(e)
                if attempt < TRANSIENT_RETRIES
                    && e.reply_text().is_some_and(|t| t.contains("CLUSTERDOWN") || t.contains("TRYAGAIN")) =>
            {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
            other => return other,
        }
    }
}

/// Settles a batch that hit `BUSYKEY`: each key still on the source is migrated alone; when the
/// target already has it, identical copies are resolved by deleting the source copy.
fn resolve_busy(
    pool: &mut Pool,
    slot: u16,
    src: &str,
    dst: &NodeLine,
    keys: &[Vec<u8>],
) -> Result<usize, ClusterError> {
    let mut moved = 0;
    for key in keys {
        let here = dump(pool, src, key, false)?;
        let Some(here) = here else {
            // Gone from the source: the failed batch moved it (or a client deleted it).
            moved += 1;
            continue;
        };
        let there = dump(pool, &dst.addr(), key, true)?;
        match there {
            Some(there) if there == here => {
                // The earlier MIGRATE delivered it but we never saw the reply.
                pool.with(src, |n| {
                    n.query_as::<i64, _>("DEL (duplicate after MIGRATE)", &[b"DEL".to_vec(), key.clone()])
                })?;
                moved += 1;
            }
            Some(_) => {
                return Err(ClusterError::KeyConflict {
                    key: String::from_utf8_lossy(key).into_owned(),
                    slot,
                    src: src.to_owned(),
                    dst: dst.addr(),
                });
            }
            None => {
                // Gone from the target since; retry this key alone on the next round.
            }
        }
    }
    Ok(moved)
}

/// `DUMP key`, `None` when the node does not have it (or redirects because it does not).
fn dump(pool: &mut Pool, addr: &str, key: &[u8], asking: bool) -> Result<Option<Vec<u8>>, ClusterError> {
    let result = pool.with(addr, |n| {
        if asking {
            // The target only serves a slot it is importing to connections that said ASKING.
            n.query::<Value>(&["ASKING"])?;
        }
        n.query_as::<Option<Vec<u8>>, _>("DUMP", &[b"DUMP".to_vec(), key.to_vec()])
    });
    match result {
        Ok(v) => Ok(v),
        Err(e) if e.is_redirect() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `CLUSTER COUNTKEYSINSLOT` on `addr`.
fn count_keys(pool: &mut Pool, addr: &str, slot: u16) -> Result<usize, NodeError> {
    let n: i64 = pool.query(addr, &["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()])?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// `CLUSTER SETSLOT slot STATE [id]` on `addr` (`id` empty for STABLE).
fn set_slot(pool: &mut Pool, addr: &str, slot: u16, state: &str, id: &str) -> Result<(), NodeError> {
    let slot = slot.to_string();
    let mut args = vec!["CLUSTER", "SETSLOT", slot.as_str(), state];
    if !id.is_empty() {
        args.push(id);
    }
    let what = format!("CLUSTER SETSLOT {slot} {state} {}", short(id));
    pool.with(addr, |n| n.query_as::<Value, _>(what.trim_end(), &args)).map(drop)
}
