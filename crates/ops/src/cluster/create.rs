//! `cluster create NODE... [--replicas N] [--zone NODE=ZONE ...] [--force] [--timeout 60s]`.
//!
//! The first `M = nodes / (1 + N)` nodes become masters and get the 16384 slots in contiguous,
//! even ranges (`CLUSTER ADDSLOTSRANGE`); the first node `CLUSTER MEET`s the others; once every node
//! knows every other, each remaining node `CLUSTER REPLICATE`s a master chosen by
//! [`plan::place_replicas`]: in another zone (hard rule when `--zone` is given), else on another
//! host where possible. Then it waits (bounded by `--timeout`) for `cluster_state:ok` on every node,
//! agreeing views and every replica's link up, and prints the layout.
//!
//! # Idempotent
//! Nodes must be empty (no keys, no slots, knowing no other node). When they already form a
//! cluster of exactly these nodes, with all slots covered and the requested shape, it prints
//! "already created" and exits 0. `--force` skips the emptiness checks: keys are kept, slots a
//! master already owns are not added again (which also lets a killed `create` be finished).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::node::{ConnArgs, Connector, Pool, split_addr};
use super::plan::{self, Member};
use super::state::ClusterState;
use super::{ClusterError, normalize_addr, parse_duration, parse_zone, resolve_ip, summary_table, wait_for, zone_map};
use redisforge_cluster::nodes::{NodeLine, View, to_ranges};
use redisforge_cluster::slot::SLOT_COUNT;

/// `redisforge-ops cluster create`.
#[derive(Debug, Clone, clap::Args)]
pub struct CreateArgs {
    /// The nodes, `host:port`; the first ones become masters.
    #[arg(required = true, value_name = "NODE")]
    pub nodes: Vec<String>,
    /// Replicas per master.
    #[arg(long, default_value_t = 0)]
    pub replicas: usize,
    /// Failure zone of a node, `host:port=zone` (repeat for each node; all or none).
    #[arg(long = "zone", value_name = "NODE=ZONE", value_parser = parse_zone)]
    pub zones: Vec<(String, String)>,
    /// Use nodes that hold keys, slots or know other nodes.
    #[arg(long)]
    pub force: bool,
    /// Upper bound on each wait (nodes meeting, state ok).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// What each node looks like before we start.
struct Probe {
    addr: String,
    view: View,
    keys: i64,
}

impl Probe {
    fn me(&self) -> Result<&NodeLine, ClusterError> {
        self.view
            .myself()
            .ok_or_else(|| ClusterError::Refused(format!("{}: CLUSTER NODES has no myself line", self.addr)))
    }
}

/// Runs `cluster create`.
///
/// # Errors
/// Layout errors before anything is touched ([`ClusterError::Plan`], [`ClusterError::BadArgs`]),
/// [`ClusterError::NotEmpty`], node errors, [`ClusterError::Timeout`].
pub fn run(args: &CreateArgs) -> Result<(), ClusterError> {
    // Addresses as CLUSTER NODES shows them, so that names and IPs compare equal.
    let nodes = &args.nodes.iter().map(|n| normalize_addr(n)).collect::<Result<Vec<_>, _>>()?;
    let (zones, masters, placement) = layout(args, nodes)?;
    let mut pool = Pool::new(Connector::new(&args.conn)?);
    let mut probes = Vec::with_capacity(nodes.len());
    for addr in nodes {
        let view = pool.cluster_nodes(addr)?;
        let keys: i64 = pool.query(addr, &["DBSIZE"])?;
        probes.push(Probe { addr: addr.clone(), view, keys });
    }
    if already_created(&probes, masters, args.replicas, &zones) {
        let state = wait_settled(&mut pool, nodes, masters, args.timeout)?;
        println!("already created: {} nodes, {masters} masters, {} replica(s) each", nodes.len(), args.replicas);
        print!("{}", summary_table(&state.view, &zones));
        return Ok(());
    }
    let dirty = dirt(&probes)?;
    if !dirty.is_empty() && !args.force {
        return Err(ClusterError::NotEmpty(dirty));
    }
    assign_slots(&mut pool, &probes, masters)?;
    meet(&mut pool, &probes, nodes, args.timeout)?;
    let first = &nodes[0];
    let view = pool.cluster_nodes(first)?;
    let id_of = |addr: &str| view.by_addr(addr).map(|n| n.id.clone());
    for (r, &m) in placement.iter().enumerate() {
        let replica = &nodes[masters + r];
        let master_id = id_of(&nodes[m])
            .ok_or_else(|| ClusterError::Refused(format!("{first} does not list master {}", nodes[m])))?;
        if view.by_addr(replica).and_then(|n| n.master_id.as_deref()) == Some(master_id.as_str()) {
            continue;
        }
        pool.query::<()>(replica, &["CLUSTER", "REPLICATE", &master_id])?;
    }
    let state = wait_settled(&mut pool, nodes, masters, args.timeout)?;
    println!("created: {} nodes, {masters} masters, {} replica(s) each", nodes.len(), args.replicas);
    print!("{}", summary_table(&state.view, &zones));
    Ok(())
}

/// The requested layout: each node's zone, the number of masters, and which master each replica
/// follows (`placement[r]`: the master of replica `r`).
type Layout = (BTreeMap<String, String>, usize, Vec<usize>);

/// Checks the requested layout before anything is touched.
fn layout(args: &CreateArgs, nodes: &[String]) -> Result<Layout, ClusterError> {
    let unique: BTreeSet<&String> = nodes.iter().collect();
    if unique.len() != nodes.len() {
        return Err(ClusterError::BadArgs("a node is listed twice".into()));
    }
    let zones = zone_map(&args.zones)?;
    if let Some(stray) = zones.keys().find(|z| !nodes.contains(z)) {
        return Err(ClusterError::BadArgs(format!("--zone {stray}=…: {stray} is not one of the nodes")));
    }
    let masters = nodes.len() / (1 + args.replicas);
    if masters == 0 || !nodes.len().is_multiple_of(1 + args.replicas) {
        return Err(plan::PlanError::Shape { nodes: nodes.len(), replicas: args.replicas }.into());
    }
    let members = nodes
        .iter()
        .map(|n| Ok(Member { host: split_addr(n)?.0, zone: zones.get(n).cloned() }))
        .collect::<Result<Vec<_>, ClusterError>>()?;
    let placement = plan::place_replicas(&members[..masters], &members[masters..], args.replicas)?;
    Ok((zones, masters, placement))
}

/// Why the nodes are not fresh: keys, slots, or other nodes they know (empty when fresh).
fn dirt(probes: &[Probe]) -> Result<Vec<String>, ClusterError> {
    let mut dirty = Vec::new();
    for p in probes {
        let me = p.me()?;
        if p.keys > 0 {
            dirty.push(format!("{} holds {} keys", p.addr, p.keys));
        }
        if !me.slots.is_empty() {
            dirty.push(format!("{} owns {} slots", p.addr, me.slot_count()));
        }
        if p.view.nodes.len() > 1 {
            dirty.push(format!("{} knows {} other nodes", p.addr, p.view.nodes.len() - 1));
        }
    }
    Ok(dirty)
}

/// Gives each of the first `masters` nodes an even share of the slots (what it lacks of it), with
/// distinct config epochs up front: no collision-resolution round after MEET.
fn assign_slots(pool: &mut Pool, probes: &[Probe], masters: usize) -> Result<(), ClusterError> {
    for (i, p) in probes.iter().enumerate() {
        if p.view.nodes.len() == 1 && p.me()?.config_epoch == 0 {
            let epoch = (i + 1).to_string();
            if let Err(e) = pool.query::<()>(&p.addr, &["CLUSTER", "SET-CONFIG-EPOCH", &epoch]) {
                eprintln!("warning: {e}");
            }
        }
    }
    let ranges = plan::even_ranges(masters);
    for (p, &(first, last)) in probes.iter().zip(&ranges) {
        let owned: BTreeSet<u16> = p.me()?.slot_list().into_iter().collect();
        for (a, b) in to_ranges((first..=last).filter(|s| !owned.contains(s))) {
            add_slots(pool, &p.addr, a, b)?;
        }
    }
    eprintln!("create: assigned {SLOT_COUNT} slots to {masters} masters");
    Ok(())
}

/// Introduces every node to the first, and waits until every node knows every other.
fn meet(pool: &mut Pool, probes: &[Probe], nodes: &[String], timeout: Duration) -> Result<(), ClusterError> {
    let first = &nodes[0];
    for p in &probes[1..] {
        if probes[0].view.by_addr(&p.addr).is_some_and(|n| !n.flags.handshake) {
            continue;
        }
        let (host, port) = split_addr(&p.addr)?;
        let bus = p.me()?.bus_port.to_string();
        pool.query::<()>(first, &["CLUSTER", "MEET", &resolve_ip(&host)?, &port.to_string(), &bus])?;
    }
    wait_for(timeout, "every node to know every other", || {
        for addr in nodes {
            let view = pool.cluster_nodes(addr).map_err(|e| e.to_string())?;
            for other in nodes {
                match view.by_addr(other) {
                    Some(n) if !n.flags.handshake => {}
                    _ => return Err(format!("{addr} does not know {other} yet")),
                }
            }
        }
        Ok(())
    })?;
    eprintln!("create: all {} nodes met", nodes.len());
    Ok(())
}

/// The nodes already form exactly this cluster: the same members, all slots covered, `masters`
/// slot-owning masters with `replicas` replicas each, and replicas outside their master's zone.
fn already_created(probes: &[Probe], masters: usize, replicas: usize, zones: &BTreeMap<String, String>) -> bool {
    let Some(view) = probes.first().map(|p| &p.view) else { return false };
    let given: BTreeSet<String> = probes.iter().map(|p| p.addr.clone()).collect();
    let known: BTreeSet<String> = view.nodes.iter().map(NodeLine::addr).collect();
    if given != known || view.covered() != usize::from(SLOT_COUNT) {
        return false;
    }
    let owners: Vec<&NodeLine> = view.masters().filter(|m| !m.slots.is_empty()).collect();
    owners.len() == masters
        && owners.iter().all(|m| {
            let reps: Vec<&NodeLine> = view.replicas_of(&m.id).collect();
            reps.len() == replicas
                && reps.iter().all(|r| zones.get(&r.addr()).is_none() || zones.get(&r.addr()) != zones.get(&m.addr()))
        })
}

/// `CLUSTER ADDSLOTSRANGE first last`, or `ADDSLOTS` one by one on servers before Redis 7.
fn add_slots(pool: &mut Pool, addr: &str, first: u16, last: u16) -> Result<(), ClusterError> {
    let (a, b) = (first.to_string(), last.to_string());
    match pool.query::<()>(addr, &["CLUSTER", "ADDSLOTSRANGE", &a, &b]) {
        Ok(()) => Ok(()),
        Err(e) if e.reply_text().is_some_and(|t| t.to_ascii_lowercase().contains("unknown subcommand")) => {
            let slots: Vec<String> = (first..=last).map(|s| s.to_string()).collect();
            let mut args = vec!["CLUSTER", "ADDSLOTS"];
            args.extend(slots.iter().map(String::as_str));
            pool.with(addr, |n| n.query_as::<(), _>("CLUSTER ADDSLOTS", &args))?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Waits until the cluster seen from the first node is settled (see [`ClusterState::settled`]),
/// lists every node beyond the first `masters` as a replica, and every replica has its replication
/// link up.
fn wait_settled(
    pool: &mut Pool,
    nodes: &[String],
    masters: usize,
    timeout: Duration,
) -> Result<ClusterState, ClusterError> {
    wait_for(timeout, "cluster_state:ok on every node with every replica in sync", || {
        let state = ClusterState::load(pool, &nodes[0]).map_err(|e| e.to_string())?;
        state.settled()?;
        let replicas = state.view.nodes.iter().filter(|n| n.flags.replica).count();
        if replicas != nodes.len() - masters {
            return Err(format!("{} lists {replicas} replicas, expected {}", nodes[0], nodes.len() - masters));
        }
        for n in state.view.nodes.iter().filter(|n| n.flags.replica) {
            let addr = n.addr();
            let link = pool.with(&addr, |c| c.info("replication", "master_link_status")).map_err(|e| e.to_string())?;
            if link.as_deref() != Some("up") {
                return Err(format!("replica {addr} link is {}", link.unwrap_or_else(|| "unknown".into())));
            }
        }
        Ok(state)
    })
}
