//! A part: one request to one node, the stage a request reaches once routed (request → route →
//! part). It carries what the executor learns while getting it answered: where it goes now, how
//! often it was redirected, until when it may be retried.

use std::time::Instant;

use bytes::{Bytes, BytesMut};

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
#[derive(Debug, Clone)]
pub struct Part {
    pub payload: Bytes,
    pub target: Target,
    /// Commands that write never go to replicas.
    pub write: bool,
    /// Set by a redirection: send to this node instead of the map's owner, with `ASKING` if asked.
    pub redirect: Option<(String, bool)>,
    /// Redirections and retries so far.
    pub hops: u8,
    /// Follow `MOVED`/`ASK` for this part; off inside a transaction, where a redirection aborts it.
    pub follow_redirects: bool,
    /// A command to send just before the next attempt (`SCRIPT LOAD` after a `-NOSCRIPT`).
    pub prefix: Option<Bytes>,
    /// The script was loaded again after a `-NOSCRIPT`: a second one goes to the client.
    pub script_reloaded: bool,
    /// What made it wait to be resent (`-CLUSTERDOWN`, `-TRYAGAIN`, the node unreachable): its
    /// answer if a later part of the client runs first ([`super::Executor::take_overtaken`]).
    pub retry_error: Option<Bytes>,
    /// When retrying an unreachable node gives up, set on its first failure.
    pub retry_until: Option<Instant>,
    /// Counted as held while it waits to be resent (`executor::hold`).
    pub holding: bool,
    /// A blocking command: its reply is not bounded by `command_timeout`.
    pub blocks: bool,
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
    /// Parts of the same request sent only once this part's reply is in, and only if it is
    /// neither an error nor null (a transaction's settings for the other nodes, after its EXEC).
    pub deferred: Vec<u32>,
    /// Pieces of a streamed reply received while earlier replies were still pending (kept by the
    /// session's pipeline, which releases replies in order).
    pub(crate) held: BytesMut,
    /// What the node connection lent the pieces in `held` against (see
    /// [`crate::upstream::StreamCredit`]).
    pub(crate) credit: Option<std::sync::Arc<crate::upstream::StreamCredit>>,
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

impl Part {
    /// Pieces of the reply have come (written to the client or held): what comes next is the
    /// rest of that reply.
    pub fn reply_started(&self) -> bool {
        self.streamed || !self.held.is_empty()
    }

    /// A part not sent yet.
    pub fn new(payload: Bytes, target: Target, write: bool) -> Part {
        Part {
            payload,
            target,
            write,
            redirect: None,
            hops: 0,
            follow_redirects: true,
            prefix: None,
            script_reloaded: false,
            retry_error: None,
            retry_until: None,
            holding: false,
            blocks: false,
            rehome: None,
            streamable: false,
            script: None,
            allow_busy: false,
            deferred: Vec::new(),
            held: BytesMut::new(),
            credit: None,
            streamed: false,
            reply: None,
            tracked: false,
            blind: false,
        }
    }
}
