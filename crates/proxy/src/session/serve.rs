//! The session's event loop: one task per client, waiting on whichever comes first of a node's
//! reply, room to write, a request to read, the idle timer, a retry coming due, a CLIENT KILL /
//! UNBLOCK / UNPAUSE signal, or shutdown.
//!
//! Each turn first settles what needs no waiting ([`Session::settle`]): replies ready in order go
//! into the write buffer, held requests whose reason is gone are taken up again. Only then does it
//! wait.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::sleep_until;

use super::Session;
use crate::shared::Shared;

/// Most bytes read from a client while its next request waits (behind a blocking command or a
/// subscription change).
const HELD_INPUT: usize = 64 * 1024;

/// Smallest read buffer, and the size a new client starts with.
const MIN_READ: usize = 64;

/// Largest read buffer sized from a client's usual requests (bigger bursts use [`READ_CHUNK`]).
const MAX_READ_HINT: usize = 4096;

/// Read size for clients that send more than a few bytes at a time.
const READ_CHUNK: usize = 16 * 1024;

/// Largest write buffer kept once written out (room for the usual small replies); a bigger one
/// (a burst of large replies) is given back, so an idle client holds little (bench/idle.py).
const KEEP_WRITE_BUFFER: usize = 1024;

/// The client socket's side of a session: its buffers and how much to read at a time.
///
/// Buffers start empty and are given back whenever they empty out: an idle client holds no
/// buffer memory, a busy one reads in large chunks.
struct ClientIo {
    /// The session's own handle on what sessions share, passed down beside `&mut Session`.
    shared: Arc<Shared>,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// Bytes the last read returned.
    last_read_len: usize,
    /// What this client's requests usually take: the bytes of its last burst, read until the
    /// buffer emptied. A fresh buffer gets that much, so a 110-byte SET is one read, not a
    /// 64-byte read and another (measured: 2.27 → 1.3 reads per unpipelined SET).
    read_hint: usize,
    /// Bytes read since the read buffer last emptied.
    burst: usize,
    /// Still reading requests (not after EOF or shutdown).
    reading: bool,
    /// A close marker was released: write what is buffered, then close.
    closing: bool,
    last_read: Instant,
}

/// What a turn of the loop does after settling.
enum Settled {
    /// Wait for the next event.
    Wait,
    /// Something changed that needs another settling first.
    Again,
    /// Everything is written: shut the connection down.
    Close,
    /// Drop the connection now (broken stream, output limit).
    Drop,
}

impl ClientIo {
    fn new(shared: Arc<Shared>, reading: bool) -> ClientIo {
        ClientIo {
            shared,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            last_read_len: 0,
            read_hint: MIN_READ,
            burst: 0,
            reading,
            closing: false,
            last_read: Instant::now(),
        }
    }

    /// A client that filled the last read is sending more: read in large chunks. Otherwise the
    /// buffer holds the client's usual size whenever it empties, so a client that goes idle holds
    /// no more than that.
    ///
    /// Requests are slices of the read buffer, in flight until answered: while they are
    /// (`in_flight`) the buffer's spare room is read into as it is; once they are answered the
    /// buffer is taken back in place, so a client's requests cost no allocation each.
    #[inline]
    fn size_read_buffer(&mut self, in_flight: bool) {
        let spare = self.rbuf.capacity() - self.rbuf.len();
        if self.last_read_len >= self.read_hint && spare < 1024 {
            self.rbuf.reserve(READ_CHUNK);
            return;
        }
        if !self.rbuf.is_empty() || self.last_read_len >= self.read_hint || spare == self.read_hint {
            return;
        }
        if spare > MAX_READ_HINT || (spare < self.read_hint && (spare == 0 || !in_flight)) {
            let reclaimed = spare < self.read_hint && self.rbuf.try_reclaim(self.read_hint);
            if !reclaimed || self.rbuf.capacity() > MAX_READ_HINT {
                self.rbuf = BytesMut::with_capacity(self.read_hint);
            }
        }
    }

    /// Everything buffered was written: the write buffer is kept for the next replies (one
    /// allocation per client, not per reply) unless a large burst grew it.
    #[inline]
    fn written_out(&mut self) {
        // True (room found or taken back) exactly when the whole buffer is larger than kept.
        if self.wbuf.try_reclaim(KEEP_WRITE_BUFFER + 1) {
            self.wbuf = BytesMut::new();
        }
    }
}

impl Session {
    /// Serves the client until it leaves, is closed, or the server shuts down (a signal, see
    /// [`clients::Clients::stop_all`](super::clients::Clients::stop_all)).
    ///
    /// A little over ~80 lines: the `select!` lists every event a session waits for in priority
    /// order, each branch a call to a named step; split up, the order would no longer be visible.
    pub(super) async fn serve<R, W>(&mut self, mut reader: R, mut writer: W) -> std::io::Result<()>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut io = ClientIo::new(Arc::clone(&self.shared), !self.shared.clients.is_stopping());
        let entry = Arc::clone(&self.entry);
        // Idle clients are checked on one timer that is only re-armed when it fires, instead of a
        // timer reset on every read.
        let idle_timeout = self.shared.idle_timeout;
        let idle = tokio::time::sleep(idle_timeout.unwrap_or(Duration::from_secs(3600)));
        tokio::pin!(idle);
        loop {
            match self.settle(&mut io) {
                Settled::Wait => {}
                Settled::Again => continue,
                Settled::Close => {
                    let _ = writer.shutdown().await;
                    return Ok(());
                }
                Settled::Drop => return Ok(()),
            }
            io.size_read_buffer(!self.pipeline.is_empty());
            // While a request is on hold the socket is still read (up to HELD_INPUT bytes, kept
            // unparsed, as Redis buffers a blocked client's input) so that a client that leaves is
            // noticed and its blocked upstream connection released.
            let room = !self.input_on_hold() || io.rbuf.len() < HELD_INPUT;
            let can_read = io.reading && !io.closing && room && self.pipeline.len() < self.shared.max_pipeline;
            let next_wake = self.next_wake();
            tokio::select! {
                biased;
                () = std::future::poll_fn(|cx| self.exec.poll_replies(cx, &mut self.reply_batch)),
                    if self.exec.has_replies() => self.on_replies(),
                written = writer.write_buf(&mut io.wbuf), if !io.wbuf.is_empty() => {
                    self.traffic.bytes_out += written? as u64;
                    // TLS buffers records until flushed; for TCP the flush is free.
                    if io.wbuf.is_empty() {
                        io.written_out();
                        for (credit, written) in self.stream_credits.drain(..) {
                            credit.give_back(written);
                        }
                        writer.flush().await?;
                    }
                }
                read = reader.read_buf(&mut io.rbuf), if can_read => {
                    if !self.on_read(&mut io, read?) {
                        return Ok(());
                    }
                }
                () = &mut idle, if idle_timeout.is_some() => {
                    let timeout = idle_timeout.unwrap_or_default();
                    match self.idle_check(&io, timeout) {
                        Some(next) => idle.as_mut().reset(next.into()),
                        None => return Ok(()),
                    }
                }
                () = wake_at(next_wake), if next_wake.is_some() => {
                    self.resend_due();
                    self.retry_unblock();
                }
                () = entry.signalled() => {
                    if !self.on_signal() {
                        return Ok(());
                    }
                    io.reading &= !self.shared.clients.is_stopping();
                }
            }
        }
    }

    /// Does what needs no waiting: releases ready replies into the write buffer, enforces the
    /// output limit, and takes up requests whose hold is over.
    fn settle(&mut self, io: &mut ClientIo) -> Settled {
        if self.broken {
            crate::log_limited!(10, warn, client = self.state.id, peer = %self.state.peer,
                "a streamed reply broke off: closing the client connection");
            return Settled::Drop;
        }
        if !self.direct.is_empty() {
            io.wbuf.extend_from_slice(&self.direct.split());
        }
        if self.pipeline.is_empty()
            && let Some((request, meta)) = self.deferred.take()
        {
            self.on_pubsub(&request, meta);
            return Settled::Again;
        }
        io.closing |= self.pipeline.release(&mut io.wbuf, &self.shared.metrics);
        if io.wbuf.len() > self.shared.client_output_limit {
            crate::log_limited!(10, warn, client = self.state.id, peer = %self.state.peer, buffered = io.wbuf.len(),
                "client does not read its replies: output limit reached, disconnecting");
            return Settled::Drop;
        }
        if io.wbuf.is_empty() && (io.closing || (!io.reading && self.pipeline.is_empty())) {
            return Settled::Close;
        }
        if self.hold_reading && self.pipeline.is_empty() {
            self.hold_reading = false;
            self.entry.set_blocked(0, false);
            self.pending_unblock = None;
        }
        if let Some((request, read_at, until)) = self.held.take() {
            let pause = self.shared.clients.current_pause();
            if pause.is_none() || Instant::now() >= until {
                self.on_request(&io.shared, request, read_at);
                return Settled::Again;
            }
            self.held = Some((request, read_at, pause.map_or(until, |p| p.until)));
        }
        if self.paused_input && !self.input_on_hold() && !io.closing {
            self.paused_input = false;
            self.on_input(&io.shared, &mut io.rbuf);
            return Settled::Again;
        }
        Settled::Wait
    }

    /// Bytes read from the client (`read`; 0 at EOF). Returns false when the session must end.
    fn on_read(&mut self, io: &mut ClientIo, read: usize) -> bool {
        io.last_read_len = read;
        self.traffic.bytes_in += read as u64;
        if read == 0 {
            // A client gone while blocked will never read the reply; dropping the own connection
            // unblocks the node. One gone while its requests are held for a failover is dropped
            // too, as Redis frees a client at EOF, so that it holds nothing any longer.
            io.reading = false;
            return !self.hold_reading && !self.exec.holds_parts();
        }
        if self.shared.idle_timeout.is_some() {
            io.last_read = Instant::now();
        }
        io.burst += read;
        self.on_input(&io.shared, &mut io.rbuf);
        if io.rbuf.is_empty() {
            io.read_hint = io.burst.next_power_of_two().clamp(MIN_READ, MAX_READ_HINT);
            io.burst = 0;
        }
        true
    }

    /// The idle timer fired: `None` when the client has been idle for `timeout` and is closed,
    /// else when to look again. Subscribers wait for messages, not requests: exempt, as in Redis.
    fn idle_check(&self, io: &ClientIo, timeout: Duration) -> Option<Instant> {
        let idle = self.pipeline.is_empty() && io.wbuf.is_empty() && self.subs.is_none();
        if idle && io.last_read.elapsed() >= timeout {
            tracing::debug!(client = self.state.id, peer = %self.state.peer, "idle client timed out");
            return None;
        }
        // Busy (replies pending) or active since: look again when it could next be idle.
        let now = Instant::now();
        Some((io.last_read + timeout).max(now + timeout.min(Duration::from_secs(1))))
    }

    /// Another client signalled this one. CLIENT KILL closes at once, as Redis does (returns
    /// false); an unpause only needs the loop to look at the held request again.
    fn on_signal(&mut self) -> bool {
        if self.entry.is_killed() {
            tracing::debug!(client = self.state.id, peer = %self.state.peer, "client killed");
            return false;
        }
        self.on_tracking_events();
        if let Some(how) = self.entry.take_unblock() {
            self.pending_unblock = Some((how, Instant::now()));
            self.retry_unblock();
        }
        true
    }

    /// When the loop must wake up without an event: a part's retry, a pause's end, an unblock
    /// to send again.
    #[inline]
    fn next_wake(&self) -> Option<Instant> {
        let held = self.held.as_ref().map(|h| h.2);
        let unblock = self.pending_unblock.map(|(_, at)| at);
        self.exec.next_retry().into_iter().chain(held).chain(unblock).min()
    }
}

/// Waits until `at`. `select!` builds every branch's future on each turn, enabled or not; this one
/// creates its timer only when polled, so a turn without retries pending costs no timer set-up.
async fn wake_at(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
