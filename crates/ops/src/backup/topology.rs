//! The cluster as a backup sees it: masters with their slots and replicas, read from one node's
//! `CLUSTER NODES`, plus `INFO` field lookup. Pure: text in, decisions out.

use super::manifest::{SLOTS, SlotRange};

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLine {
    /// Node id.
    pub id: String,
    /// `host:port` clients use.
    pub addr: String,
    /// Flags: `myself`, `master`, `slave`, `fail`, `handshake`, …
    pub flags: Vec<String>,
    /// The master's id, for replicas.
    pub master_id: Option<String>,
    /// Slots it serves.
    pub slots: Vec<SlotRange>,
    /// Whether a slot of it is being imported or migrated (`[slot->-id]` entries).
    pub migrating: bool,
}

impl NodeLine {
    fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
}

/// A master that owns slots, with its replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// The master.
    pub master: NodeLine,
    /// Ids of the replicas that follow it.
    pub replica_ids: Vec<String>,
}

/// Parses `CLUSTER NODES`; `seed_host` stands in for an empty host (a node that does not know its
/// own address yet reports `:port`).
///
/// # Errors
/// A message naming the line that could not be parsed.
pub fn parse_cluster_nodes(text: &str, seed_host: &str) -> Result<Vec<NodeLine>, String> {
    let mut nodes = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.len() < 8 {
            return Err(format!("short CLUSTER NODES line: {line}"));
        }
        // ip:port@cport[,hostname]
        let endpoint = fields[1].split(['@', ',']).next().unwrap_or_default();
        let (host, port) = endpoint.rsplit_once(':').ok_or_else(|| format!("bad address in: {line}"))?;
        let host = if host.is_empty() { seed_host } else { host };
        let mut slots = Vec::new();
        let mut migrating = false;
        for slot in &fields[8..] {
            if slot.starts_with('[') {
                migrating = true;
                continue;
            }
            let (a, b) = slot.split_once('-').unwrap_or((slot, slot));
            let (Ok(start), Ok(end)) = (a.parse::<u16>(), b.parse::<u16>()) else {
                return Err(format!("bad slot {slot:?} in: {line}"));
            };
            slots.push(SlotRange { start, end });
        }
        nodes.push(NodeLine {
            id: fields[0].to_owned(),
            addr: format!("{host}:{port}"),
            flags: fields[2].split(',').map(str::to_owned).collect(),
            master_id: Some(fields[3]).filter(|m| *m != "-").map(str::to_owned),
            slots,
            migrating,
        });
    }
    Ok(nodes)
}

/// The masters that own slots, sorted by their first slot, after checking that the cluster is in
/// a state worth backing up.
///
/// # Errors
/// A message when a slot-owning master is failing, a slot migration is in progress, or some slots
/// have no master (such a backup could not be restored into a healthy cluster).
pub fn shards(nodes: &[NodeLine]) -> Result<Vec<Shard>, String> {
    if let Some(n) = nodes.iter().find(|n| n.migrating) {
        return Err(format!("a slot migration is in progress on {} ({}); back up after it finished", n.addr, n.id));
    }
    let mut shards: Vec<Shard> = nodes
        .iter()
        .filter(|n| n.has("master") && !n.slots.is_empty())
        .map(|m| Shard {
            master: m.clone(),
            replica_ids: nodes
                .iter()
                .filter(|r| r.master_id.as_deref() == Some(m.id.as_str()) && !r.has("master"))
                .map(|r| r.id.clone())
                .collect(),
        })
        .collect();
    if let Some(s) = shards.iter().find(|s| s.master.has("fail") || s.master.has("noaddr")) {
        return Err(format!("master {} ({}) is failing; repair the cluster first", s.master.addr, s.master.id));
    }
    shards.sort_by_key(|s| s.master.slots.iter().map(|r| r.start).min());
    let gaps = uncovered(shards.iter().flat_map(|s| s.master.slots.iter().copied()));
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

/// The value of `name:` in an `INFO` reply.
pub fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(':'))).map(str::trim)
}

/// An `INFO` field as an integer.
pub fn info_num(info: &str, name: &str) -> Option<i64> {
    info_field(info, name).and_then(|v| v.parse().ok())
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
        let addrs: Vec<&str> = shards.iter().map(|s| s.master.addr.as_str()).collect();
        assert_eq!(addrs, ["10.0.0.1:30001", "127.0.0.1:30002", "127.0.0.1:30003"]);
        assert_eq!(shards[0].replica_ids, ["07c37dfeb235213a872192d90877d0cd55635b91"]);
        assert_eq!(shards[0].master.slots, [SlotRange { start: 0, end: 5460 }]);
        assert_eq!(nodes[0].addr, "127.0.0.1:30004", "hostname after the comma is not part of the address");
    }

    #[test]
    fn single_slots_and_several_ranges_are_parsed() {
        let line = "e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:1@2 master - 0 0 1 connected 0-10 12 14-16383";
        let nodes = parse_cluster_nodes(line, "x").unwrap();
        assert_eq!(nodes[0].slots.len(), 3);
        assert_eq!(nodes[0].slots[1], SlotRange { start: 12, end: 12 });
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

    #[test]
    fn info_fields_are_found_by_exact_name() {
        let info = "# Persistence\r\nrdb_bgsave_in_progress:0\r\nrdb_last_bgsave_status:ok\r\nrdb_saves:3\r\n";
        assert_eq!(info_field(info, "rdb_last_bgsave_status"), Some("ok"));
        assert_eq!(info_num(info, "rdb_saves"), Some(3));
        assert_eq!(info_field(info, "rdb_bgsave"), None);
        assert_eq!(info_num(info, "missing"), None);
    }
}
