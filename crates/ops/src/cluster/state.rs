//! The cluster as every node sees it: the seed's `CLUSTER NODES`, each reachable node's own view
//! and `cluster_state`, and the comparisons `check` and the settle waits are built on.

use std::collections::{BTreeMap, BTreeSet};

use super::ClusterError;
use super::node::Pool;
use super::plan::MasterSlots;
use redisforge_cluster::nodes::{NodeLine, View, to_ranges};
use redisforge_cluster::slot::SLOT_COUNT;

/// A slot a node has marked open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenSlot {
    /// The slot.
    pub slot: u16,
    /// The node that marked it.
    pub node: String,
    /// Migrating (`true`, `peer` is the destination) or importing (`false`, `peer` the source).
    pub migrating: bool,
    /// The other node's id.
    pub peer: String,
}

/// Views of every node, collected from one seed.
#[derive(Debug, Clone)]
pub struct ClusterState {
    /// The seed's `CLUSTER NODES`: which nodes exist and their addresses.
    pub view: View,
    /// Each reachable node's own `CLUSTER NODES`, by node id.
    pub views: BTreeMap<String, View>,
    /// Each reachable node's `cluster_state`, by node id.
    pub states: BTreeMap<String, String>,
    /// Nodes of the seed's view that did not answer: `(address, why)`.
    pub unreachable: Vec<(String, String)>,
}

impl ClusterState {
    /// Asks `seed` for the node list, then every listed node (with an address, not flagged `fail`)
    /// for its own view and `cluster_state`.
    ///
    /// # Errors
    /// Only when the seed itself cannot be read; other nodes end up in `unreachable`.
    pub fn load(pool: &mut Pool, seed: &str) -> Result<ClusterState, ClusterError> {
        let view = pool.cluster_nodes(seed)?;
        let mut state = ClusterState { view, views: BTreeMap::new(), states: BTreeMap::new(), unreachable: Vec::new() };
        for node in state.view.nodes.clone() {
            if node.flags.noaddr || node.flags.handshake {
                continue;
            }
            let addr = node.addr();
            if node.flags.fail {
                state.unreachable.push((addr, "flagged fail by the cluster".into()));
                continue;
            }
            let fetched = pool.cluster_nodes(&addr).and_then(|v| {
                let info = pool.with(&addr, |n| n.cluster_info("cluster_state"))?;
                Ok((v, info.unwrap_or_default()))
            });
            match fetched {
                Ok((v, cluster_state)) => {
                    state.states.insert(node.id.clone(), cluster_state);
                    state.views.insert(node.id.clone(), v);
                }
                Err(e) => state.unreachable.push((addr, e.to_string())),
            }
        }
        Ok(state)
    }

    /// Address of node `id` per the seed.
    pub fn addr_of(&self, id: &str) -> Option<String> {
        self.view.by_id(id).map(NodeLine::addr)
    }

    /// Looks a node up by full id, unique id prefix (8+ characters) or `host:port`.
    ///
    /// # Errors
    /// [`ClusterError::UnknownNode`] when nothing or more than one node matches.
    pub fn find(&self, what: &str) -> Result<&NodeLine, ClusterError> {
        if let Some(n) = self.view.by_addr(what).or_else(|| self.view.by_id(what)) {
            return Ok(n);
        }
        let matches: Vec<&NodeLine> =
            if what.len() >= 8 { self.view.nodes.iter().filter(|n| n.id.starts_with(what)).collect() } else { vec![] };
        match matches.as_slice() {
            [one] => Ok(one),
            [] => Err(ClusterError::UnknownNode { node: what.to_owned(), why: "no such node in the cluster".into() }),
            _ => Err(ClusterError::UnknownNode { node: what.to_owned(), why: "the id prefix is ambiguous".into() }),
        }
    }

    /// Healthy masters of the seed's view (slot owners or empty), in view order.
    pub fn masters(&self) -> Vec<&NodeLine> {
        self.view.masters().filter(|n| !n.is_failing() && !n.flags.handshake).collect()
    }

    /// Healthy masters and their slots, input for move planning.
    pub fn master_slots(&self) -> Vec<MasterSlots> {
        self.masters().into_iter().map(|m| MasterSlots { id: m.id.clone(), slots: m.slot_list() }).collect()
    }

    /// Open slots as each node reports them on its own `myself` line.
    pub fn open_slots(&self) -> Vec<OpenSlot> {
        let mut open = Vec::new();
        for (id, view) in &self.views {
            let Some(me) = view.myself() else { continue };
            for (slot, peer) in &me.migrating {
                open.push(OpenSlot { slot: *slot, node: id.clone(), migrating: true, peer: peer.clone() });
            }
            for (slot, peer) in &me.importing {
                open.push(OpenSlot { slot: *slot, node: id.clone(), migrating: false, peer: peer.clone() });
            }
        }
        open.sort_by(|a, b| (a.slot, &a.node).cmp(&(b.slot, &b.node)));
        open
    }

    /// Whether node `id` owns `slot` according to its own view.
    pub fn claims(&self, id: &str, slot: u16) -> bool {
        self.views
            .get(id)
            .and_then(View::myself)
            .is_some_and(|me| me.slots.iter().any(|&(a, b)| (a..=b).contains(&slot)))
    }

    /// Slots no master owns in the seed's view, as ranges.
    pub fn uncovered(&self) -> Vec<(u16, u16)> {
        let owners = self.view.slot_owners();
        to_ranges((0..SLOT_COUNT).filter(|&s| owners[usize::from(s)].is_none()))
    }

    /// Reachable nodes whose view differs from the seed's — slot owners, roles (master, replica of
    /// whom) or the set of known nodes — as `(address, what differs)`.
    pub fn disagreements(&self) -> Vec<(String, String)> {
        let reference = self.view.slot_owners();
        let members = |v: &View| -> BTreeSet<String> {
            v.nodes.iter().filter(|n| !n.flags.handshake).map(|n| n.id.clone()).collect()
        };
        let known = members(&self.view);
        let mut out = Vec::new();
        for (id, view) in &self.views {
            let addr = self.addr_of(id).unwrap_or_else(|| id.clone());
            let owners = view.slot_owners();
            let differ = to_ranges((0..SLOT_COUNT).filter(|&s| owners[usize::from(s)] != reference[usize::from(s)]));
            if !differ.is_empty() {
                out.push((
                    addr.clone(),
                    format!("slot owners differ for {}", redisforge_cluster::nodes::fmt_ranges(&differ)),
                ));
            }
            // Roles: a REPLICATE (or failover) reaches the other nodes by gossip, a moment later.
            let role = |n: &NodeLine| {
                n.master_id.as_deref().map_or("master".to_owned(), |m| format!("replica of {}", short(m)))
            };
            let roles: Vec<String> = view
                .nodes
                .iter()
                .filter_map(|n| {
                    let seed = self.view.by_id(&n.id)?;
                    (role(n) != role(seed))
                        .then(|| format!("{} is {} here, {} on the seed", n.addr(), role(n), role(seed)))
                })
                .collect();
            if !roles.is_empty() {
                out.push((addr.clone(), format!("roles differ: {}", roles.join("; "))));
            }
            let theirs = members(view);
            if theirs != known {
                let missing: Vec<&str> = known.difference(&theirs).map(|s| short(s)).collect();
                let extra: Vec<&str> = theirs.difference(&known).map(|s| short(s)).collect();
                out.push((addr, format!("knows different nodes (missing {missing:?}, extra {extra:?})")));
            }
        }
        out
    }

    /// Why the cluster is not settled, or `Ok` when every node answers, reports `cluster_state:ok`,
    /// agrees with the seed on slot owners and members, no slot is open and all slots are covered.
    ///
    /// # Errors
    /// The first reason found, as text.
    pub fn settled(&self) -> Result<(), String> {
        if let Some((addr, why)) = self.unreachable.first() {
            return Err(format!("{addr} unreachable: {why}"));
        }
        if let Some((id, st)) = self.states.iter().find(|(_, s)| s.as_str() != "ok") {
            return Err(format!("{} reports cluster_state:{st}", self.addr_of(id).unwrap_or_else(|| id.clone())));
        }
        let uncovered = self.uncovered();
        if !uncovered.is_empty() {
            return Err(format!("slots {} are not covered", redisforge_cluster::nodes::fmt_ranges(&uncovered)));
        }
        if let Some(open) = self.open_slots().first() {
            return Err(format!("slot {} is still open", open.slot));
        }
        if let Some((addr, why)) = self.disagreements().first() {
            return Err(format!("{addr} {why}"));
        }
        Ok(())
    }
}

/// First 8 characters of a node id.
pub fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}
