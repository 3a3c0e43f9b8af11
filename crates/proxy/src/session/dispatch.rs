//! Sending a request's parts to the nodes and taking their replies: where each part goes now,
//! and what a reply means for it (a redirection to follow, a transient failure to retry until
//! `command_timeout`, a missing script to load, or the answer to keep).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::pipeline::{Part, Target};
use super::{RETRY_PAUSE, SLOT_NOT_SERVED, Session, scripts};
use crate::config::ReadFrom;
use crate::redirect::{self, MAX_HOPS, Redirect};
use crate::resp::reply::{self, Protocol};
use crate::topology::{Topology, Trigger};
use crate::upstream::{NodePool, PUSH, Tag, UpstreamReply, UpstreamRequest};

impl Session {
    /// Stores the final reply of part `part` of request `seq`. Parts deferred on it go out now if
    /// it ran (neither an error nor null: a transaction's settings after EXEC), else they are
    /// settled unsent.
    pub(super) fn complete(&mut self, seq: u64, part: u32, reply: Bytes) {
        let ran = !matches!(reply.first(), Some(b'-' | b'!' | b'_')) && !reply.starts_with(b"*-1\r\n");
        for other in self.pipeline.complete(seq, part, reply) {
            match ran {
                true => self.send(seq, other),
                // Settled unsent: a deferred part defers nothing itself.
                false => drop(self.pipeline.complete(seq, other, reply::ok())),
            }
        }
    }

    /// Sends (or resends) part `part` of request `seq` to the node it is meant for now.
    pub(super) fn send(&mut self, seq: u64, part: u32) {
        let affinity = self.state.id as usize;
        let Some(p) = self.pipeline.part_mut(seq, part) else {
            return;
        };
        if p.target == Target::Owned {
            let (payload, redirect, blocks) = (p.payload.clone(), p.redirect.clone(), p.blocks);
            let prefix = redirect.as_ref().is_some_and(|r| r.1).then(asking_command);
            // A redirected blocking command follows its key to the new node on a new own connection.
            if let Some((addr, _)) = &redirect {
                self.own_conn_at(addr);
            }
            let request = UpstreamRequest {
                payload,
                prefix,
                tag: Tag { seq, part },
                reply_to: self.reply_sender(),
                bounded: !blocks,
                streamable: false,
                lease: None,
            };
            match &self.own {
                Some(own) => own.send(request),
                None => self.complete(seq, part, no_topology()),
            }
            return;
        }
        let (pool, asking) = match pick_pool(&self.shared.topology, self.shared.read_from, p, affinity) {
            Some(found) => found,
            None => {
                let reply = no_owner(&p.target);
                self.complete(seq, part, reply);
                return;
            }
        };
        // A script keeps the node busy: answer as the node would, at once, rather than queue
        // behind the script for as long as it runs.
        if !p.allow_busy
            && let Some(busy) = pool.busy_reply()
        {
            self.complete(seq, part, reply::error(&busy));
            return;
        }
        let (payload, streamable, script) = (p.payload.clone(), p.streamable, p.script);
        let prefix = if asking { Some(asking_command()) } else { p.prefix.take() };
        let request = UpstreamRequest {
            payload,
            prefix,
            tag: Tag { seq, part },
            reply_to: self.reply_sender(),
            // A script runs as long as it likes; SCRIPT KILL, not a timeout, is how it is stopped.
            bounded: script.is_none(),
            streamable,
            lease: None,
        };
        let resp3 = self.state.protocol == Protocol::Resp3;
        match script {
            None => pool.send(affinity, resp3, request),
            Some(kind) => {
                let user = self.state.user.as_ref().and_then(|u| u.node_user.as_ref());
                pool.send_script(user, resp3, kind, request);
            }
        }
    }

    /// Takes a node's reply: follows redirections, retries transient failures, or stores it.
    pub(super) fn on_reply(&mut self, upstream: UpstreamReply) {
        if upstream.tag.seq == PUSH.seq {
            return self.on_push(upstream);
        }
        if let Some(credit) = upstream.partial {
            // A piece of a large reply: straight to the client when every earlier reply is
            // written, so the reply streams through instead of being held whole. The credit goes
            // back once the bytes are written; until then the node's connection reads no further
            // ahead than its window.
            if let Ok(piece) = upstream.result
                && let Some(now) = self.pipeline.stream(upstream.tag.seq, piece)
            {
                self.direct.extend_from_slice(&now);
                self.stream_credits.push((credit, now.len()));
            }
            return;
        }
        let Tag { seq, part } = upstream.tag;
        let topology = Arc::clone(&self.shared.topology);
        let retry_for = self.shared.command_timeout;
        let refresh_on_moved = self.shared.refresh_on_moved;
        let Some(p) = self.pipeline.part_mut(seq, part) else {
            return;
        };
        let bytes = match upstream.result {
            Ok(bytes) => bytes,
            Err(_) if p.streamed => {
                // Half a reply is out: no error can follow it on the same stream.
                self.broken = true;
                return;
            }
            Err(error) => {
                // Never sent: safe to retry once the topology has caught up with the failure, for as
                // long as a client would wait for one command anyway.
                let deadline = *p.retry_until.get_or_insert_with(|| Instant::now() + retry_for);
                // The own connection holds state (WATCH, MULTI, a block) that a retry elsewhere
                // would not have: its failures go to the client.
                let retry = error.never_sent() && p.target != Target::Owned;
                if p.target == Target::Owned {
                    self.own = None;
                    self.watch_slot = None;
                    self.watched_keys = 0;
                    self.entry.set_watched(0);
                }
                if retry && Instant::now() < deadline {
                    p.redirect = None;
                    // A read whose replica is unreachable goes to the master from now on.
                    p.write = true;
                    topology.request_refresh(Trigger::NodeFailure);
                    self.delayed.push((Instant::now() + RETRY_PAUSE, seq, part));
                } else {
                    self.complete(seq, part, reply::error(&format!("ERR {error}")));
                }
                return;
            }
        };
        // A script the proxy saw loaded is missing on this node (a failover promoted a replica,
        // which never had it): load it there and run the command again, once.
        if bytes.starts_with(b"-NOSCRIPT")
            && !p.script_reloaded
            && let Some(script) = scripts::reload_for(&self.shared.scripts, &p.payload)
        {
            p.script_reloaded = true;
            p.prefix = Some(script);
            self.send(seq, part);
            return;
        }
        let next = redirect::classify(&bytes);
        // CLUSTERDOWN (every node says so while a failed master's replica waits to be promoted)
        // and TRYAGAIN are transient: resend for as long as a client waits for one command,
        // rather than a fixed number of hops.
        if matches!(next, Redirect::TryAgain | Redirect::ClusterDown) && p.follow_redirects {
            let deadline = *p.retry_until.get_or_insert_with(|| Instant::now() + retry_for);
            if Instant::now() < deadline {
                p.redirect = None;
                if next == Redirect::ClusterDown {
                    topology.request_refresh(Trigger::NodeFailure);
                }
                self.delayed.push((Instant::now() + RETRY_PAUSE, seq, part));
            } else {
                self.complete(seq, part, bytes);
            }
            return;
        }
        if next == Redirect::None || p.hops >= MAX_HOPS || !p.follow_redirects {
            if next != Redirect::None && refresh_on_moved {
                topology.request_refresh(Trigger::Moved);
            }
            self.complete(seq, part, bytes);
            return;
        }
        p.hops += 1;
        match next {
            Redirect::Moved { addr, .. } => {
                self.shared.metrics.redirections_moved.inc();
                p.redirect = Some((addr.to_string(), false));
                if refresh_on_moved {
                    topology.request_refresh(Trigger::Moved);
                }
                self.send(seq, part);
            }
            Redirect::Ask { addr, .. } => {
                self.shared.metrics.redirections_ask.inc();
                p.redirect = Some((addr.to_string(), true));
                self.send(seq, part);
            }
            // Retried above; no reply reaches this point without a redirection to follow.
            Redirect::TryAgain | Redirect::ClusterDown | Redirect::None => {}
        }
    }

    pub(super) fn resend_due(&mut self) {
        let now = Instant::now();
        let due: Vec<(u64, u32)> = self.delayed.iter().filter(|d| d.0 <= now).map(|d| (d.1, d.2)).collect();
        self.delayed.retain(|d| d.0 > now);
        for (seq, part) in due {
            self.send(seq, part);
        }
    }
}

/// The pool a part goes to now, and whether it must be preceded by `ASKING`.
fn pick_pool(topology: &Topology, read_from: ReadFrom, part: &Part, affinity: usize) -> Option<(Arc<NodePool>, bool)> {
    if let Some((addr, asking)) = &part.redirect {
        return Some((topology.upstreams().pool(addr, false), *asking));
    }
    if let Target::Node { addr, replica } = &part.target {
        return Some((topology.upstreams().pool(addr, *replica), false));
    }
    let routing = topology.routing();
    let pool = match part.target {
        // Reads may go to a replica of the slot's shard; writes never do, and with no replica up
        // reads fall back to the master.
        Target::Slot(Some(slot)) if !part.write && read_from != ReadFrom::Master => {
            let replicas = routing.replicas(slot);
            match replicas.is_empty() {
                true => routing.master(slot),
                false => Some(&replicas[affinity % replicas.len()]),
            }
        }
        Target::Slot(Some(slot)) => routing.master(slot),
        // Keyless commands spread over the masters by client; any one can answer them.
        Target::Slot(None) => routing.any_master(affinity),
        Target::Master(n) => routing.masters().get(n),
        Target::Owned | Target::Node { .. } => None,
    };
    pool.map(|p| (Arc::clone(p), false))
}

/// `ASKING`, sent before a request that follows an `-ASK` redirection.
fn asking_command() -> Bytes {
    Bytes::from_static(b"*1\r\n$6\r\nASKING\r\n")
}

pub(super) fn no_topology() -> Bytes {
    reply::error("CLUSTERDOWN The proxy has no cluster topology yet")
}

fn no_owner(target: &Target) -> Bytes {
    match target {
        Target::Slot(Some(_)) => reply::error(SLOT_NOT_SERVED),
        _ => no_topology(),
    }
}
