//! A part: one request to one node, the stage a request reaches once routed (request → route →
//! part). It carries what the executor learns while getting it answered: where it goes now, how
//! often it was redirected, until when it may be retried.

use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::wait::WaitPlan;
use crate::slot::Slot;
use crate::upstream::ScriptKind;

/// Which node a part goes to when it is (re)sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The owner of the slot in the current map; `None`: any master.
    Slot(Option<Slot>),
    /// Master number `n` of the current map (fan-out).
    Master(usize),
    /// The node at this address, whatever its role now: operator commands name the nodes they ran
    /// on, so they must not follow a shard to another node. `replica` picks the pool that sends
    /// `READONLY`, shared with replica reads.
    Node { addr: String, replica: bool },
    /// The client's own connection (transactions, blocking commands).
    Owned,
}

/// One request to one node, with what the proxy learnt while sending it.
///
/// What most parts never need — a redirection, a retry, pieces of a streamed reply — is boxed
/// in one [`Detour`] and made on first use: a part is built and moved into the pipeline on every
/// request, and with those fields inline it was 288 bytes, a `memcpy` call per move; in two boxes
/// its drop looked at each (bench/RESULTS.md).
#[derive(Debug, Clone)]
pub struct Part {
    pub payload: Bytes,
    pub target: Target,
    /// Commands that write never go to replicas.
    pub write: bool,
    /// Sending it again cannot change what the client sees, so one lost with its connection in
    /// flight may be resent (`outcome::on_failure`): set when the command only reads (Redis'
    /// `readonly` flag), cleared when it is lost if a later request of the client that keeps
    /// order with it was sent meanwhile (`Pipeline::on_lost`: that one may have run first).
    pub resend_safe: bool,
    /// Redirections and retries so far.
    pub hops: u8,
    /// Follow `MOVED`/`ASK` for this part; off inside a transaction, where a redirection aborts it.
    pub follow_redirects: bool,
    /// The script was loaded again after a `-NOSCRIPT`: a second one goes to the client.
    pub script_reloaded: bool,
    /// Counted as held while it waits to be resent (`executor::hold`).
    pub holding: bool,
    /// A blocking command: its reply is not bounded by `command_timeout`.
    pub blocks: bool,
    /// The node may keep the reply for long even so (WAIT, WAITAOF: until replicas acknowledge
    /// or the timeout): replies of the client's earlier requests are not held back for it (see
    /// `Pipeline::waits_long`).
    pub waits_long: bool,
    /// An own-connection part whose connection holds nothing the client set (a blocking command
    /// outside WATCH and MULTI), for the slot given (`None`: any master): its connection is
    /// opened at the slot's master when it is sent, and when it was never sent (the node
    /// unreachable, no master) it is held through a failover and sent on a fresh connection,
    /// like a pooled part.
    pub rehome: Option<Option<crate::slot::Slot>>,
    /// The reply is forwarded untouched (a single-part request), so a large one may stream.
    pub streamable: bool,
    /// A script or function: sent on one of the node's script lanes, not a pooled connection.
    pub script: Option<ScriptKind>,
    /// Sent even while a script keeps the node busy (SCRIPT KILL, FUNCTION KILL: Redis'
    /// `allow_busy` commands); other parts get the node's `-BUSY` error then.
    pub allow_busy: bool,
    /// What the part picked up on the way: a redirection, a retry, a command to send first, the
    /// parts it defers, pieces of its streamed reply.
    detour: Option<Box<Detour>>,
    /// Pieces of the reply were written to the client already.
    pub streamed: bool,
    /// The reply, once in, while other parts of the same request are still waiting.
    pub(crate) reply: Option<Bytes>,
    /// A read of a client with CLIENT TRACKING on: it goes to masters only, whose tracking
    /// streams watch its keys (`crate::tracking`).
    pub tracked: bool,
    /// A tracked read was sent to a master whose tracking stream was not confirmed: the client
    /// must not keep what it read.
    pub blind: bool,
}

/// What a part picks up when its first attempt is not the end of it — a redirection, a command
/// to send first, a retry's deadline and error, pieces of a reply large enough to stream — and,
/// for a transaction's EXEC, the parts sent only after it: all of it rare, so none of it is
/// inline in every part.
#[derive(Debug, Clone, Default)]
struct Detour {
    /// Set by a redirection: send to this node instead of the map's owner, with `ASKING` if asked.
    redirect: Option<(String, bool)>,
    /// A command to send just before the next attempt (`SCRIPT LOAD` after a `-NOSCRIPT`).
    prefix: Option<Bytes>,
    /// What made it wait to be resent (`-CLUSTERDOWN`, `-TRYAGAIN`, the node unreachable): its
    /// answer if a later part of the client runs first ([`super::Executor::take_overtaken`]).
    retry_error: Option<Bytes>,
    /// When retrying an unreachable node gives up, set on its first failure.
    retry_until: Option<Instant>,
    /// A read was resent once after its connection was lost in flight: a second loss is the
    /// client's error (a read that makes its node drop the connection is not sent again and again).
    resent_after_loss: bool,
    /// Parts of the same request sent only once this part's reply is in, and only if it is
    /// neither an error nor null (a transaction's settings for the other nodes, after its EXEC;
    /// its queued connection commands, which the session answers instead of sending).
    deferred: Vec<u32>,
    /// Pieces of a streamed reply held until earlier replies are written, and their credit; kept
    /// until the part is done.
    pieces: Pieces,
    /// A WAIT or WAITAOF asked of the node in short waits (`super::wait`).
    wait: Option<WaitPlan>,
}

/// Pieces of a streamed reply received while earlier replies were still pending (kept by the
/// session's pipeline, which releases replies in order), and what the node connection lent them
/// against (see [`crate::upstream::StreamCredit`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct Pieces {
    pub(crate) held: BytesMut,
    pub(crate) credit: Option<std::sync::Arc<crate::upstream::StreamCredit>>,
}

impl Pieces {
    /// The whole rest of the reply: the pieces held, then `last`. Out of line: it is rare, and
    /// the path that completes every reply keeps a small frame without it.
    #[inline(never)]
    pub(crate) fn end_with(&mut self, last: &[u8]) -> bytes::Bytes {
        self.held.extend_from_slice(last);
        self.held.split().freeze()
    }
}

impl Part {
    /// Pieces of the reply have come (written to the client or held): what comes next is the
    /// rest of that reply.
    pub fn reply_started(&self) -> bool {
        self.streamed || self.held().is_some_and(|held| !held.is_empty())
    }

    /// A part not sent yet.
    pub fn new(payload: Bytes, target: Target, write: bool) -> Part {
        Part {
            payload,
            target,
            write,
            resend_safe: false,
            hops: 0,
            follow_redirects: true,
            script_reloaded: false,
            holding: false,
            blocks: false,
            waits_long: false,
            rehome: None,
            streamable: false,
            script: None,
            allow_busy: false,
            detour: None,
            streamed: false,
            reply: None,
            tracked: false,
            blind: false,
        }
    }

    fn detour_mut(&mut self) -> &mut Detour {
        self.detour.get_or_insert_with(Box::default)
    }

    /// The detour to change: made when `setting` something, not to clear what was never set.
    fn detour_to_change(&mut self, setting: bool) -> Option<&mut Detour> {
        match setting {
            true => Some(self.detour_mut()),
            false => self.detour.as_deref_mut(),
        }
    }

    /// The node a redirection named, and whether it asked (`ASK`) rather than moved the slot.
    pub fn redirect(&self) -> Option<&(String, bool)> {
        self.detour.as_ref().and_then(|d| d.redirect.as_ref())
    }

    /// Sends the part to this node from now on (`None`: to its target's node again).
    pub fn set_redirect(&mut self, redirect: Option<(String, bool)>) {
        if let Some(detour) = self.detour_to_change(redirect.is_some()) {
            detour.redirect = redirect;
        }
    }

    /// The command to send just before the next attempt, taken: it goes once.
    pub fn take_prefix(&mut self) -> Option<Bytes> {
        self.detour.as_mut().and_then(|d| d.prefix.take())
    }

    /// Sends `prefix` just before the next attempt, once.
    pub fn set_prefix(&mut self, prefix: Bytes) {
        self.detour_mut().prefix = Some(prefix);
    }

    /// What made the part wait to be resent, taken.
    pub fn take_retry_error(&mut self) -> Option<Bytes> {
        self.detour.as_mut().and_then(|d| d.retry_error.take())
    }

    /// What made the part wait to be resent (`None`: nothing any more).
    pub fn set_retry_error(&mut self, error: Option<Bytes>) {
        if let Some(detour) = self.detour_to_change(error.is_some()) {
            detour.retry_error = error;
        }
    }

    /// Whether a retry's deadline is set (the part failed before).
    pub fn has_retry_deadline(&self) -> bool {
        self.detour.as_ref().is_some_and(|d| d.retry_until.is_some())
    }

    /// Whether this part may be resent after its connection was lost with it in flight: it is
    /// [`Part::resend_safe`], goes to a connection the proxy shares (an own connection holds
    /// client state, a blocking read would start its wait again) and was not resent for a loss
    /// before. Counts the resend.
    pub fn resend_after_loss(&mut self) -> bool {
        if !self.resend_safe || self.blocks || self.target == Target::Owned {
            return false;
        }
        let detour = self.detour_mut();
        !std::mem::replace(&mut detour.resent_after_loss, true)
    }

    /// When retrying gives up: set to `first` on the first call.
    pub fn retry_deadline(&mut self, first: Instant) -> Instant {
        *self.detour_mut().retry_until.get_or_insert(first)
    }

    /// What the client asked a WAIT or WAITAOF for, when it is asked of the node in short waits.
    pub fn wait_plan(&self) -> Option<&WaitPlan> {
        self.detour.as_ref().and_then(|d| d.wait.as_ref())
    }

    /// The plan of a WAIT or WAITAOF asked in short waits, taken: the next reply is the answer.
    pub fn take_wait_plan(&mut self) -> Option<WaitPlan> {
        self.detour.as_mut().and_then(|d| d.wait.take())
    }

    /// `CLIENT UNBLOCK` of the WAIT or WAITAOF this part asks in short waits: the one out is the
    /// last. Whether the part is one.
    pub fn end_wait(&mut self, error: bool) -> bool {
        let plan = self.detour.as_mut().and_then(|d| d.wait.as_mut());
        plan.map(|plan| plan.end(error)).is_some()
    }

    /// Asks the node in short waits what the client asked a WAIT or WAITAOF for.
    pub fn set_wait_plan(&mut self, plan: WaitPlan) {
        self.detour_mut().wait = Some(plan);
    }

    /// The parts deferred on this one, taken.
    pub fn take_deferred(&mut self) -> Vec<u32> {
        self.detour.as_mut().map(|d| std::mem::take(&mut d.deferred)).unwrap_or_default()
    }

    /// Sends these parts of the same request only once this part's reply is in (replacing any
    /// set before).
    pub fn set_deferred(&mut self, deferred: Vec<u32>) {
        if let Some(detour) = self.detour_to_change(!deferred.is_empty()) {
            detour.deferred = deferred;
        }
    }

    /// Pieces of a streamed reply held (`None`, or empty, when none are).
    pub(crate) fn held(&self) -> Option<&BytesMut> {
        self.detour.as_ref().map(|d| &d.pieces.held)
    }

    /// The held pieces, made on first use.
    pub(crate) fn pieces_mut(&mut self) -> &mut Pieces {
        &mut self.detour_mut().pieces
    }

    /// The held pieces, if the part has a detour (nothing is made; they may be empty).
    pub(crate) fn pieces_if_any(&mut self) -> Option<&mut Pieces> {
        self.detour.as_deref_mut().map(|d| &mut d.pieces)
    }
}
