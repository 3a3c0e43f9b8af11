//! One consistent view of the cluster, as a request sees it: the slot map and the pools of the
//! nodes it names. [`super::Topology`] swaps a new one in whole; nothing in it changes afterwards.

use std::sync::Arc;

use super::map::SlotMap;
use crate::slot::{SLOT_COUNT, Slot};
use crate::upstream::NodePool;

/// One consistent view of the cluster: the slot map and the pools of the nodes it names.
#[derive(Debug)]
pub struct Routing {
    pub map: SlotMap,
    /// Pool of each shard's master, by shard index.
    pub(super) masters: Vec<Arc<NodePool>>,
    /// Pools of each shard's replicas (empty when replicas are not read from).
    pub(super) replicas: Vec<Vec<Arc<NodePool>>>,
    /// Increases with every swap.
    pub generation: u64,
}

impl Routing {
    pub(super) fn empty() -> Routing {
        Routing { map: SlotMap::from_shards(Vec::new()), masters: Vec::new(), replicas: Vec::new(), generation: 0 }
    }

    /// The pool of the master serving `slot`.
    pub fn master(&self, slot: Slot) -> Option<&Arc<NodePool>> {
        self.map.shard_for(slot).and_then(|shard| self.masters.get(shard))
    }

    /// The replica pools of the shard serving `slot`.
    pub fn replicas(&self, slot: Slot) -> &[Arc<NodePool>] {
        self.map.shard_for(slot).and_then(|shard| self.replicas.get(shard)).map_or(&[], |r| r.as_slice())
    }

    /// The master a client's keyless commands go to: spread over the masters by `affinity`, the
    /// same one for the same client while the map stands.
    pub fn any_master(&self, affinity: usize) -> Option<&Arc<NodePool>> {
        (!self.masters.is_empty()).then(|| &self.masters[affinity % self.masters.len()])
    }

    /// Every master's pool, one per shard.
    pub fn masters(&self) -> &[Arc<NodePool>] {
        &self.masters
    }

    /// Whether every slot has an owner.
    pub fn is_complete(&self) -> bool {
        self.map.covered_slots() == usize::from(SLOT_COUNT)
    }
}
