//! The cluster as a backup sees it: masters with their slots and replicas, read from one node's
//! `CLUSTER NODES`, plus `INFO` field lookup. Pure: text in, decisions out.

use super::manifest::{SLOTS, SlotRange};
use redisforge_cluster::nodes::{NodeLine, View};

/// A master that owns slots, with its replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// The master.
    pub master: NodeLine,
    /// Ids of the replicas that follow it.
    pub replica_ids: Vec<String>,
}

/// Parses `CLUSTER NODES` with the cluster verbs' parser ([`View::parse`]); `seed_host` stands in
/// for an empty host (a node that does not know its own address yet reports `:port`).
///
/// # Errors
/// A message naming the line that could not be parsed.
pub fn parse_cluster_nodes(text: &str, seed_host: &str) -> Result<Vec<NodeLine>, String> {
    let mut view = View::parse(text).map_err(|e| e.to_string())?;
    for node in view.nodes.iter_mut().filter(|n| n.host.is_empty()) {
        node.host = seed_host.to_owned();
    }
    Ok(view.nodes)
}

/// A node's slots as the manifest writes them.
pub fn slot_ranges(node: &NodeLine) -> Vec<SlotRange> {
    node.slots.iter().map(|&(start, end)| SlotRange { start, end }).collect()
}

/// The masters that own slots, sorted by their first slot, after checking that the cluster is in
/// a state worth backing up.
///
/// # Errors
/// A message when a slot-owning master is failing, a slot migration is in progress, or some slots
/// have no master (such a backup could not be restored into a healthy cluster).
pub fn shards(nodes: &[NodeLine]) -> Result<Vec<Shard>, String> {
    if let Some(n) = nodes.iter().find(|n| !n.migrating.is_empty() || !n.importing.is_empty()) {
        return Err(format!("a slot migration is in progress on {} ({}); back up after it finished", n.addr(), n.id));
    }
    let mut shards: Vec<Shard> = nodes
        .iter()
        .filter(|n| n.flags.master && !n.slots.is_empty())
        .map(|m| Shard {
            master: m.clone(),
            replica_ids: nodes
                .iter()
                .filter(|r| r.master_id.as_deref() == Some(m.id.as_str()) && !r.flags.master)
                .map(|r| r.id.clone())
                .collect(),
        })
        .collect();
    if let Some(s) = shards.iter().find(|s| s.master.flags.fail || s.master.flags.noaddr) {
        return Err(format!("master {} ({}) is failing; repair the cluster first", s.master.addr(), s.master.id));
    }
    shards.sort_by_key(|s| s.master.slots.iter().map(|&(start, _)| start).min());
    let gaps = uncovered(shards.iter().flat_map(|s| slot_ranges(&s.master)));
    if !gaps.is_empty() {
        let list: Vec<String> = gaps.iter().map(|r| format!("{}-{}", r.start, r.end)).collect();
        return Err(format!("slots {} have no master; repair the cluster first", list.join(", ")));
    }
    Ok(shards)
}

/// Slot ranges not covered by `ranges`.
pub fn uncovered(ranges: impl IntoIterator<Item = SlotRange>) -> Vec<SlotRange> {
    let mut covered = vec![false; SLOTS as usize];
    for r in ranges {
        for slot in r.start..=r.end.min((SLOTS - 1) as u16) {
            covered[usize::from(slot)] = true;
        }
    }
    let mut gaps = Vec::new();
    let mut start = None;
    for (slot, &c) in covered.iter().enumerate() {
        let slot = u16::try_from(slot).expect("slot < 16384 fits in u16");
        match (c, start) {
            (false, None) => start = Some(slot),
            (true, Some(s)) => {
                gaps.push(SlotRange { start: s, end: slot - 1 });
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        gaps.push(SlotRange { start: s, end: (SLOTS - 1) as u16 });
    }
    gaps
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: &str = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,host4 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master - 0 1426238318243 3 connected 10923-16383
6ec23923021cf3ffec47632106199cb7f496ce01 127.0.0.1:30005@31005 slave 67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 0 1426238316232 5 connected
824fe116063bc5fcf9f4ffd895bc17aee7731ac3 127.0.0.1:30006@31006 slave 292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 0 1426238317741 6 connected
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca :30001@31001 myself,master - 0 0 1 connected 0-5460
";

    #[test]
    fn cluster_nodes_gives_masters_in_slot_order_with_replicas() {
        let nodes = parse_cluster_nodes(NODES, "10.0.0.1").unwrap();
        assert_eq!(nodes.len(), 6);
        let shards = shards(&nodes).unwrap();
        let addrs: Vec<String> = shards.iter().map(|s| s.master.addr()).collect();
        assert_eq!(addrs, ["10.0.0.1:30001", "127.0.0.1:30002", "127.0.0.1:30003"]);
        assert_eq!(shards[0].replica_ids, ["07c37dfeb235213a872192d90877d0cd55635b91"]);
        assert_eq!(slot_ranges(&shards[0].master), [SlotRange { start: 0, end: 5460 }]);
        assert_eq!(nodes[0].addr(), "127.0.0.1:30004", "hostname after the comma is not part of the address");
    }

    #[test]
    fn single_slots_and_several_ranges_are_parsed() {
        let line = "e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:1@2 master - 0 0 1 connected 0-10 12 14-16383";
        let nodes = parse_cluster_nodes(line, "x").unwrap();
        assert_eq!(nodes[0].slots.len(), 3);
        assert_eq!(nodes[0].slots[1], (12, 12));
        let err = shards(&nodes).unwrap_err();
        assert!(err.contains("slots 11-11, 13-13 have no master"), "{err}");
    }

    #[test]
    fn migrating_slot_or_failing_master_refuses_the_backup() {
        let migrating = NODES
            .replace("connected 5461-10922", "connected 5461-10922 [5461->-292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f]");
        let err = shards(&parse_cluster_nodes(&migrating, "h").unwrap()).unwrap_err();
        assert!(err.contains("slot migration is in progress on 127.0.0.1:30002"), "{err}");
        let failing = NODES.replace("30003@31003 master", "30003@31003 master,fail");
        let err = shards(&parse_cluster_nodes(&failing, "h").unwrap()).unwrap_err();
        assert!(err.contains("127.0.0.1:30003") && err.contains("failing"), "{err}");
    }

    #[test]
    fn garbage_is_an_error_naming_the_line() {
        assert!(parse_cluster_nodes("abc", "h").unwrap_err().contains("abc"));
        let bad = "e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:1@2 master - 0 0 1 connected x-y";
        assert!(parse_cluster_nodes(bad, "h").unwrap_err().contains("bad slot"));
    }
}
