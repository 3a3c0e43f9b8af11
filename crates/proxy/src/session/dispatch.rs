//! Between the pipeline and the executor: parts go out to the executor, and what it makes of
//! each node's reply comes back into the pipeline, where replies wait for their turn.

use std::sync::Arc;

use bytes::Bytes;

use super::Session;
use super::pipeline::Meta;
use crate::auth::NodeUser;
use crate::error::ProxyError;
use crate::executor::{Caller, OwnCommand, Part, Step};
use crate::resp::reply::{self, Protocol};
use crate::resp::request::encode_command;
use crate::slot::Slot;
use crate::upstream::{LOGIN, PUSH, Tag, UpstreamReply, UpstreamRequest};

impl Session {
    /// Sends (or resends) part `part` of request `seq` to the node it is meant for now.
    pub(super) fn send(&mut self, seq: u64, part: u32) {
        let caller = caller(&self.state);
        let tracked = self.tracking.is_some() && self.is_tracked_read(seq);
        let Some(p) = self.pipeline.part_mut(seq, part) else {
            return;
        };
        p.tracked |= tracked;
        if let Some(error) = self.exec.send(&self.shared, caller, Tag { seq, part }, p) {
            self.complete(seq, part, error.to_resp());
        }
    }

    /// Appends a single-part request and sends its part: [`Session::send`] for a part just
    /// placed, without looking it up again (~20 instructions per request, bench/RESULTS.md).
    pub(super) fn send_single(&mut self, part: Part, meta: Meta) {
        let caller = caller(&self.state);
        let tracked = self.tracking.is_some() && self.is_tracked_read(self.pipeline.next_seq());
        let (seq, p) = self.pipeline.push_single(part, meta);
        p.tracked |= tracked;
        if let Some(error) = self.exec.send(&self.shared, caller, Tag { seq, part: 0 }, p) {
            self.complete(seq, 0, error.to_resp());
        }
    }

    /// Takes the replies in `reply_batch` (filled by the executor), in the order they came.
    pub(super) fn on_replies(&mut self) {
        // The batch keeps its capacity for the next one.
        while let Some(reply) = self.reply_batch.pop_front() {
            self.on_reply(reply);
        }
    }

    /// Takes a node's reply: pushes and pieces of a streamed reply go to the client; the rest
    /// goes through the executor, which says whether it is the answer.
    pub(super) fn on_reply(&mut self, upstream: UpstreamReply) {
        if upstream.tag.seq == PUSH.seq {
            return self.on_push(upstream);
        }
        if upstream.partial.is_some() {
            return self.on_piece(upstream);
        }
        let Tag { seq, part } = upstream.tag;
        if matches!(&upstream.result, Err(error) if error.lost_in_flight()) {
            self.pipeline.on_lost(seq, part);
        }
        let Some(p) = self.pipeline.part_mut(seq, part) else {
            return;
        };
        let state = &self.state;
        match self.exec.on_reply(&self.shared, || caller(state), upstream.tag, p, upstream.result) {
            Step::Pending => {}
            Step::Answered(reply) => self.complete(seq, part, reply),
            Step::OwnLost(reply) => {
                self.forget_watch();
                self.complete(seq, part, reply);
            }
            Step::Broken => self.broken = true,
        }
        if self.exec.has_overtaken() {
            self.answer_overtaken();
        }
    }

    /// A piece of a large reply: to the client as soon as every earlier reply is written, so the
    /// reply streams through instead of being held whole. The credit goes back once the bytes
    /// are written; until then the node's connection reads no further ahead than its window.
    #[inline(never)]
    fn on_piece(&mut self, upstream: UpstreamReply) {
        if let (Ok(piece), Some(credit)) = (upstream.result, upstream.partial) {
            let kept = self.pipeline.stream(upstream.tag.seq, &piece, &credit);
            // Pieces waiting behind earlier replies are output the client has not taken, as the
            // write buffer is: past the limit the client is disconnected, as Redis does.
            self.over_output_limit |= kept > self.shared.client_output_limit;
        }
    }

    /// Parts that waited to be resent when a later part of the client ran: resent now, they would
    /// run after it, which one node never does. Each is answered with the error that made it wait,
    /// as the node answered it.
    fn answer_overtaken(&mut self) {
        for Tag { seq, part } in self.exec.take_overtaken() {
            let Some(p) = self.pipeline.part_mut(seq, part) else {
                continue;
            };
            let error = self.exec.give_up(&self.shared, p);
            self.complete(seq, part, error);
        }
    }

    /// Whether moving the client's own connection to the master of `slot` now would drop it while
    /// requests the client sent on it are unanswered: a connection moved is closed, with what it
    /// still owes. A request that would do so waits for them, as one Redis connection would have
    /// answered them first (a pipelined transaction or WATCH on another node behind a transaction
    /// in flight).
    pub(super) fn moves_own_under_earlier(&self, slot: Option<Slot>) -> bool {
        self.own_elsewhere(slot) && self.pipeline.last_unanswered_on_own().is_some()
    }

    /// Whether the client's own connection is at another master than the one serving `slot`.
    pub(super) fn own_elsewhere(&self, slot: Option<Slot>) -> bool {
        let (Some(own), Some(slot)) = (self.exec.own(), slot) else { return false };
        let master = crate::executor::peer::own_master(&self.shared.topology, Some(slot), 0, None);
        master.is_some_and(|addr| addr != own.addr())
    }

    /// The client's own connection to the master of `slot` (without one: the master it is at, or
    /// any), created or moved there when needed. `None` when no master serves the slot.
    pub(super) fn own_conn_for(&mut self, slot: Option<Slot>) -> Option<()> {
        let current = self.exec.own().map(|own| own.addr());
        let addr = crate::executor::peer::own_master(&self.shared.topology, slot, self.state.id as usize, current)?;
        self.exec.own_conn_at(&self.shared, caller(&self.state), &addr);
        Some(())
    }

    /// What the client's own connection follows of the client: its protocol and node-side user.
    pub(super) fn own_conn_terms(&self) -> (Protocol, Option<Arc<NodeUser>>) {
        (self.state.protocol, caller(&self.state).node_user.cloned())
    }

    /// The client switched protocol or user (HELLO, AUTH, RESET) since `before`: its own
    /// connection, if it has one, follows, in the client's order (commands whose replies are
    /// dropped), so that later commands on it are answered in the client's protocol and its
    /// scripts run as its user on the node, while its WATCH stays, as on a node.
    pub(super) fn follow_client_on_own(&mut self, before: (Protocol, Option<Arc<NodeUser>>)) {
        let (protocol, user) = self.own_conn_terms();
        let user_changed = match (&before.1, &user) {
            (Some(before), Some(now)) => !Arc::ptr_eq(before, now),
            (before, now) => before.is_some() != now.is_some(),
        };
        if user_changed {
            self.log_own_in_again();
        }
        if protocol != before.0 {
            let version: &[u8] = if protocol == Protocol::Resp3 { b"3" } else { b"2" };
            let hello = UpstreamRequest::unanswered(encode_command(&[b"HELLO", version]), PUSH);
            self.send_on_own(hello, OwnCommand::Terms);
        }
    }

    /// Sends `request`, a command of the proxy's own nobody waits for, on the client's own
    /// connection, if it has one, once every earlier request for that connection has its final
    /// reply (see [`Executor::send_on_own`](crate::executor::Executor::send_on_own)). Without an
    /// own connection there is no state on a node for it to change.
    pub(super) fn send_on_own(&mut self, request: UpstreamRequest, kind: OwnCommand) {
        if self.exec.own().is_some() {
            self.exec.send_on_own(self.pipeline.last_unanswered_on_own(), request, kind);
        }
    }

    /// Logs the client's own connection, if it has one, in again as the client's user now (its
    /// node-side twin set up afresh, or the proxy itself): after AUTH or RESET, or an ACL reload
    /// that may have changed the user's rules. An error fails the connection ([`LOGIN`]). A
    /// client logged in as nobody now (its user removed, or RESET where anonymous clients are
    /// refused) keeps no own connection: it may run nothing on one until it logs in again.
    pub(super) fn log_own_in_again(&mut self) {
        if self.state.user.is_none() && self.exec.own().is_some() {
            self.exec.close_own();
            self.forget_watch();
            return;
        }
        if self.exec.own().is_none() {
            return;
        }
        let user = caller(&self.state).node_user.map(|user| &**user);
        for command in self.shared.topology.upstreams().login_commands(user) {
            let args: Vec<&[u8]> = command.iter().map(Vec::as_slice).collect();
            self.send_on_own(UpstreamRequest::unanswered(encode_command(&args), LOGIN), OwnCommand::Terms);
        }
    }

    /// Resends the parts whose retry pause is over.
    pub(super) fn resend_due(&mut self) {
        for Tag { seq, part } in self.exec.take_due() {
            self.send(seq, part);
        }
    }

    /// Stores the final reply of part `part` of request `seq`. Parts deferred on it go out now if
    /// it ran (neither an error nor null: a transaction's settings after EXEC), or are answered by
    /// the session (its queued connection commands, [`super::pipeline::Pipeline::local_part`]);
    /// else they are settled unsent.
    pub(super) fn complete(&mut self, seq: u64, part: u32, reply: Bytes) {
        if self.tracking.is_some() && self.pipeline.part_mut(seq, part).is_some_and(|p| p.blind) {
            self.invalidate_blind_read(seq);
        }
        let deferred = self.pipeline.complete(seq, part, reply);
        self.traffic.commands_run += deferred.ran_in_exec;
        for other in deferred.parts {
            let answer = match (deferred.ran, self.pipeline.local_part(seq, other)) {
                (true, None) => {
                    self.send(seq, other);
                    continue;
                }
                // A connection command queued in the transaction EXEC ran (transaction.rs).
                (true, Some(payload)) => self.answer_in_exec(payload),
                // Settled unsent: a deferred part defers nothing itself.
                (false, _) => reply::ok(),
            };
            self.traffic.commands_run += self.pipeline.complete(seq, other, answer).ran_in_exec;
        }
    }

    /// Answers request `meta`'s slot with the proxy's error.
    pub(super) fn push_error(&mut self, error: ProxyError, meta: super::Meta) {
        self.pipeline.push_ready(error.to_resp(), meta);
    }
}

/// Who the executor sends for: the client's id, protocol and node-side user.
pub(super) fn caller(state: &super::ClientState) -> Caller<'_> {
    Caller {
        id: state.id,
        resp3: state.protocol == Protocol::Resp3,
        node_user: state.user.as_ref().and_then(|u| u.node_user.as_ref()),
    }
}
