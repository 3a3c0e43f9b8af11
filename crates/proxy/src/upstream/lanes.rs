//! Script lanes: the connections of one node that run scripts and functions (EVAL, EVALSHA, FCALL
//! and their `_RO` forms), apart from the pooled connections every other command shares.
//!
//! A script runs on the node for as long as it likes, and a node answers nothing else on the
//! connection that sent it until it ends: a script on a shared connection would hold every command
//! queued behind it, `SCRIPT KILL` included, for as long as it runs. So each script goes out on a
//! lane with nothing else in flight (a new lane is opened when all are busy, up to [`MAX_LANES`]),
//! and the node's pooled connections stay free for other clients and for `SCRIPT KILL`.
//!
//! Lanes also carry the node-side user of the client (see [`NodeUser`]): a script then runs with
//! the client's ACL rules on the node. Lanes of one user serve only that user.
//!
//! The node's state is kept here too: while a script has run for longer than `busy_after`, the
//! node is *busy* (Redis itself answers `-BUSY` to other connections once its
//! `busy-reply-threshold` passes): [`Lanes::busy_reply`] gives the proxy Redis' own error to answer
//! at once instead of queueing commands behind the script, and `node_busy{node}` says so.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::{ConnMode, ConnSettings, RequestSender, UpstreamError, UpstreamRequest, conn};
use crate::auth::NodeUser;
use crate::metrics::NodeMetrics;

/// Lanes open at once per node and protocol/user, at most; past that a script queues on the lane
/// with the fewest in flight (the node runs one script at a time anyway).
pub const MAX_LANES: usize = 32;

/// Idle lanes kept per node for the next scripts; more are closed as they turn idle.
const KEEP_IDLE: usize = 4;

/// Redis' error while a script (`EVAL`) keeps it busy (`shared.slowevalerr`); Valkey says
/// `Valkey is busy`, so the server's name is learned from the node's own `-BUSY` replies.
const BUSY_SCRIPT: &str = "is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.";
/// Redis' error while a function (`FCALL`) keeps it busy (`shared.slowscripterr`).
const BUSY_FUNCTION: &str = "is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE.";

/// What runs on a lane: an EVAL-family script or a function; they have their own `-BUSY` texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptKind {
    Eval,
    Function,
}

/// One script connection.
#[derive(Debug)]
struct Lane {
    tx: RequestSender,
    resp3: bool,
    user: Option<Arc<NodeUser>>,
    state: Arc<LaneState>,
}

/// What a lane is doing, shared with the leases of its requests.
#[derive(Debug)]
struct LaneState {
    in_flight: AtomicUsize,
    /// When the script at the head of the lane started, as ms since the node's `epoch`; 0: idle.
    started_ms: AtomicU64,
    function: AtomicBool,
    node: Arc<NodeScripts>,
}

/// Scripts running on one node, for the busy check and the timeouts of its pooled connections.
#[derive(Debug)]
pub struct NodeScripts {
    /// Scripts in flight on the node's lanes; pooled connections do not time out while it is
    /// above zero (the node is running a client's script, not failing), and the busy check is one
    /// load of this counter when it is zero.
    running: AtomicUsize,
    epoch: Instant,
    /// Wakes the watcher when a script starts.
    started: Notify,
    /// The server's name in its `-BUSY` errors (`Redis`, `Valkey`), once a node sent one.
    server_name: std::sync::OnceLock<String>,
    /// When the node last answered `-BUSY` (ms since `epoch`; 0: never): its own threshold
    /// (`busy-reply-threshold`) may pass before the proxy's, and from then on the node is busy for
    /// the proxy too.
    said_busy_ms: AtomicU64,
}

impl NodeScripts {
    /// Whether any script or function is in flight on the node.
    #[inline]
    pub fn any_running(&self) -> bool {
        self.running.load(Ordering::Acquire) > 0
    }

    /// Takes note of an error reply of the node: a `-BUSY <Name> is busy …` says that the script
    /// running there keeps it busy now, and names the server.
    pub fn saw_error(&self, frame: &[u8]) {
        let Some(rest) = frame.strip_prefix(b"-BUSY ") else {
            return;
        };
        if self.any_running() {
            self.said_busy_ms.store(self.now_ms(), Ordering::Release);
        }
        if self.server_name.get().is_none()
            && let Some(end) = rest.iter().position(|&b| b == b' ')
            && rest[end..].starts_with(b" is busy")
        {
            let _ = self.server_name.set(String::from_utf8_lossy(&rest[..end]).into_owned());
        }
    }

    /// The node's `-BUSY` error (without `-` and CRLF) for a script or a function.
    fn busy_error(&self, function: bool) -> String {
        let name = self.server_name.get().map_or("Redis", String::as_str);
        format!("BUSY {name} {}", if function { BUSY_FUNCTION } else { BUSY_SCRIPT })
    }

    fn now_ms(&self) -> u64 {
        // Never 0, which means idle.
        self.epoch.elapsed().as_millis() as u64 + 1
    }
}

/// Keeps a lane counted as busy while its request waits for a reply; dropped with the request
/// once it is answered (or failed), wherever that happens.
#[derive(Debug)]
pub struct LaneLease {
    state: Arc<LaneState>,
}

impl Drop for LaneLease {
    fn drop(&mut self) {
        let state = &self.state;
        let left = state.in_flight.fetch_sub(1, Ordering::AcqRel) - 1;
        // The next script queued on the lane starts now.
        let next = if left == 0 { 0 } else { state.node.now_ms() };
        state.started_ms.store(next, Ordering::Release);
        state.node.running.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The script lanes of one node.
#[derive(Debug)]
pub struct Lanes {
    addr: String,
    settings: Arc<ConnSettings>,
    readonly: bool,
    metrics: Arc<NodeMetrics>,
    lanes: Mutex<Vec<Lane>>,
    node: Arc<NodeScripts>,
    /// How long a script runs before the node counts as busy.
    busy_after: Duration,
    watcher: std::sync::Once,
}

impl Lanes {
    /// No lanes yet: they open on the first script.
    pub fn new(addr: &str, settings: &Arc<ConnSettings>, readonly: bool, metrics: &Arc<NodeMetrics>) -> Lanes {
        // Redis answers -BUSY once a script ran for busy-reply-threshold (5 s by default); the
        // proxy does so sooner when its own command timeout would otherwise fail the waiting
        // commands first.
        let busy_after = (settings.command_timeout / 2).min(Duration::from_secs(5));
        Lanes {
            addr: addr.to_string(),
            settings: Arc::clone(settings),
            readonly,
            metrics: Arc::clone(metrics),
            lanes: Mutex::new(Vec::new()),
            node: Arc::new(NodeScripts {
                running: AtomicUsize::new(0),
                epoch: Instant::now(),
                started: Notify::new(),
                server_name: std::sync::OnceLock::new(),
                said_busy_ms: AtomicU64::new(0),
            }),
            busy_after,
            watcher: std::sync::Once::new(),
        }
    }

    /// The node's script state, which its pooled connections consult before timing out.
    pub fn node_scripts(&self) -> &Arc<NodeScripts> {
        &self.node
    }

    /// Queues a script on an idle lane of `user` and protocol (opening one if none is idle).
    pub fn send(
        self: &Arc<Self>,
        user: Option<&Arc<NodeUser>>,
        resp3: bool,
        kind: ScriptKind,
        mut request: UpstreamRequest,
    ) {
        self.watch();
        let Ok(mut lanes) = self.lanes.lock() else {
            return request.fail(UpstreamError::ConnectionLost { addr: self.addr.clone() });
        };
        // Lanes whose connection ended, and idle lanes beyond those kept, are closed.
        let mut idle = 0;
        lanes.retain(|lane| {
            let is_idle = lane.state.in_flight.load(Ordering::Acquire) == 0;
            // A user removed by a reload keeps no lanes (only its lanes still hold it).
            let orphan = lane.user.as_ref().is_some_and(|u| Arc::strong_count(u) == 1);
            idle += usize::from(is_idle);
            !lane.tx.is_closed() && !(is_idle && (idle > KEEP_IDLE || orphan))
        });
        let same = |lane: &&Lane| lane.resp3 == resp3 && same_user(lane.user.as_ref(), user);
        let chosen = match lanes.iter().filter(same).min_by_key(|l| l.state.in_flight.load(Ordering::Acquire)) {
            Some(lane) if lane.state.in_flight.load(Ordering::Acquire) == 0 => Some(lane),
            Some(lane) if lanes.iter().filter(same).count() >= MAX_LANES => Some(lane),
            _ => None,
        };
        let lane = match chosen {
            Some(lane) => lane,
            None => {
                lanes.push(self.open(user, resp3));
                let Some(lane) = lanes.last() else { return };
                lane
            }
        };
        let state = &lane.state;
        if state.in_flight.fetch_add(1, Ordering::AcqRel) == 0 {
            state.started_ms.store(self.node.now_ms(), Ordering::Release);
            state.function.store(kind == ScriptKind::Function, Ordering::Release);
        }
        if self.node.running.fetch_add(1, Ordering::AcqRel) == 0 {
            self.node.started.notify_one();
        }
        request.lease = Some(LaneLease { state: Arc::clone(state) });
        if let Err(request) = lane.tx.send(request) {
            request.fail(UpstreamError::ConnectionLost { addr: self.addr.clone() });
        }
    }

    /// Redis' `-BUSY` error (without `-` and CRLF) while a script has kept the node busy for
    /// longer than `busy_after`; `None` while the node serves commands. Asked for every request:
    /// the usual answer (no script running) is one load, inlined.
    #[inline]
    pub fn busy_reply(&self) -> Option<String> {
        match self.node.any_running() {
            true => self.busy_script_reply(),
            false => None,
        }
    }

    /// [`Lanes::busy_reply`] while a script runs: apart, so that the inlined check stays one load.
    #[inline(never)]
    fn busy_script_reply(&self) -> Option<String> {
        let (started, function) = self.oldest_script()?;
        let ran = Duration::from_millis(self.node.now_ms().saturating_sub(started));
        // The node said -BUSY since the script started: its own threshold passed first.
        let node_said = self.node.said_busy_ms.load(Ordering::Acquire) >= started;
        (ran >= self.busy_after || node_said).then(|| self.node.busy_error(function))
    }

    /// The start (ms since the node's epoch) and kind of the longest-running script.
    fn oldest_script(&self) -> Option<(u64, bool)> {
        let lanes = self.lanes.lock().ok()?;
        lanes
            .iter()
            .map(|l| (l.state.started_ms.load(Ordering::Acquire), l.state.function.load(Ordering::Acquire)))
            .filter(|(started, _)| *started != 0)
            .min_by_key(|(started, _)| *started)
    }

    fn open(&self, user: Option<&Arc<NodeUser>>, resp3: bool) -> Lane {
        // Owned, so not reconnecting: a lane that breaks fails its script (it may have run) and is
        // replaced by the next script's new lane; it holds no state worth reconnecting for.
        let mode = ConnMode { readonly: self.readonly, ..ConnMode::owned(resp3, user.cloned()) };
        let tx = conn::spawn(self.addr.clone(), Arc::clone(&self.settings), mode, Arc::clone(&self.metrics));
        let state = Arc::new(LaneState {
            in_flight: AtomicUsize::new(0),
            started_ms: AtomicU64::new(0),
            function: AtomicBool::new(false),
            node: Arc::clone(&self.node),
        });
        Lane { tx, resp3, user: user.cloned(), state }
    }

    /// Starts, once, the task that keeps `node_busy{node}` and the busy log line up to date.
    fn watch(self: &Arc<Self>) {
        self.watcher.call_once(|| {
            tokio::spawn(watch_busy(Arc::downgrade(self)));
        });
    }
}

/// Whether two connections are logged in as the same node-side user (`None`: the proxy's own).
pub(super) fn same_user(a: Option<&Arc<NodeUser>>, b: Option<&Arc<NodeUser>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        _ => false,
    }
}

/// Sets `node_busy{node}` while a script keeps the node busy and logs when it starts and ends;
/// sleeps while no script runs, and ends with the node's lanes.
async fn watch_busy(lanes: Weak<Lanes>) {
    let mut was_busy = false;
    loop {
        let Some(strong) = lanes.upgrade() else { return };
        let node = Arc::clone(&strong.node);
        let busy = strong.busy_reply();
        if busy.is_some() != was_busy {
            was_busy = busy.is_some();
            strong.metrics.busy.set(i64::from(was_busy));
            match busy {
                Some(_) => tracing::warn!(node = %strong.addr, "node busy running a script or function: \
                    other commands for it are answered -BUSY until it ends or SCRIPT/FUNCTION KILL stops it"),
                None => tracing::info!(node = %strong.addr, "node no longer busy with a script"),
            }
        }
        let step = (strong.busy_after / 4).max(Duration::from_millis(10));
        drop(strong);
        if node.any_running() {
            tokio::time::sleep(step).await;
        } else {
            // `notify_one` stores a permit, so a script that started since the check is not missed;
            // the timeout lets the task notice that the lanes were dropped.
            let _ = tokio::time::timeout(Duration::from_secs(60), node.started.notified()).await;
        }
    }
}
