//! `cluster add`, `cluster remove` and `cluster rebalance`: membership changes and the slot moves
//! they need, all through the engine in [`super::migrate`].
//!
//! Every verb first finishes slots an interrupted run left open, so any of them can simply be run
//! again after a crash or a kill; then it plans from the seed's fresh view, moves, and waits
//! (bounded by `--timeout`) until every reachable node agrees on the new slot map.

use std::collections::BTreeMap;
use std::time::Duration;

use super::migrate::{self, Stats};
use super::node::{ConnArgs, Connector, Pool, split_addr};
use super::plan;
use super::state::{ClusterState, short};
use super::{ClusterError, MoveArgs, normalize_addr, resolve_ip, summary_table, wait_converged, wait_for};
use redisforge_cluster::nodes::NodeLine;

/// Default `--threshold` of `rebalance`: masters within 2 % of their target are left alone.
pub const DEFAULT_THRESHOLD_PCT: f64 = 2.0;

/// `redisforge-ops cluster add NODE --to SEED [--replica-of ID]`.
#[derive(Debug, Clone, clap::Args)]
pub struct AddArgs {
    /// The empty node to join, `host:port`.
    pub node: String,
    /// Any node of the cluster.
    #[arg(long, value_name = "SEED")]
    pub to: String,
    /// Make it a replica of this master (id, unique id prefix or host:port) instead of a master.
    #[arg(long, value_name = "ID")]
    pub replica_of: Option<String>,
    /// Join as an empty master without moving slots onto it.
    #[arg(long, conflicts_with = "replica_of")]
    pub no_rebalance: bool,
    #[command(flatten)]
    pub moves: MoveArgs,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `redisforge-ops cluster remove ID --from SEED`.
#[derive(Debug, Clone, clap::Args)]
pub struct RemoveArgs {
    /// The node to remove: id, unique id prefix (8+ characters) or host:port.
    pub id: String,
    /// Any other node of the cluster.
    #[arg(long, value_name = "SEED")]
    pub from: String,
    #[command(flatten)]
    pub moves: MoveArgs,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `redisforge-ops cluster rebalance SEED [--threshold PCT]`.
#[derive(Debug, Clone, clap::Args)]
pub struct RebalanceArgs {
    /// Any node of the cluster.
    pub seed: String,
    /// Leave the slots alone when every master is within this many percent of 16384 / masters.
    #[arg(long, default_value_t = DEFAULT_THRESHOLD_PCT)]
    pub threshold: f64,
    #[command(flatten)]
    pub moves: MoveArgs,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Runs `cluster add`: MEET from the seed (skipped when the node is already a member), wait until
/// everyone knows it, then REPLICATE (`--replica-of`) or rebalance onto it.
///
/// # Errors
/// [`ClusterError::NotEmpty`] for a node that holds keys, slots or knows other nodes; node errors;
/// timeouts.
pub fn add(args: &AddArgs) -> Result<(), ClusterError> {
    let node = normalize_addr(&args.node)?;
    let node = node.as_str();
    let mut pool = Pool::new(Connector::new(&args.conn)?);
    let state = ClusterState::load(&mut pool, &args.to)?;
    if state.view.by_addr(node).is_some_and(|n| !n.flags.handshake) {
        eprintln!("add: {} is already a member; continuing with the remaining steps", node);
    } else {
        introduce(&mut pool, &args.to, node)?;
    }
    let members: Vec<String> = state.view.nodes.iter().filter(|n| !n.is_failing()).map(|n| n.addr()).collect();
    let new_id = wait_for(args.moves.timeout, "every node to know the new node", || {
        let own = pool.cluster_nodes(node).map_err(|e| e.to_string())?;
        let id = own.myself().map(|m| m.id.clone()).ok_or("no myself line")?;
        for addr in &members {
            if own.by_addr(addr).is_none_or(|n| n.flags.handshake) {
                return Err(format!("{} does not know {addr} yet", node));
            }
            let theirs = pool.cluster_nodes(addr).map_err(|e| e.to_string())?;
            if theirs.by_id(&id).is_none_or(|n| n.flags.handshake) {
                return Err(format!(
                    "{addr} does not know {} yet (a node id forgotten less than 60 s ago stays banned; \
                     CLUSTER RESET HARD gives the node a new id)",
                    node
                ));
            }
        }
        Ok(id)
    })?;
    eprintln!("add: {} joined as {}", node, short(&new_id));

    if let Some(master) = &args.replica_of {
        let master = replicate(&mut pool, args, node, &new_id, master)?;
        println!("added {} as a replica of {}", node, master.addr());
    } else if args.no_rebalance {
        println!("added {} as an empty master", node);
    } else {
        let stats = balance(&mut pool, &args.to, DEFAULT_THRESHOLD_PCT, &args.moves, "add")?;
        println!("added {} as a master; rebalanced {} slots ({} keys)", node, stats.slots, stats.keys);
    }
    let state = wait_converged(&mut pool, &args.to, args.moves.timeout)?;
    print!("{}", summary_table(&state.view, &BTreeMap::new()));
    Ok(())
}

/// Runs `cluster remove`: drain a slot-owning master onto the others (evenly), `CLUSTER FORGET` it
/// on every other node (back to back, well inside the 60 s ban window) and `CLUSTER RESET HARD`
/// it (empty, new node id, ready to be added again). Replicas and empty masters are forgotten right
/// away. A node no member knows any more is reported as already removed (exit 0).
///
/// # Errors
/// [`ClusterError::Refused`] when the node is the seed or still has replicas; node errors; timeouts.
pub fn remove(args: &RemoveArgs) -> Result<(), ClusterError> {
    let mut pool = Pool::new(Connector::new(&args.conn)?);
    let state = ClusterState::load(&mut pool, &args.from)?;
    let target = match find_node(&state, &args.id) {
        Ok(t) => t.clone(),
        Err(e) => return forget_stale(&mut pool, &state, &args.id, &e),
    };
    let addr = target.addr();
    if state.view.myself().is_some_and(|m| m.id == target.id) {
        return Err(ClusterError::Refused(format!("{addr} is the seed; pass another node as --from")));
    }
    let replicas: Vec<String> = state.view.replicas_of(&target.id).map(|r| r.addr()).collect();
    if !replicas.is_empty() {
        return Err(ClusterError::Refused(format!(
            "master {addr} still has replicas {}; remove them first (or move them with CLUSTER REPLICATE)",
            replicas.join(", ")
        )));
    }
    if target.is_master() && !target.slots.is_empty() {
        let state = finish_interrupted(&mut pool, &args.from, &args.moves)?;
        let moves = plan::drain_moves(&state.master_slots(), &target.id);
        eprintln!("remove: draining {} slots from {addr}", moves.len());
        let stats = migrate::run_moves(&mut pool, &state, &moves, args.moves.opts(), "remove")?;
        wait_converged(&mut pool, &args.from, args.moves.timeout)?;
        eprintln!("remove: moved {} slots, {} keys off {addr}", stats.slots, stats.keys);
    }
    let state = ClusterState::load(&mut pool, &args.from)?;
    if let Some(t) = state.view.by_id(&target.id)
        && !t.slots.is_empty()
    {
        return Err(ClusterError::Refused(format!("{addr} still owns slots; re-run to finish draining it")));
    }
    // All FORGETs back to back: a node that still knows the target would gossip it back to the
    // others once their 60 s ban expires.
    for other in state.view.nodes.iter().filter(|n| n.id != target.id) {
        if other.flags.fail || other.flags.noaddr {
            eprintln!("warning: {} is failing; run `cluster remove` again once it is back", other.addr());
            continue;
        }
        forget(&mut pool, &other.addr(), &target.id)?;
    }
    // HARD: a new node id, so the node can be added again at once (the old id stays banned by
    // the FORGETs for 60 s).
    match pool.query::<()>(&addr, &["CLUSTER", "RESET", "HARD"]) {
        Ok(()) => {}
        Err(e) => eprintln!("warning: CLUSTER RESET on the removed node failed: {e}"),
    }
    let rest: Vec<String> =
        state.view.nodes.iter().filter(|n| n.id != target.id && !n.is_failing()).map(|n| n.addr()).collect();
    wait_for(args.moves.timeout, "every node to have forgotten the removed node", || {
        for a in &rest {
            if pool.cluster_nodes(a).map_err(|e| e.to_string())?.by_id(&target.id).is_some() {
                return Err(format!("{a} still lists {}", short(&target.id)));
            }
        }
        Ok(())
    })?;
    let state = wait_converged(&mut pool, &args.from, args.moves.timeout)?;
    println!("removed {addr} ({}) from the cluster", short(&target.id));
    print!("{}", summary_table(&state.view, &BTreeMap::new()));
    Ok(())
}

/// MEETs a fresh node from `seed`; refused when it holds keys, owns slots or knows other nodes.
fn introduce(pool: &mut Pool, seed: &str, node: &str) -> Result<(), ClusterError> {
    let own = pool.cluster_nodes(node)?;
    let keys: i64 = pool.query(node, &["DBSIZE"])?;
    let me = own.myself().ok_or_else(|| ClusterError::Refused(format!("{}: no myself line", node)))?;
    let mut dirty = Vec::new();
    if keys > 0 {
        dirty.push(format!("{} holds {keys} keys", node));
    }
    if !me.slots.is_empty() {
        dirty.push(format!("{} owns {} slots", node, me.slot_count()));
    }
    if own.nodes.len() > 1 {
        dirty.push(format!("{} knows {} other nodes", node, own.nodes.len() - 1));
    }
    if !dirty.is_empty() {
        return Err(ClusterError::NotEmpty(dirty));
    }
    let (host, port) = split_addr(node)?;
    let bus = me.bus_port.to_string();
    pool.query::<()>(seed, &["CLUSTER", "MEET", &resolve_ip(&host)?, &port.to_string(), &bus])?;
    Ok(())
}

/// Makes the new node (`new_id` at `node`) a replica of `master` and waits until it synced and
/// every node sees it as one; returns the master.
fn replicate(
    pool: &mut Pool,
    args: &AddArgs,
    node: &str,
    new_id: &str,
    master: &str,
) -> Result<NodeLine, ClusterError> {
    let state = ClusterState::load(pool, &args.to)?;
    let master = find_node(&state, master)?.clone();
    if !master.is_master() {
        return Err(ClusterError::Refused(format!("--replica-of {}: {} is not a master", master.id, master.addr())));
    }
    let already = state.view.by_id(new_id).and_then(|n| n.master_id.as_deref()) == Some(master.id.as_str());
    if !already {
        pool.query::<()>(node, &["CLUSTER", "REPLICATE", &master.id])?;
    }
    let everyone: Vec<String> = state.view.nodes.iter().filter(|n| !n.is_failing()).map(|n| n.addr()).collect();
    wait_for(args.moves.timeout, "the new replica to sync and every node to see it as one", || {
        let link = pool.with(node, |n| n.info("replication", "master_link_status")).map_err(|e| e.to_string())?;
        if link.as_deref() != Some("up") {
            return Err(format!("master_link_status:{}", link.unwrap_or_default()));
        }
        for addr in &everyone {
            let view = pool.cluster_nodes(addr).map_err(|e| e.to_string())?;
            if view.by_id(new_id).and_then(|n| n.master_id.as_deref()) != Some(master.id.as_str()) {
                return Err(format!("{addr} does not list {} as a replica of {} yet", node, master.addr()));
            }
        }
        Ok(())
    })?;
    Ok(master)
}

/// A node the seed does not know but some member still does (a removal killed half-way, after
/// the seed forgot it): forgotten where it is still known, and reset. Nothing to do when no
/// member knows it (`missing` says why the seed did not find it).
fn forget_stale(
    pool: &mut Pool,
    state: &ClusterState,
    wanted: &str,
    missing: &ClusterError,
) -> Result<(), ClusterError> {
    let addr = normalize_addr(wanted).unwrap_or_else(|_| wanted.to_string());
    let mut stale = Vec::new();
    for (viewer, view) in &state.views {
        let hit = view.nodes.iter().find(|n| n.id == wanted || n.addr() == addr);
        if let (Some(hit), Some(at)) = (hit, state.addr_of(viewer)) {
            stale.push((at, hit.id.clone(), hit.addr()));
        }
    }
    let Some((_, id, target_addr)) = stale.first().cloned() else {
        println!("{wanted}: not a member of the cluster; nothing to remove ({missing})");
        return Ok(());
    };
    for (at, id, _) in &stale {
        forget(pool, at, id)?;
    }
    if let Err(e) = pool.query::<()>(&target_addr, &["CLUSTER", "RESET", "HARD"]) {
        eprintln!("warning: CLUSTER RESET HARD on {target_addr} failed: {e}");
    }
    println!("{} ({}): forgotten by the {} node(s) that still knew it", target_addr, short(&id), stale.len());
    Ok(())
}

/// Runs `cluster rebalance`.
///
/// # Errors
/// [`ClusterError::Refused`] when slots are uncovered or a master is failing; node errors;
/// key conflicts; timeouts.
pub fn rebalance(args: &RebalanceArgs) -> Result<(), ClusterError> {
    if !(0.0..=100.0).contains(&args.threshold) {
        return Err(ClusterError::BadArgs(format!("--threshold {} is not a percentage", args.threshold)));
    }
    let mut pool = Pool::new(Connector::new(&args.conn)?);
    let stats = balance(&mut pool, &args.seed, args.threshold, &args.moves, "rebalance")?;
    let state = wait_converged(&mut pool, &args.seed, args.moves.timeout)?;
    if stats.slots == 0 {
        println!("balanced: every master is within {}% of its share", args.threshold);
    } else {
        println!("rebalanced: moved {} slots, {} keys", stats.slots, stats.keys);
    }
    print!("{}", summary_table(&state.view, &BTreeMap::new()));
    Ok(())
}

/// Finishes interrupted migrations, then moves slots until every healthy master (empty ones
/// included) holds its share.
fn balance(pool: &mut Pool, seed: &str, threshold: f64, moves: &MoveArgs, label: &str) -> Result<Stats, ClusterError> {
    let state = finish_interrupted(pool, seed, moves)?;
    let uncovered = state.uncovered();
    if !uncovered.is_empty() {
        return Err(ClusterError::Refused(format!(
            "slots {} are not covered; fix coverage before rebalancing (see `cluster check`)",
            redisforge_cluster::nodes::fmt_ranges(&uncovered)
        )));
    }
    let planned = plan::rebalance_moves(&state.master_slots(), threshold);
    if planned.is_empty() {
        return Ok(Stats::default());
    }
    eprintln!("{label}: moving {} slots over {} masters", planned.len(), state.masters().len());
    migrate::run_moves(pool, &state, &planned, moves.opts(), label)
}

/// Refuses to work around a failing slot owner, closes slots left open by an interrupted run (if
/// any), waits until the views agree and every reachable node reports `cluster_state:ok`, and
/// returns a fresh state to plan from.
fn finish_interrupted(pool: &mut Pool, seed: &str, moves: &MoveArgs) -> Result<ClusterState, ClusterError> {
    let state = ClusterState::load(pool, seed)?;
    if let Some(bad) = state.view.masters().find(|m| m.is_failing() && !m.slots.is_empty()) {
        return Err(ClusterError::Refused(format!(
            "master {} is failing; fail over or restart it before moving slots",
            bad.addr()
        )));
    }
    let mut tolerant = state.clone();
    tolerant.unreachable.clear();
    // A node that just joined reports cluster_state:fail until it has learnt the slot map, and
    // refuses MIGRATE's RESTORE meanwhile: plan and move only once everyone agrees.
    if tolerant.settled().is_ok() {
        return Ok(state);
    }
    if !state.open_slots().is_empty() {
        eprintln!("found {} open slot mark(s) from an interrupted run; finishing them first", state.open_slots().len());
        migrate::close_open_slots(pool, &state, moves.opts())?;
    }
    wait_converged(pool, seed, moves.timeout.max(Duration::from_secs(1)))
}

/// [`ClusterState::find`], with `host:port` given by name resolved first.
fn find_node<'a>(state: &'a ClusterState, what: &str) -> Result<&'a redisforge_cluster::nodes::NodeLine, ClusterError> {
    match state.find(what) {
        Err(e) if what.contains(':') => normalize_addr(what).map_or(Err(e), |addr| state.find(&addr)),
        found => found,
    }
}

/// `CLUSTER FORGET id` on `addr`; "unknown node" means already forgotten.
fn forget(pool: &mut Pool, addr: &str, id: &str) -> Result<(), ClusterError> {
    match pool.query::<()>(addr, &["CLUSTER", "FORGET", id]) {
        Ok(()) => Ok(()),
        Err(e) if e.reply_text().is_some_and(|t| t.contains("Unknown node")) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
