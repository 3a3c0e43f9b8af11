//! A cluster whose nodes can be cut off the network: each node runs alone in a network namespace
//! ([`crate::netns`]), so [`Cluster::isolate`] can partition it from the other nodes, and from the
//! harness and the proxy too, with packets dropped as on a cut link.

use std::sync::Arc;

use super::{Cluster, ClusterOptions, find};
use crate::netns::Netns;

/// What an isolated node can no longer reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isolation {
    /// The other nodes (cluster bus and replication); clients on the host (the harness, a
    /// proxy) still reach it, as a client in the minority half of a split would.
    FromNodes,
    /// The other nodes and the host: nothing it sends leaves its namespace.
    FromEveryone,
}

impl Cluster {
    /// Starts a cluster with every node alone in its own network namespace, reachable from the
    /// test process through a bridge, and blocks until it is settled.
    ///
    /// # Errors
    /// Why the machine cannot create namespaces (not root, no `ip`): skip the test with it.
    ///
    /// # Panics
    /// As [`Cluster::start`].
    pub fn start_partitionable(opts: ClusterOptions) -> Result<Cluster, String> {
        let netns = Netns::create(opts.masters * (1 + opts.replicas_per_master))?;
        Ok(Cluster::launch(opts, None, Some(Arc::new(netns))))
    }

    /// Cuts `addr` off the network as `how` says, until [`Cluster::heal`].
    ///
    /// # Panics
    /// When the cluster is not partitionable, the node is already isolated, or the routes
    /// cannot be added.
    pub fn isolate(&self, addr: &str, how: Isolation) {
        let (netns, i) = self.namespace_of(addr);
        let mut nodes = self.lock();
        let node = find(&mut nodes, addr);
        assert!(node.isolated.is_none(), "{addr} is already isolated");
        for other in (0..netns.count()).filter(|&j| j != i) {
            netns.cut(i, other).unwrap_or_else(|e| panic!("isolate {addr}: {e}"));
        }
        if how == Isolation::FromEveryone {
            netns.cut_from_host(i).unwrap_or_else(|e| panic!("isolate {addr}: {e}"));
        }
        node.isolated = Some(how);
    }

    /// Lets `addr` reach everyone again; a no-op when it is not isolated.
    ///
    /// # Panics
    /// When the routes cannot be removed.
    pub fn heal(&self, addr: &str) {
        let (netns, i) = self.namespace_of(addr);
        let mut nodes = self.lock();
        let node = find(&mut nodes, addr);
        let Some(how) = node.isolated.take() else { return };
        for other in (0..netns.count()).filter(|&j| j != i) {
            netns.mend(i, other).unwrap_or_else(|e| panic!("heal {addr}: {e}"));
        }
        if how == Isolation::FromEveryone {
            netns.mend_to_host(i).unwrap_or_else(|e| panic!("heal {addr}: {e}"));
        }
    }

    /// Each node's own view (`CLUSTER NODES` as the node answers it) and, for a partitionable
    /// cluster, the cuts in its namespace: what a test prints when the cluster does not settle.
    pub fn views(&self) -> String {
        let mut out = String::new();
        for addr in self.nodes() {
            let view = crate::conn::probe(&addr, &self.access)
                .and_then(|mut con| redis::cmd("CLUSTER").arg("NODES").query::<String>(&mut con))
                .unwrap_or_else(|e| format!("(no answer: {e})\n"));
            let cuts = match &self.network {
                Some(_) => {
                    let (netns, i) = self.namespace_of(&addr);
                    format!("cuts: {:?}\n", netns.cuts(i))
                }
                None => String::new(),
            };
            out.push_str(&format!("== {addr} ({:?}) ==\n{cuts}{view}", self.state(&addr)));
        }
        out
    }

    /// Whether the nodes run in namespaces and can be isolated.
    pub fn is_partitionable(&self) -> bool {
        self.network.is_some()
    }

    fn namespace_of(&self, addr: &str) -> (Arc<Netns>, usize) {
        match &find(&mut self.lock(), addr).place {
            super::node::Place::Namespace(netns, i) => (Arc::clone(netns), *i),
            super::node::Place::Loopback => {
                panic!("{addr} runs on loopback: start the cluster with start_partitionable")
            }
        }
    }
}
