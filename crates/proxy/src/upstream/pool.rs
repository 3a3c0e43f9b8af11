//! Per-node pools and the registry of every pool, keyed by node address.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use dashmap::DashMap;

use super::lanes::{Lanes, ScriptKind};
use super::spares::{Spares, Terms};
use super::{ConnMode, ConnSettings, RequestSender, UpstreamRequest, conn};
use crate::auth::NodeUser;
use crate::metrics::{Metrics, NodeMetrics};

/// The connections to one node: RESP2 ones, and RESP3 ones opened on first use by a client that
/// said `HELLO 3` (a connection's protocol is fixed at login, and replies pass through untouched,
/// so each client must be served by connections speaking its protocol).
#[derive(Debug)]
pub struct NodePool {
    addr: String,
    conns: Vec<RequestSender>,
    resp3: OnceLock<Vec<RequestSender>>,
    settings: Arc<ConnSettings>,
    readonly: bool,
    metrics: Arc<NodeMetrics>,
    /// Where the node's scripts and functions run, apart from these shared connections.
    lanes: Arc<Lanes>,
}

impl NodePool {
    fn new(addr: String, settings: &Arc<ConnSettings>, size: usize, readonly: bool, metrics: &Metrics) -> NodePool {
        let metrics = metrics.node(&addr);
        let lanes = Arc::new(Lanes::new(&addr, settings, readonly, &metrics));
        let mode = ConnMode { node_scripts: Some(Arc::clone(lanes.node_scripts())), ..ConnMode::pooled(readonly) };
        let conns = spawn_conns(&addr, settings, size, mode, &metrics);
        NodePool { addr, conns, resp3: OnceLock::new(), settings: Arc::clone(settings), readonly, metrics, lanes }
    }

    /// Queues a script or function on a script lane of the node (see [`Lanes`]), logged in as the
    /// client's node-side `user`.
    pub fn send_script(&self, user: Option<&Arc<NodeUser>>, resp3: bool, kind: ScriptKind, request: UpstreamRequest) {
        self.lanes.send(user, resp3, kind, request);
    }

    /// Redis' `-BUSY` error text while a script keeps the node busy (see [`Lanes::busy_reply`]).
    #[inline]
    pub fn busy_reply(&self) -> Option<String> {
        self.lanes.busy_reply()
    }

    /// The node's `host:port`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Queues a request on the connection chosen by `affinity`.
    ///
    /// A client always passes the same affinity, so all its requests to one node travel one
    /// connection and Redis executes them in the order the client sent them.
    pub fn send(&self, affinity: usize, resp3: bool, request: UpstreamRequest) {
        let conns = match resp3 {
            false => &self.conns,
            true => self.resp3.get_or_init(|| {
                let node_scripts = Some(Arc::clone(self.lanes.node_scripts()));
                let mode = ConnMode { resp3: true, node_scripts, ..ConnMode::pooled(self.readonly) };
                spawn_conns(&self.addr, &self.settings, self.conns.len(), mode, &self.metrics)
            }),
        };
        let conn = &conns[affinity % conns.len()];
        if let Err(request) = conn.send(request) {
            // The connection task is gone (only at shutdown): answer rather than lose the request.
            request.fail(super::UpstreamError::ConnectionLost { addr: self.addr.clone() });
        }
    }
}

fn spawn_conns(
    addr: &str,
    settings: &Arc<ConnSettings>,
    size: usize,
    mode: ConnMode,
    metrics: &Arc<NodeMetrics>,
) -> Vec<RequestSender> {
    (0..size.max(1))
        .map(|_| conn::spawn(addr.to_string(), Arc::clone(settings), mode.clone(), Arc::clone(metrics)))
        .collect()
}

/// A connection owned by one client.
#[derive(Debug)]
pub struct OwnedConn {
    addr: String,
    tx: RequestSender,
    /// The node's `CLIENT ID` of the connection (0 until it is known), for `CLIENT UNBLOCK`.
    node_client_id: Arc<AtomicU64>,
}

impl OwnedConn {
    /// The node's `host:port`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// A connection with no task behind it, for tests: `logged_in` gives it a node id; its
    /// receiver is returned, to be dropped or closed.
    #[cfg(test)]
    pub(super) fn detached(addr: &str, logged_in: bool) -> (OwnedConn, super::RequestReceiver) {
        let (tx, rx) = super::queue::channel();
        let id = Arc::new(AtomicU64::new(u64::from(logged_in)));
        (OwnedConn { addr: addr.to_owned(), tx, node_client_id: id }, rx)
    }

    /// Whether the connection has ended (it takes nothing more).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// The node's id of this connection, once it logged in.
    pub fn node_client_id(&self) -> Option<u64> {
        Some(self.node_client_id.load(Ordering::Acquire)).filter(|&id| id != 0)
    }

    /// Queues a request; answered on its `reply_to` (or as pushes for a subscribed connection).
    pub fn send(&self, request: UpstreamRequest) {
        if let Err(request) = self.tx.send(request) {
            request.fail(super::UpstreamError::ConnectionLost { addr: self.addr.clone() });
        }
    }
}

/// Every node pool, shared by all sessions. Pools are created on first use (a `MOVED` may name a
/// node the current map does not know yet) and dropped when the topology no longer names the node.
#[derive(Debug)]
pub struct Upstreams {
    settings: Arc<ConnSettings>,
    connections_per_node: usize,
    metrics: Arc<Metrics>,
    masters: DashMap<String, Arc<NodePool>>,
    replicas: DashMap<String, Arc<NodePool>>,
    /// Own connections open ahead of need, for clients to take (see [`Spares`]).
    spares: Spares,
}

impl Upstreams {
    /// An empty registry.
    pub fn new(settings: ConnSettings, connections_per_node: usize, spares: usize, metrics: Arc<Metrics>) -> Upstreams {
        Upstreams {
            settings: Arc::new(settings),
            connections_per_node,
            metrics,
            masters: DashMap::new(),
            replicas: DashMap::new(),
            spares: Spares::new(spares),
        }
    }

    /// The process' metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The connection settings every pool uses.
    pub fn settings(&self) -> &ConnSettings {
        &self.settings
    }

    /// The pool for `addr`; replica pools send `READONLY` on every connection.
    pub fn pool(&self, addr: &str, readonly: bool) -> Arc<NodePool> {
        let registry = if readonly { &self.replicas } else { &self.masters };
        if let Some(pool) = registry.get(addr) {
            return Arc::clone(&pool);
        }
        let mut created = false;
        let pool = Arc::clone(&registry.entry(addr.to_string()).or_insert_with(|| {
            created = true;
            Arc::new(NodePool::new(
                addr.to_string(),
                &self.settings,
                self.connections_per_node,
                readonly,
                &self.metrics,
            ))
        }));
        // Clients' own connections go to masters: the plain terms' spares open with the pool.
        if created && !readonly {
            self.fill_spares(addr, &Terms::plain());
        }
        pool
    }

    /// A connection to `addr` owned by one client (see [`ConnMode`]); it ends when the
    /// returned sender is dropped, or when it fails. A plain own connection is a spare opened
    /// ahead of need when one is kept (see [`Spares`]), and another spare is opened behind it.
    pub fn owned(&self, addr: &str, mode: ConnMode) -> OwnedConn {
        let Some(terms) = Terms::of(&mode) else {
            return self.open_owned(addr, mode);
        };
        // The client's connection is opened before the spares behind it, so it connects first.
        let conn = self.spares.take(addr, &terms).unwrap_or_else(|| self.open_owned(addr, mode));
        self.fill_spares(addr, &terms);
        conn
    }

    /// Opens spares to `addr` with `terms` up to the number kept (see [`Spares::fill`]).
    fn fill_spares(&self, addr: &str, terms: &Terms) {
        self.spares.fill(addr, terms, || self.open_owned(addr, terms.mode()));
    }

    /// Lets `addr`'s spare own connections go (see [`Spares`]).
    pub fn forget_spares(&self, addr: &str) {
        self.spares.retain(|kept| kept != addr);
    }

    /// Opens a connection to `addr` for one client.
    fn open_owned(&self, addr: &str, mode: ConnMode) -> OwnedConn {
        let node_client_id = Arc::new(AtomicU64::new(0));
        let mode = ConnMode { node_client_id: Some(Arc::clone(&node_client_id)), ..mode };
        let tx = conn::spawn(addr.to_string(), Arc::clone(&self.settings), mode, self.metrics.node(addr));
        OwnedConn { addr: addr.to_string(), tx, node_client_id }
    }

    /// The commands that log an established connection in again, as `user`'s node-side twin or
    /// (`None`) as the proxy itself: first back as the proxy, as when it connected (without an
    /// upstream password, the `default` user, which then has none), whose rights set the twin up;
    /// then the twin's. A client that logs in as someone else keeps its own connection, and its
    /// WATCH, as on a node.
    pub fn login_commands(&self, user: Option<&NodeUser>) -> Vec<Vec<Vec<u8>>> {
        let proxy = super::connect::proxy_login(&self.settings);
        let mut commands = vec![proxy.unwrap_or_else(|| vec![b"AUTH".to_vec(), b"default".to_vec(), Vec::new()])];
        if let Some(user) = user {
            commands.extend(user.login_commands(self.settings.password.as_deref()));
        }
        commands
    }

    /// Drops the pools of nodes for which `keep` is false; their connections finish what is in
    /// flight and close.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.masters.retain(|addr, _| keep(addr));
        self.replicas.retain(|addr, _| keep(addr));
        self.spares.retain(keep);
    }
}
