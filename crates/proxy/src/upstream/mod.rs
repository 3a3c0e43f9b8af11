//! The Redis side: per-node pools of long-lived, pipelined connections.
//!
//! Each connection is one task owning its socket, a write buffer and a FIFO of requests in flight;
//! replies are matched to requests by order, which is how Redis answers on one connection. Callers
//! never wait on a connection: they queue an [`UpstreamRequest`] and get an [`UpstreamReply`] on
//! their own channel, tagged so they can put it back in their order.

pub mod admin;
pub mod conn;
pub mod pool;
pub mod stream;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use thiserror::Error;
use tokio::sync::mpsc;

pub use conn::{ConnMode, PUSH};
pub use pool::{NodePool, OwnedConn, Upstreams};

/// Identifies a reply for its caller: which request (`seq`) and which part of it (`part`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    pub seq: u64,
    pub part: u32,
}

/// The channel a caller receives its replies on.
pub type ReplySender = mpsc::UnboundedSender<UpstreamReply>;

/// One command for one node.
#[derive(Debug)]
pub struct UpstreamRequest {
    /// The command as RESP bytes.
    pub payload: Bytes,
    /// A command sent just before this one on the same connection, whose reply is swallowed:
    /// `ASKING` after an `-ASK`, `SCRIPT LOAD` after a `-NOSCRIPT`.
    pub prefix: Option<Bytes>,
    pub tag: Tag,
    pub reply_to: ReplySender,
    /// Whether `command_timeout` bounds the wait for the reply: false only for blocking commands,
    /// which legitimately wait as long as they were asked to.
    pub bounded: bool,
}

/// The answer to an [`UpstreamRequest`].
#[derive(Debug)]
pub struct UpstreamReply {
    pub tag: Tag,
    /// The reply frame exactly as the node sent it, or why there is none.
    pub result: Result<Bytes, UpstreamError>,
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
    /// Called with the node's address when a connection to it fails, so that the topology can be
    /// refreshed at once instead of at the next timer tick.
    pub on_failure: Arc<dyn Fn(&str) + Send + Sync>,
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
