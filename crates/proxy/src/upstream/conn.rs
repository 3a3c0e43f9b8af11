//! One pipelined connection to one node: a task that connects (and reconnects with backoff),
//! logs in, and serves the established connection (`wire.rs`) with the requests of its queue.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::sleep;

use super::lanes::NodeScripts;
use super::stream::UpstreamStream;
use super::wire::Outlet;
use super::{
    ConnSettings, NodeReport, ReplySender, RequestReceiver, RequestSender, Tag, UpstreamError, UpstreamReply,
    UpstreamRequest, connect, queue,
};
use crate::auth::NodeUser;
use crate::metrics::NodeMetrics;

/// Starts the task for one connection to `addr` and returns the queue that feeds it.
///
/// The task connects at once (so the pool is warm), reconnects with backoff when the connection
/// breaks, and ends when every sender is dropped and nothing is in flight.
pub fn spawn(addr: String, settings: Arc<ConnSettings>, mode: ConnMode, metrics: Arc<NodeMetrics>) -> RequestSender {
    let (tx, rx) = queue::channel();
    let outlet = Outlet::new(Inbox { rx, waiting: VecDeque::new() }, Arc::clone(&metrics));
    tokio::spawn(run(addr, settings, mode, outlet, metrics));
    tx
}

/// The requests for a connection: its queue, and those taken from it and not in the write buffer
/// yet (kept across reconnects, like the queue).
pub(super) struct Inbox {
    pub(super) rx: RequestReceiver,
    pub(super) waiting: VecDeque<UpstreamRequest>,
}

impl Inbox {
    /// Ready with true once requests wait, with false once every sender is gone and none is left.
    pub(super) fn poll_take(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<bool> {
        if !self.waiting.is_empty() {
            return std::task::Poll::Ready(true);
        }
        self.rx.poll_take(cx, &mut self.waiting).map(|taken| taken > 0)
    }

    /// Takes whatever else was queued meanwhile.
    pub(super) fn take_more(&mut self) {
        let _ = self.rx.take_queued(&mut self.waiting);
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
    /// Wait this long before connecting: a subscription connection replacing one that failed
    /// at once backs off, rather than reconnecting in a tight loop to a node that is down.
    pub connect_after: Duration,
    /// Ask the node not to evict the connection ([`exempt_from_eviction`]): one many clients
    /// share (pools, tracking streams).
    pub no_evict: bool,
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
            connect_after: Duration::ZERO,
            no_evict: true,
        }
    }

    /// An owned connection (transactions, blocking commands, subscriptions), logged in as `user`.
    pub fn owned(resp3: bool, user: Option<Arc<NodeUser>>) -> ConnMode {
        ConnMode { user, ..ConnMode { resp3, reconnect: false, no_evict: false, ..ConnMode::pooled(false) } }
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

/// The tag of a login sent on an established connection (a client's own connection following
/// its user): nobody waits for its reply, but an error fails the connection, which must not go on
/// with the previous user's rights.
pub const LOGIN: Tag = Tag { seq: u64::MAX, part: u32::MAX - 1 };

/// How a connection ended.
pub(super) enum End {
    /// Every sender is gone and nothing is in flight: the pool was dropped.
    Finished,
    Failed(UpstreamError),
    /// A login sent on it was refused ([`LOGIN`]): the node works, the connection is closed.
    LoginRefused(UpstreamError),
}

async fn run(
    addr: String,
    settings: Arc<ConnSettings>,
    mode: ConnMode,
    outlet: Arc<Outlet>,
    metrics: Arc<NodeMetrics>,
) {
    let commands = mode.login_commands(&settings);
    let arguments: Vec<Vec<&[u8]>> = commands.iter().map(|c| c.iter().map(Vec::as_slice).collect()).collect();
    let extra: Vec<&[&[u8]]> = arguments.iter().map(Vec::as_slice).collect();
    let mut backoff = Duration::from_millis(25);
    if !mode.connect_after.is_zero() {
        sleep(mode.connect_after).await;
    }
    // The last connection (or attempt) failed: the next one tells the topology once the node
    // answers.
    let mut failed = false;
    loop {
        match connect_answered(&addr, &settings, &extra, &mode, failed).await {
            Ok(mut stream) => {
                if let Some(id) = &mode.node_client_id {
                    id.store(node_client_id(&mut stream, &addr, &settings).await, std::sync::atomic::Ordering::Release);
                }
                backoff = Duration::from_millis(25);
                match serve(stream, &addr, &settings, &mode, &outlet, &metrics).await {
                    End::Finished => return,
                    End::LoginRefused(error) => {
                        failed = true;
                        if !mode.reconnect {
                            return end_owned(&mode, &outlet, error, &metrics);
                        }
                    }
                    End::Failed(error) => {
                        failed = true;
                        crate::log_limited!(5, warn, node = %addr, %error, "upstream connection failed");
                        (settings.on_node)(&addr, NodeReport::Failed);
                        if !mode.reconnect {
                            return end_owned(&mode, &outlet, error, &metrics);
                        }
                    }
                }
            }
            Err(error) => {
                failed = true;
                crate::log_limited!(5, warn, node = %addr, %error, "upstream connect failed");
                (settings.on_node)(&addr, NodeReport::Failed);
                if !mode.reconnect {
                    return end_owned(&mode, &outlet, error, &metrics);
                }
                // Requests for a node that cannot be reached fail at once (they were never sent, so the
                // caller may retry elsewhere) rather than waiting out the backoff.
                let pause = sleep(backoff);
                tokio::pin!(pause);
                loop {
                    tokio::select! {
                        _ = &mut pause => break,
                        waiting = std::future::poll_fn(|cx| outlet.lock().inbox.poll_take(cx)) => match waiting {
                            false => return,
                            true => outlet.lock().inbox.fail_all(&error, &metrics, false),
                        },
                    }
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Connects and logs in; after a failure (`probe`), also sends a `PING` and reports the node
/// reachable once it answers (an unanswered one fails the connection as a timeout).
async fn connect_answered(
    addr: &str,
    settings: &ConnSettings,
    extra: &[&[&[u8]]],
    mode: &ConnMode,
    probe: bool,
) -> Result<UpstreamStream, UpstreamError> {
    let mut stream = connect::connect(addr, settings, extra).await?;
    if mode.no_evict {
        exempt_from_eviction(&mut stream, addr, settings).await?;
    }
    if probe {
        let since = std::time::Instant::now();
        ask(&mut stream, addr, settings, &[b"PING"]).await?;
        (settings.on_node)(addr, NodeReport::Answered { since });
    }
    Ok(stream)
}

/// Asks the node not to evict a connection many clients share (`CLIENT NO-EVICT on`, Redis 7.0+):
/// under `maxmemory-clients` a node evicts the clients using the most memory, and a pooled
/// connection carrying a burst of many clients' requests would be the one, failing all of them at
/// once; the proxy bounds each of its clients' memory itself (`limits.*`). Best effort: a refusal
/// for good (an older version, an `upstream.user` without `client|no-evict`) is logged and not
/// asked again; a node busy with a script (`-BUSY`) is asked again at the next connection. An
/// unanswered ask fails the connection (its reply would come late), as the login's would.
async fn exempt_from_eviction(
    stream: &mut UpstreamStream,
    addr: &str,
    settings: &ConnSettings,
) -> Result<(), UpstreamError> {
    use std::sync::atomic::Ordering::Relaxed;
    if settings.no_evict_refused.load(Relaxed) {
        return Ok(());
    }
    let reply = ask(stream, addr, settings, &[b"CLIENT", b"NO-EVICT", b"on"]).await?;
    if reply.first() == Some(&b'-') && !reply.starts_with(b"-BUSY") && !settings.no_evict_refused.swap(true, Relaxed) {
        tracing::warn!(node = %addr, reply = %connect::first_line(&reply),
            "the node refused CLIENT NO-EVICT: under maxmemory-clients the nodes may evict the proxy's shared connections");
    }
    Ok(())
}

/// The node's `CLIENT ID` of a connection that just logged in; 0 when it cannot be had.
async fn node_client_id(stream: &mut UpstreamStream, addr: &str, settings: &ConnSettings) -> u64 {
    match ask(stream, addr, settings, &[b"CLIENT", b"ID"]).await {
        Ok(reply) => crate::resp::scan::integer(&reply).and_then(|id| u64::try_from(id).ok()).unwrap_or(0),
        Err(_) => 0,
    }
}

/// One command on a connection that is not served yet, its reply awaited for at most
/// `command_timeout`.
async fn ask(
    stream: &mut UpstreamStream,
    addr: &str,
    settings: &ConnSettings,
    args: &[&[u8]],
) -> Result<bytes::Bytes, UpstreamError> {
    match tokio::time::timeout(settings.command_timeout, connect::roundtrip(stream, args)).await {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(_)) => Err(UpstreamError::ConnectionLost { addr: addr.to_string() }),
        Err(_) => Err(UpstreamError::Timeout),
    }
}

/// An owned connection is over: fail what is queued and tell the owner.
fn end_owned(mode: &ConnMode, outlet: &Outlet, error: UpstreamError, metrics: &NodeMetrics) {
    outlet.lock().inbox.fail_all(&error, metrics, true);
    if let Some((pushes, tag)) = &mode.pushes {
        let _ = pushes.send(UpstreamReply { tag: *tag, result: Err(error), partial: None });
    }
}

pub(super) fn fail(request: UpstreamRequest, error: UpstreamError, metrics: &NodeMetrics) {
    metrics.record_error(&error);
    request.fail(error);
}

/// Serves one established connection until it fails or the pool goes away.
async fn serve(
    stream: UpstreamStream,
    addr: &str,
    settings: &ConnSettings,
    mode: &ConnMode,
    outlet: &Outlet,
    metrics: &NodeMetrics,
) -> End {
    match stream {
        UpstreamStream::Plain(tcp) => super::wire::serve_stream(tcp, addr, settings, mode, outlet, metrics).await,
        UpstreamStream::Tls(tls) => super::wire::serve_stream(tls, addr, settings, mode, outlet, metrics).await,
    }
}
