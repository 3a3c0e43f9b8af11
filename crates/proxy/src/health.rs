//! The cluster health poller: asks every node of the current topology for `INFO replication` on a
//! short-lived connection, and turns the answers into `node_up`, `replication_lag_bytes`,
//! `cluster_slots_covered`, `cluster_state_ok` and what `/readyz` reports.
//!
//! Polling uses its own connections ([`connect::query`]), never a client pipeline, so a slow or dead
//! node delays the poll, not a request. Parsing and the health decision are pure functions.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use redis_protocol::resp2::types::OwnedFrame;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::MissedTickBehavior;

use crate::metrics::Metrics;
use crate::metrics::http::Health;
use crate::slot::SLOT_COUNT;
use crate::topology::{Role, Topology};
use crate::upstream::connect;

/// Shortest poll interval accepted; a zero interval would spin.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// What a node's `INFO replication` section says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicationInfo {
    /// `role:` (`master` or `slave`); `None` when absent or unknown.
    pub role: Option<Role>,
    /// `master_repl_offset:`: how far the node's replication stream goes.
    pub master_repl_offset: Option<i64>,
    /// `slave_repl_offset:` (replicas): how much of its master's stream the replica has applied.
    pub slave_repl_offset: Option<i64>,
    /// `master_link_status:` (replicas): `up` or not.
    pub master_link_up: Option<bool>,
    /// `master_host:master_port` (replicas).
    pub master_addr: Option<String>,
    /// `slaveN:ip=…,port=…,state=…,offset=…` lines (masters).
    pub replicas: Vec<ReplicaOffset>,
    /// `redis_version:` (from `INFO server`), for the version the proxy reports.
    pub redis_version: Option<String>,
    /// Valkey's `valkey_version:` and whether it shows `redis_mode` (Valkey 8 reports
    /// `redis_version:7.2.4`), for the replies that follow Valkey's own versions.
    pub valkey: Option<crate::Valkey>,
}

/// One `slaveN:` line of a master: a connected replica and the offset it acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaOffset {
    /// `ip:port` as the master sees it.
    pub addr: String,
    /// `online`, `wait_bgsave`, `send_bulk`, …
    pub state: String,
    pub offset: i64,
}

/// Parses the text of `INFO replication` (or of a whole `INFO`; other sections are ignored).
/// Unknown and malformed lines are skipped: a newer server may add fields.
pub fn parse_info_replication(text: &str) -> ReplicationInfo {
    let mut info = ReplicationInfo::default();
    let mut master_host = None;
    let mut master_port = None;
    let (mut valkey_version, mut redis_mode) = (None, false);
    for line in text.lines() {
        let Some((key, value)) = line.trim_end().split_once(':') else {
            continue;
        };
        match key {
            "role" => {
                info.role = match value {
                    "master" => Some(Role::Master),
                    "slave" | "replica" => Some(Role::Replica),
                    _ => None,
                }
            }
            "master_repl_offset" => info.master_repl_offset = value.parse().ok(),
            "slave_repl_offset" => info.slave_repl_offset = value.parse().ok(),
            "master_link_status" => info.master_link_up = Some(value == "up"),
            "master_host" => master_host = Some(value),
            "master_port" => master_port = Some(value),
            "redis_version" => info.redis_version = Some(value.to_string()),
            "valkey_version" => valkey_version = Some(value.to_string()),
            "redis_mode" => redis_mode = true,
            _ if is_replica_line(key) => info.replicas.extend(parse_replica_line(value)),
            _ => {}
        }
    }
    if let (Some(host), Some(port)) = (master_host, master_port) {
        info.master_addr = Some(join_host_port(host, port));
    }
    info.valkey = valkey_version.map(|version| crate::Valkey { version, redis_compat: redis_mode });
    info
}

/// `slave0`, `slave1`, …
fn is_replica_line(key: &str) -> bool {
    key.strip_prefix("slave").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// `ip=127.0.0.1,port=6380,state=online,offset=77,lag=0`.
fn parse_replica_line(value: &str) -> Option<ReplicaOffset> {
    let mut ip = None;
    let mut port = None;
    let mut state = None;
    let mut offset = None;
    for field in value.split(',') {
        match field.split_once('=') {
            Some(("ip", v)) => ip = Some(v),
            Some(("port", v)) => port = Some(v),
            Some(("state", v)) => state = Some(v),
            Some(("offset", v)) => offset = v.parse().ok(),
            _ => {}
        }
    }
    Some(ReplicaOffset {
        addr: join_host_port(ip?, port?),
        state: state.unwrap_or_default().to_string(),
        offset: offset?,
    })
}

fn join_host_port(host: &str, port: &str) -> String {
    if host.contains(':') && !host.starts_with('[') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// Bytes of stream `replica_addr` is behind its master: the master's `master_repl_offset` minus the
/// replica's own `slave_repl_offset`, or, when the replica did not say, minus the offset the master
/// lists for it. `None` when either side is unknown. Never negative: the two answers are read at
/// slightly different moments, and a replica cannot really be ahead.
pub fn replication_lag(master: &ReplicationInfo, replica_addr: &str, replica: Option<&ReplicationInfo>) -> Option<i64> {
    let head = master.master_repl_offset?;
    let applied = replica
        .filter(|r| r.role == Some(Role::Replica))
        .and_then(|r| r.slave_repl_offset)
        .or_else(|| master.replicas.iter().find(|r| r.addr == replica_addr).map(|r| r.offset))?;
    Some((head - applied).max(0))
}

/// A shard as the poller needs it: addresses only, taken from one topology snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardNodes {
    pub master: String,
    pub replicas: Vec<String>,
}

/// The outcome of asking one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// No answer: unreachable, login refused, or timed out.
    Down,
    /// The node answered; with the parsed section when the reply was one (not an error reply).
    Up(Option<ReplicationInfo>),
}

/// What one poll concluded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assessment {
    /// Every node: address, role in the topology, and whether it answered.
    pub nodes: Vec<(String, Role, bool)>,
    /// Every replica with its lag (`None`: unknown).
    pub lags: Vec<(String, Option<i64>)>,
    /// Masters that did not answer.
    pub masters_down: Vec<String>,
    /// Nodes whose own role (INFO replication) is not the map's: a manual failover swapped a
    /// master and its replica, and the map must follow.
    pub roles_changed: Vec<String>,
}

/// Decides node health and replica lag from the probes; a node without a probe counts as down.
pub fn assess(shards: &[ShardNodes], probes: &HashMap<String, Probe>) -> Assessment {
    let info = |addr: &str| match probes.get(addr) {
        Some(Probe::Up(info)) => (true, info.as_ref()),
        Some(Probe::Down) | None => (false, None),
    };
    let mut out = Assessment::default();
    for shard in shards {
        let (master_up, master_info) = info(&shard.master);
        out.nodes.push((shard.master.clone(), Role::Master, master_up));
        if master_info.is_some_and(|i| i.role == Some(Role::Replica)) {
            out.roles_changed.push(shard.master.clone());
        }
        if !master_up {
            out.masters_down.push(shard.master.clone());
        }
        for replica in &shard.replicas {
            let (up, replica_info) = info(replica);
            out.nodes.push((replica.clone(), Role::Replica, up));
            if replica_info.is_some_and(|i| i.role == Some(Role::Master)) {
                out.roles_changed.push(replica.clone());
            }
            let lag = master_info.and_then(|m| replication_lag(m, replica, replica_info.filter(|_| up)));
            out.lags.push((replica.clone(), lag));
        }
    }
    out
}

/// Polls every `interval`, and at once whenever the topology swaps in a new map, until the process
/// ends. The first poll runs immediately.
pub fn spawn_health_poller(metrics: Arc<Metrics>, topology: Arc<Topology>, interval: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut changes = topology.subscribe();
        let mut ticker = tokio::time::interval(interval.max(MIN_INTERVAL));
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut known = HashSet::new();
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
            known = poll_once(&metrics, &topology, known).await;
        }
    })
}

/// Runs one poll and updates the metrics; returns the nodes polled, to pass to the next call, so
/// that nodes gone from the topology lose their series (`previous` = the last call's result).
pub async fn poll_once(metrics: &Metrics, topology: &Topology, previous: HashSet<String>) -> HashSet<String> {
    let (shards, covered) = {
        let routing = topology.routing();
        let shards: Vec<ShardNodes> = routing
            .map
            .shards()
            .iter()
            .map(|s| ShardNodes {
                master: s.master.addr.clone(),
                replicas: s.replicas.iter().map(|r| r.addr.clone()).collect(),
            })
            .collect();
        (shards, routing.map.covered_slots())
    };
    let settings = Arc::new(topology.upstreams().settings().clone());
    let mut queries = JoinSet::new();
    for addr in shards.iter().flat_map(|s| std::iter::once(&s.master).chain(&s.replicas)) {
        let addr = addr.clone();
        let settings = Arc::clone(&settings);
        queries.spawn(async move {
            let probe = match connect::query(&addr, &settings, &[b"INFO", b"server", b"replication"]).await {
                Ok(OwnedFrame::BulkString(text)) => {
                    Probe::Up(Some(parse_info_replication(&String::from_utf8_lossy(&text))))
                }
                Ok(other) => {
                    tracing::debug!(node = %addr, reply = ?other, "health poll: INFO replication refused");
                    Probe::Up(None)
                }
                Err(error) => {
                    tracing::debug!(node = %addr, %error, "health poll: node did not answer");
                    Probe::Down
                }
            };
            (addr, probe)
        });
    }
    let mut probes = HashMap::new();
    while let Some(joined) = queries.join_next().await {
        // A panicked query task leaves its node without a probe: it counts as down.
        if let Ok((addr, probe)) = joined {
            probes.insert(addr, probe);
        }
    }
    // Clients see the oldest server behind the proxy: a command or option that version lacks could
    // fail on some node.
    let infos: Vec<&ReplicationInfo> = probes
        .values()
        .filter_map(|p| match p {
            Probe::Up(Some(info)) => Some(info),
            _ => None,
        })
        .collect();
    let lowest = infos.iter().filter_map(|i| i.redis_version.as_deref()).min_by_key(|v| crate::version_key(v));
    // Valkey's own identity only when every node is Valkey: a Redis node among them has none.
    let valkey = match infos.iter().all(|i| i.valkey.is_some()) {
        true => infos.iter().filter_map(|i| i.valkey.as_ref()).min_by_key(|v| crate::version_key(&v.version)),
        false => None,
    };
    if let Some(lowest) = lowest {
        topology.set_lowest_node_version(lowest, valkey);
    }
    let assessment = assess(&shards, &probes);
    apply(metrics, &assessment, covered);
    if !assessment.roles_changed.is_empty() {
        // Debug only: a map that changes is logged with its trigger, and a failed master the map
        // keeps as a replica may answer as a master of no cluster at every poll while apart.
        tracing::debug!(nodes = ?assessment.roles_changed, "a node's role is not the slot map's: refreshing the map");
        topology.request_refresh(crate::topology::Trigger::RoleChange);
    }
    let current: HashSet<String> = assessment.nodes.iter().map(|(addr, _, _)| addr.clone()).collect();
    for gone in previous.difference(&current) {
        metrics.forget_node(gone);
    }
    current
}

/// Writes one poll's conclusions into the metrics and the state `/readyz` reads.
fn apply(metrics: &Metrics, assessment: &Assessment, covered: usize) {
    for (addr, role, up) in &assessment.nodes {
        metrics.set_node_up(addr, role.as_str(), *up);
        if *role == Role::Master {
            metrics.clear_replication_lag(addr);
        }
    }
    for (addr, lag) in &assessment.lags {
        match lag {
            Some(bytes) => metrics.set_replication_lag(addr, *bytes),
            None => metrics.clear_replication_lag(addr),
        }
    }
    let complete = covered == usize::from(SLOT_COUNT);
    metrics.cluster_slots_covered.set(i64::try_from(covered).unwrap_or(i64::MAX));
    metrics.cluster_state_ok.set(i64::from(complete && assessment.masters_down.is_empty()));
    if let Ok(mut poll) = metrics.poll.lock() {
        poll.polled = true;
        poll.down = assessment.nodes.iter().filter(|(_, _, up)| !up).map(|(addr, _, _)| addr.clone()).collect();
    }
    for master in &assessment.masters_down {
        tracing::warn!(node = %master, "health poll: master did not answer");
    }
}

/// What `/readyz` reports: ready once the topology is loaded, all 16384 slots are covered, and no
/// master of the current map failed the last health poll (a master the poll has not seen yet, e.g.
/// just promoted, counts as reachable: the topology just learned of it from a node that answered).
pub fn readiness(metrics: &Metrics, topology: &Topology) -> Health {
    let routing = topology.routing();
    if routing.generation == 0 {
        return Health::NotReady("topology not loaded yet".to_string());
    }
    let covered = routing.map.covered_slots();
    if covered < usize::from(SLOT_COUNT) {
        return Health::NotReady(format!("{covered} of {SLOT_COUNT} slots covered"));
    }
    let Ok(poll) = metrics.poll.lock() else {
        return Health::NotReady("health state unavailable".to_string());
    };
    if !poll.polled {
        return Health::NotReady("node health not checked yet".to_string());
    }
    match routing.masters().iter().find(|m| poll.down.contains(m.addr())) {
        Some(master) => Health::NotReady(format!("master {} unreachable", master.addr())),
        None => Health::Ready,
    }
}

#[cfg(test)]
mod tests;
