//! The executor: gets each part of a client's requests answered by the cluster.
//!
//! The session hands it parts (one per node a request goes to) and gets back, for each, either
//! the reply to keep or nothing yet. In between the executor runs explicit phases:
//!
//! 1. **choose the peer** ([`peer`]): the slot's master, a replica for reads when `read_from`
//!    allows, the node a redirection named, or the client's own connection;
//! 2. **send** on that node's pooled, pipelined connections (scripts on a script lane);
//! 3. **on the reply** ([`outcome`]): done; follow `MOVED`/`ASK`; load a missing script and run
//!    again; retry after a pause — `TRYAGAIN` until `command_timeout`, and while the cluster fails
//!    over (an unreachable master, `CLUSTERDOWN`, a slot without an owner) hold the part, within
//!    bounds, until `upstream.failover_wait` ([`hold`]); or fail with a [`ProxyError`].
//!
//! Ordering is not its business: the session's pipeline releases replies in request order.

pub mod hold;
pub mod outcome;
pub mod part;
pub mod peer;
pub mod scripts;

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;

pub use outcome::{Outcome, RetryPolicy};
pub use part::{Part, Target};

use crate::auth::NodeUser;
use crate::error::ProxyError;
use crate::shared::Shared;
use crate::topology::{Routing, Trigger};
use crate::upstream::{
    ConnMode, OwnedConn, ReplyReceiver, ReplySender, Tag, UpstreamReply, UpstreamRequest, reply_channel,
};
use hold::{HoldBudget, Holding};

/// Pause before resending after `TRYAGAIN`/`CLUSTERDOWN` or an unreachable node.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Who the parts are sent for: what the choice of connection depends on.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The client's id: spreads clients over a pool's connections and a shard's replicas.
    pub id: u64,
    /// The client speaks RESP3: its parts go on connections that do too.
    pub resp3: bool,
    /// The client's node-side twin user, which scripts run as (see `auth::node_user`).
    pub node_user: Option<&'a Arc<NodeUser>>,
}

/// What became of a part given to the executor.
#[derive(Debug)]
pub enum Step {
    /// Sent, or waiting to be resent: its reply will come back on the executor's channel.
    Pending,
    /// The answer to keep: the node's reply or the proxy's error.
    Answered(Bytes),
    /// The proxy's error, and the client's own connection is gone with whatever state it held
    /// (WATCH, a transaction, a block).
    OwnLost(Bytes),
    /// A reply broke off after part of it was streamed to the client.
    Broken,
}

/// One client's in-flight parts' machinery: its reply channel, its parts waiting to be resent,
/// and its own upstream connection.
#[derive(Debug)]
pub struct Executor {
    /// The proxy-wide bounds on held parts, and what this client holds of them.
    budget: Arc<HoldBudget>,
    holding: Holding,
    /// Where nodes answer this client; created on its first part, so a client that never sends
    /// one (idle, or only PING) holds no channel.
    replies: Option<Replies>,
    /// Parts waiting to be resent, with when.
    delayed: Vec<(Instant, Tag)>,
    /// The client's own upstream connection (transactions, blocking commands), when it needs one.
    own: Option<OwnedConn>,
    /// The map the parts of this wake-up of the session are routed by: read once per wake-up
    /// (a pipelined batch), not once per part (~60 instructions each with arc-swap's guard),
    /// and let go when the wake-up ends ([`Executor::end_wake_up`]), so that an idle client
    /// never keeps an old map, and the pools of nodes it no longer names, alive.
    routing: Option<Arc<Routing>>,
}

/// The queue nodes' replies come back to a session on.
#[derive(Debug)]
struct Replies {
    tx: ReplySender,
    rx: ReplyReceiver,
}

impl Drop for Executor {
    /// A client that leaves with parts held gives their room back.
    fn drop(&mut self) {
        self.budget.give_back_all(&mut self.holding);
    }
}

impl Executor {
    pub fn new(budget: Arc<HoldBudget>) -> Executor {
        Executor { budget, holding: Holding::default(), replies: None, delayed: Vec::new(), own: None, routing: None }
    }

    /// The map this wake-up of the session routes by, read now when this is its first use. A
    /// fan-out counts the masters it sends to here, so that its parts, resolved by the same map,
    /// reach each master once.
    pub fn routing(&mut self, shared: &Shared) -> &Routing {
        self.routing.get_or_insert_with(|| shared.topology.routing_snapshot())
    }

    /// The session's wake-up is over: the next one reads the current map again.
    #[inline]
    pub fn end_wake_up(&mut self) {
        self.routing = None;
    }

    /// Sends `part`: chooses its peer and queues it there. `Some(error)`: answered at once, as
    /// when a script keeps the node busy, or no node has served its slot for `failover_wait`.
    pub fn send(&mut self, shared: &Shared, caller: Caller, tag: Tag, part: &mut Part) -> Option<ProxyError> {
        let error = self.try_send(shared, caller, tag, part)?;
        self.stop_holding(shared, part, false);
        Some(error)
    }

    fn try_send(&mut self, shared: &Shared, caller: Caller, tag: Tag, part: &mut Part) -> Option<ProxyError> {
        if part.target == Target::Owned {
            return self.send_owned(shared, caller, tag, part);
        }
        let routing = self.routing(shared);
        let peers = (routing, &**shared.topology.upstreams());
        let Some((pool, asking)) = peer::choose(peers, shared.read_from, part, caller.id as usize) else {
            return match peer::no_peer(routing, &part.target) {
                // No master serves the slot: the cluster may be failing over; wait for the map to
                // name one.
                ProxyError::SlotNotServed => self.hold(shared, tag, part, ProxyError::SlotNotServed),
                other => Some(other),
            };
        };
        // A script keeps the node busy: answer as the node would, at once, rather than queue
        // behind the script for as long as it runs.
        if !part.allow_busy
            && let Some(busy) = pool.busy_reply()
        {
            return Some(ProxyError::Busy(busy));
        }
        if part.tracked && !shared.tracking.is_confirmed(pool.addr()) {
            part.blind = true;
        }
        let prefix = if asking { Some(peer::asking_command()) } else { part.prefix.take() };
        let request = UpstreamRequest {
            payload: part.payload.clone(),
            prefix,
            tag,
            reply_to: self.reply_sender(),
            // A script runs as long as it likes; SCRIPT KILL, not a timeout, is how it is stopped.
            bounded: part.script.is_none(),
            streamable: part.streamable,
            lease: None,
        };
        match part.script {
            None => pool.send(caller.id as usize, caller.resp3, request),
            Some(kind) => pool.send_script(caller.node_user, caller.resp3, kind, request),
        }
        None
    }

    /// A part for the client's own connection; a redirected blocking command follows its key to
    /// the new node on a new own connection.
    fn send_owned(&mut self, shared: &Shared, caller: Caller, tag: Tag, part: &mut Part) -> Option<ProxyError> {
        if let Some(slot) = part.rehome
            && part.redirect.is_none()
        {
            let Some(addr) = peer::own_master(&shared.topology, slot, caller.id as usize) else {
                return self.hold(shared, tag, part, ProxyError::SlotNotServed);
            };
            // Sent again after a failure that happened before the command reached the node: on a
            // fresh connection, wherever the map now says.
            if part.retry_until.is_some() {
                self.own = None;
            }
            self.own_conn_at(shared, caller, &addr);
        }
        let prefix = part.redirect.as_ref().is_some_and(|r| r.1).then(peer::asking_command);
        if let Some((addr, _)) = &part.redirect {
            self.own_conn_at(shared, caller, addr);
        }
        let request = UpstreamRequest {
            payload: part.payload.clone(),
            prefix,
            tag,
            reply_to: self.reply_sender(),
            bounded: !part.blocks,
            streamable: false,
            lease: None,
        };
        match &self.own {
            Some(own) => {
                part.blind |= part.tracked && !shared.tracking.is_confirmed(own.addr());
                own.send(request);
            }
            None => return Some(ProxyError::NoTopology),
        }
        // A blocking command waits on the node now, no longer for a node: not held any more.
        if part.blocks {
            self.stop_holding(shared, part, true);
        }
        None
    }

    /// Takes a node's reply (or failure) for `part`: follows redirections, retries transient
    /// failures, or returns the answer.
    pub fn on_reply(
        &mut self,
        shared: &Shared,
        caller: Caller,
        tag: Tag,
        part: &mut Part,
        result: Result<Bytes, crate::upstream::UpstreamError>,
    ) -> Step {
        let policy = RetryPolicy { retry_for: shared.command_timeout, hold_for: self.budget.wait };
        match outcome::on_reply(part, result, policy, &shared.scripts, Instant::now) {
            Outcome::Done { reply, stale_map } => {
                if stale_map && shared.refresh_on_moved {
                    shared.topology.request_refresh(Trigger::Moved);
                }
                self.stop_holding(shared, part, true);
                Step::Answered(reply)
            }
            Outcome::Expired(reply) => {
                self.stop_holding(shared, part, false);
                Step::Answered(reply)
            }
            Outcome::Failed { error, own_lost } => {
                self.stop_holding(shared, part, false);
                if own_lost {
                    self.own = None;
                    return Step::OwnLost(error.to_resp());
                }
                Step::Answered(error.to_resp())
            }
            Outcome::Redirected { moved } => {
                let redirections = &shared.metrics;
                match moved {
                    true => redirections.redirections_moved.inc(),
                    false => redirections.redirections_ask.inc(),
                }
                if moved && shared.refresh_on_moved {
                    shared.topology.request_refresh(Trigger::Moved);
                }
                self.resend(shared, caller, tag, part)
            }
            Outcome::ScriptLoaded => self.resend(shared, caller, tag, part),
            Outcome::RetryLater { node_failed } => {
                if node_failed {
                    shared.topology.request_refresh(Trigger::NodeFailure);
                }
                if let Err(full) = self.start_holding(shared, part) {
                    return Step::Answered(full.to_resp());
                }
                self.delayed.push((Instant::now() + RETRY_PAUSE, tag));
                Step::Pending
            }
            Outcome::Broken => Step::Broken,
        }
    }

    /// Sends a part again now.
    pub fn resend(&mut self, shared: &Shared, caller: Caller, tag: Tag, part: &mut Part) -> Step {
        match self.send(shared, caller, tag, part) {
            None => Step::Pending,
            Some(error) => Step::Answered(error.to_resp()),
        }
    }

    /// Holds a part that found no node to go to, to be sent again after a pause, while its
    /// deadline has not passed and the bounds allow; else the error to answer (`error`, or
    /// [`ProxyError::HoldFull`]).
    fn hold(&mut self, shared: &Shared, tag: Tag, part: &mut Part, error: ProxyError) -> Option<ProxyError> {
        let now = Instant::now();
        if now >= *part.retry_until.get_or_insert(now + self.budget.wait) {
            return Some(error);
        }
        if let Err(full) = self.start_holding(shared, part) {
            return Some(full);
        }
        shared.topology.request_refresh(Trigger::NodeFailure);
        self.delayed.push((now + RETRY_PAUSE, tag));
        None
    }

    /// Counts `part` as held, once, within the client's and the proxy's bounds.
    fn start_holding(&mut self, shared: &Shared, part: &mut Part) -> Result<(), ProxyError> {
        if part.holding {
            return Ok(());
        }
        match self.budget.take(&mut self.holding, part.payload.len()) {
            Ok(()) => {
                part.holding = true;
                shared.metrics.held.total.inc();
                Ok(())
            }
            Err(full) => {
                shared.metrics.held.refused.inc();
                Err(full)
            }
        }
    }

    /// A held part has its answer: a node's reply (`released`), or the proxy's error.
    fn stop_holding(&mut self, shared: &Shared, part: &mut Part, released: bool) {
        if !part.holding {
            return;
        }
        part.holding = false;
        self.budget.give_back(&mut self.holding, part.payload.len());
        match released {
            true => shared.metrics.held.released.inc(),
            false => shared.metrics.held.expired.inc(),
        }
    }

    /// Whether parts are held, waiting for the cluster to fail over.
    pub fn holds_parts(&self) -> bool {
        !self.holding.is_empty()
    }

    /// When the next delayed part is due.
    #[inline]
    pub fn next_retry(&self) -> Option<Instant> {
        self.delayed.iter().map(|d| d.0).min()
    }

    /// Takes the parts due for resending now.
    pub fn take_due(&mut self) -> Vec<Tag> {
        let now = Instant::now();
        let due = self.delayed.iter().filter(|d| d.0 <= now).map(|d| d.1).collect();
        self.delayed.retain(|d| d.0 > now);
        due
    }

    /// A sender for replies to this client, creating the channel on first use.
    pub fn reply_sender(&mut self) -> ReplySender {
        let replies = self.replies.get_or_insert_with(|| {
            let (tx, rx) = reply_channel();
            Replies { tx, rx }
        });
        replies.tx.clone()
    }

    /// Whether replies may come (the channel exists).
    #[inline]
    pub fn has_replies(&self) -> bool {
        self.replies.is_some()
    }

    /// Moves every reply waiting into `into` without waiting; false when there was none.
    #[inline]
    pub fn take_replies(&self, into: &mut VecDeque<UpstreamReply>) -> bool {
        self.replies.as_ref().and_then(|replies| replies.rx.take_queued(into)).is_some()
    }

    /// Gives back the reply queue's buffer while it is empty (an idle client's: see
    /// [`Clients::trim_idle`](crate::session::clients::Clients::trim_idle)), and the room of
    /// the retry list.
    pub fn give_back_idle_memory(&mut self) {
        if let Some(replies) = &self.replies {
            replies.rx.give_back_idle_memory();
        }
        if self.delayed.is_empty() {
            self.delayed = Vec::new();
        }
    }

    /// Moves every reply waiting into `into`; pending while there is none (forever before the
    /// first part was sent).
    pub fn poll_replies(&self, cx: &mut Context<'_>, into: &mut VecDeque<UpstreamReply>) -> Poll<()> {
        match &self.replies {
            // The executor holds a sender itself: the queue never ends while it is alive.
            Some(replies) => replies.rx.poll_take(cx, into).map(|_| ()),
            None => Poll::Pending,
        }
    }

    /// The client's own connection, if it has one.
    #[inline]
    pub fn own(&self) -> Option<&OwnedConn> {
        self.own.as_ref()
    }

    /// Makes sure the client's own connection goes to `addr`.
    pub fn own_conn_at(&mut self, shared: &Shared, caller: Caller, addr: &str) {
        if self.own.as_ref().is_none_or(|c| c.addr() != addr) {
            // The client's node-side user: a transaction may run EVAL or FCALL.
            let mode = ConnMode::owned(caller.resp3, caller.node_user.cloned());
            self.own = Some(shared.topology.upstreams().owned(addr, mode));
        }
    }
}
