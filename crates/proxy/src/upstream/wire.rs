//! One established connection to a node: its event loop, which writes queued requests in batches
//! and hands each reply to the request at the head of its in-flight FIFO (or, on a subscribed
//! connection, every frame to the owner), with the timeout clock and the flow control of streamed
//! replies. `conn.rs` connects, reconnects and keeps the queue across connections.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::time::{Sleep, sleep};

use super::conn::{ConnMode, End, Inbox, fail};
use super::lanes::NodeScripts;
use super::{
    ConnSettings, ReplySender, STREAM_WINDOW, StreamCredit, Tag, UpstreamError, UpstreamReply, UpstreamRequest,
};
use crate::metrics::NodeMetrics;
use crate::readiness::ReadGate;
use crate::resp::FrameScanner;
use crate::socket::{IoBudget, Socket};
use crate::writes::WriteBuffer;

/// Stop taking new requests while this much is waiting to be written, so a node that reads slowly
/// holds back its senders' requests in the channel instead of growing one buffer without bound.
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

/// One established connection's state: what is written, what is in flight, what was read.
struct Wire<'a> {
    /// The node's host, filled into redirections that name only a port.
    host: &'a str,
    /// The node's `host:port`, for errors.
    addr: &'a str,
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

impl Wire<'_> {
    /// Hands every complete reply read to its request. Bytes that match no request leave the
    /// connection out of step: everything in flight fails and the connection is dropped.
    fn on_read(&mut self, read: usize, mode: &ConnMode, metrics: &NodeMetrics) -> Result<(), UpstreamError> {
        if read == 0 {
            return Err(self.lost());
        }
        let addr = self.addr;
        let scripts = mode.node_scripts.as_deref();
        let context = (mode.pushes.as_ref(), scripts, self.host);
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

    /// Queues the requests waiting, and every other request sent meanwhile, so that one write
    /// carries them all (up to [`WRITE_HIGH_WATER`]; the rest wait for the next turn).
    async fn take_requests(&mut self, inbox: &mut Inbox, mode: &ConnMode, metrics: &NodeMetrics) {
        // Let every other session that is ready, and those whose sockets became readable
        // meanwhile (tokio polls the I/O driver before resuming a yielded task), queue their
        // requests first, so that one write (one wake-up of the node) carries them all. Measured:
        // 1.85 → 1.2 writes per unpipelined request with 50 clients (bench/RESULTS.md).
        if self.wbuf.is_empty() {
            tokio::task::yield_now().await;
            inbox.take_more();
        }
        let expects_reply = mode.pushes.is_none();
        let mut queued = 0;
        let mut previous: Option<super::Origin> = None;
        while self.wbuf.len() < WRITE_HIGH_WATER
            && let Some(request) = inbox.waiting.pop_front()
        {
            // What follows a login waits for its answer (see `awaits_login`).
            if self.awaits_login() && request.tag != super::LOGIN {
                inbox.waiting.push_front(request);
                break;
            }
            let this = request.origin();
            self.pipelined |= previous.is_some_and(|earlier| earlier.pipelined_with(this));
            previous = Some(this);
            queue(request, &mut self.wbuf, &mut self.inflight, self.now_tick, expects_reply);
            queued += 1;
        }
        metrics.requests.inc_by(queued);
        if expects_reply {
            self.unwritten += queued as usize;
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
/// until it fails or the pool goes away.
pub(super) async fn serve_stream<S>(
    mut stream: S,
    addr: &str,
    settings: &ConnSettings,
    mode: &ConnMode,
    inbox: &mut Inbox,
    metrics: &NodeMetrics,
) -> End
where
    S: Socket,
{
    // Timeouts are checked on a coarse tick instead of a timer per request: a clock read and a timer
    // registration per command would cost more than the check itself.
    let tick_every = (settings.command_timeout / 8).clamp(Duration::from_millis(5), Duration::from_millis(100));
    let mut ticker = Ticker { sleep: std::pin::pin!(sleep(tick_every)), every: tick_every, armed: false };
    let mut wire = Wire {
        host: addr.rsplit_once(':').map_or(addr, |(host, _)| host),
        addr,
        inflight: VecDeque::new(),
        rbuf: BytesMut::with_capacity(64 * 1024),
        read_gate: ReadGate::default(),
        wbuf: WriteBuffer::with_capacity(64 * 1024),
        scanner: FrameScanner::new(),
        run: ReplyRun::default(),
        unwritten: 0,
        partly_written: false,
        pipelined: false,
        flushing: false,
        open: true,
        now_tick: 0,
        timeout_ticks: settings.command_timeout.as_nanos().div_ceil(tick_every.as_nanos()).max(1) as u64,
        login_refused: false,
    };
    let failure = loop {
        match poll_fn(|cx| wire.poll_serve(cx, &mut stream, &mut ticker, inbox, mode, metrics)).await {
            Turn::Take => wire.take_requests(inbox, mode, metrics).await,
            Turn::Yield => tokio::task::yield_now().await,
            Turn::Finished => return End::Finished,
            Turn::Failed(error) => break error,
        }
    };
    for entry in wire.inflight.drain(..) {
        fail(entry.request, failure.clone(), metrics);
    }
    match wire.login_refused {
        true => End::LoginRefused(failure),
        false => End::Failed(failure),
    }
}

/// What the connection's loop must do that needs waiting, or how it ended.
enum Turn {
    /// Requests wait to be queued ([`Wire::take_requests`], which first lets other clients add theirs).
    Take,
    /// The wake-up spent its [`IoBudget`]: other tasks of the worker run first.
    Yield,
    Finished,
    Failed(UpstreamError),
}

impl Wire<'_> {
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

/// Why reading a connection's replies ends it.
enum Refusal {
    /// Bytes that answer no request: the connection is out of step.
    Mismatch(String),
    /// A login sent on it was refused (the node's answer, first line).
    Login(String),
}

/// Replies read for one client one after another (a pipelined client's, from one read), passed
/// on together once the run ends: handed over whole to a waiting session, or queued with one lock
/// and at most one wake-up for the run ([`super::queue::Sender::send_run`]).
#[derive(Default)]
struct ReplyRun {
    to: Option<ReplySender>,
    replies: Vec<UpstreamReply>,
}

impl ReplyRun {
    fn is_empty(&self) -> bool {
        self.to.is_none()
    }

    /// Adds `reply` for `reply_to`'s client, whose run this is (or starts).
    fn push(&mut self, reply_to: ReplySender, reply: UpstreamReply) {
        // A later sender is a clone of the run's.
        self.to.get_or_insert(reply_to);
        self.replies.push(reply);
    }

    /// Passes the run on to its client (a client that went away simply drops its replies).
    fn flush(&mut self) {
        if let Some(to) = self.to.take() {
            to.send_run(&mut self.replies);
        }
    }
}

/// Hands every complete reply in `rbuf` to the request it answers (a pipelined client's through
/// `run`, which the caller flushes: the rest of a run may still be unread).
fn dispatch_replies(
    rbuf: &mut BytesMut,
    scanner: &mut FrameScanner,
    inflight: &mut VecDeque<InFlight>,
    run: &mut ReplyRun,
    (pushes, scripts, host): (Option<&(ReplySender, Tag)>, Option<&NodeScripts>, &str),
) -> Result<(), Refusal> {
    let mismatch = |what: &str| Refusal::Mismatch(what.to_string());
    while let Some(len) = scanner.scan(rbuf).map_err(|e| Refusal::Mismatch(e.to_string()))? {
        let mut frame: Bytes = rbuf.split_to(len).freeze();
        // The rest of a reply passed on in pieces is the tail of a value, whatever it starts with.
        let tail = || pushes.is_none() && inflight.front().is_some_and(|head| head.stream.is_some());
        if frame.first() == Some(&b'-') && !tail() {
            if let Some(filled) = crate::redirect::fill_in_host(&frame, host) {
                frame = filled;
            }
            if let Some(scripts) = scripts {
                scripts.saw_error(&frame);
            }
        }
        // A subscribed connection's frames (confirmations, messages, pongs) all go to its owner,
        // in order: they do not pair one-to-one with requests.
        if let Some((pushes, tag)) = pushes {
            let _ = pushes.send(UpstreamReply { tag: *tag, result: Ok(frame), partial: None });
            continue;
        }
        let Some(head) = inflight.front_mut() else {
            return Err(mismatch("reply without a request"));
        };
        if head.prefix_pending {
            head.prefix_pending = false;
            continue;
        }
        let Some(entry) = inflight.pop_front() else {
            return Err(mismatch("reply without a request"));
        };
        if entry.request.tag == super::LOGIN && frame.first() == Some(&b'-') {
            // Never the password: the command is not logged, only the node's answer.
            return Err(Refusal::Login(super::connect::first_line(&frame)));
        }
        let origin = entry.request.origin();
        let UpstreamRequest { reply_to, tag, lease, .. } = entry.request;
        let reply = UpstreamReply { tag, result: Ok(frame), partial: None };
        // The next request in flight is the same client's next request (a pipelined batch): this
        // reply waits for the run to end. Not the next part of the same request (a split MGET's
        // parts on one node): a client waiting for one request takes each part's reply handed
        // over, without a wake-up. A script lane's reply goes at once: the lane counts busy until
        // it is with its client (its lease, dropped after this).
        let pipelined = |next: &InFlight| next.request.origin().pipelined_with(origin);
        let run_goes_on = lease.is_none() && inflight.front().is_some_and(pipelined);
        if run.is_empty() && !run_goes_on {
            // A caller that went away (client disconnected) simply drops its reply.
            let _ = reply_to.send(reply);
            continue;
        }
        run.push(reply_to, reply);
        if !run_goes_on {
            run.flush();
        }
    }
    Ok(())
}

/// Passes on what has arrived of a large reply to a request that may stream, once at least
/// [`STREAM_AT`] bytes of it are here: the proxy then holds about one read of a reply of any size,
/// not the whole of it. Errors (`-…`), which the session must inspect, never stream.
fn stream_piece(rbuf: &mut BytesMut, scanner: &mut FrameScanner, inflight: &mut VecDeque<InFlight>, now_tick: u64) {
    if rbuf.len() < STREAM_AT {
        return;
    }
    let Some(head) = inflight.front_mut() else { return };
    if !head.request.streamable || head.prefix_pending || (head.stream.is_none() && rbuf.first() == Some(&b'-')) {
        return;
    }
    let settled = scanner.settled(rbuf);
    if settled < STREAM_AT {
        return;
    }
    let piece = rbuf.split_to(settled).freeze();
    scanner.take_settled(settled);
    head.queued_at = now_tick;
    let stream = head.stream.get_or_insert_with(|| Box::new(Streaming { credit: Arc::default(), stalled_since: None }));
    let credit = Arc::clone(&stream.credit);
    credit.lend(piece.len());
    let _ =
        head.request.reply_to.send(UpstreamReply { tag: head.request.tag, result: Ok(piece), partial: Some(credit) });
}

/// Whether reading waits for the client of a streamed reply to catch up: more than
/// [`STREAM_WINDOW`] passed on and not written yet. A client that does not catch up within
/// `command_timeout` no longer holds the connection (which other clients' replies share): reading
/// goes on, and the client output limit bounds what its session holds.
fn stream_stalled(head: &mut InFlight, now_tick: u64, timeout_ticks: u64) -> bool {
    let Some(stream) = head.stream.as_mut() else {
        return false;
    };
    if stream.credit.outstanding() <= STREAM_WINDOW || head.request.reply_to.is_closed() {
        stream.stalled_since = None;
        return false;
    }
    let since = *stream.stalled_since.get_or_insert(now_tick);
    let stalled = now_tick - since <= timeout_ticks;
    if stalled {
        // Waiting for the client is not the node being slow.
        head.queued_at = now_tick;
    }
    stalled
}

#[cfg(test)]
mod tests;
