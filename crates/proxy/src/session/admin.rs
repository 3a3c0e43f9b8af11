//! Operator commands run on nodes the proxy names: CONFIG GET from every master, CONFIG
//! SET / RESETSTAT / REWRITE on every node, SLOWLOG, LATENCY and MEMORY diagnostics from every
//! master, each reply merged with the nodes' addresses (`crate::merge` documents each merge);
//! SCRIPT EXISTS from every master, merged with the scripts the proxy remembers.
//!
//! The nodes are read from the map when the command arrives and addressed by name
//! ([`Target::Node`]), not by shard: a reply that says "127.0.0.1:7001 refused" must be about the
//! node that was asked, even if a failover swaps the shard's master meanwhile.

use std::sync::Arc;
use std::time::Duration;

use super::Session;
use super::pipeline::{Meta, OnMerged};
use crate::command::{AdminKind, CommandSpec, Merge, OwnConfig};
use crate::error::ProxyError;
use crate::executor::{Part, Target, scripts};
use crate::resp::Request;
use crate::shared::Shared;

/// Entries SLOWLOG GET returns when no count is given, as in Redis.
const SLOWLOG_DEFAULT_COUNT: usize = 10;

impl Session {
    /// Sends `request` as is to the nodes `kind` calls for and merges their replies, naming them.
    pub(super) fn admin(&mut self, request: &Request, kind: AdminKind, meta: Meta) {
        let nodes = self.admin_nodes(kind);
        if nodes.is_empty() {
            return self.push_error(ProxyError::NoTopology, meta);
        }
        let names: Vec<String> = nodes.iter().map(|(addr, _)| addr.clone()).collect();
        let merge = match kind {
            AdminKind::ConfigGet => Merge::ConfigValues {
                nodes: names,
                own: OwnConfig {
                    tracking_table_max_keys: self.shared.tracking.max_keys(),
                    maxclients: self.shared.max_clients.load(std::sync::atomic::Ordering::Relaxed),
                    timeout: self.shared.idle_timeout.get().map_or(0, crate::clock::whole_seconds),
                    output_classes: self.shared.output_classes.both(),
                },
            },
            AdminKind::EveryNode | AdminKind::EveryMasterOk => {
                Merge::AllOkNamed { command: command_name(request), nodes: names }
            }
            AdminKind::SlowlogGet => Merge::Slowlog { nodes: names, count: slowlog_count(request) },
            AdminKind::PerMaster => Merge::KeyedByNode { nodes: names, protocol: self.state.protocol },
            AdminKind::LatencyHistogram => Merge::LatencyHistogram { protocol: self.state.protocol },
            AdminKind::ScriptExists => Merge::ScriptExists {
                remembered: (2..request.argc())
                    .map(|i| scripts::is_remembered(&self.shared.scripts, request.arg(i)))
                    .collect(),
            },
        };
        let count = nodes.len() as u32;
        let parts = nodes
            .into_iter()
            .map(|(addr, replica)| {
                let mut part = Part::new(request.bytes().clone(), Target::Node { addr, replica }, true);
                // These commands have no keys: a redirection would not be about them, and following
                // one would answer for another node than the one named.
                part.follow_redirects = false;
                part
            })
            .collect();
        let seq = self.pipeline.push_multi(parts, merge, Vec::new(), meta);
        if let Some(keep) = kept_if_ok(&self.shared, request) {
            self.pipeline.on_merged(seq, keep);
            // What the client sends next (a CONFIG GET, a new connection's count) comes after the
            // setting, as on one node: nothing more is read until the nodes answered.
            self.hold_reading = true;
        }
        (0..count).for_each(|part| self.send(seq, part));
    }

    /// The nodes an operator command goes to, as `(address, is a replica)`: every master in map
    /// order (the master of slot 0 first), then, for settings, every replica shard by shard.
    /// Nodes the cluster reports as failed are included: a setting one of them missed must show
    /// up as an error naming it, not vanish.
    pub(super) fn admin_nodes(&self, kind: AdminKind) -> Vec<(String, bool)> {
        let routing = self.shared.topology.routing();
        let shards = routing.map.shards();
        let mut nodes: Vec<(String, bool)> = shards.iter().map(|s| (s.master.addr.clone(), false)).collect();
        if kind == AdminKind::EveryNode {
            nodes.extend(shards.iter().flat_map(|s| s.replicas.iter().map(|r| (r.addr.clone(), true))));
        }
        nodes
    }
}

/// What the proxy notes of a command as it goes out to the nodes (at EXEC for a queued one): the
/// script of an EVAL or SCRIPT LOAD, to load it again where an EVALSHA meets `-NOSCRIPT`, or
/// SCRIPT FLUSH forgetting them (`executor/scripts.rs`), and the proxy's own INFO stats a CONFIG
/// RESETSTAT resets. (The settings of a CONFIG SET it keeps too wait for the nodes' reply:
/// [`kept_if_ok`].)
pub(super) fn note_going_out(shared: &Shared, spec: &CommandSpec, request: &Request) {
    scripts::remember(&shared.scripts, spec, request);
    // Redis' resetServerStats zeroes it with the other stats; the nodes' are reset by the command.
    if spec.name == "config|resetstat" {
        shared.stats.output_limit_disconnections.store(0, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The parameters of a `CONFIG SET` the proxy keeps itself too (see [`keep_own_settings`]).
const OWN_SETTINGS: [&[u8]; 5] = [
    b"extended-redis-compatibility",
    b"client-output-buffer-limit",
    b"tracking-table-max-keys",
    b"maxclients",
    b"timeout",
];

/// Whether `request` is a `CONFIG SET` of a setting the proxy keeps too.
fn sets_own_settings(request: &Request) -> bool {
    request.argc() >= 4
        && request.arg(0).eq_ignore_ascii_case(b"config")
        && request.arg(1).eq_ignore_ascii_case(b"set")
        && (2..request.argc())
            .step_by(2)
            .any(|i| OWN_SETTINGS.iter().any(|name| request.arg(i).eq_ignore_ascii_case(name)))
}

/// For a `CONFIG SET` of settings the proxy keeps too, what keeps them once the nodes' merged
/// reply is `+OK`: a node changes all the parameters of one CONFIG SET or none, so the proxy
/// changes its own only when the nodes took the command (not when a value, its own or another
/// parameter's, was refused).
pub(super) fn kept_if_ok(shared: &Arc<Shared>, request: &Request) -> Option<OnMerged> {
    if !sets_own_settings(request) {
        return None;
    }
    let (shared, request) = (Arc::clone(shared), request.clone());
    Some(OnMerged::new(move |reply| {
        if reply == b"+OK\r\n" {
            keep_own_settings(&shared, &request);
        }
    }))
}

/// For a transaction, what keeps the settings of its queued `CONFIG SET`s (with their places in
/// EXEC's array) whose own element of EXEC's merged reply is `+OK`.
pub(super) fn kept_if_ran<'a>(
    shared: &Arc<Shared>,
    queued: impl Iterator<Item = (usize, &'a Request)>,
) -> Option<OnMerged> {
    let settings: Vec<(usize, Request)> =
        queued.filter(|(_, request)| sets_own_settings(request)).map(|(at, request)| (at, request.clone())).collect();
    if settings.is_empty() {
        return None;
    }
    let shared = Arc::clone(shared);
    Some(OnMerged::new(move |reply| {
        for (place, request) in &settings {
            if crate::merge::array_element(reply, *place).is_some_and(|element| element == b"+OK\r\n") {
                keep_own_settings(&shared, request);
            }
        }
    }))
}

/// What a `CONFIG SET` sets that the proxy keeps itself: `tracking-table-max-keys` bounds the
/// proxy's tracking table (client-side caching is the proxy's, `crate::tracking`),
/// `client-output-buffer-limit` the output of the proxy's own clients (`crate::output_classes`),
/// `maxclients` how many clients its listeners accept, `timeout` when an idle one is closed, and
/// Valkey's `extended-redis-compatibility` decides how the proxy names the nodes' server
/// (HELLO, INFO) at once, not at its next health poll. Run once the nodes took the command
/// ([`kept_if_ok`], [`kept_if_ran`]).
fn keep_own_settings(shared: &Shared, request: &Request) {
    for i in (2..request.argc().saturating_sub(1)).step_by(2) {
        if request.arg(i).eq_ignore_ascii_case(b"extended-redis-compatibility") {
            let value = request.arg(i + 1);
            let on = value.eq_ignore_ascii_case(b"yes");
            if on || value.eq_ignore_ascii_case(b"no") {
                shared.topology.set_valkey_redis_compat(on);
            }
        }
        if request.arg(i).eq_ignore_ascii_case(b"client-output-buffer-limit") {
            shared.output_classes.set_from_config(request.arg(i + 1));
        }
        if request.arg(i).eq_ignore_ascii_case(b"tracking-table-max-keys")
            && let Some(max_keys) = std::str::from_utf8(request.arg(i + 1)).ok().and_then(|v| v.parse::<usize>().ok())
        {
            shared.tracking.set_max_keys(max_keys);
        }
        // Taken once the nodes accepted it (at least 1, as Redis' bounds say).
        if request.arg(i).eq_ignore_ascii_case(b"maxclients")
            && let Some(max) = std::str::from_utf8(request.arg(i + 1)).ok().and_then(|v| v.parse::<usize>().ok())
        {
            shared.max_clients.store(max.max(1), std::sync::atomic::Ordering::Relaxed);
        }
        // Every session follows it at once, as Redis' cron looks at every client with the
        // current value.
        if request.arg(i).eq_ignore_ascii_case(b"timeout")
            && let Some(seconds) = std::str::from_utf8(request.arg(i + 1)).ok().and_then(|v| v.parse::<u64>().ok())
        {
            shared.idle_timeout.set(Some(Duration::from_secs(seconds)).filter(|t| !t.is_zero()));
            shared.clients.signal_all();
        }
    }
}

/// `CONFIG SET`, `SLOWLOG RESET`: the command and subcommand as an error message names them.
fn command_name(request: &Request) -> String {
    (0..request.argc().min(2))
        .map(|i| String::from_utf8_lossy(request.arg(i)).to_ascii_uppercase())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The count of `SLOWLOG GET [count]`: 10 without one, every entry for a negative count (Redis 7
/// allows only -1, Redis 6 any). What is not a number the nodes reject with their own error, which
/// the merge passes on; the default is then unused.
fn slowlog_count(request: &Request) -> usize {
    if request.argc() < 3 {
        return SLOWLOG_DEFAULT_COUNT;
    }
    let count = std::str::from_utf8(request.arg(2)).ok().and_then(|c| c.parse::<i64>().ok());
    match count {
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        None => SLOWLOG_DEFAULT_COUNT,
    }
}
