//! One node's view of the cluster: `CLUSTER NODES` parsed into typed lines, plus slot-range
//! helpers. Pure: no I/O, unit-tested with real `CLUSTER NODES` output.
//!
//! Line format (Redis 7): `<id> <ip:port@cport[,hostname]> <flags> <master> <ping-sent>
//! <pong-recv> <config-epoch> <link-state> <slot>...`, where a slot entry is `N`, `A-B`,
//! `[N->-<id>]` (migrating to `id`) or `[N-<-<id>]` (importing from `id`). Open-slot markers only
//! ever appear on the `myself` line.

use crate::slot::SLOT_COUNT as SLOTS;

/// Why a `CLUSTER NODES` reply could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CLUSTER NODES line {line:?}: {reason}")]
pub struct ParseError {
    /// The offending line.
    pub line: String,
    /// What was wrong with it.
    pub reason: &'static str,
}

/// The flags field of a node line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    /// The line describes the node that answered.
    pub myself: bool,
    /// A master (it may still own no slot).
    pub master: bool,
    /// A replica (`slave`).
    pub replica: bool,
    /// `fail?`: this node cannot reach it (probable failure).
    pub pfail: bool,
    /// `fail`: the cluster agreed it failed.
    pub fail: bool,
    /// Still in the MEET handshake.
    pub handshake: bool,
    /// No known address.
    pub noaddr: bool,
    /// `nofailover`: a replica that never fails over.
    pub nofailover: bool,
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLine {
    /// 40-character node id.
    pub id: String,
    /// IP the node is reached at; empty for `noaddr` nodes.
    pub host: String,
    /// Client port.
    pub port: u16,
    /// Cluster bus port.
    pub bus_port: u16,
    /// Announced hostname, when the node has one.
    pub hostname: Option<String>,
    /// Role and health flags.
    pub flags: Flags,
    /// The master's id, for replicas.
    pub master_id: Option<String>,
    /// Config epoch (for a replica, its master's).
    pub config_epoch: u64,
    /// The cluster-bus link is connected.
    pub connected: bool,
    /// Owned slots as inclusive ranges, in reply order.
    pub slots: Vec<(u16, u16)>,
    /// Slots this node migrates: `(slot, destination id)`.
    pub migrating: Vec<(u16, String)>,
    /// Slots this node imports: `(slot, source id)`.
    pub importing: Vec<(u16, String)>,
}

impl NodeLine {
    /// `host:port` as clients reach it.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// A master, whatever its health.
    pub fn is_master(&self) -> bool {
        self.flags.master
    }

    /// Flagged `fail`, `fail?` or `noaddr`: not a node to send commands to.
    pub fn is_failing(&self) -> bool {
        self.flags.fail || self.flags.pfail || self.flags.noaddr
    }

    /// Number of slots owned.
    pub fn slot_count(&self) -> usize {
        self.slots.iter().map(|&(a, b)| usize::from(b - a) + 1).sum()
    }

    /// Every owned slot, ascending.
    pub fn slot_list(&self) -> Vec<u16> {
        let mut all: Vec<u16> = self.slots.iter().flat_map(|&(a, b)| a..=b).collect();
        all.sort_unstable();
        all
    }
}

/// A whole `CLUSTER NODES` reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// Every line, in reply order.
    pub nodes: Vec<NodeLine>,
}

impl View {
    /// Parses a `CLUSTER NODES` reply.
    ///
    /// # Errors
    /// The first malformed line.
    pub fn parse(text: &str) -> Result<View, ParseError> {
        let nodes = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(parse_line).collect::<Result<_, _>>()?;
        Ok(View { nodes })
    }

    /// The line of the node that answered.
    pub fn myself(&self) -> Option<&NodeLine> {
        self.nodes.iter().find(|n| n.flags.myself)
    }

    /// The line with this id.
    pub fn by_id(&self, id: &str) -> Option<&NodeLine> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// The line with this `host:port`.
    pub fn by_addr(&self, addr: &str) -> Option<&NodeLine> {
        self.nodes.iter().find(|n| n.addr() == addr)
    }

    /// Masters, healthy or not.
    pub fn masters(&self) -> impl Iterator<Item = &NodeLine> {
        self.nodes.iter().filter(|n| n.is_master())
    }

    /// Replicas of the master `id`.
    pub fn replicas_of<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a NodeLine> {
        self.nodes.iter().filter(move |n| n.flags.replica && n.master_id.as_deref() == Some(id))
    }

    /// Owner id of each slot in this view (`None`: unassigned); index = slot.
    pub fn slot_owners(&self) -> Vec<Option<&str>> {
        let mut owners = vec![None; usize::from(SLOTS)];
        for node in &self.nodes {
            for &(a, b) in &node.slots {
                for slot in a..=b {
                    owners[usize::from(slot)] = Some(node.id.as_str());
                }
            }
        }
        owners
    }

    /// Number of slots some node owns in this view.
    pub fn covered(&self) -> usize {
        self.slot_owners().iter().filter(|o| o.is_some()).count()
    }
}

/// Parses one line of `CLUSTER NODES`.
///
/// # Errors
/// What is wrong with the line.
pub fn parse_line(line: &str) -> Result<NodeLine, ParseError> {
    let err = |reason| ParseError { line: line.to_owned(), reason };
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 8 {
        return Err(err("fewer than 8 fields"));
    }
    let (addr, hostname) = match fields[1].split_once(',') {
        Some((a, h)) if !h.is_empty() => (a, Some(h.to_owned())),
        Some((a, _)) => (a, None),
        None => (fields[1], None),
    };
    let (hostport, bus) = addr.split_once('@').ok_or_else(|| err("address has no @bus-port"))?;
    // Redis 4+ may append ",hostname"; older bus fields never contain ','.
    let bus_port = bus.parse().map_err(|_| err("bad bus port"))?;
    let (host, port) = hostport.rsplit_once(':').ok_or_else(|| err("address has no port"))?;
    let port = port.parse().map_err(|_| err("bad port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();

    let mut flags = Flags::default();
    for flag in fields[2].split(',') {
        match flag {
            "myself" => flags.myself = true,
            "master" => flags.master = true,
            "slave" => flags.replica = true,
            "fail?" => flags.pfail = true,
            "fail" => flags.fail = true,
            "handshake" => flags.handshake = true,
            "noaddr" => flags.noaddr = true,
            "nofailover" => flags.nofailover = true,
            // "noflags" and flags newer Redis versions may add.
            _ => {}
        }
    }
    let master_id = (fields[3] != "-").then(|| fields[3].to_owned());
    let config_epoch = fields[6].parse().map_err(|_| err("bad config epoch"))?;
    let connected = fields[7] == "connected";

    let mut node = NodeLine {
        id: fields[0].to_owned(),
        host,
        port,
        bus_port,
        hostname,
        flags,
        master_id,
        config_epoch,
        connected,
        slots: Vec::new(),
        migrating: Vec::new(),
        importing: Vec::new(),
    };
    for entry in &fields[8..] {
        if let Some(open) = entry.strip_prefix('[').and_then(|e| e.strip_suffix(']')) {
            if let Some((slot, id)) = open.split_once("->-") {
                node.migrating.push((parse_slot(slot).ok_or_else(|| err("bad migrating slot"))?, id.to_owned()));
            } else if let Some((slot, id)) = open.split_once("-<-") {
                node.importing.push((parse_slot(slot).ok_or_else(|| err("bad importing slot"))?, id.to_owned()));
            } else {
                return Err(err("bad open-slot marker"));
            }
        } else if let Some((a, b)) = entry.split_once('-') {
            let (a, b) = (parse_slot(a), parse_slot(b));
            match (a, b) {
                (Some(a), Some(b)) if a <= b => node.slots.push((a, b)),
                _ => return Err(err("bad slot range")),
            }
        } else {
            let slot = parse_slot(entry).ok_or_else(|| err("bad slot"))?;
            node.slots.push((slot, slot));
        }
    }
    Ok(node)
}

fn parse_slot(text: &str) -> Option<u16> {
    text.parse::<u16>().ok().filter(|&s| s < SLOTS)
}

/// Compresses slots into inclusive ranges; the input need not be sorted or unique.
pub fn to_ranges(slots: impl IntoIterator<Item = u16>) -> Vec<(u16, u16)> {
    let mut all: Vec<u16> = slots.into_iter().collect();
    all.sort_unstable();
    all.dedup();
    let mut ranges: Vec<(u16, u16)> = Vec::new();
    for slot in all {
        match ranges.last_mut() {
            Some((_, end)) if *end + 1 == slot => *end = slot,
            _ => ranges.push((slot, slot)),
        }
    }
    ranges
}

/// `0-5460,5462` style text for slot ranges; `-` when empty.
pub fn fmt_ranges(ranges: &[(u16, u16)]) -> String {
    if ranges.is_empty() {
        return "-".to_owned();
    }
    let parts: Vec<String> =
        ranges.iter().map(|&(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") }).collect();
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from redis-server 7.0 (ids shortened to keep lines readable where it does not matter).
    const NODES: &str = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,redis-4 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master - 0 1426238318243 3 connected 10923-16383
6ec23923021cf3ffec47632106199cb7f496ce01 127.0.0.1:30005@31005 slave 67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 0 1426238316232 5 connected
824fe116063bc5fcf9f4ffd895bc17aee7731ac3 127.0.0.1:30006@31006 slave,fail? 292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 0 1426238317741 6 disconnected
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460 [93->-292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f] [5470-<-67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1]
a1b2c3d4e5f60718293a4b5c6d7e8f9012345678 :0@0 master,fail,noaddr - 1426238316232 1426238316232 7 disconnected
";

    #[test]
    fn cluster_nodes_lines_parse_into_roles_slots_and_open_markers() {
        let view = View::parse(NODES).unwrap();
        assert_eq!(view.nodes.len(), 7);

        let me = view.myself().unwrap();
        assert_eq!(me.addr(), "127.0.0.1:30001");
        assert_eq!(me.bus_port, 31001);
        assert!(me.flags.master && me.flags.myself && !me.flags.replica);
        assert_eq!(me.config_epoch, 1);
        assert_eq!(me.slots, [(0, 5460)]);
        assert_eq!(me.slot_count(), 5461);
        assert_eq!(me.migrating, [(93, "292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f".to_owned())]);
        assert_eq!(me.importing, [(5470, "67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1".to_owned())]);

        let replica = view.by_addr("127.0.0.1:30004").unwrap();
        assert!(replica.flags.replica);
        assert_eq!(replica.hostname.as_deref(), Some("redis-4"));
        assert_eq!(replica.master_id.as_deref(), Some(me.id.as_str()));
        assert_eq!(view.replicas_of(&me.id).count(), 1);

        let pfail = view.by_addr("127.0.0.1:30006").unwrap();
        assert!(pfail.flags.pfail && !pfail.flags.fail && !pfail.connected && pfail.is_failing());

        let gone = view.by_id("a1b2c3d4e5f60718293a4b5c6d7e8f9012345678").unwrap();
        assert!(gone.flags.noaddr && gone.flags.fail && gone.is_failing());
        assert_eq!((gone.host.as_str(), gone.port), ("", 0));

        // A migrating slot stays owned by the source; an importing one by its old owner.
        let owners = view.slot_owners();
        assert_eq!(owners[93], Some(me.id.as_str()));
        assert_eq!(owners[5470], Some("67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1"));
        assert_eq!(view.covered(), 16384);
    }

    #[test]
    fn malformed_lines_are_errors_naming_the_line() {
        for bad in [
            "abc 127.0.0.1:1@2 master",
            "abc 127.0.0.1:1 master - 0 0 1 connected",
            "abc 127.0.0.1:x@2 master - 0 0 1 connected",
            "abc 127.0.0.1:1@2 master - 0 0 x connected",
            "abc 127.0.0.1:1@2 master - 0 0 1 connected 10-5",
            "abc 127.0.0.1:1@2 master - 0 0 1 connected 16384",
            "abc 127.0.0.1:1@2 master - 0 0 1 connected [5-?-x]",
        ] {
            let err = View::parse(bad).unwrap_err();
            assert_eq!(err.line, bad);
        }
    }

    #[test]
    fn ipv6_addresses_keep_their_brackets_in_addr() {
        let view = View::parse("abc ::1:7000@17000 myself,master - 0 0 0 connected").unwrap();
        assert_eq!(view.nodes[0].host, "::1");
        assert_eq!(view.nodes[0].addr(), "[::1]:7000");
    }

    #[test]
    fn slot_ranges_compress_and_print() {
        assert_eq!(to_ranges([5, 1, 2, 3, 9, 10, 3]), [(1, 3), (5, 5), (9, 10)]);
        assert_eq!(fmt_ranges(&to_ranges([5, 1, 2, 3, 9, 10])), "1-3,5,9-10");
        assert_eq!(fmt_ranges(&[]), "-");
    }
}
