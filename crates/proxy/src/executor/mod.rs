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
//! The order of replies is not its business (the session's pipeline releases them in request
//! order); the order in which parts reach the nodes is, where a part is sent again.

pub mod functions;
pub mod hold;
pub mod outcome;
mod own;
pub mod part;
pub mod peer;
pub mod scripts;
pub mod wait;

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;

pub use outcome::{Outcome, RetryPolicy};
pub use own::OwnCommand;
pub use part::{Part, Target};
pub use wait::WaitPlan;

use crate::auth::NodeUser;
use crate::error::ProxyError;
use crate::shared::Shared;
use crate::slot::Slot;
use crate::topology::{Routing, Trigger};
use crate::upstream::{
    OwnedConn, ReplyReceiver, ReplySender, Tag, UpstreamReply, UpstreamRequest, queue::HandOver, reply_channel,
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
    /// Parts waiting to be resent, with when, and the slot their order is kept in (see
    /// [`order_slot`]).
    delayed: Vec<(Instant, Tag, Option<Slot>)>,
    /// Parts a later part of the client overtook while they waited to be resent (see
    /// [`Executor::take_overtaken`]).
    overtaken: Vec<Tag>,
    /// The client's own upstream connection (transactions, blocking commands), when it needs one.
    own: Option<OwnedConn>,
    /// The own connection set aside while a blocking command runs on one of its own
    /// ([`Executor::set_own_aside`]).
    own_aside: Option<OwnedConn>,
    /// Commands the proxy sends on the own connection itself, waiting for their turn
    /// ([`Executor::send_on_own`]).
    own_follow_ups: VecDeque<own::FollowUp>,
    /// Counts the own connections opened (and closed), so that a command waiting for one is not
    /// sent on the next ([`own::OwnCommand::Terms`]).
    own_generation: u64,
    /// The map the parts of this wake-up of the session are routed by: looked at once per
    /// wake-up (a pipelined batch), not once per part, and kept from one wake-up to the next
    /// while it is the current one (a generation compare instead of arc-swap's snapshot, ~60
    /// instructions, and its reference count) — while the client is active. An idle one lets it
    /// go when its spare memory is given back ([`Executor::give_back_idle_memory`], after ~2 s),
    /// and routes by a map only for one wake-up at a time until it sends again (a retry, a
    /// redirection): an idle client keeps no old map, and no pools of nodes that map names, alive.
    routing: Option<Arc<Routing>>,
    /// `routing` was checked against the current generation in this wake-up.
    routing_checked: bool,
    /// The client sent something since it was last found idle: `routing` is kept between
    /// wake-ups.
    keeps_routing: bool,
    /// Where node replies are handed over rather than queued, once the reply queue exists
    /// ([`queue::Receiver::hand_over_to`](crate::upstream::queue::Receiver::hand_over_to)).
    hand_over: Option<Weak<dyn HandOver<UpstreamReply>>>,
}

/// The queue nodes' replies come back to a session on.
#[derive(Debug)]
struct Replies {
    tx: ReplySender,
    rx: ReplyReceiver,
}

/// The slot a part's order is kept in: a part for one slot stays behind earlier parts of that
/// slot; one without (a fan-out, the own connection, a keyless command: `None`) behind every
/// earlier part, and every later part behind it.
pub fn order_slot(part: &Part) -> Option<Slot> {
    match part.target {
        Target::Slot(slot) => slot,
        _ => None,
    }
}

/// Whether parts of these slots keep their order (see [`order_slot`]).
pub fn in_order(a: Option<Slot>, b: Option<Slot>) -> bool {
    a.is_none() || b.is_none() || a == b
}

impl Drop for Executor {
    /// A client that leaves with parts held gives their room back.
    fn drop(&mut self) {
        self.budget.give_back_all(&mut self.holding);
    }
}

impl Executor {
    pub fn new(budget: Arc<HoldBudget>) -> Executor {
        Executor {
            budget,
            holding: Holding::default(),
            replies: None,
            delayed: Vec::new(),
            overtaken: Vec::new(),
            own: None,
            own_aside: None,
            own_follow_ups: VecDeque::new(),
            own_generation: 0,
            routing: None,
            routing_checked: false,
            keeps_routing: false,
            hand_over: None,
        }
    }

    /// Has node replies handed over to `receiver` when it takes them, instead of queued.
    pub fn hand_replies_over_to(&mut self, receiver: Weak<dyn HandOver<UpstreamReply>>) {
        if let Some(replies) = &self.replies {
            replies.rx.hand_over_to(receiver.clone());
        }
        self.hand_over = Some(receiver);
    }

    /// The map this wake-up of the session routes by, read now when this is its first use. A
    /// fan-out counts the masters it sends to here, so that its parts, resolved by the same map,
    /// reach each master once.
    pub fn routing(&mut self, shared: &Shared) -> &Routing {
        if !self.routing_checked {
            self.routing_checked = true;
            let current = shared.topology.routing_generation();
            if self.routing.as_ref().is_none_or(|held| held.generation != current) {
                self.routing = None;
            }
        }
        self.routing.get_or_insert_with(|| shared.topology.routing_snapshot())
    }

    /// Redis' `-BUSY` error while a script keeps the master of `slot` busy: a command queued in a
    /// transaction for it is refused with it then, as Redis' `processCommand` refuses it while
    /// queueing (EXEC then aborts), instead of the transaction finding out at EXEC.
    pub fn busy_master(&mut self, shared: &Shared, slot: Slot) -> Option<ProxyError> {
        self.routing(shared).master(slot)?.busy_reply().map(ProxyError::Busy)
    }

    /// The session's wake-up is over: the next one checks whether its map is still current (an
    /// idle client's map is let go).
    #[inline]
    pub fn end_wake_up(&mut self) {
        self.routing_checked = false;
        if !self.keeps_routing {
            self.routing = None;
        }
    }

    /// The client sent something: the map may be kept between wake-ups again (see `routing`).
    #[inline]
    pub fn client_active(&mut self) {
        self.keeps_routing = true;
    }

    /// Sends `part`: chooses its peer and queues it there. `Some(error)`: answered at once, as
    /// when a script keeps the node busy, or no node has served its slot for `failover_wait`.
    ///
    /// A client's requests run in the order it sent them, as on one node: while an earlier part
    /// of the same slot (or one without a slot) waits to be resent, this one waits behind it; a
    /// part for the own connection also waits behind the proxy's own commands queued there
    /// before it ([`Executor::send_on_own`]).
    pub fn send(&mut self, shared: &Shared, caller: Caller, tag: Tag, part: &mut Part) -> Option<ProxyError> {
        if (!self.delayed.is_empty() && self.waits_behind(tag, order_slot(part))) || self.waits_for_follow_up(tag, part)
        {
            if let Err(full) = self.start_holding(shared, part) {
                return Some(full);
            }
            part.set_retry_error(None);
            self.delay(Instant::now(), tag, part);
            return None;
        }
        let error = self.try_send(shared, caller, tag, part)?;
        self.stop_holding(shared, part, false);
        Some(error)
    }

    /// Part `tag` is resent [`RETRY_PAUSE`] after `now`, kept in order with the client's others.
    fn delay(&mut self, now: Instant, tag: Tag, part: &Part) {
        self.delayed.push((now + RETRY_PAUSE, tag, order_slot(part)));
    }

    /// Whether an earlier part kept in order with one of `slot` waits to be resent.
    fn waits_behind(&self, tag: Tag, slot: Option<Slot>) -> bool {
        self.delayed.iter().any(|&(_, earlier, of)| earlier.seq < tag.seq && in_order(of, slot))
    }

    /// Part `tag` ran (or may have) on a node: earlier parts kept in order with it that wait to be
    /// resent would run after it now, so they are not resent (see [`Executor::take_overtaken`]).
    fn ran(&mut self, tag: Tag, slot: Option<Slot>) {
        if self.delayed.is_empty() {
            return;
        }
        let overtaken = &mut self.overtaken;
        self.delayed.retain(|&(_, earlier, of)| {
            let keep = earlier.seq >= tag.seq || !in_order(of, slot);
            if !keep {
                overtaken.push(earlier);
            }
            keep
        });
    }

    /// Parts that waited to be resent when a later part of theirs ran: the session answers each
    /// with the error that made it wait ([`Executor::give_up`]), as a node answered it then.
    pub fn take_overtaken(&mut self) -> Vec<Tag> {
        std::mem::take(&mut self.overtaken)
    }

    /// Whether parts were overtaken (see [`Executor::take_overtaken`]).
    #[inline]
    pub fn has_overtaken(&self) -> bool {
        !self.overtaken.is_empty()
    }

    /// An overtaken part is not resent: its answer is the error that made it wait.
    pub fn give_up(&mut self, shared: &Shared, part: &mut Part) -> Bytes {
        self.stop_holding(shared, part, false);
        let waited =
            || ProxyError::command("TRYAGAIN an earlier request of this client could not be sent yet").to_resp();
        part.take_retry_error().unwrap_or_else(waited)
    }

    fn try_send(&mut self, shared: &Shared, caller: Caller, tag: Tag, part: &mut Part) -> Option<ProxyError> {
        if part.target == Target::Owned {
            return self.send_owned(shared, caller, tag, part);
        }
        let routing = self.routing(shared);
        let peers = (routing, &**shared.topology.upstreams());
        let Some((pool, asking)) = peer::choose(peers, shared.read_from, part, caller.id as usize) else {
            return self.no_peer(shared, tag, part);
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
        let prefix = if asking { Some(peer::asking_command()) } else { part.take_prefix() }.map(Box::new);
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

    /// No node to send `part` to. Out of line: rare, and inlined it made every send's frame
    /// larger.
    #[inline(never)]
    fn no_peer(&mut self, shared: &Shared, tag: Tag, part: &mut Part) -> Option<ProxyError> {
        match peer::no_peer(self.routing(shared), &part.target) {
            // No master serves the slot: the cluster may be failing over; wait for the map to name
            // one.
            ProxyError::SlotNotServed => self.hold(shared, tag, part, ProxyError::SlotNotServed),
            other => Some(other),
        }
    }

    /// Takes a node's reply (or failure) for `part`: follows redirections, retries transient
    /// failures, or returns the answer. The usual reply ([`outcome::is_final`]) is the answer,
    /// checked here inlined into the session's reply handling; the rest is out of line
    /// ([`Executor::on_other_reply`]).
    #[inline]
    pub fn on_reply<'c>(
        &mut self,
        shared: &Shared,
        caller: impl FnOnce() -> Caller<'c>,
        tag: Tag,
        part: &mut Part,
        result: Result<Bytes, crate::upstream::UpstreamError>,
    ) -> Step {
        match result {
            // A WAIT's short waits are looked at too (`wait.rs`).
            Ok(reply) if outcome::is_final(part, &reply) && !part.waits_long => self.answered(shared, tag, part, reply),
            // Who the request is sent for matters only to a resend: worked out then (~12
            // instructions per reply when it was passed ready-made).
            result => self.on_other_reply(shared, caller(), tag, part, result),
        }
    }

    /// `reply` is part `tag`'s answer: a part held through a failover is released, and earlier
    /// parts waiting to be resent are overtaken by it.
    #[inline]
    fn answered(&mut self, shared: &Shared, tag: Tag, part: &mut Part, reply: Bytes) -> Step {
        self.stop_holding(shared, part, true);
        self.ran(tag, order_slot(part));
        Step::Answered(reply)
    }

    /// [`Executor::on_reply`] for an error reply or a failure.
    #[inline(never)]
    fn on_other_reply(
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
                self.answered(shared, tag, part, reply)
            }
            Outcome::Expired(reply) => {
                self.stop_holding(shared, part, false);
                Step::Answered(reply)
            }
            Outcome::Failed { error, own_lost } => {
                self.stop_holding(shared, part, false);
                // Maybe applied (in flight when its connection failed, or timed out).
                self.ran(tag, order_slot(part));
                if own_lost {
                    self.replace_own(None);
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
            Outcome::WaitAgain { answered } => {
                // The node answered: a hold is over (counted with the payload it held).
                self.stop_holding_bytes(shared, part, true, answered);
                self.resend(shared, caller, tag, part)
            }
            Outcome::RetryLater { node_failed } => {
                if node_failed {
                    shared.topology.request_refresh(Trigger::NodeFailure);
                }
                if let Err(full) = self.start_holding(shared, part) {
                    return Step::Answered(full.to_resp());
                }
                self.delay(Instant::now(), tag, part);
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
        if now >= part.retry_deadline(now + self.budget.wait) {
            return Some(error);
        }
        if let Err(full) = self.start_holding(shared, part) {
            return Some(full);
        }
        shared.topology.request_refresh(Trigger::NodeFailure);
        part.set_retry_error(Some(error.to_resp()));
        self.delay(now, tag, part);
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
        let bytes = part.payload.len();
        self.stop_holding_bytes(shared, part, released, bytes);
    }

    /// [`Executor::stop_holding`] of a part that held `bytes` (its payload then).
    fn stop_holding_bytes(&mut self, shared: &Shared, part: &mut Part, released: bool, bytes: usize) {
        if !part.holding {
            return;
        }
        part.holding = false;
        self.budget.give_back(&mut self.holding, bytes);
        match released {
            true => shared.metrics.held.released.inc(),
            false => shared.metrics.held.expired.inc(),
        }
    }

    /// Whether parts are held, waiting for the cluster to fail over.
    pub fn holds_parts(&self) -> bool {
        !self.holding.is_empty()
    }

    /// Whether parts wait to be resent.
    #[inline]
    pub fn has_retries(&self) -> bool {
        !self.delayed.is_empty()
    }

    /// When the next delayed part is due.
    #[inline]
    pub fn next_retry(&self) -> Option<Instant> {
        self.delayed.iter().map(|d| d.0).min()
    }

    /// Takes the parts due for resending now.
    pub fn take_due(&mut self) -> Vec<Tag> {
        let now = Instant::now();
        let mut due: Vec<Tag> = self.delayed.iter().filter(|d| d.0 <= now).map(|d| d.1).collect();
        self.delayed.retain(|d| d.0 > now);
        // In the client's order: a part gated behind another may come due with it.
        due.sort_unstable_by_key(|tag| (tag.seq, tag.part));
        due
    }

    /// A sender for replies to this client, creating the channel on first use.
    pub fn reply_sender(&mut self) -> ReplySender {
        let hand_over = &self.hand_over;
        let replies = self.replies.get_or_insert_with(|| {
            let (tx, rx) = reply_channel();
            if let Some(receiver) = hand_over {
                rx.hand_over_to(receiver.clone());
            }
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
    /// the retry list; lets go of the map kept between wake-ups.
    pub fn give_back_idle_memory(&mut self) {
        self.routing = None;
        self.keeps_routing = false;
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
}

#[cfg(test)]
mod tests;
