//! The session's event loop: one task per client, waiting on whichever comes first of a node's
//! reply, room to write, a request to read, the idle timer, a retry coming due, a CLIENT KILL /
//! UNBLOCK / UNPAUSE signal, or shutdown.
//!
//! Each pass first settles what needs no waiting ([`Session::settle`]): replies ready in order go
//! into the write buffer, held requests whose reason is gone are taken up again. Then it handles
//! the first event source that is ready and passes again; it waits only when none is
//! ([`Session::poll_serve`]). While it waits, a node connection with a reply for it handles the
//! reply itself and writes what it releases, or leaves a pipelined batch's replies for the
//! hand-over that completes the batch (`handover.rs`): the task is woken only when that leaves it
//! something to do.

use std::future::poll_fn;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::time::sleep;

use super::Session;
use super::clients::ClientEntry;
use crate::readiness::ReadGate;
use crate::shared::Shared;
use crate::socket::{IoBudget, Socket};
use crate::writes::WriteBuffer;

mod due;
use due::Timers;
mod handover;
mod idle;
use handover::Served;
pub(super) use handover::{lock, served};

/// Most bytes read from a client while its next request waits (behind a blocking command, a
/// subscription change, or a HELLO, AUTH or RESET waiting for earlier replies).
const HELD_INPUT: usize = 64 * 1024;

/// Smallest read buffer, and the size a new client starts with.
const MIN_READ: usize = 64;

/// Largest read buffer sized from a client's usual requests (bigger bursts use [`READ_CHUNK`]).
const MAX_READ_HINT: usize = 4096;

/// Read size for clients that send more than a few bytes at a time.
const READ_CHUNK: usize = 16 * 1024;

/// A timer's deadline while it has nothing to wait for.
const FAR: Duration = Duration::from_secs(3600);

/// Largest write buffer kept once written out: room for a pipeline of a few dozen small replies
/// (`-P 16` of 64-byte values is 1.1 KiB), so such a client's replies are written without an
/// allocation per batch; a bigger buffer (a burst of large replies) is given back, so a client
/// holds at most this much once idle (Redis keeps a 16 KiB reply buffer per client).
const KEEP_WRITE_BUFFER: usize = 4096;

/// Largest write that waits a turn for the rest of its batch's replies (see [`Turn::Yield`]), and
/// most replies a batch gathers in the write buffer across hand-overs
/// ([`Session::gathers_in_place`]).
const BATCH_WAIT_BYTES: usize = 64 * 1024;

/// The client socket's side of a session: its buffers and how much to read at a time.
///
/// Buffers start empty and are given back whenever they empty out: an idle client holds no
/// buffer memory, a busy one reads in large chunks.
struct ClientIo {
    /// The session's own handle on what sessions share, passed down beside `&mut Session`.
    shared: Arc<Shared>,
    rbuf: BytesMut,
    wbuf: WriteBuffer,
    /// Bytes the last read returned.
    last_read_len: usize,
    /// What this client's requests usually take: the bytes of its last burst, read until the
    /// buffer emptied. A fresh buffer gets that much, so a 110-byte SET is one read, not a
    /// 64-byte read and another (measured: 2.27 → 1.3 reads per unpipelined SET).
    read_hint: usize,
    /// Bytes read since the read buffer last emptied.
    burst: usize,
    /// The most reply bytes one write took since the buffers were last given back (`CLIENT
    /// LIST`'s `rbp`).
    reply_peak: usize,
    /// Still reading requests (not after EOF or shutdown).
    reading: bool,
    /// The client closed its side (EOF read).
    eof: bool,
    /// A close marker was released: write what is buffered, then close.
    closing: bool,
    /// Everything buffered is written; the stream is flushed before anything else is done.
    flushing: bool,
    /// The replies buffered have waited a turn for the rest of their batch: written now.
    waited: bool,
    /// The loop last stopped (waiting, or yielding a turn) right after a pass that settled and
    /// changed nothing: the session's own state is as settled as it was, so the first pass after
    /// the wake-up skips settling (everything that changes it — a reply, a read, a write, a
    /// timer, a signal — leads to another pass, which settles).
    settled: bool,
    /// When the client last sent or was sent something (Redis' `lastinteraction`), kept only
    /// while an idle timeout is on.
    last_active: Instant,
    /// Reads the socket only when it may have something.
    read_gate: ReadGate,
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
            wbuf: WriteBuffer::default(),
            last_read_len: 0,
            read_hint: MIN_READ,
            burst: 0,
            reply_peak: 0,
            reading,
            eof: false,
            closing: false,
            flushing: false,
            waited: false,
            settled: false,
            last_active: Instant::now(),
            read_gate: ReadGate::default(),
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
        if self.last_read_len >= self.read_hint {
            if spare < 1024 {
                self.rbuf.reserve(READ_CHUNK);
            }
            return;
        }
        // Otherwise only an empty buffer is resized, to the client's usual size.
        if !self.rbuf.is_empty() || spare == self.read_hint {
            return;
        }
        let too_big = spare > MAX_READ_HINT;
        let too_small = spare < self.read_hint && (spare == 0 || !in_flight);
        if too_big || too_small {
            let reclaimed = too_small && self.rbuf.try_reclaim(self.read_hint);
            if !reclaimed || self.rbuf.capacity() > MAX_READ_HINT {
                self.rbuf = BytesMut::with_capacity(self.read_hint);
            }
        }
    }

    /// What `CLIENT LIST` shows of the buffers, as the session leaves them when it waits: a
    /// few stores per wake-up, and the output only while some waits for the socket.
    #[inline]
    fn publish(&self, entry: &ClientEntry, private_query_buffer: bool) {
        let spare = self.rbuf.capacity() - self.rbuf.len();
        let input = (self.rbuf.len(), spare, private_query_buffer);
        entry.publish_buffers(input, self.wbuf.capacity(), self.reply_peak);
        if !self.wbuf.is_empty() {
            // The client is slow to read: CLIENT LIST shows what waits for it.
            entry.publish_output(self.wbuf.len());
        }
    }

    /// Sizes the read buffer (see [`ClientIo::size_read_buffer`]) and reads into it once, unless
    /// the last read drained the socket and it has nothing yet ([`ReadGate::drained`]).
    #[inline]
    fn read_into<R: Socket>(&mut self, reader: &mut R, in_flight: bool) -> Poll<std::io::Result<usize>> {
        if self.read_gate.drained(reader) {
            // As a read that found nothing would have: an emptied buffer a burst grew goes back
            // to the client's usual size before the client idles.
            if self.rbuf.is_empty() && self.rbuf.capacity() > MAX_READ_HINT {
                self.size_read_buffer(in_flight);
            }
            return Poll::Pending;
        }
        self.size_read_buffer(in_flight);
        self.read_gate.read(reader, &mut self.rbuf)
    }

    /// Everything buffered was written: the write buffer is kept for the next replies (one
    /// allocation per client, not per reply) unless a large burst grew it.
    #[inline]
    fn written_out(&mut self) {
        self.wbuf.shrink_when_empty(KEEP_WRITE_BUFFER);
    }
}

/// What the session's loop must do that needs waiting, or how serving the client ended.
enum Turn {
    /// Replies are ready while the client's other requests are still out: let every other task
    /// that is ready run first (node connections with the rest of the batch's replies among them),
    /// then write, so that a pipelined batch goes out in one write, not one per node that answers.
    /// Measured (`bench/ab.sh --rounds 9 --quick`): GET `-P 16` +4.7% ops/s and 1.26 → 1.20 CPU
    /// µs per request, SET `-P 16` +1.4% (bench/RESULTS.md); a client with one request out never
    /// waits.
    Yield,
    /// Everything is written: shut the connection down cleanly.
    Close,
    /// Drop the connection as it is (the client left or was killed, it idled out, a stream broke).
    Drop,
}

/// Serves the client until it leaves, is closed, or the server shuts down (a signal, see
/// [`Clients::stop_all`](crate::session::clients::Clients::stop_all)).
pub(in crate::session) async fn serve<S>(served: &Mutex<Served<S>>) -> std::io::Result<()>
where
    S: Socket,
{
    let (idle_timeout, idle_offs) = lock(served).session.shared.idle_timeout.now();
    let idle = pin!(sleep(idle_timeout.unwrap_or(FAR)));
    let due = pin!(sleep(FAR));
    let mut timers = Timers { idle, idle_timeout, idle_offs, due };
    loop {
        let wake_up = |cx: &mut Context<'_>| {
            let mut guard = lock(served);
            let Served { session, io, stream, waker, waiting, failed } = &mut *guard;
            if *failed {
                return Poll::Ready(Err(std::io::Error::other("handling a node reply panicked")));
            }
            let turn = session.poll_serve(cx, io, stream, &mut timers);
            session.exec.end_wake_up();
            *waiting = turn.is_pending();
            if *waiting && !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *waker = Some(cx.waker().clone());
            }
            turn
        };
        match poll_fn(wake_up).await {
            Ok(Turn::Yield) => tokio::task::yield_now().await,
            Ok(Turn::Close) => {
                let _ = poll_fn(|cx| Pin::new(&mut lock(served).stream).poll_shutdown(cx)).await;
                break Ok(());
            }
            Ok(Turn::Drop) => break Ok(()),
            Err(error) => break Err(error),
        }
    }
}

impl Session {
    /// One wake-up of the session: takes the replies that came, then passes over everything it
    /// waits for, in priority order (room to write, a request to read, its timers), handling
    /// whatever is ready and settling after each, until nothing is. Only then are the reply queue
    /// and the signal asked to wake the task (`poll_*`, which registers the waker): a pass costs a
    /// few loads, not a future per event source (measured against the `select!` it replaces:
    /// bench/RESULTS.md).
    ///
    /// Replies are taken once per wake-up, not on every pass: node connections wake the task (or,
    /// while it waits, handle them themselves: `handover.rs`); one queued meanwhile (or by the
    /// session, when a send fails at once) is found by the reply queue's check before it waits.
    ///
    /// A client that keeps the session busy still yields, after [`IoBudget`]'s passes (its
    /// socket's reads and writes do not draw on tokio's per-task budget).
    fn poll_serve<S>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut ClientIo,
        stream: &mut S,
        timers: &mut Timers<'_>,
    ) -> Poll<std::io::Result<Turn>>
    where
        S: Socket,
    {
        if self.exec.take_replies(&mut self.reply_batch) {
            self.on_replies();
            io.settled = false;
        }
        let mut budget = IoBudget::new();
        loop {
            if !budget.spend() {
                return Poll::Ready(Ok(Turn::Yield));
            }
            // TLS buffers records until flushed; for TCP the flush is free. Nothing else is done
            // meanwhile.
            if io.flushing {
                ready!(Pin::new(&mut *stream).poll_flush(cx))?;
                io.flushing = false;
            }
            match std::mem::take(&mut io.settled) {
                true => {}
                false => match self.settle(io) {
                    Settled::Wait => {}
                    Settled::Again => continue,
                    Settled::Close => return Poll::Ready(Ok(Turn::Close)),
                    Settled::Drop => return Poll::Ready(Ok(Turn::Drop)),
                },
            }
            if !io.wbuf.is_empty() && self.waits_for_batch(io) {
                io.waited = true;
                io.settled = true;
                return Poll::Ready(Ok(Turn::Yield));
            }
            if !io.wbuf.is_empty()
                && let Poll::Ready(written) = io.wbuf.poll_write_to(stream, cx)
            {
                self.on_written(io, written?);
                continue;
            }
            // The buffer is sized before each read tried, and a large emptied one also when the
            // socket is known drained (so a client that goes idle holds its usual size).
            if self.can_read(io)
                && io.read_gate.poll_ready(cx)
                && let Poll::Ready(read) = io.read_into(stream, !self.pipeline.is_empty())
            {
                match self.on_read(io, read?) {
                    true => continue,
                    false => return Poll::Ready(Ok(Turn::Drop)),
                }
            }
            match self.poll_timers(cx, io, timers) {
                Poll::Ready(true) => continue,
                Poll::Ready(false) => return Poll::Ready(Ok(Turn::Drop)),
                Poll::Pending => {}
            }
            // Nothing is ready: ask to be woken by a reply or a signal, checking both once more.
            if self.exec.poll_replies(cx, &mut self.reply_batch).is_ready() {
                self.on_replies();
                continue;
            }
            if self.entry.poll_signalled(cx).is_ready() {
                match self.on_signal(io) {
                    true => io.reading &= !self.shared.clients.is_stopping(),
                    false => return Poll::Ready(Ok(Turn::Drop)),
                }
                timers.follow_idle_timeout(self.shared.idle_timeout.now(), io);
                continue;
            }
            io.publish(&self.entry, self.private_query_buffer);
            self.entry.publish_traffic(&self.traffic);
            io.settled = true;
            return Poll::Pending;
        }
    }

    /// Whether to read from the client now. While a request is on hold the socket is still read
    /// (up to HELD_INPUT bytes, kept unparsed, as Redis buffers a blocked client's input) so that
    /// a client that leaves is noticed and its blocked upstream connection released.
    #[inline]
    fn can_read(&self, io: &ClientIo) -> bool {
        let room = !self.input_on_hold() || io.rbuf.len() < HELD_INPUT;
        io.reading && !io.closing && room && self.pipeline.len() < self.shared.max_pipeline
    }

    /// Whether the replies buffered wait a turn before they are written ([`Turn::Yield`]): only
    /// once per write, only while other requests of the client are still out, and not for a
    /// streamed reply (whose node connection waits for the credit) or a large buffer.
    #[inline]
    fn waits_for_batch(&self, io: &ClientIo) -> bool {
        !io.waited && self.batch_can_grow(io, BATCH_WAIT_BYTES)
    }

    /// What both ways of waiting for the rest of a batch ask: requests are still out, no streamed
    /// pieces wait in the write buffer (their node connection waits for the credit), and the
    /// buffer holds less than `up_to`.
    #[inline]
    fn batch_can_grow(&self, io: &ClientIo, up_to: usize) -> bool {
        !self.pipeline.is_empty() && !self.pipeline.has_credit_out() && io.wbuf.len() < up_to
    }

    /// Whether the replies released may wait in the write buffer, with nothing to wake the task,
    /// for the rest of their batch, to go out with it in one write when a node connection hands
    /// over the last reply (`serve/handover.rs`): while every request still out is answered
    /// without the task within `command_timeout` at most, and nearly always at once — none may
    /// wait long at its node (a script, a blocking command, WAIT:
    /// [`Pipeline::waits_long`](super::pipeline::Pipeline::waits_long)), none is held through a
    /// failover or waits to be resent — and the buffer is small (below half the client output
    /// limit too, so that gathering never disconnects a client that reads) and holds no streamed
    /// pieces (their node connection waits for the credit). Otherwise the task writes them.
    #[inline]
    fn gathers_in_place(&self, io: &ClientIo) -> bool {
        self.batch_can_grow(io, BATCH_WAIT_BYTES.min(self.shared.client_output_limit / 2))
            && !self.pipeline.waits_long()
            && !self.hold_reading
            && !self.exec.holds_parts()
            && !self.exec.has_retries()
    }

    /// `written` bytes went to the client; once all are, the buffer is flushed and kept, and the
    /// credit of streamed pieces given back.
    fn on_written(&mut self, io: &mut ClientIo, written: usize) {
        self.traffic.bytes_out += written as u64;
        // A write is activity too (Redis' `writeToClient`), for the idle timeout.
        if self.shared.idle_timeout.is_on() {
            io.last_active = Instant::now();
        }
        io.reply_peak = io.reply_peak.max(written);
        if io.wbuf.is_empty() {
            if self.entry.output_published() {
                self.entry.publish_output(0);
            }
            io.waited = false;
            io.written_out();
            self.pipeline.give_back_credit();
            io.flushing = true;
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
        // Frames outside the pipeline (pushes, subscription frames) go before the replies released
        // now; those that waited for the end of a streamed reply, after the release that ends it.
        self.release_direct_frames(&mut io.wbuf);
        let closed = self.pipeline.release(&mut io.wbuf, &self.shared.metrics);
        if self.exec.has_own_follow_ups() {
            self.exec.release_own_follow_ups(self.pipeline.first_unreleased());
        }
        if !closed {
            self.release_direct_frames(&mut io.wbuf);
        }
        io.closing |= closed;
        // A blocking command that waited for earlier replies may go out after the client left:
        // dropped then as at EOF (`on_read`), so that it pops nothing no one will read.
        if io.eof && self.blocked {
            return Settled::Drop;
        }
        // After the release: the replies it takes may be dropped ones (CLIENT REPLY SKIP), which
        // empty the pipeline with nothing to write, and so no later pass would look again.
        if self.pipeline.is_empty()
            && let Some(deferred) = self.deferred.take()
        {
            let (request, meta, why) = *deferred;
            self.run_after_earlier(&request, meta, why);
            return Settled::Again;
        }
        if let Some(limit) = self.output_limit_reached(io.wbuf.len()) {
            self.on_cut_off(limit, io.wbuf.len());
            return Settled::Drop;
        }
        // A client that stopped sending is closed once everything it sent is answered — also what
        // waits unparsed, unless something holds it (taken up below once nothing does).
        let input_left = self.paused_input_can_run();
        if io.wbuf.is_empty() && (io.closing || (!io.reading && self.pipeline.is_empty() && !input_left)) {
            return Settled::Close;
        }
        if self.hold_reading && self.pipeline.is_empty() {
            // What held the reading ended (a blocking command or WAIT returned: it ran now, as a
            // node counts it; or EXEC's deferred parts, a CONFIG SET the proxy keeps, answered).
            self.traffic.commands_run += u64::from(self.blocked);
            self.hold_reading = false;
            self.blocked = false;
            self.entry.unblocked();
            self.pending_unblock = None;
            self.exec.restore_own();
        }
        if let Some(mut held) = self.held.take() {
            let pause = self.shared.clients.current_pause();
            if pause.is_none() || Instant::now() >= held.until || !self.still_paused(&held.request) {
                self.entry.set_postponed(false);
                self.run_request(&io.shared, held.request, held.read_at, held.dropped);
                return Settled::Again;
            }
            held.until = pause.map_or(held.until, |p| p.until);
            self.held = Some(held);
        }
        if self.paused_input_can_run() && !io.closing {
            self.paused_input = false;
            self.on_input(&io.shared, &mut io.rbuf);
            return Settled::Again;
        }
        Settled::Wait
    }

    /// Moves the frames written outside the pipeline into `wbuf`, unless a streamed reply is
    /// part-way out: they never land inside it, and wait for its end. The look is inlined (it
    /// runs twice per settling and nearly always finds nothing), the move is not: together they
    /// were a call of ~25 instructions each time.
    #[inline(always)]
    fn release_direct_frames(&mut self, wbuf: &mut WriteBuffer) {
        if !self.direct.is_empty() {
            self.move_direct_frames(wbuf);
        }
    }

    /// [`Session::release_direct_frames`] when there are some.
    #[inline(never)]
    fn move_direct_frames(&mut self, wbuf: &mut WriteBuffer) {
        if !self.pipeline.mid_stream() {
            wbuf.extend_from_slice(&self.direct);
            self.direct.clear();
        }
    }

    /// Bytes read from the client (`read`; 0 at EOF). Returns false when the session must end.
    fn on_read(&mut self, io: &mut ClientIo, read: usize) -> bool {
        io.last_read_len = read;
        self.traffic.bytes_in += read as u64;
        self.exec.client_active();
        if read == 0 {
            // A client gone while blocked will never read the reply; dropping the own connection
            // unblocks the node. One gone while its requests are held for a failover is dropped
            // too, as Redis frees a client at EOF, so that it holds nothing any longer.
            io.reading = false;
            io.eof = true;
            return !self.blocked && !self.exec.holds_parts();
        }
        if self.shared.idle_timeout.is_on() {
            io.last_active = Instant::now();
        }
        io.burst += read;
        self.on_input(&io.shared, &mut io.rbuf);
        if io.rbuf.is_empty() {
            io.read_hint = io.burst.next_power_of_two().clamp(MIN_READ, MAX_READ_HINT);
            io.burst = 0;
        }
        true
    }

    /// Another client signalled this one. CLIENT KILL closes at once, as Redis does (returns
    /// false); an unpause only needs the loop to look at the held request again; a changed idle
    /// timeout is followed by the caller (`Timers::follow_idle_timeout`).
    fn on_signal(&mut self, io: &mut ClientIo) -> bool {
        // A client that killed itself closes after its replies, as the session arranged then.
        if self.entry.is_killed() && !self.state.closing {
            tracing::debug!(client = self.state.id, peer = %self.state.peer, "client killed");
            return false;
        }
        self.on_tracking_events();
        if let Some(how) = self.entry.take_unblock() {
            self.pending_unblock = Some((how, Instant::now()));
            self.retry_unblock();
        }
        if self.entry.take_trim() {
            self.give_back_idle_memory(io);
        }
        // The map may have changed (see `Clients::signal_subscribed`).
        self.follow_map();
        true
    }
}
