//! One established connection to a node: its event loop, which writes requests in batches (put in
//! its write buffer by their sessions, `outlet.rs`, or queued for it) and hands each reply to the
//! request at the head of its in-flight FIFO (or, on a subscribed connection, every frame to the
//! owner; `replies.rs`), with the timeout clock and the flow control of streamed replies.
//! `conn.rs` connects, reconnects and keeps the queue across connections.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::BytesMut;
use tokio::time::{Sleep, sleep};

use super::conn::{ConnMode, End, Inbox, fail};
use super::{ConnSettings, StreamCredit, UpstreamError, UpstreamRequest};
use crate::metrics::NodeMetrics;
use crate::readiness::ReadGate;
use crate::resp::FrameScanner;
use crate::socket::{IoBudget, Socket};
use crate::writes::WriteBuffer;
pub(super) use outlet::Outlet;
use replies::{Refusal, ReplyRun, dispatch_replies, stream_piece, stream_stalled};

/// Stop taking new requests while this much is waiting to be written, so a node that reads slowly
/// holds back its senders' requests in its queue (`Inbox`) instead of growing one buffer without
/// bound.
const WRITE_HIGH_WATER: usize = 1024 * 1024;

/// How much of an incomplete reply must be here before it is passed on in pieces.
const STREAM_AT: usize = 256 * 1024;

/// A batch held back while an earlier write's replies are coming (see `Wire::holds_writes`) goes
/// out anyway once it is this large.
const HOLD_BYTES: usize = 64 * 1024;

/// A request written (or about to be) whose reply has not come back yet.
struct InFlight {
    request: UpstreamRequest,
    /// The reply to the request's prefix command (ASKING, SCRIPT LOAD) is still to be swallowed.
    prefix_pending: bool,
    /// Timeout tick count when the request was queued, or when the last piece of its reply was
    /// passed on (a reply that keeps streaming is not timed out).
    queued_at: u64,
    /// Pieces of the reply were passed on already: their flow control. Boxed, as few replies
    /// stream: every entry is moved into and out of the in-flight queue, and Rust moves a value
    /// larger than 128 bytes with a call to `memcpy` (bench/RESULTS.md).
    stream: Option<Box<Streaming>>,
}

/// A reply passed on in pieces.
struct Streaming {
    /// Flow control of the streamed reply, from its first piece on.
    credit: Arc<StreamCredit>,
    /// Timeout tick since when reading waits for the client to catch up with the streamed reply.
    stalled_since: Option<u64>,
}

/// One established connection's state: what is written, what is in flight, what was read. It
/// lives in the connection's [`Outlet`], where sessions hand requests straight into it.
pub(super) struct Wire {
    /// The node's `host:port`, for errors; its host (the first `host_len` bytes) is filled into
    /// redirections that name only a port.
    addr: Arc<str>,
    host_len: usize,
    /// Requests are answered one by one (not a subscribed connection, whose frames all go to
    /// its owner).
    expects_reply: bool,
    inflight: VecDeque<InFlight>,
    rbuf: BytesMut,
    /// Reads the node's socket only when it may have something.
    read_gate: ReadGate,
    wbuf: WriteBuffer,
    scanner: FrameScanner,
    /// Replies read for one client one after another, queued to it together.
    run: ReplyRun,
    /// The last `unwritten` entries of `inflight` are (partly) still in `wbuf`.
    unwritten: usize,
    partly_written: bool,
    /// What waits in `wbuf` holds a pipelined batch: two requests of one client side by side.
    pipelined: bool,
    /// The client and request of the last request put in `wbuf` since it was last written out.
    last_origin: Option<super::Origin>,
    /// A request handed over started a batch: the task yields once before writing it, so that
    /// the other sessions of the turn add theirs (as [`Turn::Take`] does).
    gather: bool,
    /// The connection is a pool's, shared by clients: a batch waits for the turn's other
    /// sessions. A client's own connection (and a script lane) has no one else's requests to wait
    /// for, and waiting would let requests other clients sent later reach the node first on the
    /// pooled connections (a blocking command behind the DEL that was to end it).
    gathers: bool,
    /// Everything buffered is written; the writer is flushed before anything else is done.
    flushing: bool,
    /// Requests may still come (some sender is left).
    open: bool,
    /// Ticks of the coarse timeout clock so far, and how many make a `command_timeout`.
    now_tick: u64,
    timeout_ticks: u64,
    /// A login sent on the connection was refused ([`super::LOGIN`]): it was closed for that,
    /// not because the node failed.
    login_refused: bool,
}

impl Wire {
    /// Hands every complete reply read to its request. Bytes that match no request leave the
    /// connection out of step: everything in flight fails and the connection is dropped.
    fn on_read(&mut self, read: usize, mode: &ConnMode, metrics: &NodeMetrics) -> Result<(), UpstreamError> {
        if read == 0 {
            return Err(self.lost());
        }
        let addr = &self.addr[..];
        let scripts = mode.node_scripts.as_deref();
        let context = (mode.pushes.as_ref(), scripts, &self.addr[..self.host_len]);
        let dispatched =
            dispatch_replies(&mut self.rbuf, &mut self.scanner, &mut self.inflight, &mut self.run, context);
        // Every reply read goes to its client before anything else is sent on: a streamed
        // piece, or the failure of what is still in flight.
        self.run.flush();
        if dispatched.is_ok() {
            stream_piece(&mut self.rbuf, &mut self.scanner, &mut self.inflight, self.now_tick);
        }
        let Err(refusal) = dispatched else {
            return Ok(());
        };
        match refusal {
            Refusal::Login(answer) => {
                crate::log_limited!(5, warn, node = %addr, %answer, "a client's own connection could not log in as its new user: closed");
                self.login_refused = true;
            }
            Refusal::Mismatch(error) => {
                crate::log_limited!(5, error, node = %addr, %error, "upstream sent bytes that match no request");
                metrics.protocol_errors.inc_by(self.inflight.len() as u64);
            }
        }
        let lost = self.lost();
        for entry in self.inflight.drain(..) {
            entry.request.fail(lost.clone());
        }
        Err(lost)
    }

    /// Queues the requests waiting (up to [`WRITE_HIGH_WATER`]; the rest wait for the next turn).
    fn take_requests(&mut self, inbox: &mut Inbox, metrics: &NodeMetrics) {
        let mut queued = 0;
        while let Some(request) = inbox.waiting.pop_front() {
            if !self.admits(&request) {
                inbox.waiting.push_front(request);
                break;
            }
            self.admit(request);
            queued += 1;
        }
        metrics.requests.inc_by(queued);
    }

    /// Whether `request` may go into the write buffer now: the buffer is below
    /// [`WRITE_HIGH_WATER`], and what follows a login waits for its answer (see `awaits_login`).
    fn admits(&self, request: &UpstreamRequest) -> bool {
        self.wbuf.len() < WRITE_HIGH_WATER && (request.tag == super::LOGIN || !self.awaits_login())
    }

    /// Takes `request`, handed over by its sender ([`Outlet`]), after the requests queued
    /// before it.
    fn hand_over(&mut self, request: UpstreamRequest, inbox: &mut Inbox, metrics: &NodeMetrics) {
        inbox.take_more();
        if inbox.waiting.is_empty() && self.admits(&request) {
            self.admit(request);
            metrics.requests.inc();
            return;
        }
        inbox.waiting.push_back(request);
        self.take_requests(inbox, metrics);
    }

    /// Takes the requests in flight whose bytes are all still in the write buffer (the node has
    /// seen nothing of them) out of flight, in order, when the connection ends: they can go out
    /// on the next one. Not a request of a client that has an earlier one on the way (written,
    /// if only in part): a connection dropped after a timeout may still deliver that one to the
    /// node, which could then run it after the later one, sent on the next connection. Those,
    /// and the requests partly written, stay and fail with the connection. (The node's request
    /// count, `metrics.requests`, counts a request taken back again when the next connection
    /// takes it.)
    fn never_sent(&mut self) -> Vec<UpstreamRequest> {
        let (mut unsent, mut count) = (0, 0);
        for entry in self.inflight.iter().rev() {
            let size = entry.request.payload.len() + entry.request.prefix.as_ref().map_or(0, |p| p.len());
            if unsent + size > self.wbuf.len() {
                break;
            }
            unsent += size;
            count += 1;
        }
        let first_unsent = self.inflight.len() - count;
        let on_the_way: std::collections::HashSet<usize> =
            self.inflight.range(..first_unsent).map(|entry| entry.request.reply_to.queue_id()).collect();
        let tail = self.inflight.split_off(first_unsent);
        let mut taken = Vec::new();
        for entry in tail {
            match on_the_way.contains(&entry.request.reply_to.queue_id()) {
                true => self.inflight.push_back(entry),
                false => taken.push(entry.request),
            }
        }
        taken
    }

    /// Puts `request` in the write buffer (and in flight, when a reply is expected).
    fn admit(&mut self, request: UpstreamRequest) {
        let this = request.origin();
        self.pipelined |= self.last_origin.is_some_and(|earlier| earlier.pipelined_with(this));
        self.last_origin = Some(this);
        queue(request, &mut self.wbuf, &mut self.inflight, self.now_tick, self.expects_reply);
        if self.expects_reply {
            self.unwritten += 1;
        }
    }

    /// Advances the timeout clock; the head request waiting longer than `command_timeout` fails
    /// the connection, since replies still to come would be matched to the wrong requests.
    fn on_tick(&mut self, mode: &ConnMode) -> Result<(), UpstreamError> {
        self.now_tick += 1;
        if let Some(head) = self.inflight.front_mut()
            && mode.node_scripts.as_ref().is_some_and(|scripts| scripts.any_running())
        {
            // The node is running a client's script: it answers when the script ends, or with
            // -BUSY once its busy-reply-threshold passes. Waiting is not failing.
            head.queued_at = self.now_tick;
        }
        let late = |f: &InFlight| f.request.bounded && self.now_tick - f.queued_at > self.timeout_ticks;
        match self.inflight.front().is_some_and(late) {
            true => Err(UpstreamError::Timeout),
            false => Ok(()),
        }
    }

    /// A login sent on the connection (a client's own, following its user) is not answered yet:
    /// nothing is written behind it until it is, so that nothing runs with the rights of the
    /// user before it if it is refused. Logins are queued last (`take_requests`), so one pending
    /// is the last entry in flight.
    fn awaits_login(&self) -> bool {
        self.inflight.back().is_some_and(|entry| entry.request.tag == super::LOGIN)
    }

    /// Requests of clients that send one at a time wait while replies to an earlier write are
    /// still to come, and then go out together: under load each write (and each read on the
    /// node) carries many more commands. A lone request finds nothing in flight and goes out at
    /// once. A partly written batch is never held: its rest is what a reply may be waiting for.
    /// Nor is a pipelined batch, a batch already: holding it added the proxy's turn to its round
    /// trip. Measured in ABBA blocks (`bench/abba.sh`, bench/RESULTS.md, "seventh part"): without
    /// the hold `-P 16` GET +8.7 %, unpipelined GET −1.5 to −4 % with 2 % more CPU per request.
    fn holds_writes(&self) -> bool {
        !self.partly_written && !self.pipelined && self.inflight.len() > self.unwritten && self.wbuf.len() < HOLD_BYTES
    }
}

/// Serves one established connection (read and written by this one task, so not split in halves)
/// until it fails or the pool goes away. Its state lives in `outlet` meanwhile, where sessions
/// hand their requests straight into it.
pub(super) async fn serve_stream<S>(
    mut stream: S,
    addr: &str,
    settings: &ConnSettings,
    mode: &ConnMode,
    outlet: &Outlet,
    metrics: &NodeMetrics,
) -> End
where
    S: Socket,
{
    // Timeouts are checked on a coarse tick instead of a timer per request: a clock read and a timer
    // registration per command would cost more than the check itself.
    let tick_every = (settings.command_timeout / 8).clamp(Duration::from_millis(5), Duration::from_millis(100));
    let mut ticker = Ticker { sleep: std::pin::pin!(sleep(tick_every)), every: tick_every, armed: false };
    let timeout_ticks = settings.command_timeout.as_nanos().div_ceil(tick_every.as_nanos()).max(1) as u64;
    outlet.open(Wire::new(addr, mode, timeout_ticks));
    let failure = loop {
        let turn = poll_fn(|cx| {
            outlet.poll_wire(cx, |wire, inbox, cx| wire.poll_serve(cx, &mut stream, &mut ticker, inbox, mode, metrics))
        });
        match turn.await {
            Turn::Take => {
                // Let every other session that is ready, and those whose sockets became readable
                // meanwhile (tokio polls the I/O driver before resuming a yielded task), queue their
                // requests first, so that one write (one wake-up of the node) carries them all.
                // Measured: 1.85 → 1.2 writes per unpipelined request with 50 clients
                // (bench/RESULTS.md).
                if outlet.with_wire(|wire, _| wire.gathers && wire.wbuf.is_empty()) {
                    tokio::task::yield_now().await;
                }
                outlet.with_wire(|wire, inbox| {
                    inbox.take_more();
                    wire.take_requests(inbox, metrics);
                });
            }
            Turn::Yield => tokio::task::yield_now().await,
            Turn::Finished => {
                outlet.close();
                return End::Finished;
            }
            Turn::Failed(error) => break error,
        }
    };
    let Some(mut wire) = outlet.close() else {
        return End::Failed(failure);
    };
    for entry in wire.inflight.drain(..) {
        fail(entry.request, failure.clone(), metrics);
    }
    match wire.login_refused {
        true => End::LoginRefused(failure),
        false => End::Failed(failure),
    }
}

impl Wire {
    fn new(addr: &str, mode: &ConnMode, timeout_ticks: u64) -> Wire {
        Wire {
            addr: Arc::from(addr),
            host_len: addr.rsplit_once(':').map_or(addr.len(), |(host, _)| host.len()),
            expects_reply: mode.pushes.is_none(),
            inflight: VecDeque::new(),
            rbuf: BytesMut::with_capacity(64 * 1024),
            read_gate: ReadGate::default(),
            wbuf: WriteBuffer::with_capacity(64 * 1024),
            scanner: FrameScanner::new(),
            run: ReplyRun::default(),
            unwritten: 0,
            partly_written: false,
            pipelined: false,
            last_origin: None,
            gather: false,
            gathers: mode.reconnect,
            flushing: false,
            open: true,
            now_tick: 0,
            timeout_ticks,
            login_refused: false,
        }
    }
}

/// What the connection's loop must do that needs waiting, or how it ended.
pub(super) enum Turn {
    /// Requests wait to be queued ([`Wire::take_requests`], after the task lets other clients add
    /// theirs).
    Take,
    /// Other tasks of the worker run first: the wake-up spent its [`IoBudget`], or a request
    /// handed over started a batch that the other sessions of the turn may add to.
    Yield,
    Finished,
    Failed(UpstreamError),
}

impl Wire {
    /// One wake-up of the connection: passes over what it waits for, in priority order (replies
    /// to read, requests to write, requests queued, a stalled stream's credit, the timeout tick),
    /// handling whatever is ready, until nothing is; the request queue registers the waker only
    /// before the task waits. The same shape as the session's loop (session/serve.rs), for the
    /// same reason: no futures rebuilt per turn; like it, it yields after [`IoBudget`]'s passes.
    fn poll_serve<S>(
        &mut self,
        cx: &mut Context<'_>,
        stream: &mut S,
        ticker: &mut Ticker<'_>,
        inbox: &mut Inbox,
        mode: &ConnMode,
        metrics: &NodeMetrics,
    ) -> Poll<Turn>
    where
        S: Socket,
    {
        let mut budget = IoBudget::new();
        loop {
            if !budget.spend() {
                return Poll::Ready(Turn::Yield);
            }
            // A pool connection finishes what is in flight; an owned one whose owner left (a client
            // disconnected while blocked) has nobody to answer and stops at once.
            if !self.open && (self.inflight.is_empty() || !mode.reconnect) {
                return Poll::Ready(Turn::Finished);
            }
            // TLS buffers records until flushed; for TCP the flush is free.
            if self.flushing {
                if ready!(Pin::new(&mut *stream).poll_flush(cx)).is_err() {
                    return Poll::Ready(Turn::Failed(self.lost()));
                }
                self.flushing = false;
            }
            let (now_tick, timeout_ticks) = (self.now_tick, self.timeout_ticks);
            let stalled = self.inflight.front_mut().is_some_and(|head| stream_stalled(head, now_tick, timeout_ticks));
            if !stalled && let Poll::Ready(read) = self.read_gate.poll_read(cx, stream, &mut self.rbuf) {
                if let Err(error) = read.map_err(|_| self.lost()).and_then(|n| self.on_read(n, mode, metrics)) {
                    return Poll::Ready(Turn::Failed(error));
                }
                continue;
            }
            // A batch that requests handed over started waits one yield for the rest of the turn's
            // (as `Turn::Take` waits before taking queued ones).
            if self.gather && !self.holds_writes() {
                self.gather = false;
                return Poll::Ready(Turn::Yield);
            }
            if !self.wbuf.is_empty()
                && !self.holds_writes()
                && let Poll::Ready(written) = self.wbuf.poll_write_to(stream, cx)
            {
                if written.is_err() {
                    return Poll::Ready(Turn::Failed(self.lost()));
                }
                self.on_written();
                continue;
            }
            if self.open && self.wbuf.len() < WRITE_HIGH_WATER && !self.awaits_login() {
                match inbox.poll_take(cx) {
                    Poll::Ready(true) => return Poll::Ready(Turn::Take),
                    Poll::Ready(false) => {
                        self.open = false;
                        continue;
                    }
                    Poll::Pending => {}
                }
            }
            if stalled
                && let Some(credit) = self.inflight.front().and_then(|head| head.stream.as_ref().map(|s| &s.credit))
                && credit.poll_returned(cx).is_ready()
            {
                continue;
            }
            if ticker.poll_tick(cx).is_ready() {
                match self.on_tick(mode) {
                    Ok(()) => continue,
                    Err(error) => return Poll::Ready(Turn::Failed(error)),
                }
            }
            return Poll::Pending;
        }
    }

    /// Some of the write buffer went out; once all of it has, it is flushed.
    fn on_written(&mut self) {
        self.partly_written = !self.wbuf.is_empty();
        if !self.partly_written {
            self.unwritten = 0;
            self.pipelined = false;
            self.last_origin = None;
            self.flushing = true;
        }
    }

    fn lost(&self) -> UpstreamError {
        UpstreamError::ConnectionLost { addr: self.addr.to_string() }
    }
}

/// The coarse timeout clock: a timer re-armed each time it fires. Once polled, the timer wakes
/// the task by itself, so a turn of the connection's loop only looks whether it fired (a load)
/// instead of polling it again (~150 instructions per turn with a tokio `Interval`).
struct Ticker<'a> {
    sleep: Pin<&'a mut Sleep>,
    every: Duration,
    /// Polled (with budget) since last (re)set: the timer holds the task's waker.
    armed: bool,
}

impl Ticker<'_> {
    fn poll_tick(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.armed && !self.sleep.is_elapsed() {
            return Poll::Pending;
        }
        // Out of tokio's per-task budget, a `Sleep` returns Pending before it registers (the task
        // is woken again at once instead): it only counts as armed after a poll that had budget.
        let can_register = tokio::task::coop::has_budget_remaining();
        if self.sleep.as_mut().poll(cx).is_pending() {
            self.armed = can_register;
            return Poll::Pending;
        }
        // The next tick a whole period from now, however late this one was.
        let next = tokio::time::Instant::now() + self.every;
        self.sleep.as_mut().reset(next);
        self.armed = false;
        Poll::Ready(())
    }
}

fn queue(
    request: UpstreamRequest,
    wbuf: &mut WriteBuffer,
    inflight: &mut VecDeque<InFlight>,
    now_tick: u64,
    expects_reply: bool,
) {
    if let Some(prefix) = &request.prefix {
        wbuf.extend_from_slice(prefix);
    }
    wbuf.extend_from_slice(&request.payload);
    if !expects_reply {
        return;
    }
    inflight.push_back(InFlight {
        prefix_pending: request.prefix.is_some(),
        request,
        queued_at: now_tick,
        stream: None,
    });
}

mod outlet;
mod replies;

#[cfg(test)]
mod tests;
