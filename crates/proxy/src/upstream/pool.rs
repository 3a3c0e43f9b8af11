//! Per-node pools and the registry of every pool, keyed by node address.

use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::mpsc;

use super::{ConnSettings, UpstreamRequest, conn};
use crate::metrics::Metrics;

/// The connections to one node.
#[derive(Debug)]
pub struct NodePool {
    addr: String,
    conns: Vec<mpsc::UnboundedSender<UpstreamRequest>>,
}

impl NodePool {
    fn new(addr: String, settings: &Arc<ConnSettings>, size: usize, readonly: bool, metrics: &Metrics) -> NodePool {
        let node = metrics.node(&addr);
        let conns = (0..size.max(1))
            .map(|_| {
                conn::spawn(addr.clone(), Arc::clone(settings), conn::ConnMode::pooled(readonly), Arc::clone(&node))
            })
            .collect();
        NodePool { addr, conns }
    }

    /// The node's `host:port`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Queues a request on the connection chosen by `affinity`.
    ///
    /// A client always passes the same affinity, so all its requests to one node travel one
    /// connection and Redis executes them in the order the client sent them.
    pub fn send(&self, affinity: usize, request: UpstreamRequest) {
        let conn = &self.conns[affinity % self.conns.len()];
        if let Err(mpsc::error::SendError(request)) = conn.send(request) {
            // The connection task is gone (only at shutdown): answer rather than lose the request.
            let _ = request.reply_to.send(super::UpstreamReply {
                tag: request.tag,
                result: Err(super::UpstreamError::ConnectionLost { addr: self.addr.clone() }),
            });
        }
    }
}

/// A connection owned by one client.
#[derive(Debug)]
pub struct OwnedConn {
    addr: String,
    tx: mpsc::UnboundedSender<UpstreamRequest>,
}

impl OwnedConn {
    /// The node's `host:port`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Queues a request; answered on its `reply_to` (or as pushes for a subscribed connection).
    pub fn send(&self, request: UpstreamRequest) {
        if let Err(mpsc::error::SendError(request)) = self.tx.send(request) {
            let _ = request.reply_to.send(super::UpstreamReply {
                tag: request.tag,
                result: Err(super::UpstreamError::ConnectionLost { addr: self.addr.clone() }),
            });
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
}

impl Upstreams {
    /// An empty registry.
    pub fn new(settings: ConnSettings, connections_per_node: usize, metrics: Arc<Metrics>) -> Upstreams {
        Upstreams {
            settings: Arc::new(settings),
            connections_per_node,
            metrics,
            masters: DashMap::new(),
            replicas: DashMap::new(),
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
        Arc::clone(&registry.entry(addr.to_string()).or_insert_with(|| {
            Arc::new(NodePool::new(
                addr.to_string(),
                &self.settings,
                self.connections_per_node,
                readonly,
                &self.metrics,
            ))
        }))
    }

    /// A connection to `addr` owned by one client (see [`conn::ConnMode`]); it ends when the
    /// returned sender is dropped, or when it fails.
    pub fn owned(&self, addr: &str, mode: conn::ConnMode) -> OwnedConn {
        let tx = conn::spawn(addr.to_string(), Arc::clone(&self.settings), mode, self.metrics.node(addr));
        OwnedConn { addr: addr.to_string(), tx }
    }

    /// Drops the pools of nodes for which `keep` is false; their connections finish what is in
    /// flight and close.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.masters.retain(|addr, _| keep(addr));
        self.replicas.retain(|addr, _| keep(addr));
    }
}
