//! The Redis side: per-node pools of long-lived, pipelined connections.
//!
//! Each connection is one task owning its socket, a write buffer and a FIFO of requests in flight;
//! replies are matched to requests by order, which is how Redis answers on one connection. Callers
//! never wait on a connection: they queue an [`UpstreamRequest`] and get an [`UpstreamReply`] on
//! their own channel, tagged so they can put it back in their order.
//!
//! Besides a node's shared connections (`pool.rs`) there are connections of one client — its own
//! connection for transactions and blocking commands (a few kept open ahead of need for the next
//! clients, `spares.rs`) and its subscriptions — and a node's script lanes (`lanes.rs`).

pub mod conn;
pub mod connect;
pub mod lanes;
pub mod pool;
pub mod queue;
mod spares;
pub mod stream;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use thiserror::Error;

pub use conn::{ConnMode, LOGIN, PUSH};
pub use lanes::{LaneLease, ScriptKind};
pub use pool::{NodePool, OwnedConn, Upstreams};

/// Where a node connection sends the replies of one caller.
pub type ReplySender = queue::Sender<UpstreamReply>;
/// The caller's end of its replies' queue.
pub type ReplyReceiver = queue::Receiver<UpstreamReply>;
/// The queue feeding one node connection.
pub type RequestSender = queue::Sender<UpstreamRequest>;
type RequestReceiver = queue::Receiver<UpstreamRequest>;

/// A new queue for a caller's replies.
pub fn reply_channel() -> (ReplySender, ReplyReceiver) {
    queue::channel()
}

/// Identifies a reply for its caller: which request (`seq`) and which part of it (`part`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    pub seq: u64,
    pub part: u32,
}

/// One command for one node.
#[derive(Debug)]
pub struct UpstreamRequest {
    /// The command as RESP bytes.
    pub payload: Bytes,
    /// A command sent just before this one on the same connection, whose reply is swallowed:
    /// `ASKING` after an `-ASK`, `SCRIPT LOAD` after a `-NOSCRIPT`. Boxed: it is rare, and the
    /// request is moved four times on its way (80 bytes rather than 104).
    pub prefix: Option<Box<Bytes>>,
    pub tag: Tag,
    pub reply_to: ReplySender,
    /// Whether `command_timeout` bounds the wait for the reply: false only for blocking commands,
    /// which legitimately wait as long as they were asked to.
    pub bounded: bool,
    /// Whether a large reply may be passed on in pieces before it is complete (the caller forwards
    /// it untouched, rather than merging or inspecting it).
    pub streamable: bool,
    /// Set by a script lane: keeps the lane counted busy until the request is answered and
    /// dropped (see [`lanes`]).
    pub lease: Option<LaneLease>,
}

/// Which client sent a request (its reply queue) and which of its requests (`seq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    client: usize,
    seq: u64,
}

impl Origin {
    /// Whether the two are requests of one pipelining client side by side: the same client,
    /// another request. The parts of one split request share their origin; a client waiting for
    /// one request at a time never has two different requests in flight on one connection.
    pub fn pipelined_with(self, other: Origin) -> bool {
        self.client == other.client && self.seq != other.seq
    }
}

impl UpstreamRequest {
    /// Which client sent it, and which of its requests.
    pub fn origin(&self) -> Origin {
        Origin { client: self.reply_to.queue_id(), seq: self.tag.seq }
    }

    /// A command nobody waits for (its reply, or its failure, is dropped): the proxy's own
    /// housekeeping — UNWATCH, HELLO and, with [`LOGIN`], a login (whose error fails the
    /// connection) on a client's own connection, in the client's order
    /// ([`Executor::send_on_own`](crate::executor::Executor::send_on_own)); CLIENT UNBLOCK on a
    /// pool connection.
    pub fn unanswered(payload: Bytes, tag: Tag) -> UpstreamRequest {
        let (reply_to, _dropped) = reply_channel();
        UpstreamRequest { payload, prefix: None, tag, reply_to, bounded: true, streamable: false, lease: None }
    }

    /// Answers the request with `error` instead of a reply; a caller that went away is not told.
    pub fn fail(self, error: UpstreamError) {
        let _ = self.reply_to.send(UpstreamReply { tag: self.tag, result: Err(error), partial: None });
    }
}

/// The answer to an [`UpstreamRequest`].
#[derive(Debug)]
pub struct UpstreamReply {
    pub tag: Tag,
    /// The reply frame exactly as the node sent it, or why there is none.
    pub result: Result<Bytes, UpstreamError>,
    /// Set when `result` is a piece of a large reply, more of which follows: the receiver gives
    /// the piece's bytes back to this credit once they are written to its client (see
    /// `conn::STREAM_AT`), so the connection reads no further ahead of a slow client than
    /// [`STREAM_WINDOW`].
    pub partial: Option<Arc<StreamCredit>>,
}

/// Most bytes of a streamed reply passed on but not yet written to the client, before the
/// connection stops reading (for at most `command_timeout`, then the client output limit decides).
pub const STREAM_WINDOW: usize = 8 * 1024 * 1024;

/// Flow control of one streamed reply between the connection and the client's session.
#[derive(Debug, Default)]
pub struct StreamCredit {
    outstanding: std::sync::atomic::AtomicUsize,
    /// Credit was given back since the connection last looked.
    returned: std::sync::atomic::AtomicBool,
    /// The connection waiting for credit.
    waker: futures_util::task::AtomicWaker,
}

impl StreamCredit {
    /// Bytes passed on and not yet written to the client.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The connection passed on `n` more bytes.
    pub fn lend(&self, n: usize) {
        self.outstanding.fetch_add(n, std::sync::atomic::Ordering::AcqRel);
    }

    /// The session wrote `n` bytes to its client.
    pub fn give_back(&self, n: usize) {
        let _ = self.outstanding.fetch_update(
            std::sync::atomic::Ordering::AcqRel,
            std::sync::atomic::Ordering::Acquire,
            |left| Some(left.saturating_sub(n)),
        );
        self.returned.store(true, std::sync::atomic::Ordering::Release);
        self.waker.wake();
    }

    /// Ready once credit was given back since the last time it was (the waker is registered
    /// first, so a give-back in between is not missed).
    pub fn poll_returned(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.waker.register(cx.waker());
        match self.returned.swap(false, std::sync::atomic::Ordering::AcqRel) {
            true => std::task::Poll::Ready(()),
            false => std::task::Poll::Pending,
        }
    }
}

/// Why a request got no reply from its node. Every variant is the upstream side's fault; whether
/// a retry is safe is said per variant, since a write may or may not have been applied.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum UpstreamError {
    /// No connection could be made; the request was never sent, so a retry is safe.
    #[error("upstream node {addr} unreachable: {reason}")]
    Unreachable { addr: String, reason: String },
    /// The node did not answer within `command_timeout`; the request may have been applied.
    #[error("upstream timeout")]
    Timeout,
    /// The connection broke with the request in flight; it may have been applied.
    #[error("upstream connection to {addr} lost")]
    ConnectionLost { addr: String },
}

impl UpstreamError {
    /// Whether the request certainly never reached the node, so resending cannot apply it twice.
    pub fn never_sent(&self) -> bool {
        matches!(self, UpstreamError::Unreachable { .. })
    }

    /// Whether the connection broke with the request in flight: it may have run, so only a
    /// request that cannot change anything may be sent again.
    pub fn lost_in_flight(&self) -> bool {
        matches!(self, UpstreamError::ConnectionLost { .. })
    }
}

/// How the proxy connects and logs in to nodes, shared by every connection.
#[derive(Clone)]
pub struct ConnSettings {
    /// ACL user; `None` logs in as `default` (with a password) or not at all.
    pub user: Option<String>,
    pub password: Option<String>,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    /// TLS to the nodes (`upstream.tls`); `None`: plain TCP.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Called with the node's address when a connection to it fails (the topology is refreshed at
    /// once instead of at the next timer tick, and the node counts as suspect), and when a pool
    /// connection that failed reaches it again (no longer suspect).
    pub on_node: NodeReporter,
    /// A node refused `CLIENT NO-EVICT` for good (a version before 7.0, an `upstream.user`
    /// without the command): later connections do not ask again (`conn::exempt_from_eviction`).
    pub no_evict_refused: Arc<std::sync::atomic::AtomicBool>,
}

/// Where connections report on their node (see [`ConnSettings::on_node`]).
pub type NodeReporter = Arc<dyn Fn(&str, NodeReport) + Send + Sync>;

/// What a connection tells the topology about its node (see [`ConnSettings::on_node`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeReport {
    /// A connection failed, or could not be made.
    Failed,
    /// A pool connection that had failed connected again and the node answered a `PING` sent at
    /// `since` (a TCP connect alone succeeds on a frozen node too): failures reported before then
    /// are over, later ones are not.
    Answered { since: std::time::Instant },
}

impl std::fmt::Debug for ConnSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password is deliberately left out: settings end up in logs.
        f.debug_struct("ConnSettings")
            .field("user", &self.user)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}
