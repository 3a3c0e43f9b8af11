//! A client that sends nothing: closed once idle for the configured timeout, and its empty
//! buffers given back after a quiet while, so that an idle client holds little more than its
//! socket.

use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::ClientIo;
use crate::session::Session;

impl Session {
    /// The idle timer fired: `None` when the client has been idle for `timeout` and is closed,
    /// else when to look again. Exempt, as Redis' `clientsCronHandleTimeout` exempts them:
    /// subscribers (they wait for messages, not requests), a client with a request out (blocked,
    /// or waiting for its node) and one held by CLIENT PAUSE. One whose replies wait unread is
    /// not: only a write that went out counts as activity.
    pub(super) fn idle_check(&self, io: &ClientIo, timeout: Duration) -> Option<Instant> {
        let idle = self.pipeline.is_empty() && self.held.is_none() && self.subs.is_none();
        if idle && io.last_active.elapsed() >= timeout {
            tracing::debug!(client = self.state.id, peer = %self.state.peer, "idle client timed out");
            return None;
        }
        // Busy (replies pending) or active since: look again when it could next be idle.
        let now = Instant::now();
        Some((io.last_active + timeout).max(now + timeout.min(Duration::from_secs(1))))
    }

    /// The client has sent nothing for a while
    /// ([`Clients::trim_idle`](crate::session::clients::Clients::trim_idle)):
    /// the buffers its last busy moment left empty are given back, so that an idle client holds
    /// little more than its socket; the next request takes them again at their first size. Only
    /// empty ones: a client idle while its requests are out keeps what they use.
    pub(super) fn give_back_idle_memory(&mut self, io: &mut ClientIo) {
        if io.rbuf.is_empty() {
            io.rbuf = BytesMut::new();
            // As Valkey's cron frees an idle client's empty query buffer of its own.
            self.private_query_buffer = false;
            // The next read is sized by the client's usual requests, not as a burst's next chunk.
            io.last_read_len = 0;
        }
        io.wbuf.shrink_when_empty(0);
        io.reply_peak = 0;
        io.publish(&self.entry, self.private_query_buffer);
        if self.direct.is_empty() {
            self.direct = BytesMut::new();
        }
        if self.reply_batch.is_empty() {
            self.reply_batch = std::collections::VecDeque::new();
        }
        self.keys = Vec::new();
        self.acl_keys = Vec::new();
        self.pipeline.give_back_idle_memory();
        self.exec.give_back_idle_memory();
    }
}
