//! Operator commands run on nodes the proxy names: CONFIG GET from every master, CONFIG
//! SET / RESETSTAT / REWRITE on every node, SLOWLOG, LATENCY and MEMORY diagnostics from every
//! master, each reply merged with the nodes' addresses (`crate::merge` documents each merge);
//! SCRIPT EXISTS from every master, merged with the scripts the proxy remembers.
//!
//! The nodes are read from the map when the command arrives and addressed by name
//! ([`Target::Node`]), not by shard: a reply that says "127.0.0.1:7001 refused" must be about the
//! node that was asked, even if a failover swaps the shard's master meanwhile.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Session;
use super::pipeline::{Meta, OnMerged};
use crate::command::{AdminKind, CommandSpec, Merge, OwnConfig, OwnValue};
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
            AdminKind::ConfigGet => Merge::ConfigValues { nodes: names, own: own_config(&self.shared) },
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
            // What the client sends next (a CONFIG GET) runs after the setting, as on one node:
            // nothing more is parsed until the nodes answered.
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
        shared.stats.output_limit_disconnections.store(0, Ordering::Relaxed);
    }
}

/// A setting a `CONFIG SET` changes in the proxy too, and how it takes the value (once the nodes
/// took the command). `tracking-table-max-keys` bounds the proxy's tracking table (client-side
/// caching is the proxy's, `crate::tracking`), `client-output-buffer-limit` the output of the
/// proxy's own clients (`crate::output_classes`), `maxclients` how many clients its listeners
/// accept, `timeout` when an idle one is closed, and Valkey's `extended-redis-compatibility` how
/// the proxy names the nodes' server (HELLO, INFO) at once, not at its next health poll. CONFIG
/// GET answers each with the proxy's value (`shown`), but the last, which the nodes' is.
struct Kept {
    name: &'static [u8],
    keep: fn(&Shared, &[u8]),
    shown: fn(&Shared) -> Option<OwnValue>,
}

const KEPT: [Kept; 5] = [
    Kept {
        name: b"extended-redis-compatibility",
        keep: |shared, value| match value.to_ascii_lowercase().as_slice() {
            b"yes" => shared.topology.set_valkey_redis_compat(true),
            b"no" => shared.topology.set_valkey_redis_compat(false),
            _ => {}
        },
        shown: |_| None,
    },
    Kept {
        name: b"client-output-buffer-limit",
        keep: |shared, value| {
            shared.output_classes.set_from_config(value);
        },
        shown: |shared| Some(OwnValue::Classes(shared.output_classes.both())),
    },
    Kept {
        name: b"tracking-table-max-keys",
        keep: |shared, value| {
            if let Some(max) = number(value) {
                shared.tracking.set_max_keys(max);
            }
        },
        shown: |shared| Some(OwnValue::Whole(shared.tracking.max_keys().to_string())),
    },
    Kept {
        // At least 1, as Redis' bounds say (the nodes refuse less).
        name: b"maxclients",
        keep: |shared, value| {
            if let Some(max) = number::<usize>(value) {
                shared.max_clients.store(max.max(1), Ordering::Relaxed);
            }
        },
        shown: |shared| Some(OwnValue::Whole(shared.max_clients.load(Ordering::Relaxed).to_string())),
    },
    Kept {
        // Every session follows it at once, as Redis' cron looks at every client with the
        // current value.
        name: b"timeout",
        keep: |shared, value| {
            if let Some(seconds) = number(value) {
                shared.idle_timeout.set(Some(Duration::from_secs(seconds)).filter(|t| !t.is_zero()));
                shared.clients.signal_all();
            }
        },
        shown: |shared| {
            let seconds = shared.idle_timeout.get().map_or(0, crate::clock::whole_seconds);
            Some(OwnValue::Whole(seconds.to_string()))
        },
    },
];

/// The proxy's values of the settings it keeps, for a CONFIG GET ([`Kept::shown`]).
fn own_config(shared: &Shared) -> OwnConfig {
    KEPT.iter().filter_map(|kept| Some((kept.name, (kept.shown)(shared)?))).collect()
}

/// A value the nodes took, as a number.
fn number<T: std::str::FromStr>(value: &[u8]) -> Option<T> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// The setting named `name`, if the proxy keeps it too.
fn kept(name: &[u8]) -> Option<&'static Kept> {
    KEPT.iter().find(|kept| kept.name.eq_ignore_ascii_case(name))
}

/// Whether `request` is a `CONFIG SET` of a setting the proxy keeps too.
fn sets_own_settings(request: &Request) -> bool {
    request.argc() >= 4
        && request.arg(0).eq_ignore_ascii_case(b"config")
        && request.arg(1).eq_ignore_ascii_case(b"set")
        && (2..request.argc()).step_by(2).any(|i| kept(request.arg(i)).is_some())
}

/// For a `CONFIG SET` of settings the proxy keeps too, what keeps them once the nodes' merged
/// reply is `+OK`: a node changes all the parameters of one CONFIG SET or none, so the proxy
/// changes its own only when the nodes took the command (not when a value, its own or another
/// parameter's, was refused).
pub(super) fn kept_if_ok(shared: &Arc<Shared>, request: &Request) -> Option<OnMerged> {
    keep_where_ok(shared, sets_own_settings(request).then(|| (None, request.clone())).into_iter().collect())
}

/// For a transaction, what keeps the settings of its queued `CONFIG SET`s (with their places in
/// EXEC's array) whose own element of EXEC's merged reply is `+OK`.
pub(super) fn kept_if_ran<'a>(
    shared: &Arc<Shared>,
    queued: impl Iterator<Item = (usize, &'a Request)>,
) -> Option<OnMerged> {
    let settings = queued.filter(|(_, request)| sets_own_settings(request));
    keep_where_ok(shared, settings.map(|(at, request)| (Some(at), request.clone())).collect())
}

/// What keeps each `CONFIG SET` of `settings` whose reply is `+OK`: the merged reply itself, or
/// the element of EXEC's array at its place.
fn keep_where_ok(shared: &Arc<Shared>, settings: Vec<(Option<usize>, Request)>) -> Option<OnMerged> {
    if settings.is_empty() {
        return None;
    }
    let shared = Arc::clone(shared);
    Some(OnMerged::new(move |reply| {
        for (place, request) in &settings {
            let answer = place.map_or(Some(reply), |at| crate::merge::array_element(reply, at));
            if answer == Some(&b"+OK\r\n"[..]) {
                keep_own_settings(&shared, request);
            }
        }
    }))
}

/// Takes the values of a `CONFIG SET` the nodes took that the proxy keeps too ([`Kept`]).
fn keep_own_settings(shared: &Shared, request: &Request) {
    for i in (2..request.argc().saturating_sub(1)).step_by(2) {
        if let Some(kept) = kept(request.arg(i)) {
            (kept.keep)(shared, request.arg(i + 1));
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
