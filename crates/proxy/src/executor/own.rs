//! The client's own upstream connection (transactions, WATCH, blocking commands): where its
//! parts go, and the commands the proxy sends on it itself, kept in the client's order.

use super::{Caller, Executor, Part, Target, peer};
use crate::error::ProxyError;
use crate::shared::Shared;
use crate::upstream::{ConnMode, OwnedConn, Tag, UpstreamRequest};

/// A command the proxy sends on the client's own connection itself, nobody waiting for its reply,
/// which goes out once the replies to every request up to `after` are final.
#[derive(Debug)]
pub(super) struct FollowUp {
    after: u64,
    request: UpstreamRequest,
    kind: OwnCommand,
    /// The own connection it was meant for ([`Executor::replace_own`] counts them).
    conn: u64,
}

/// What a command the proxy sends on the own connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnCommand {
    /// UNWATCH after RESET or an aborted EXEC: it ends the client's WATCH on whichever own
    /// connection carries it when the command's turn comes (a WATCH sent again after a failure
    /// goes out on a fresh connection).
    Unwatch,
    /// HELLO or a login after a change of protocol or user: only for the connection it was meant
    /// for, since a newer one is opened with the client's terms of its time — never older ones.
    Terms,
}

impl Executor {
    /// The client's own connection, if it has one.
    #[inline]
    pub fn own(&self) -> Option<&OwnedConn> {
        self.own.as_ref()
    }

    /// Drops the client's own connection (it closes once nothing else holds it).
    pub fn close_own(&mut self) {
        self.replace_own(None);
    }

    /// Sets the own connection aside, with what it holds on its node (a WATCH), for a command
    /// that must run on another node and returns before the client's next request is read (a
    /// blocking command): the next own connection is opened there, and
    /// [`Executor::restore_own`] puts this one back once the command returned.
    pub fn set_own_aside(&mut self) {
        if self.own_aside.is_none() {
            let own = self.own.take();
            self.replace_own(None);
            self.own_aside = own;
        }
    }

    /// The own connection set aside ([`Executor::set_own_aside`]), back in place of the one
    /// used meanwhile, which closes.
    pub fn restore_own(&mut self) {
        if let Some(own) = self.own_aside.take() {
            self.replace_own(Some(own));
        }
    }

    /// Makes sure the client's own connection goes to `addr`.
    pub fn own_conn_at(&mut self, shared: &Shared, caller: Caller, addr: &str) {
        if self.own.as_ref().is_none_or(|c| c.addr() != addr) {
            // The client's node-side user: a transaction may run EVAL or FCALL.
            let mode = ConnMode::owned(caller.resp3, caller.node_user.cloned());
            self.replace_own(Some(shared.topology.upstreams().owned(addr, mode)));
        }
    }

    /// A part for the client's own connection; a redirected blocking command follows its key to
    /// the new node on a new own connection.
    pub(super) fn send_owned(
        &mut self,
        shared: &Shared,
        caller: Caller,
        tag: Tag,
        part: &mut Part,
    ) -> Option<ProxyError> {
        if let Some(slot) = part.rehome
            && part.redirect().is_none()
        {
            let current = self.own.as_ref().map(OwnedConn::addr);
            let Some(addr) = peer::own_master(&shared.topology, slot, caller.id as usize, current) else {
                return self.hold(shared, tag, part, ProxyError::SlotNotServed);
            };
            // Sent again after a failure that happened before the command reached the node: on a
            // fresh connection, wherever the map now says.
            if part.has_retry_deadline() {
                self.replace_own(None);
            }
            self.own_conn_at(shared, caller, &addr);
        }
        let prefix = part.redirect().is_some_and(|r| r.1).then(|| Box::new(peer::asking_command()));
        if let Some((addr, _)) = part.redirect() {
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

    /// Sends `request` on the own connection in the client's order: at once when no earlier
    /// request for it waits for its reply (`after` is `None`) and no such command waits either,
    /// else once the replies to every request up to `after` are final
    /// ([`Executor::release_own_follow_ups`]). A part still waiting may be sent again — after a
    /// `-TRYAGAIN`, or on a fresh connection while the cluster fails over — and a command sent
    /// meanwhile would overtake it (an UNWATCH before the WATCH it was to end). The own
    /// connection's later parts wait behind it ([`Executor::waits_for_follow_up`]).
    pub fn send_on_own(&mut self, after: Option<u64>, request: UpstreamRequest, kind: OwnCommand) {
        let waiting = self.own_follow_ups.back().map(|f| f.after);
        // Behind those waiting already, in order.
        let Some(after) = after.max(waiting) else {
            if let Some(own) = &self.own {
                own.send(request);
            }
            return;
        };
        self.own_follow_ups.push_back(FollowUp { after, request, kind, conn: self.own_generation });
    }

    /// Whether commands wait to be sent on the own connection ([`Executor::send_on_own`]).
    #[inline]
    pub fn has_own_follow_ups(&self) -> bool {
        !self.own_follow_ups.is_empty()
    }

    /// Sends the commands waiting for the own connection whose turn came: the replies to every
    /// request before `unreleased` (the oldest request whose reply is not released yet) are.
    /// Parts held back behind them are due at once.
    pub fn release_own_follow_ups(&mut self, unreleased: u64) {
        let mut released = false;
        while self.own_follow_ups.front().is_some_and(|f| f.after < unreleased) {
            let Some(FollowUp { request, kind, conn, .. }) = self.own_follow_ups.pop_front() else { break };
            released = true;
            let meant_for = kind == OwnCommand::Unwatch || conn == self.own_generation;
            // Without an own connection any more, its state is gone with it: nothing to follow.
            if let Some(own) = self.own.as_ref().filter(|_| meant_for) {
                own.send(request);
            }
        }
        if released && self.own_follow_ups.is_empty() {
            self.resend_held_back_now();
        }
    }

    /// The parts held back behind commands for the own connection are due now that those went
    /// out (with them, any other part kept in order with every slot: all of them are later than
    /// what the commands waited for, and one still behind another waits again).
    fn resend_held_back_now(&mut self) {
        let now = std::time::Instant::now();
        for (due, _, _) in self.delayed.iter_mut().filter(|(_, _, slot)| slot.is_none()) {
            *due = (*due).min(now);
        }
    }

    /// The own connection is now `own` (a new one, or none): commands waiting for the previous
    /// one that set its terms are not for this one ([`OwnCommand::Terms`]).
    pub(super) fn replace_own(&mut self, own: Option<OwnedConn>) {
        self.own = own;
        self.own_generation += 1;
    }

    /// Whether `part`, for the own connection, must wait for a command the proxy sends there
    /// before it (see [`Executor::send_on_own`]).
    #[inline]
    pub(super) fn waits_for_follow_up(&self, tag: Tag, part: &Part) -> bool {
        part.target == Target::Owned && self.own_follow_ups.front().is_some_and(|f| tag.seq > f.after)
    }
}
