//! The data path's one error vocabulary, and the one place an error becomes a RESP reply.
//!
//! Every refusal and failure a client can get from the proxy is a [`ProxyError`]: what went wrong,
//! which side caused it (the *downstream* client, an *upstream* node, or the proxy itself), and
//! whether resending the request is safe. [`ProxyError::to_resp`] turns it into the error reply;
//! the texts are Redis' own wherever Redis has one for the same situation, so clients' error
//! handling (e.g. on `CROSSSLOT`, `NOPERM`, `CLUSTERDOWN`) works unchanged.
//!
//! Errors a *node* answers are not here: they are replies, forwarded as the bytes received.

use std::borrow::Cow;

use bytes::Bytes;

use crate::auth::{AuthError, Refusal};
use crate::resp::reply;
use crate::upstream::UpstreamError;

/// Who caused an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client: a request Redis would refuse too (bad arguments, permissions, cross-slot keys).
    Downstream,
    /// A node: unreachable, timed out, busy, or its connection broke.
    Upstream,
    /// The proxy: its map has no owner for a slot, or it cannot serve the request at all.
    Proxy,
}

/// Why the proxy answers a request with an error. `Display` is the reply text (without the `-`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// Malformed RESP; the connection is closed after this reply, as Redis does.
    #[error("ERR Protocol error: {0}")]
    Protocol(String),
    /// Redis' reply to a command (or a container's subcommand) it does not know, with the
    /// client's own bytes quoted raw, as Redis prints them ([`c_str`]).
    #[error("{}", String::from_utf8_lossy(.0))]
    UnknownCommand(Bytes),
    /// The wrong number of arguments; `command` is Redis' lowercase name (`container|sub`).
    #[error("ERR wrong number of arguments for '{command}' command")]
    WrongArity { command: String },
    /// Keys of one request hash to different slots where the proxy cannot split the request.
    #[error("CROSSSLOT Keys in request don't hash to the same slot")]
    CrossSlot,
    /// A command run before logging in.
    #[error("NOAUTH Authentication required.")]
    NoAuth,
    /// The user's ACL rules refuse the command, a key or a channel.
    #[error("{0}")]
    Denied(Refusal),
    /// AUTH or HELLO AUTH failed.
    #[error("{0}")]
    Auth(AuthError),
    /// A command the proxy will not run, with the reason and what to do instead.
    #[error("ERR unsupported command '{command}' in proxy: {reason}")]
    Unsupported { command: String, reason: &'static str },
    /// What Redis answers for a command's bad arguments or use (e.g. `ERR syntax error`,
    /// `ERR EXEC without MULTI`): the proxy answers such commands itself and answers as a node would.
    #[error("{0}")]
    Command(Cow<'static, str>),
    /// [`ProxyError::Command`] whose text quotes the client's own bytes (a bad option, an unknown
    /// subcommand): raw, as Redis prints them ([`c_str`]), not as UTF-8.
    #[error("{}", String::from_utf8_lossy(.0))]
    Quoting(Bytes),
    /// A transaction refused at EXEC because a queued command was refused.
    #[error("EXECABORT Transaction discarded because of previous errors.")]
    ExecAbortPrevious,
    /// A transaction refused at EXEC for this reason (an error text without its code).
    #[error("EXECABORT Transaction discarded because of: {0}")]
    ExecAbort(String),
    /// No master in the proxy's map serves the request's slot.
    #[error("CLUSTERDOWN Hash slot not served")]
    SlotNotServed,
    /// The proxy has not loaded the cluster's topology yet.
    #[error("CLUSTERDOWN The proxy has no cluster topology yet")]
    NoTopology,
    /// A script keeps the node busy: the node's own `-BUSY` text.
    #[error("{0}")]
    Busy(String),
    /// The request got no reply from its node.
    #[error("ERR {0}")]
    Upstream(UpstreamError),
    /// The request would wait for the cluster to fail over, but the bound on requests held
    /// meanwhile is reached (`[limits]`, `executor::hold`); `whose`: the client's or the proxy's.
    #[error(
        "CLUSTERDOWN the cluster is failing over and {whose} bound of requests held meanwhile is reached \
         (limits.held_requests_per_client, limits.held_requests)"
    )]
    HoldFull { whose: &'static str },
    /// The proxy could not combine the nodes' replies into one.
    #[error("ERR {0}")]
    Merge(Cow<'static, str>),
}

impl ProxyError {
    /// Which side caused the error.
    pub fn side(&self) -> Side {
        use ProxyError::*;
        match self {
            Protocol(_) | UnknownCommand(_) | WrongArity { .. } | CrossSlot | NoAuth | Denied(_) | Auth(_) => {
                Side::Downstream
            }
            Command(_) | Quoting(_) | ExecAbortPrevious | ExecAbort(_) => Side::Downstream,
            Busy(_) | Upstream(_) => Side::Upstream,
            Unsupported { .. } | SlotNotServed | NoTopology | HoldFull { .. } | Merge(_) => Side::Proxy,
        }
    }

    /// Whether sending the same request again may succeed without applying it twice: true when
    /// it never reached a node and the cause may pass (a map catching up, a node coming back).
    pub fn retry_safe(&self) -> bool {
        match self {
            ProxyError::SlotNotServed | ProxyError::NoTopology | ProxyError::Busy(_) | ProxyError::HoldFull { .. } => {
                true
            }
            ProxyError::Upstream(error) => error.never_sent(),
            _ => false,
        }
    }

    /// The error reply, in RESP2 and RESP3 alike (`-text\r\n`). The one place errors become RESP.
    pub fn to_resp(&self) -> Bytes {
        match self {
            ProxyError::UnknownCommand(text) | ProxyError::Quoting(text) => reply::error_bytes(text),
            other => reply::error(&other.to_string()),
        }
    }

    /// [`ProxyError::Quoting`] of the text made of `pieces`, some of them the client's bytes.
    pub fn quoting(pieces: &[&[u8]]) -> ProxyError {
        ProxyError::Quoting(Bytes::from(pieces.concat()))
    }

    /// The arity error for `command`; Redis answers a malformed EXEC as an aborted transaction,
    /// inside MULTI or not (`rejectCommand` → `execCommandAbort`).
    pub fn arity(command: &str) -> ProxyError {
        match command {
            "exec" => ProxyError::ExecAbort("wrong number of arguments for 'exec' command".to_string()),
            _ => ProxyError::WrongArity { command: command.to_string() },
        }
    }

    /// [`ProxyError::Command`] with a text Redis builds from the request.
    pub fn command(text: impl Into<Cow<'static, str>>) -> ProxyError {
        ProxyError::Command(text.into())
    }
}

/// An argument as Redis prints it with `%.<max>s` (its error texts quote arguments so): its bytes
/// up to the first NUL, `max` at most.
pub fn c_str(arg: &[u8], max: usize) -> &[u8] {
    let end = arg.iter().position(|&b| b == 0).unwrap_or(arg.len());
    &arg[..end.min(max)]
}

impl From<UpstreamError> for ProxyError {
    fn from(error: UpstreamError) -> ProxyError {
        ProxyError::Upstream(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_carry_redis_texts() {
        assert_eq!(&ProxyError::CrossSlot.to_resp()[..], b"-CROSSSLOT Keys in request don't hash to the same slot\r\n");
        assert_eq!(&ProxyError::arity("get").to_resp()[..], b"-ERR wrong number of arguments for 'get' command\r\n");
        assert_eq!(
            &ProxyError::arity("exec").to_resp()[..],
            &b"-EXECABORT Transaction discarded because of: wrong number of arguments for 'exec' command\r\n"[..]
        );
        assert_eq!(
            &ProxyError::ExecAbortPrevious.to_resp()[..],
            &b"-EXECABORT Transaction discarded because of previous errors.\r\n"[..]
        );
        let lost = ProxyError::from(UpstreamError::ConnectionLost { addr: "10.0.0.1:6379".into() });
        assert_eq!(&lost.to_resp()[..], b"-ERR upstream connection to 10.0.0.1:6379 lost\r\n");
    }

    #[test]
    fn a_line_break_in_a_text_cannot_break_the_framing() {
        assert_eq!(&ProxyError::command("ERR a\r\nb").to_resp()[..], b"-ERR a  b\r\n");
    }

    #[test]
    fn only_requests_that_never_reached_a_node_are_safe_to_resend() {
        let unreachable = UpstreamError::Unreachable { addr: "a:1".into(), reason: "refused".into() };
        assert!(ProxyError::from(unreachable).retry_safe());
        assert!(!ProxyError::from(UpstreamError::Timeout).retry_safe());
        assert!(!ProxyError::CrossSlot.retry_safe());
        assert_eq!(ProxyError::from(UpstreamError::Timeout).side(), Side::Upstream);
        assert_eq!(ProxyError::NoAuth.side(), Side::Downstream);
        assert_eq!(ProxyError::SlotNotServed.side(), Side::Proxy);
    }
}
