//! Prometheus metrics: every handle resolved once, so that counting on the data path is an atomic
//! add with no lock, no lookup and no allocation.
//!
//! [`Metrics`] owns the registry and the handles. The per-command series, added to on every reply,
//! are counted per thread by label index and summed when scraped ([`commands`]); per-node handles
//! are resolved when a node's pool is created ([`Metrics::node`]). [`http`] serves `/metrics`, `/healthz` and `/readyz`;
//! [`crate::health`] polls the nodes for `node_up`, replication lag and slot coverage.
//!
//! The exported names are part of the external contract (SPEC "Metrics"): rename nothing.

mod commands;
pub mod http;
pub mod labels;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use prometheus::core::Collector;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::upstream::UpstreamError;
use commands::CommandSeries;

/// Prefix of every exported name.
pub const PREFIX: &str = "redisforge_";

/// Buckets of `command_duration_seconds`: 50µs (a local `PING`) to 2s (the default command timeout).
pub const DURATION_BUCKETS: &[f64] =
    &[0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0];

/// Values of the `kind` label of `upstream_errors_total`.
pub const UPSTREAM_ERROR_KINDS: [&str; 4] = ["timeout", "connect", "connection_lost", "protocol"];

/// Values of the `trigger` label of `topology_refreshes_total`; `"other"` catches anything else.
pub const REFRESH_TRIGGERS: [&str; 6] = ["startup", "timer", "moved", "node_failure", "role_change", "other"];

/// Values of the `role` label of `node_up`.
const ROLES: [&str; 2] = ["master", "replica"];

/// Counters of one upstream node, shared by every connection of its pool.
#[derive(Debug, Clone)]
pub struct NodeMetrics {
    /// `upstream_requests_total{node}`: requests sent (queued) to the node.
    pub requests: IntCounter,
    /// `upstream_errors_total{node,kind="timeout"}`.
    pub timeouts: IntCounter,
    /// `upstream_errors_total{node,kind="connect"}`: connect or login failed.
    pub connect_errors: IntCounter,
    /// `upstream_errors_total{node,kind="connection_lost"}`: the connection broke with requests in flight.
    pub connections_lost: IntCounter,
    /// `upstream_errors_total{node,kind="protocol"}`: the node sent bytes that are not a RESP reply.
    pub protocol_errors: IntCounter,
    /// `node_busy{node}`: 1 while a script or function keeps the node busy (other clients' commands
    /// for it are answered `-BUSY`), else 0.
    pub busy: IntGauge,
}

impl NodeMetrics {
    /// Counts `error` under its kind; the one place that maps [`UpstreamError`] to a `kind` label.
    pub fn record_error(&self, error: &UpstreamError) {
        match error {
            UpstreamError::Unreachable { .. } => self.connect_errors.inc(),
            UpstreamError::Timeout => self.timeouts.inc(),
            UpstreamError::ConnectionLost { .. } => self.connections_lost.inc(),
        }
    }
}

/// Requests held while the cluster fails over (`executor::hold`).
#[derive(Debug)]
pub struct HeldMetrics {
    /// `held_requests`: parts held now.
    pub now: IntGauge,
    /// `held_requests_total`: parts ever held.
    pub total: IntCounter,
    /// `held_requests_released_total`: held parts that a node answered in the end.
    pub released: IntCounter,
    /// `held_requests_expired_total`: held parts answered with the proxy's error (`failover_wait`
    /// passed, or the node failed with the part in flight).
    pub expired: IntCounter,
    /// `held_requests_refused_total`: parts failed at once because a hold bound was reached.
    pub refused: IntCounter,
}

impl HeldMetrics {
    fn register(b: &mut Builder) -> HeldMetrics {
        HeldMetrics {
            now: b.gauge("held_requests", "Requests held now, waiting for the cluster to fail over."),
            total: b.counter("held_requests_total", "Requests held while the cluster failed over."),
            released: b.counter("held_requests_released_total", "Held requests that a node answered in the end."),
            expired: b.counter(
                "held_requests_expired_total",
                "Held requests answered with an error: upstream.failover_wait passed, or the node failed.",
            ),
            refused: b.counter(
                "held_requests_refused_total",
                "Requests failed at once because a bound on held requests ([limits]) was reached.",
            ),
        }
    }
}

/// Client-side caching (`crate::tracking`).
#[derive(Debug, Clone)]
pub struct TrackingMetrics {
    /// `tracking_clients`: clients with CLIENT TRACKING on.
    pub clients: IntGauge,
    /// `tracking_keys`: keys in the proxy's tracking table.
    pub keys: IntGauge,
    /// `tracking_invalidations_total`: modified keys the masters' tracking streams reported.
    pub invalidations: IntCounter,
    /// `tracking_evictions_total`: keys invalidated because the table reached `tracking.max_keys`.
    pub evictions: IntCounter,
    /// `tracking_flushes_total{reason}`, by index in [`crate::tracking::FlushReason::ALL`].
    flushes: Vec<IntCounter>,
    /// `tracking_stream_up{node}`: 1 while the master's tracking stream is confirmed.
    streams_up: IntGaugeVec,
}

impl TrackingMetrics {
    fn register(b: &mut Builder) -> TrackingMetrics {
        let flushes = b.counter_vec(
            "tracking_flushes_total",
            "Times every tracking client was told to flush its cache, by reason \
             (stream_lost, stream_up, topology, node_flush).",
            &["reason"],
        );
        TrackingMetrics {
            clients: b.gauge("tracking_clients", "Clients with CLIENT TRACKING on."),
            keys: b.gauge("tracking_keys", "Keys in the proxy's tracking table (bounded by tracking.max_keys)."),
            invalidations: b
                .counter("tracking_invalidations_total", "Modified keys reported by the masters' tracking streams."),
            evictions: b.counter(
                "tracking_evictions_total",
                "Keys invalidated for their readers because the tracking table was full.",
            ),
            flushes: crate::tracking::FlushReason::ALL
                .iter()
                .map(|reason| flushes.with_label_values(&[reason.label()]))
                .collect(),
            streams_up: b.gauge_vec(
                "tracking_stream_up",
                "1 while the proxy's tracking stream to the master is confirmed, else 0.",
                &["node"],
            ),
        }
    }

    /// `tracking_flushes_total{reason}`.
    pub fn flush(&self, reason: crate::tracking::FlushReason) -> &IntCounter {
        let index = crate::tracking::FlushReason::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        &self.flushes[index]
    }

    /// Sets `tracking_stream_up{node}`; a stream gone for good drops its series.
    pub fn stream_up(&self, node: &str, up: Option<bool>) {
        match up {
            Some(up) => self.streams_up.with_label_values(&[node]).set(i64::from(up)),
            None => drop(self.streams_up.remove_label_values(&[node])),
        }
    }
}

/// Name, help and type of a registered family, to print its `# HELP`/`# TYPE` lines while it has
/// no series yet (the registry leaves such families out).
#[derive(Debug)]
struct Family {
    name: String,
    help: String,
    kind: &'static str,
}

/// What the last cluster health poll saw, for `/readyz`.
#[derive(Debug, Default)]
pub(crate) struct PollState {
    /// At least one poll finished.
    pub(crate) polled: bool,
    /// Nodes that did not answer the last poll.
    pub(crate) down: HashSet<String>,
}

/// Every metric the proxy exports, with its registry.
pub struct Metrics {
    registry: Registry,
    families: Vec<Family>,
    /// `client_connections`: clients connected now.
    pub client_connections: IntGauge,
    /// `client_connections_total`: clients accepted since start.
    pub client_connections_total: IntCounter,
    /// `auth_failures_total`: `AUTH`/`HELLO AUTH` attempts refused.
    pub auth_failures_total: IntCounter,
    /// `tls_handshake_errors_total`: client TLS handshakes that failed.
    pub tls_handshake_errors_total: IntCounter,
    /// `cluster_slots_covered`: slots with an owner in the current map (16384 when healthy).
    pub cluster_slots_covered: IntGauge,
    /// `cluster_state_ok`: 1 when every slot is covered and every master answered the last poll.
    pub cluster_state_ok: IntGauge,
    /// `tls_cert_expiry_seconds`: Unix time at which the served certificate expires; 0 without TLS.
    pub tls_cert_expiry_seconds: IntGauge,
    /// `redirections_total{kind="moved"}`.
    pub redirections_moved: IntCounter,
    /// `redirections_total{kind="ask"}`.
    pub redirections_ask: IntCounter,
    /// Requests held while the cluster fails over.
    pub held: HeldMetrics,
    pub tracking: TrackingMetrics,
    /// `commands_total{command,result}` (ok: a non-error reply, error: an error reply from Redis
    /// or the proxy) and `command_duration_seconds{command}` (from the request read to its reply
    /// queued for the client), counted per thread.
    commands: CommandSeries,
    /// By index in [`REFRESH_TRIGGERS`].
    refreshes: Vec<IntCounter>,
    upstream_requests: IntCounterVec,
    upstream_errors: IntCounterVec,
    node_up: IntGaugeVec,
    node_busy: IntGaugeVec,
    replication_lag: IntGaugeVec,
    /// The role each node's `node_up` series carries, to drop the old series when it changes.
    roles: Mutex<HashMap<String, &'static str>>,
    pub(crate) poll: Mutex<PollState>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A registry with every family registered and every fixed-label series created at zero.
    ///
    /// Longer than ~80 lines on purpose: one line per metric family, in the order of SPEC.md's
    /// metric list, so the two can be compared line by line.
    pub fn new() -> Arc<Metrics> {
        let mut b = Builder { registry: Registry::new(), families: Vec::new() };
        let client_connections = b.gauge("client_connections", "Client connections open now.");
        let client_connections_total =
            b.counter("client_connections_total", "Client connections accepted since the proxy started.");
        let auth_failures_total = b.counter("auth_failures_total", "Client AUTH or HELLO AUTH attempts refused.");
        let tls_handshake_errors_total = b.counter("tls_handshake_errors_total", "Client TLS handshakes that failed.");
        let cluster_slots_covered = b.gauge(
            "cluster_slots_covered",
            "Hash slots served by some master in the proxy's slot map (16384 when healthy).",
        );
        let cluster_state_ok = b.gauge(
            "cluster_state_ok",
            "1 when all 16384 slots are covered and every master answered the last health poll, else 0.",
        );
        let tls_cert_expiry_seconds = b.gauge(
            "tls_cert_expiry_seconds",
            "Unix time at which the client-facing TLS certificate expires; 0 when TLS is off.",
        );
        let redirections =
            b.counter_vec("redirections_total", "MOVED and ASK redirections followed, by kind.", &["kind"]);
        let commands = b.command_series(
            "Client commands answered, by command and result (ok or error).",
            "Time from reading a client command to queueing its reply, by command.",
        );
        let refreshes =
            b.counter_vec("topology_refreshes_total", "Slot map refreshes, by what triggered them.", &["trigger"]);
        let upstream_requests =
            b.counter_vec("upstream_requests_total", "Requests sent to each Redis node.", &["node"]);
        let upstream_errors = b.counter_vec(
            "upstream_errors_total",
            "Requests to a Redis node that got no reply, by node and kind \
             (timeout, connect, connection_lost, protocol).",
            &["node", "kind"],
        );
        let node_up = b.gauge_vec(
            "node_up",
            "1 when the node answered the last health poll, else 0; by node and role.",
            &["node", "role"],
        );
        let node_busy = b.gauge_vec(
            "node_busy",
            "1 while a script or function keeps the node busy (other commands for it get -BUSY), else 0.",
            &["node"],
        );
        let replication_lag = b.gauge_vec(
            "replication_lag_bytes",
            "Bytes of replication stream a replica is behind its master, at the last health poll.",
            &["node"],
        );

        let held = HeldMetrics::register(&mut b);
        let tracking = TrackingMetrics::register(&mut b);
        Arc::new(Metrics {
            registry: b.registry,
            families: b.families,
            client_connections,
            client_connections_total,
            auth_failures_total,
            tls_handshake_errors_total,
            cluster_slots_covered,
            cluster_state_ok,
            tls_cert_expiry_seconds,
            redirections_moved: redirections.with_label_values(&["moved"]),
            redirections_ask: redirections.with_label_values(&["ask"]),
            held,
            tracking,
            commands,
            refreshes: REFRESH_TRIGGERS.iter().map(|trigger| refreshes.with_label_values(&[*trigger])).collect(),
            upstream_requests,
            upstream_errors,
            node_up,
            node_busy,
            replication_lag,
            roles: Mutex::new(HashMap::new()),
            poll: Mutex::new(PollState::default()),
        })
    }

    /// Counts `count` replies to a command of `label` (an index from [`labels::label_index`]; out
    /// of range counts as `"other"`): error replies or not, each `seconds` after its request was
    /// read.
    pub fn record_commands(&self, label: usize, error: bool, seconds: f64, count: u64) {
        self.commands.record(label, error, seconds, count);
    }

    /// Replies counted under every `command` label so far.
    pub fn commands_answered(&self) -> u64 {
        self.commands.total()
    }

    /// `topology_refreshes_total{trigger}`; a trigger not in [`REFRESH_TRIGGERS`] counts as `"other"`.
    pub fn topology_refresh(&self, trigger: &str) -> &IntCounter {
        let other = REFRESH_TRIGGERS.len() - 1;
        let index = REFRESH_TRIGGERS[..other].iter().position(|t| *t == trigger).unwrap_or(other);
        &self.refreshes[index]
    }

    /// The handles of node `addr` (`host:port`), creating its series at zero.
    ///
    /// Resolves six series: call it when the node's pool is created and keep the result, not per
    /// request. Calling it again for the same node returns handles to the same series.
    pub fn node(&self, addr: &str) -> Arc<NodeMetrics> {
        let error = |kind: &str| self.upstream_errors.with_label_values(&[addr, kind]);
        Arc::new(NodeMetrics {
            requests: self.upstream_requests.with_label_values(&[addr]),
            timeouts: error("timeout"),
            connect_errors: error("connect"),
            connections_lost: error("connection_lost"),
            protocol_errors: error("protocol"),
            busy: self.node_busy.with_label_values(&[addr]),
        })
    }

    /// Sets `node_up{node=addr,role}`; when the node had another role before, that series goes.
    ///
    /// `role` is `"master"` or `"replica"` ([`crate::topology::Role::as_str`]); anything else is
    /// recorded as `"replica"`, the role that serves no writes.
    pub fn set_node_up(&self, addr: &str, role: &str, up: bool) {
        let role = if role == "master" { "master" } else { "replica" };
        if let Ok(mut roles) = self.roles.lock()
            && let Some(old) = roles.insert(addr.to_string(), role)
            && old != role
        {
            let _ = self.node_up.remove_label_values(&[addr, old]);
        }
        self.node_up.with_label_values(&[addr, role]).set(i64::from(up));
    }

    /// Sets `replication_lag_bytes{node=addr}`.
    pub fn set_replication_lag(&self, addr: &str, bytes: i64) {
        self.replication_lag.with_label_values(&[addr]).set(bytes);
    }

    /// Removes `replication_lag_bytes{node=addr}`: the lag is unknown (the node or its master did
    /// not answer) or the node is no longer a replica.
    pub fn clear_replication_lag(&self, addr: &str) {
        let _ = self.replication_lag.remove_label_values(&[addr]);
    }

    /// Removes every series of a node that left the topology. Handles still held by its pool keep
    /// counting, but no longer into an exported series.
    pub fn forget_node(&self, addr: &str) {
        if let Ok(mut roles) = self.roles.lock() {
            roles.remove(addr);
        }
        for role in ROLES {
            let _ = self.node_up.remove_label_values(&[addr, role]);
        }
        self.clear_replication_lag(addr);
        let _ = self.upstream_requests.remove_label_values(&[addr]);
        let _ = self.node_busy.remove_label_values(&[addr]);
        for kind in UPSTREAM_ERROR_KINDS {
            let _ = self.upstream_errors.remove_label_values(&[addr, kind]);
        }
    }

    /// Every exported family name, prefix included.
    pub fn family_names(&self) -> impl Iterator<Item = &str> {
        self.families.iter().map(|f| f.name.as_str())
    }

    /// All metrics in the Prometheus text exposition format (version 0.0.4).
    ///
    /// Families without series yet (per-node ones before the first node is known) still get their
    /// `# HELP` and `# TYPE` lines, so a dashboard or a check sees every name from the start.
    pub fn render(&self) -> String {
        let gathered = self.registry.gather();
        let mut text = String::with_capacity(128 * 1024);
        if let Err(error) = TextEncoder::new().encode_utf8(&gathered, &mut text) {
            tracing::warn!(%error, "encoding metrics failed");
        }
        for family in &self.families {
            if !gathered.iter().any(|g| g.name() == family.name) {
                let _ =
                    write!(text, "# HELP {} {}\n# TYPE {} {}\n", family.name, family.help, family.name, family.kind);
            }
        }
        text
    }
}

/// Registers families while recording their descriptions.
struct Builder {
    registry: Registry,
    families: Vec<Family>,
}

impl Builder {
    fn describe(&mut self, name: &str, help: &str, kind: &'static str) -> Opts {
        let name = format!("{PREFIX}{name}");
        self.families.push(Family { name: name.clone(), help: help.to_string(), kind });
        Opts::new(name, help)
    }

    fn register<C: Collector + Clone + 'static>(&mut self, collector: prometheus::Result<C>) -> C {
        let collector = collector.expect("metric definitions are static and valid");
        self.registry
            .register(Box::new(collector.clone()))
            .expect("each metric family is registered once, under a unique valid name");
        collector
    }

    fn counter(&mut self, name: &str, help: &str) -> IntCounter {
        let opts = self.describe(name, help, "counter");
        self.register(IntCounter::with_opts(opts))
    }

    fn gauge(&mut self, name: &str, help: &str) -> IntGauge {
        let opts = self.describe(name, help, "gauge");
        self.register(IntGauge::with_opts(opts))
    }

    fn counter_vec(&mut self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        let opts = self.describe(name, help, "counter");
        self.register(IntCounterVec::new(opts, labels))
    }

    fn gauge_vec(&mut self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        let opts = self.describe(name, help, "gauge");
        self.register(IntGaugeVec::new(opts, labels))
    }

    fn command_series(&mut self, help_total: &str, help_duration: &str) -> CommandSeries {
        self.describe("commands_total", help_total, "counter");
        self.describe("command_duration_seconds", help_duration, "histogram");
        self.register(Ok(CommandSeries::new(help_total, help_duration)))
    }
}
