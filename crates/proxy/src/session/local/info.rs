//! `INFO`: the proxy's own sections (server, clients, replication, cpu, proxy, cluster) as one
//! Redis node of the reported version writes them; the data sections (memory, persistence, stats,
//! keyspace …) are every master's, summed by the session (`merge/info.rs`).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use super::ClientState;
use crate::resp::Request;
use crate::shared::Shared;

/// Sections about the data, not the proxy: asked of every master and summed. Persistence too: its
/// `rdb_changes_since_last_save` counts the writes, its `loading` says whether a master is still
/// reading its data (client libraries wait for `loading:0` before they start).
const CLUSTER_SECTIONS: [&str; 7] =
    ["memory", "persistence", "stats", "errorstats", "commandstats", "latencystats", "keyspace"];

/// What `INFO` without arguments (or `default`) shows, as in Redis.
const DEFAULT_SECTIONS: [&str; 10] =
    ["server", "clients", "memory", "persistence", "stats", "replication", "cpu", "errorstats", "cluster", "keyspace"];

/// An `INFO` answer: the proxy's own sections, and what the masters are to add.
#[derive(Debug)]
pub struct Info {
    /// The proxy's own sections, as text.
    pub own: String,
    /// The data sections asked of every master and summed after `own`.
    pub cluster_sections: Vec<&'static str>,
    /// Fields of those sections whose value is the proxy's: the tracking table's sizes in stats
    /// (client-side caching is the proxy's; the nodes track only its BCAST streams) and the
    /// clients disconnected for their output.
    pub own_fields: Vec<(&'static str, u64)>,
}

/// `INFO`: the proxy's own sections (server, clients, replication, cpu, proxy, cluster), and
/// which data sections the masters are to add.
pub(super) fn info(shared: &Shared, state: &ClientState, request: &Request) -> Info {
    let args: Vec<Vec<u8>> = (1..request.argc()).map(|i| request.arg(i).to_ascii_lowercase()).collect();
    let all = args.iter().any(|a| a == b"all" || a == b"everything");
    let default = args.is_empty() || args.iter().any(|a| a == b"default");
    let wanted = |section: &str| {
        all || (default && (DEFAULT_SECTIONS.contains(&section) || section == "proxy"))
            || args.iter().any(|a| a == section.as_bytes())
    };
    let stats = &shared.stats;
    let routing = shared.topology.routing();
    let version = shared.topology.reported_version();
    let version = version.as_str();
    let valkey = shared.topology.valkey();
    let mut out = String::new();
    if wanted("server") {
        shared.identity.server_section(&mut out, version, valkey.as_ref());
    }
    if wanted("clients") {
        clients_section(&mut out, shared, version, valkey.as_ref());
    }
    // What client libraries read before they start: a standalone master.
    if wanted("replication") {
        // A standalone master without replicas of its own, as one node reports it (the cluster's
        // replicas are the nodes' business; WAIT through the proxy counts them).
        let _ = write!(
            out,
            "# Replication\r\nrole:master\r\nconnected_slaves:0\r\nmaster_failover_state:no-failover\r\n\
             master_replid:{REPLID}\r\nmaster_replid2:{NO_REPLID}\r\nmaster_repl_offset:0\r\n\
             second_repl_offset:-1\r\nrepl_backlog_active:0\r\nrepl_backlog_size:1048576\r\n\
             repl_backlog_first_byte_offset:0\r\nrepl_backlog_histlen:0\r\n\r\n"
        );
    }
    if wanted("cpu")
        && let Some((user, system)) = own_cpu_seconds()
    {
        let _ = write!(out, "# CPU\r\nused_cpu_sys:{system:.6}\r\nused_cpu_user:{user:.6}\r\n\r\n");
    }
    if wanted("proxy") {
        let _ = write!(
            out,
            "# Proxy\r\nclient_id:{}\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\ntopology_generation:{}\r\n\r\n",
            state.id,
            stats.total_connections.load(Ordering::Relaxed),
            shared.metrics.commands_answered(),
            routing.generation,
        );
    }
    if wanted("cluster") {
        let covered = routing.map.covered_slots();
        let _ = write!(
            out,
            "# Cluster\r\ncluster_enabled:0\r\ncluster_state:{}\r\ncluster_slots_covered:{}\r\ncluster_masters:{}\r\ncluster_known_nodes:{}\r\n\r\n",
            if routing.is_complete() { "ok" } else { "fail" },
            covered,
            routing.map.shards().len(),
            routing.map.nodes().count(),
        );
    }
    // Sections are separated by one blank line, as Redis writes them; the masters' sections the
    // session appends come after such a line too.
    let cluster_sections: Vec<&'static str> = CLUSTER_SECTIONS.into_iter().filter(|s| wanted(s)).collect();
    if out.ends_with("\r\n\r\n") && cluster_sections.is_empty() {
        out.truncate(out.len() - 2);
    }
    // Only stats shows them: the table's lock and the prefixes' count are not taken otherwise.
    let own_fields = match cluster_sections.contains(&"stats") {
        true => own_stats(shared),
        false => Vec::new(),
    };
    Info { own: out, cluster_sections, own_fields }
}

/// The fields of the summed stats section whose value is the proxy's.
fn own_stats(shared: &Shared) -> Vec<(&'static str, u64)> {
    let (keys, items) = shared.tracking.table_size();
    vec![
        ("tracking_total_keys", keys as u64),
        ("tracking_total_items", items as u64),
        ("tracking_total_prefixes", shared.tracking.prefix_count() as u64),
        // The proxy's clients are the ones it counts (Redis 7.2+ shows it); the nodes' count is
        // of the proxy's own connections.
        ("client_output_buffer_limit_disconnections", shared.stats.output_limit_disconnections.load(Ordering::Relaxed)),
    ]
}

/// The proxy's replication id: 40 hex digits, as a node's `master_replid`, fixed for the process.
const REPLID: &str = "7265646973666f7267652d70726f78792d726964";
/// The all-zero id a node shows as `master_replid2` when it has no previous one.
const NO_REPLID: &str = "0000000000000000000000000000000000000000";

/// `# Clients` with the fields Redis `version` reports there, in its order, counted over the
/// proxy's own clients: 7.0's, plus the blocking-key totals of 7.2, plus the pub/sub and WATCH
/// counts of 7.4 (and of Valkey 8), plus Valkey 8.1's pause. Fields about a node's internals the
/// proxy does not have (cluster bus connections, input buffers) are 0.
fn clients_section(out: &mut String, shared: &Shared, version: &str, valkey: Option<&crate::Valkey>) {
    let at_least = |major, minor| crate::version_at_least(version, major, minor) || valkey.is_some();
    let totals = shared.clients.totals();
    let connected = shared.stats.connected_clients.load(Ordering::Relaxed);
    let _ = write!(
        out,
        "# Clients\r\nconnected_clients:{connected}\r\ncluster_connections:0\r\nmaxclients:{}\r\n\
         client_recent_max_input_buffer:0\r\nclient_recent_max_output_buffer:0\r\nblocked_clients:{}\r\n\
         tracking_clients:{}\r\n",
        shared.max_clients.load(std::sync::atomic::Ordering::Relaxed),
        totals.blocked_clients,
        shared.tracking.tracker_count(),
    );
    if at_least(7, 4) {
        let _ =
            write!(out, "pubsub_clients:{}\r\nwatching_clients:{}\r\n", totals.pubsub_clients, totals.watching_clients);
    }
    let _ = write!(out, "clients_in_timeout_table:{}\r\n", totals.clients_in_timeout_table);
    if at_least(7, 4) {
        let _ = write!(out, "total_watched_keys:{}\r\n", totals.total_watched_keys);
    }
    if at_least(7, 2) {
        let _ = write!(
            out,
            "total_blocking_keys:{}\r\ntotal_blocking_keys_on_nokey:{}\r\n",
            totals.total_blocking_keys, totals.total_blocking_keys_on_nokey
        );
    }
    if valkey.is_some_and(|v| v.at_least(8, 1)) {
        pause_fields(out, shared.clients.current_pause());
    }
    out.push_str("\r\n");
}

/// Valkey 8.1's `paused_reason`, `paused_actions` and `paused_timeout_milliseconds`: the proxy's
/// CLIENT PAUSE (the only pause it has; Valkey also names a shutdown's or a failover's).
fn pause_fields(out: &mut String, pause: Option<crate::session::clients::Pause>) {
    let (reason, actions, left) = match pause {
        Some(pause) => {
            let left = pause.until.saturating_duration_since(std::time::Instant::now()).as_millis();
            ("client_pause", if pause.writes_only { "write" } else { "all" }, left)
        }
        None => ("none", "none", 0),
    };
    let _ = write!(out, "paused_reason:{reason}\r\npaused_actions:{actions}\r\npaused_timeout_milliseconds:{left}\r\n");
}

/// The proxy process' user and system CPU seconds, from `/proc/self/stat` (Linux; `None`
/// elsewhere). Ticks are taken as 1/100 s, the value of `CLK_TCK` on every Linux platform.
fn own_cpu_seconds() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces; fields after its closing parenthesis are fixed.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    Some((ticks(11)? / 100.0, ticks(12)? / 100.0))
}
