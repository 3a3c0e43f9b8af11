//! Operator commands run on nodes the proxy names: CONFIG GET from every master, CONFIG
//! SET / RESETSTAT / REWRITE on every node, SLOWLOG, LATENCY and MEMORY diagnostics from every
//! master, each reply merged with the nodes' addresses (`crate::merge` documents each merge);
//! SCRIPT EXISTS from every master, merged with the scripts the proxy remembers.
//!
//! The nodes are read from the map when the command arrives and addressed by name
//! ([`Target::Node`]), not by shard: a reply that says "127.0.0.1:7001 refused" must be about the
//! node that was asked, even if a failover swaps the shard's master meanwhile.

use std::borrow::Cow;
use std::sync::atomic::Ordering;

use super::Session;
use super::pipeline::Meta;
use super::settings::{self, Plan};
use crate::command::{AdminKind, CommandSpec, Merge};
use crate::error::ProxyError;
use crate::executor::{Part, Target, scripts};
use crate::resp::{Request, reply};
use crate::shared::Shared;

/// Entries SLOWLOG GET returns when no count is given, as in Redis.
const SLOWLOG_DEFAULT_COUNT: usize = 10;

impl Session {
    /// Sends `request` to the nodes `kind` calls for and merges their replies, naming them: as
    /// it came, or, for a `CONFIG SET` of settings the proxy keeps alone, what is left of it
    /// (`session/settings.rs`).
    pub(super) fn admin(&mut self, request: &Request, kind: AdminKind, meta: Meta) {
        let for_nodes = match settings::plan(request) {
            Plan::AsIs => Cow::Borrowed(request),
            Plan::Nodes(rest) => Cow::Owned(rest),
            // Earlier CONFIG SETs the proxy keeps a part of were answered before this one was
            // read (`hold_reading` below): the last one set wins, as on one node.
            Plan::ProxyOnly => {
                settings::keep_own_settings(&self.shared, request);
                return self.pipeline.push_ready(reply::ok(), meta);
            }
            Plan::Refused(error) => return self.push_error(error, meta),
        };
        let nodes = self.admin_nodes(kind);
        if nodes.is_empty() {
            return self.push_error(ProxyError::NoTopology, meta);
        }
        let names: Vec<String> = nodes.iter().map(|(addr, _)| addr.clone()).collect();
        let merge = match kind {
            AdminKind::ConfigGet => Merge::ConfigValues { nodes: names, own: settings::own_config(&self.shared) },
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
                let mut part = Part::new(for_nodes.bytes().clone(), Target::Node { addr, replica }, true);
                // These commands have no keys: a redirection would not be about them, and following
                // one would answer for another node than the one named.
                part.follow_redirects = false;
                part
            })
            .collect();
        let seq = self.pipeline.push_multi(parts, merge, Vec::new(), meta);
        if let Some(keep) = settings::kept_if_ok(&self.shared, request) {
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
/// [`settings::kept_if_ok`].)
pub(super) fn note_going_out(shared: &Shared, spec: &CommandSpec, request: &Request) {
    scripts::remember(&shared.scripts, spec, request);
    // Redis' resetServerStats zeroes it with the other stats; the nodes' are reset by the command.
    if spec.name == "config|resetstat" {
        shared.stats.output_limit_disconnections.store(0, Ordering::Relaxed);
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
