//! Resolving disagreements between nodes' slot maps by config epoch.
//!
//! During a partition, or for the moment after a failover before gossip has spread, nodes answer
//! `CLUSTER SHARDS` differently: an isolated old master still claims its slots while the rest of the
//! cluster has promoted its replica. Redis Cluster itself settles such conflicts by the claimant's
//! *config epoch* (a promotion or a slot import always takes a higher one), so the proxy does the
//! same: it asks several nodes and, slot by slot, believes the claim whose master has the highest
//! config epoch, never simply whichever node answered first or last.

use std::collections::HashMap;

use redis_protocol::resp2::types::OwnedFrame;

use super::map::{Shard, SlotMap};
use crate::slot::{SLOT_COUNT, Slot};

/// Config epoch of each node, by node id, from a `CLUSTER NODES` reply.
///
/// Lines are read with the shared `CLUSTER NODES` parser; lines that do not parse are skipped (a
/// node with an unknown epoch counts as epoch 0).
pub fn parse_cluster_nodes(reply: &OwnedFrame) -> HashMap<String, u64> {
    let text = match reply {
        OwnedFrame::BulkString(bytes) | OwnedFrame::SimpleString(bytes) => String::from_utf8_lossy(bytes),
        _ => return HashMap::new(),
    };
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .filter_map(|line| redisforge_cluster::nodes::parse_line(line.trim()).ok())
        .map(|node| (node.id, node.config_epoch))
        .collect()
}

/// One node's answer: its slot map, and the config epoch it knows for each master (by node id).
#[derive(Debug, Clone)]
pub struct View {
    pub map: SlotMap,
    pub epochs: HashMap<String, u64>,
}

impl View {
    fn epoch_of(&self, shard: &Shard) -> u64 {
        self.epochs.get(&shard.master.id).copied().unwrap_or(0)
    }
}

/// The map the cluster agrees on, from several nodes' views.
///
/// Each slot goes to the claim with the highest master config epoch; on a tie (the same claim, or
/// views without epochs) the earlier view wins, and callers list views healthiest first. A shard's
/// replicas come from the view whose claim won its first slot. With one view, or views that agree,
/// the result is that view's map.
pub fn resolve(mut views: Vec<View>) -> Option<SlotMap> {
    if views.len() <= 1 {
        return views.pop().map(|v| v.map);
    }
    if views.windows(2).all(|w| w[0].map == w[1].map) {
        return views.into_iter().next().map(|v| v.map);
    }
    // Winning (view, shard) per slot.
    let mut winner: Vec<Option<(usize, usize)>> = vec![None; usize::from(SLOT_COUNT)];
    for (slot, won) in winner.iter_mut().enumerate() {
        let slot = slot as Slot;
        let mut best: Option<(u64, usize, usize)> = None;
        for (v, view) in views.iter().enumerate() {
            let Some(s) = view.map.shard_for(slot) else { continue };
            let epoch = view.epoch_of(&view.map.shards()[s]);
            if best.is_none_or(|(e, _, _)| epoch > e) {
                best = Some((epoch, v, s));
            }
        }
        *won = best.map(|(_, v, s)| (v, s));
    }
    // Gather the won slots by master address into shards of contiguous ranges.
    let mut shards: Vec<Shard> = Vec::new();
    let mut index_of: HashMap<String, usize> = HashMap::new();
    for (slot, won) in winner.iter().enumerate() {
        let Some((v, s)) = *won else { continue };
        let slot = slot as Slot;
        let claim = &views[v].map.shards()[s];
        let index = *index_of.entry(claim.master.addr.clone()).or_insert_with(|| {
            shards.push(Shard { ranges: Vec::new(), ..claim.clone() });
            shards.len() - 1
        });
        let ranges = &mut shards[index].ranges;
        match ranges.last_mut() {
            Some(last) if last.1 + 1 == slot => last.1 = slot,
            _ => ranges.push((slot, slot)),
        }
    }
    Some(SlotMap::from_shards(shards))
}

#[cfg(test)]
mod tests;
