//! The slot map: which node serves each of the 16384 slots, as an immutable snapshot.
//!
//! Built from a node's `CLUSTER SHARDS` reply (Redis 7+, Valkey) or, for servers without it, from
//! `CLUSTER SLOTS`. Pure: frames in, a map out.

use redis_protocol::resp2::types::OwnedFrame;
use thiserror::Error;

use crate::slot::{SLOT_COUNT, Slot};

/// Marks a slot no shard serves.
const NO_OWNER: u16 = u16::MAX;

/// A topology reply that cannot be turned into a slot map.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum MapError {
    /// The node answered with an error (e.g. cluster support disabled, command unknown).
    #[error("node answered {0}")]
    NodeError(String),
    /// The reply is not shaped like the command's documented reply.
    #[error("malformed {command} reply: {detail}")]
    Malformed { command: &'static str, detail: String },
}

/// Whether a node serves writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Master,
    Replica,
}

impl Role {
    /// The label used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Replica => "replica",
        }
    }
}

/// One node as the cluster describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// `host:port` the proxy connects to.
    pub addr: String,
    /// Cluster node id (empty when the server did not report one).
    pub id: String,
    pub role: Role,
    /// False when the cluster reports the node as failed.
    pub healthy: bool,
}

/// A master and its replicas, serving some slot ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    pub master: Node,
    pub replicas: Vec<Node>,
    /// Inclusive slot ranges.
    pub ranges: Vec<(Slot, Slot)>,
}

/// Which shard serves each slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotMap {
    shards: Vec<Shard>,
    /// Shard index per slot, [`NO_OWNER`] when none.
    owner: Box<[u16]>,
}

impl SlotMap {
    /// Builds a map from shards, giving each slot to the shard that lists it.
    pub fn from_shards(mut shards: Vec<Shard>) -> SlotMap {
        // Nodes list shards in different orders; sorting by first slot makes a shard's index mean
        // the same whichever node answered (SCAN cursors and keyless routing rely on it).
        shards.sort_by_key(|s| s.ranges.iter().map(|r| r.0).min().unwrap_or(u16::MAX));
        let mut owner = vec![NO_OWNER; usize::from(SLOT_COUNT)].into_boxed_slice();
        for (index, shard) in shards.iter().enumerate() {
            for &(start, end) in &shard.ranges {
                for slot in start..=end.min(SLOT_COUNT - 1) {
                    owner[usize::from(slot)] = index as u16;
                }
            }
        }
        SlotMap { shards, owner }
    }

    /// Parses a `CLUSTER SHARDS` reply (RESP2 form: each shard and node a flat key/value array).
    ///
    /// `tls` selects the `tls-port` a node announces over its plain `port`.
    ///
    /// # Errors
    /// [`MapError`] when the reply is an error or not shaped as documented.
    pub fn from_cluster_shards(reply: &OwnedFrame, tls: bool) -> Result<SlotMap, MapError> {
        let bad = |detail: &str| MapError::Malformed { command: "CLUSTER SHARDS", detail: detail.to_string() };
        let shards = top_level(reply, "CLUSTER SHARDS")?;
        let mut out = Vec::with_capacity(shards.len());
        for shard in shards {
            let fields = as_array(shard).ok_or_else(|| bad("shard is not an array"))?;
            let slots = field(fields, "slots").and_then(as_array).ok_or_else(|| bad("no slots"))?;
            let bounds: Vec<i64> = slots.iter().filter_map(as_integer).collect();
            if bounds.len() != slots.len() || !bounds.len().is_multiple_of(2) {
                return Err(bad("slots is not a list of start/end pairs"));
            }
            let ranges = bounds
                .chunks(2)
                .map(|pair| Ok((slot_number(pair[0])?, slot_number(pair[1])?)))
                .collect::<Result<Vec<_>, &str>>()
                .map_err(bad)?;
            let nodes = field(fields, "nodes").and_then(as_array).ok_or_else(|| bad("no nodes"))?;
            let mut master = None;
            let mut replicas = Vec::new();
            // A node that does not know its address yet (just started, not met) cannot be routed to.
            for node in nodes.iter().filter_map(|n| parse_shard_node(n, tls)) {
                match node.role {
                    // Two masters in one shard happen briefly during failover: the healthy one wins,
                    // and the other is kept as the replica it is about to become.
                    Role::Master if master.as_ref().is_none_or(|m: &Node| !m.healthy) => {
                        if let Some(old) = master.replace(node) {
                            replicas.push(Node { role: Role::Replica, ..old });
                        }
                    }
                    _ => replicas.push(Node { role: Role::Replica, ..node }),
                }
            }
            // A shard without a master (all nodes failed) or without slots serves nothing.
            if let Some(master) = master.filter(|_| !ranges.is_empty()) {
                out.push(Shard { master, replicas, ranges });
            }
        }
        Ok(SlotMap::from_shards(out))
    }

    /// Parses a `CLUSTER SLOTS` reply: `[start, end, [ip, port, id, …], replicas…]` per range.
    ///
    /// # Errors
    /// [`MapError`] when the reply is an error or not shaped as documented.
    pub fn from_cluster_slots(reply: &OwnedFrame) -> Result<SlotMap, MapError> {
        let bad = |detail: &str| MapError::Malformed { command: "CLUSTER SLOTS", detail: detail.to_string() };
        let mut shards: Vec<Shard> = Vec::new();
        for range in top_level(reply, "CLUSTER SLOTS")? {
            let items = as_array(range).ok_or_else(|| bad("range is not an array"))?;
            if items.len() < 3 {
                return Err(bad("range without a master"));
            }
            let start = as_integer(&items[0]).ok_or_else(|| bad("start is not an integer"))?;
            let end = as_integer(&items[1]).ok_or_else(|| bad("end is not an integer"))?;
            let range = (slot_number(start).map_err(bad)?, slot_number(end).map_err(bad)?);
            let mut nodes = items[2..].iter().map(|n| parse_slots_node(n).ok_or_else(|| bad("bad node")));
            let master = nodes.next().ok_or_else(|| bad("range without a master"))??;
            let replicas = nodes.collect::<Result<Vec<_>, _>>()?;
            // CLUSTER SLOTS lists each range separately: gather the ranges of one master in one shard.
            match shards.iter_mut().find(|s| s.master.addr == master.addr) {
                Some(shard) => shard.ranges.push(range),
                None => shards.push(Shard {
                    master,
                    replicas: replicas.into_iter().map(|n| Node { role: Role::Replica, ..n }).collect(),
                    ranges: vec![range],
                }),
            }
        }
        Ok(SlotMap::from_shards(shards))
    }

    /// The shard serving `slot`, if any.
    pub fn shard_for(&self, slot: Slot) -> Option<usize> {
        match self.owner.get(usize::from(slot)) {
            Some(&NO_OWNER) | None => None,
            Some(&index) => Some(usize::from(index)),
        }
    }

    /// All shards, in the order their index refers to.
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// How many slots have an owner (16384 in a healthy cluster).
    pub fn covered_slots(&self) -> usize {
        self.owner.iter().filter(|&&o| o != NO_OWNER).count()
    }

    /// Every node the map names, masters first.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.shards.iter().map(|s| &s.master).chain(self.shards.iter().flat_map(|s| s.replicas.iter()))
    }

    /// How many slots changed owner (by master address) between `old` and `self`.
    pub fn slots_moved_since(&self, old: &SlotMap) -> usize {
        (0..SLOT_COUNT)
            .filter(|&slot| {
                let now = self.shard_for(slot).map(|i| &self.shards[i].master.addr);
                let then = old.shard_for(slot).map(|i| &old.shards[i].master.addr);
                now != then
            })
            .count()
    }
}

fn top_level<'a>(reply: &'a OwnedFrame, command: &'static str) -> Result<&'a [OwnedFrame], MapError> {
    match reply {
        OwnedFrame::Array(items) => Ok(items),
        OwnedFrame::Error(text) => Err(MapError::NodeError(text.clone())),
        _ => Err(MapError::Malformed { command, detail: "reply is not an array".to_string() }),
    }
}

fn slot_number(n: i64) -> Result<Slot, &'static str> {
    u16::try_from(n).ok().filter(|&s| s < SLOT_COUNT).ok_or("slot number out of range")
}

/// The items of an array reply.
pub(crate) fn as_array(frame: &OwnedFrame) -> Option<&[OwnedFrame]> {
    match frame {
        OwnedFrame::Array(items) => Some(items),
        _ => None,
    }
}

fn as_integer(frame: &OwnedFrame) -> Option<i64> {
    match frame {
        OwnedFrame::Integer(n) => Some(*n),
        OwnedFrame::BulkString(s) | OwnedFrame::SimpleString(s) => std::str::from_utf8(s).ok()?.parse().ok(),
        _ => None,
    }
}

/// A bulk or simple string reply as text.
pub(crate) fn as_text(frame: &OwnedFrame) -> Option<&str> {
    match frame {
        OwnedFrame::BulkString(s) | OwnedFrame::SimpleString(s) => std::str::from_utf8(s).ok(),
        _ => None,
    }
}

/// The value after `name` in a flat key/value array (CLUSTER SHARDS, FUNCTION LIST).
pub(crate) fn field<'a>(fields: &'a [OwnedFrame], name: &str) -> Option<&'a OwnedFrame> {
    fields.chunks(2).find(|pair| as_text(&pair[0]) == Some(name)).and_then(|pair| pair.get(1))
}

fn parse_shard_node(frame: &OwnedFrame, tls: bool) -> Option<Node> {
    let fields = as_array(frame)?;
    let text = |name| field(fields, name).and_then(as_text).unwrap_or("");
    let port = tls
        .then(|| field(fields, "tls-port").and_then(as_integer))
        .flatten()
        .or_else(|| field(fields, "port").and_then(as_integer))?;
    // `endpoint` is what clients should use; "?" or empty means unknown, so fall back to the ip.
    let host = match text("endpoint") {
        "" | "?" => text("ip"),
        endpoint => endpoint,
    };
    if host.is_empty() {
        return None;
    }
    Some(Node {
        addr: join_host_port(host, port),
        id: text("id").to_string(),
        role: if text("role") == "master" { Role::Master } else { Role::Replica },
        healthy: text("health") != "fail" && text("health") != "failed",
    })
}

fn parse_slots_node(frame: &OwnedFrame) -> Option<Node> {
    let items = as_array(frame)?;
    let host = as_text(items.first()?)?;
    let port = as_integer(items.get(1)?)?;
    if host.is_empty() || host == "?" {
        return None;
    }
    Some(Node {
        addr: join_host_port(host, port),
        id: items.get(2).and_then(as_text).unwrap_or("").to_string(),
        role: Role::Master,
        healthy: true,
    })
}

/// `host:port`, with IPv6 literals in brackets so the address parses back.
pub fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') && !host.starts_with('[') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

#[cfg(test)]
mod tests;
