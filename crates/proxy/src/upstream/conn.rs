//! One pipelined connection to one node: a task that owns the socket, writes queued requests in
//! batches and hands each reply to the request at the head of its in-flight FIFO.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Sleep, sleep};

use super::lanes::NodeScripts;
use super::stream::UpstreamStream;
use super::{
    ConnSettings, ReplySender, RequestReceiver, RequestSender, STREAM_WINDOW, StreamCredit, Tag, UpstreamError,
    UpstreamReply, UpstreamRequest, connect, queue,
};
use crate::auth::NodeUser;
use crate::metrics::NodeMetrics;
use crate::resp::FrameScanner;

/// Stop taking new requests while this much is waiting to be written, so a node that reads slowly
/// holds back its senders' requests in the channel instead of growing one buffer without bound.
const WRITE_HIGH_WATER: usize = 1024 * 1024;

/// How much of an incomplete reply must be here before it is passed on in pieces.
const STREAM_AT: usize = 256 * 1024;

/// A batch held back while an earlier write's replies are coming (see `serve_halves`) goes out
/// anyway once it is this large.
const HOLD_BYTES: usize = 64 * 1024;

/// Starts the task for one connection to `addr` and returns the queue that feeds it.
///
/// The task connects at once (so the pool is warm), reconnects with backoff when the connection
/// breaks, and ends when every sender is dropped and nothing is in flight.
pub fn spawn(addr: String, settings: Arc<ConnSettings>, mode: ConnMode, metrics: Arc<NodeMetrics>) -> RequestSender {
    let (tx, rx) = queue::channel();
    tokio::spawn(run(addr, settings, mode, Inbox { rx, waiting: VecDeque::new() }, metrics));
    tx
}

/// The requests for a connection: its queue, and those taken from it and not written yet (kept
/// across reconnects, like the queue).
struct Inbox {
    rx: RequestReceiver,
    waiting: VecDeque<UpstreamRequest>,
}

impl Inbox {
    /// Ready with true once requests wait, with false once every sender is gone and none is left.
    fn poll_take(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<bool> {
        if !self.waiting.is_empty() {
            return std::task::Poll::Ready(true);
        }
        self.rx.poll_take(cx, &mut self.waiting).map(|taken| taken > 0)
    }

    /// Takes whatever else was queued meanwhile.
    fn take_more(&mut self) {
        let _ = self.rx.take(&mut self.waiting);
    }

    /// Answers every request waiting with `error`; with `close`, later sends are refused too.
    fn fail_all(&mut self, error: &UpstreamError, metrics: &NodeMetrics, close: bool) {
        if close {
            self.rx.close();
        }
        self.take_more();
        for request in self.waiting.drain(..) {
            fail(request, error.clone(), metrics);
        }
    }
}

/// How a connection behaves: one of a node pool's, shared by many clients, or one a single client
/// owns for state a shared connection cannot hold (a transaction, a blocking command, subscriptions).
#[derive(Debug, Clone)]
pub struct ConnMode {
    /// Send `READONLY` after login (replica reads).
    pub readonly: bool,
    /// Speak RESP3 (`HELLO 3` after login), for clients that asked for it.
    pub resp3: bool,
    /// Reconnect with backoff after a failure (pools), or end (an owned connection: its state is
    /// gone with it, and its owner decides what to do).
    pub reconnect: bool,
    /// Where frames go on a subscribed connection, all of them in order and with this tag (its
    /// `seq` is [`PUSH`]'s): confirmations, messages, pongs do not pair one-to-one with requests.
    /// The owner also learns here, with an error, that the connection ended. `None`: replies are
    /// matched to requests.
    pub pushes: Option<(ReplySender, Tag)>,
    /// Log in as this node-side user after the proxy's own login, so the node enforces a client's
    /// ACL rules on what its scripts call; `None`: stay the upstream user.
    pub user: Option<Arc<NodeUser>>,
    /// The node's scripts: while one runs the node answers nothing else, which is not a timeout
    /// (the node answers `-BUSY` itself once its busy-reply-threshold passes). `None`: always time out.
    pub node_scripts: Option<Arc<NodeScripts>>,
    /// Where to store the node's `CLIENT ID` of the connection once logged in (owned connections:
    /// `CLIENT UNBLOCK` of a proxy client unblocks it on the node).
    pub node_client_id: Option<Arc<std::sync::atomic::AtomicU64>>,
}

impl ConnMode {
    /// A pool connection.
    pub fn pooled(readonly: bool) -> ConnMode {
        ConnMode {
            readonly,
            resp3: false,
            reconnect: true,
            pushes: None,
            user: None,
            node_scripts: None,
            node_client_id: None,
        }
    }

    /// An owned connection (transactions, blocking commands, subscriptions), logged in as `user`.
    pub fn owned(resp3: bool, user: Option<Arc<NodeUser>>) -> ConnMode {
        ConnMode { user, ..ConnMode { resp3, reconnect: false, ..ConnMode::pooled(false) } }
    }

    /// What is sent after the proxy's own login: the node-side user's login, then `HELLO 3` and
    /// `READONLY` as the mode asks.
    fn login_commands(&self, settings: &ConnSettings) -> Vec<Vec<Vec<u8>>> {
        let mut commands = Vec::new();
        if let Some(user) = &self.user {
            commands.extend(user.login_commands(settings.password.as_deref()));
        }
        if self.resp3 {
            commands.push(vec![b"HELLO".to_vec(), b"3".to_vec()]);
        }
        if self.readonly {
            commands.push(vec![b"READONLY".to_vec()]);
        }
        commands
    }
}

/// The `seq` of tags that answer no request: subscribed connections' frames, and replies nobody
/// waits for.
pub const PUSH: Tag = Tag { seq: u64::MAX, part: u32::MAX };

/// A request written (or about to be) whose reply has not come back yet.
struct InFlight {
    request: UpstreamRequest,
    /// The reply to the request's prefix command (ASKING, SCRIPT LOAD) is still to be swallowed.
    prefix_pending: bool,
    /// Timeout tick count when the request was queued, or when the last piece of its reply was
    /// passed on (a reply that keeps streaming is not timed out).
    queued_at: u64,
    /// Pieces of the reply were passed on already.
    streaming: bool,
    /// Flow control of the streamed reply, from its first piece on.
    credit: Option<Arc<StreamCredit>>,
    /// Timeout tick since when reading waits for the client to catch up with the streamed reply.
    stalled_since: Option<u64>,
}

/// How a connection ended.
enum End {
    /// Every sender is gone and nothing is in flight: the pool was dropped.
    Finished,
    Failed(UpstreamError),
}

async fn run(addr: String, settings: Arc<ConnSettings>, mode: ConnMode, mut inbox: Inbox, metrics: Arc<NodeMetrics>) {
    let commands = mode.login_commands(&settings);
    let arguments: Vec<Vec<&[u8]>> = commands.iter().map(|c| c.iter().map(Vec::as_slice).collect()).collect();
    let extra: Vec<&[&[u8]]> = arguments.iter().map(Vec::as_slice).collect();
    let mut backoff = Duration::from_millis(25);
    loop {
        match connect::connect(&addr, &settings, &extra).await {
            Ok(mut stream) => {
                if let Some(id) = &mode.node_client_id {
                    id.store(node_client_id(&mut stream, &settings).await, std::sync::atomic::Ordering::Release);
                }
                backoff = Duration::from_millis(25);
                match serve(stream, &addr, &settings, &mode, &mut inbox, &metrics).await {
                    End::Finished => return,
                    End::Failed(error) => {
                        crate::log_limited!(5, warn, node = %addr, %error, "upstream connection failed");
                        (settings.on_failure)(&addr);
                        if !mode.reconnect {
                            return end_owned(&mode, inbox, error, &metrics);
                        }
                    }
                }
            }
            Err(error) => {
                crate::log_limited!(5, warn, node = %addr, %error, "upstream connect failed");
                (settings.on_failure)(&addr);
                if !mode.reconnect {
                    return end_owned(&mode, inbox, error, &metrics);
                }
                // Requests for a node that cannot be reached fail at once (they were never sent, so the
                // caller may retry elsewhere) rather than waiting out the backoff.
                let pause = sleep(backoff);
                tokio::pin!(pause);
                loop {
                    tokio::select! {
                        _ = &mut pause => break,
                        waiting = std::future::poll_fn(|cx| inbox.poll_take(cx)) => match waiting {
                            false => return,
                            true => inbox.fail_all(&error, &metrics, false),
                        },
                    }
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// The node's `CLIENT ID` of a connection that just logged in; 0 when it cannot be had.
async fn node_client_id(stream: &mut UpstreamStream, settings: &ConnSettings) -> u64 {
    let asked = tokio::time::timeout(settings.command_timeout, connect::roundtrip(stream, &[b"CLIENT", b"ID"]));
    match asked.await {
        Ok(Ok(reply)) => reply
            .strip_prefix(b":")
            .and_then(|rest| std::str::from_utf8(rest).ok()?.trim_end().parse().ok())
            .unwrap_or(0),
        _ => 0,
    }
}

/// An owned connection is over: fail what is queued and tell the owner.
fn end_owned(mode: &ConnMode, mut inbox: Inbox, error: UpstreamError, metrics: &NodeMetrics) {
    inbox.fail_all(&error, metrics, true);
    if let Some((pushes, tag)) = &mode.pushes {
        let _ = pushes.send(UpstreamReply { tag: *tag, result: Err(error), partial: None });
    }
}

fn fail(request: UpstreamRequest, error: UpstreamError, metrics: &NodeMetrics) {
    metrics.record_error(&error);
    request.fail(error);
}

/// Serves one established connection until it fails or the pool goes away.
async fn serve(
    stream: UpstreamStream,
    addr: &str,
    settings: &ConnSettings,
    mode: &ConnMode,
    inbox: &mut Inbox,
    metrics: &NodeMetrics,
) -> End {
    match stream {
        UpstreamStream::Plain(tcp) => {
            let (reader, writer) = tcp.into_split();
            serve_halves(reader, writer, addr, settings, mode, inbox, metrics).await
        }
        UpstreamStream::Tls(tls) => {
            let (reader, writer) = tokio::io::split(*tls);
            serve_halves(reader, writer, addr, settings, mode, inbox, metrics).await
        }
    }
}

/// One established connection's state: what is written, what is in flight, what was read.
struct Wire<'a> {
    /// The node's host, filled into redirections that name only a port.
    host: &'a str,
    inflight: VecDeque<InFlight>,
    rbuf: BytesMut,
    wbuf: BytesMut,
    scanner: FrameScanner,
    /// The last `unwritten` entries of `inflight` are (partly) still in `wbuf`.
    unwritten: usize,
    partly_written: bool,
    /// Ticks of the coarse timeout clock so far, and how many make a `command_timeout`.
    now_tick: u64,
    timeout_ticks: u64,
}

impl Wire<'_> {
    /// Hands every complete reply read to its request. Bytes that match no request leave the
    /// connection out of step: everything in flight fails and the connection is dropped.
    fn on_read(&mut self, addr: &str, mode: &ConnMode, metrics: &NodeMetrics) -> Result<(), UpstreamError> {
        let scripts = mode.node_scripts.as_deref();
        let context = (mode.pushes.as_ref(), scripts);
        let Err(error) =
            dispatch_replies(&mut self.rbuf, &mut self.scanner, &mut self.inflight, context, self.host, self.now_tick)
        else {
            return Ok(());
        };
        crate::log_limited!(5, error, node = %addr, %error, "upstream sent bytes that match no request");
        metrics.protocol_errors.inc_by(self.inflight.len() as u64);
        for entry in self.inflight.drain(..) {
            entry.request.fail(UpstreamError::ConnectionLost { addr: addr.to_string() });
        }
        Err(UpstreamError::ConnectionLost { addr: addr.to_string() })
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
        while self.wbuf.len() < WRITE_HIGH_WATER
            && let Some(request) = inbox.waiting.pop_front()
        {
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

    /// New requests wait while replies to an earlier write are still to come, and then go out
    /// together: the node answers in order, so they would only have waited in its socket, and
    /// under load each write (and each read on the node) carries many more commands. A lone
    /// request finds nothing in flight and goes out at once. A partly written batch is never
    /// held: its rest is what a reply may be waiting for.
    fn holds_writes(&self) -> bool {
        !self.partly_written && self.inflight.len() > self.unwritten && self.wbuf.len() < HOLD_BYTES
    }
}

async fn serve_halves<R, W>(
    mut reader: R,
    mut writer: W,
    addr: &str,
    settings: &ConnSettings,
    mode: &ConnMode,
    inbox: &mut Inbox,
    metrics: &NodeMetrics,
) -> End
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // Timeouts are checked on a coarse tick instead of a timer per request: a clock read and a timer
    // registration per command would cost more than the check itself.
    let tick_every = (settings.command_timeout / 8).clamp(Duration::from_millis(5), Duration::from_millis(100));
    let mut ticker = Ticker { sleep: std::pin::pin!(sleep(tick_every)), every: tick_every, armed: false };
    let mut wire = Wire {
        host: addr.rsplit_once(':').map_or(addr, |(host, _)| host),
        inflight: VecDeque::new(),
        rbuf: BytesMut::with_capacity(64 * 1024),
        wbuf: BytesMut::with_capacity(64 * 1024),
        scanner: FrameScanner::new(),
        unwritten: 0,
        partly_written: false,
        now_tick: 0,
        timeout_ticks: settings.command_timeout.as_nanos().div_ceil(tick_every.as_nanos()).max(1) as u64,
    };
    let mut open = true;
    let failure = loop {
        // A pool connection finishes what is in flight; an owned one whose owner left (a client
        // disconnected while blocked) has nobody to answer and stops at once.
        if !open && (wire.inflight.is_empty() || !mode.reconnect) {
            return End::Finished;
        }
        let (now_tick, timeout_ticks) = (wire.now_tick, wire.timeout_ticks);
        let stalled = wire.inflight.front_mut().is_some_and(|head| stream_stalled(head, now_tick, timeout_ticks));
        let credit = if stalled { wire.inflight.front().and_then(|head| head.credit.clone()) } else { None };
        let hold = wire.holds_writes();
        tokio::select! {
            biased;
            read = reader.read_buf(&mut wire.rbuf), if !stalled => match read {
                Ok(0) | Err(_) => break UpstreamError::ConnectionLost { addr: addr.to_string() },
                Ok(_) => if let Err(error) = wire.on_read(addr, mode, metrics) {
                    break error;
                },
            },
            written = writer.write_buf(&mut wire.wbuf), if !wire.wbuf.is_empty() && !hold => {
                // TLS buffers records until flushed; for TCP the flush is free.
                let flushed = match written {
                    Ok(_) if wire.wbuf.is_empty() => writer.flush().await,
                    other => other.map(|_| ()),
                };
                if flushed.is_err() {
                    break UpstreamError::ConnectionLost { addr: addr.to_string() };
                }
                wire.partly_written = !wire.wbuf.is_empty();
                if !wire.partly_written {
                    wire.unwritten = 0;
                }
            }
            waiting = std::future::poll_fn(|cx| inbox.poll_take(cx)), if open && wire.wbuf.len() < WRITE_HIGH_WATER => {
                match waiting {
                    false => open = false,
                    true => wire.take_requests(inbox, mode, metrics).await,
                }
            }
            () = credit_returned(credit), if stalled => {}
            () = std::future::poll_fn(|cx| ticker.poll_tick(cx)) => if let Err(error) = wire.on_tick(mode) {
                break error;
            },
        }
    };
    for entry in wire.inflight.drain(..) {
        fail(entry.request, failure.clone(), metrics);
    }
    End::Failed(failure)
}

/// The coarse timeout clock: a timer re-armed each time it fires. Once polled, the timer wakes
/// the task by itself, so a turn of the connection's loop only looks whether it fired (a load)
/// instead of polling it again (~150 instructions per turn with a tokio `Interval`).
struct Ticker<'a> {
    sleep: Pin<&'a mut Sleep>,
    every: Duration,
    /// Polled since last (re)set: the timer holds the task's waker.
    armed: bool,
}

impl Ticker<'_> {
    fn poll_tick(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.armed && !self.sleep.is_elapsed() {
            return Poll::Pending;
        }
        if self.sleep.as_mut().poll(cx).is_pending() {
            self.armed = true;
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
    wbuf: &mut BytesMut,
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
        streaming: false,
        credit: None,
        stalled_since: None,
    });
}

/// Hands every complete reply in `rbuf` to the request it answers.
fn dispatch_replies(
    rbuf: &mut BytesMut,
    scanner: &mut FrameScanner,
    inflight: &mut VecDeque<InFlight>,
    (pushes, scripts): (Option<&(ReplySender, Tag)>, Option<&NodeScripts>),
    host: &str,
    now_tick: u64,
) -> Result<(), String> {
    while let Some(len) = scanner.scan(rbuf).map_err(|e| e.to_string())? {
        let mut frame: Bytes = rbuf.split_to(len).freeze();
        if frame.first() == Some(&b'-') {
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
            return Err("reply without a request".to_string());
        };
        if head.prefix_pending {
            head.prefix_pending = false;
            continue;
        }
        let Some(entry) = inflight.pop_front() else {
            return Err("reply without a request".to_string());
        };
        // A caller that went away (client disconnected) simply drops its reply.
        let _ = entry.request.reply_to.send(UpstreamReply { tag: entry.request.tag, result: Ok(frame), partial: None });
    }
    stream_piece(rbuf, scanner, inflight, now_tick);
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
    if !head.request.streamable || head.prefix_pending || (!head.streaming && rbuf.first() == Some(&b'-')) {
        return;
    }
    let settled = scanner.settled(rbuf);
    if settled < STREAM_AT {
        return;
    }
    let piece = rbuf.split_to(settled).freeze();
    scanner.take_settled(settled);
    head.streaming = true;
    head.queued_at = now_tick;
    let credit = Arc::clone(head.credit.get_or_insert_with(Default::default));
    credit.lend(piece.len());
    let _ =
        head.request.reply_to.send(UpstreamReply { tag: head.request.tag, result: Ok(piece), partial: Some(credit) });
}

/// Whether reading waits for the client of a streamed reply to catch up: more than
/// [`STREAM_WINDOW`] passed on and not written yet. A client that does not catch up within
/// `command_timeout` no longer holds the connection (which other clients' replies share): reading
/// goes on, and the client output limit bounds what its session holds.
fn stream_stalled(head: &mut InFlight, now_tick: u64, timeout_ticks: u64) -> bool {
    let behind = head.credit.as_ref().is_some_and(|c| c.outstanding() > STREAM_WINDOW);
    if !behind || head.request.reply_to.is_closed() {
        head.stalled_since = None;
        return false;
    }
    let since = *head.stalled_since.get_or_insert(now_tick);
    let stalled = now_tick - since <= timeout_ticks;
    if stalled {
        // Waiting for the client is not the node being slow.
        head.queued_at = now_tick;
    }
    stalled
}

/// Resolves when the session gives credit back.
async fn credit_returned(credit: Option<Arc<StreamCredit>>) {
    match credit {
        Some(credit) => credit.returned().await,
        None => std::future::pending().await,
    }
}
