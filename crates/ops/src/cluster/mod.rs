//! `cluster create|check|add|remove|rebalance`: build, inspect and reshape a Redis Cluster.
//!
//! # Layout
//! - [`view`]: `CLUSTER NODES` parsed into typed lines (pure).
//! - [`plan`]: even slot split, replica placement by zone, rebalance and drain moves (pure).
//! - [`node`]: connection options (`--user`, `--pass-env`, `--tls`, `--ca`), one connection per node.
//! - [`state`]: every node's view collected from a seed, and the comparisons on it.
//! - [`migrate`]: the slot-migration engine, including closing slots an interrupted run left open.
//! - [`create`], [`check`], [`reshard`] (`add`, `remove`, `rebalance`): the verbs.
//!
//! Every wait is bounded by the verb's `--timeout`; every command has a 10 s I/O timeout.

pub mod check;
pub mod create;
pub mod migrate;
pub mod node;
pub mod plan;
pub mod reshard;
pub mod state;

use std::collections::BTreeMap;
use std::net::{IpAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

pub use node::NodeError;
use plan::PlanError;
use redisforge_cluster::nodes::{View, fmt_ranges};
use state::{ClusterState, short};

/// `redisforge-ops cluster …`
#[derive(Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// Build a cluster from empty nodes: even slots, replicas in other zones, wait for state ok.
    Create(create::CreateArgs),
    /// Report coverage, open slots, replicas, zones, view agreement, epochs and failures.
    Check(check::CheckArgs),
    /// Join an empty node as a master (and rebalance onto it) or as a replica.
    Add(reshard::AddArgs),
    /// Drain a master's slots to the others, then forget the node everywhere and reset it.
    Remove(reshard::RemoveArgs),
    /// Move slots so that every master holds about 16384 / masters.
    Rebalance(reshard::RebalanceArgs),
}

/// Runs one `cluster` verb.
///
/// # Errors
/// See [`ClusterError`]; [`ClusterError::Unhealthy`] is `check`'s "not healthy" verdict.
pub fn run(command: &ClusterCommand) -> Result<(), ClusterError> {
    match command {
        ClusterCommand::Create(args) => create::run(args),
        ClusterCommand::Check(args) => check::run(args),
        ClusterCommand::Add(args) => reshard::add(args),
        ClusterCommand::Remove(args) => reshard::remove(args),
        ClusterCommand::Rebalance(args) => reshard::rebalance(args),
    }
}

/// Why a cluster verb failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    // --- The user's request. ---
    /// The node list or `--zone` flags do not make a valid layout.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A `--zone` that names no node of the command line, or a node given twice.
    #[error("{0}")]
    BadArgs(String),
    /// A node id, prefix or address that matches no node (or several).
    #[error("{node}: {why}")]
    UnknownNode {
        /// What was asked for.
        node: String,
        /// Why it did not resolve.
        why: String,
    },
    /// Nodes that must be empty are not.
    #[error("refusing to touch nodes that are not empty: {}; pass --force to use them anyway", .0.join("; "))]
    NotEmpty(Vec<String>),
    /// The cluster is in a state the verb will not act on.
    #[error("{0}")]
    Refused(String),

    // --- The cluster. ---
    /// A slot left open that no rule closes safely.
    #[error("slot {slot} is open: {why}")]
    OpenSlot {
        /// The slot.
        slot: u16,
        /// What is wrong and what to do.
        why: String,
    },
    /// A key exists on both sides of a migration with different values.
    #[error(
        "key {key:?} of slot {slot} exists on both {src} and {dst} with different values; keep the right copy \
         (DEL the other) and re-run"
    )]
    KeyConflict {
        /// The key (lossy UTF-8).
        key: String,
        /// Its slot.
        slot: u16,
        /// Source node.
        src: String,
        /// Target node.
        dst: String,
    },
    /// A wait ran out of time.
    #[error("timed out after {timeout:?} waiting for {what}: {last}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The bound.
        timeout: Duration,
        /// What was still wrong at the end.
        last: String,
    },
    /// `check` found problems (already printed).
    #[error("cluster check found {0} problem(s)")]
    Unhealthy(usize),

    // --- A node. ---
    /// Connecting to or talking to a node failed.
    #[error(transparent)]
    Node(#[from] NodeError),
}

/// Knobs shared by the verbs that move slots.
#[derive(Debug, Clone, clap::Args)]
pub struct MoveArgs {
    /// Keys per MIGRATE.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch: u32,
    /// Upper bound on each wait for the cluster to settle (e.g. 60s, 2m).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
}

impl MoveArgs {
    /// Engine options.
    pub fn opts(&self) -> migrate::MoveOpts {
        migrate::MoveOpts { batch: usize::try_from(self.batch).unwrap_or(100) }
    }
}

/// Parses `60s`, `250ms`, `2m` or a bare number of seconds.
///
/// # Errors
/// A message for clap.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (num, unit) = text.find(|c: char| !c.is_ascii_digit()).map_or((text, ""), |i| text.split_at(i));
    let n: u64 = num.parse().map_err(|_| format!("{text:?} is not a duration like 60s or 250ms"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("{text:?}: unknown unit {unit:?} (use ms, s or m)")),
    }
}

/// Parses `NODE=ZONE`.
///
/// # Errors
/// A message for clap.
pub fn parse_zone(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((node, zone)) if !node.is_empty() && !zone.is_empty() => Ok((node.to_owned(), zone.to_owned())),
        _ => Err(format!("{text:?} is not NODE=ZONE")),
    }
}

/// Polls `probe` every 200 ms until it returns `Ok`, at most `timeout` (and a matching number of
/// rounds, so a clock jump cannot make it spin forever).
///
/// # Errors
/// [`ClusterError::Timeout`] with the last `Err` text.
pub fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<T, String>,
) -> Result<T, ClusterError> {
    let step = Duration::from_millis(200);
    let deadline = Instant::now() + timeout;
    let rounds = timeout.as_millis() / step.as_millis() + 2;
    let mut last = String::from("not checked");
    for _ in 0..rounds {
        match probe() {
            Ok(v) => return Ok(v),
            Err(why) => last = why,
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(step);
    }
    Err(ClusterError::Timeout { what: what.to_owned(), timeout, last })
}

/// Waits until every reachable node reports `cluster_state:ok`, the views agree, no slot is open
/// and all slots are covered (unreachable nodes are tolerated; `check` reports them).
///
/// # Errors
/// [`ClusterError::Timeout`].
pub fn wait_converged(pool: &mut node::Pool, seed: &str, timeout: Duration) -> Result<ClusterState, ClusterError> {
    wait_for(timeout, "the cluster to agree on the new slot map", || {
        let state = ClusterState::load(pool, seed).map_err(|e| e.to_string())?;
        let mut tolerant = state.clone();
        tolerant.unreachable.clear();
        tolerant.settled().map(|()| state)
    })
}

/// The IP address `CLUSTER MEET` needs for `host` (it takes no names).
///
/// # Errors
/// [`ClusterError::BadArgs`] when the name does not resolve.
pub fn resolve_ip(host: &str) -> Result<String, ClusterError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ip.to_string());
    }
    (host, 0)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .map(|a| a.ip().to_string())
        .ok_or_else(|| ClusterError::BadArgs(format!("{host} does not resolve to an IP address")))
}

/// `host:port` with the host resolved to the IP address the cluster reports in `CLUSTER NODES`
/// (`[v6]:port` for IPv6), so that nodes given by name match the cluster's own view.
///
/// # Errors
/// [`ClusterError::Node`] for a malformed address, [`ClusterError::BadArgs`] for a name that does
/// not resolve.
pub fn normalize_addr(addr: &str) -> Result<String, ClusterError> {
    let (host, port) = node::split_addr(addr)?;
    let ip = resolve_ip(&host)?;
    Ok(if ip.contains(':') { format!("[{ip}]:{port}") } else { format!("{ip}:{port}") })
}

/// Zones from `--zone NODE=ZONE` flags, by normalized address (see [`normalize_addr`]).
///
/// # Errors
/// As [`normalize_addr`].
pub fn zone_map(zones: &[(String, String)]) -> Result<BTreeMap<String, String>, ClusterError> {
    zones.iter().map(|(node, zone)| Ok((normalize_addr(node)?, zone.clone()))).collect()
}

/// A table of masters with their slots, replicas and zones, for `create`, `check` and the
/// reshaping verbs.
pub fn summary_table(view: &View, zones: &BTreeMap<String, String>) -> String {
    let zone = |addr: &str| zones.get(addr).map_or("-".to_owned(), Clone::clone);
    let mut rows =
        vec![["MASTER".to_owned(), "ID".into(), "ZONE".into(), "SLOTS".into(), "RANGES".into(), "REPLICAS".into()]];
    let mut masters: Vec<_> = view.masters().collect();
    masters.sort_by_key(|m| (m.slots.first().map_or(u16::MAX, |r| r.0), m.addr()));
    for m in masters {
        let addr = m.addr();
        let replicas: Vec<String> = view
            .replicas_of(&m.id)
            .map(|r| {
                let health = if r.is_failing() { " FAILING" } else { "" };
                format!("{} ({}){health}", r.addr(), zone(&r.addr()))
            })
            .collect();
        let health = if m.is_failing() { " FAILING" } else { "" };
        rows.push([
            format!("{addr}{health}"),
            short(&m.id).to_owned(),
            zone(&addr),
            m.slot_count().to_string(),
            fmt_ranges(&m.slots),
            if replicas.is_empty() { "-".into() } else { replicas.join(", ") },
        ]);
    }
    let widths: Vec<usize> = (0..6).map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_zones_parse() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("1h").is_err() && parse_duration("s").is_err());
        assert_eq!(parse_zone("127.0.0.1:7000=eu-1a"), Ok(("127.0.0.1:7000".into(), "eu-1a".into())));
        assert!(parse_zone("127.0.0.1:7000").is_err() && parse_zone("=a").is_err());
        assert_eq!(normalize_addr("localhost:7000").unwrap(), "127.0.0.1:7000");
        assert_eq!(normalize_addr("[::1]:7000").unwrap(), "[::1]:7000");
    }

    #[test]
    fn waits_are_bounded() {
        let start = Instant::now();
        let mut calls = 0;
        let err = wait_for::<()>(Duration::from_millis(500), "nothing", || {
            calls += 1;
            Err(format!("try {calls}"))
        })
        .unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(2));
        assert!(calls <= 5, "{calls}");
        assert!(err.to_string().contains("waiting for nothing") && err.to_string().contains("try"), "{err}");
    }

    #[test]
    fn summary_lists_masters_with_their_replicas_and_zones() {
        let view = View::parse(
            "aaaaaaaa11 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-8191\n\
             bbbbbbbb22 127.0.0.1:7001@17001 master - 0 0 2 connected 8192-16383\n\
             cccccccc33 127.0.0.1:7002@17002 slave aaaaaaaa11 0 0 1 connected\n",
        )
        .unwrap();
        let zones = zone_map(&[("127.0.0.1:7000".into(), "a".into()), ("127.0.0.1:7002".into(), "b".into())]).unwrap();
        let table = summary_table(&view, &zones);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("MASTER"), "{table}");
        assert!(
            lines[1].contains("127.0.0.1:7000")
                && lines[1].contains("0-8191")
                && lines[1].contains("127.0.0.1:7002 (b)")
        );
        assert!(lines[2].contains("127.0.0.1:7001") && lines[2].trim_end().ends_with('-'), "{table}");
    }
}
