//! Slot lookups, manual failover and slot migration on a [`Cluster`].

use std::time::{Duration, Instant};

use redis::Value;

use super::{Cluster, NodeState};
use crate::conn::probe;

/// How many keys one MIGRATE moves.
const MIGRATE_BATCH: usize = 100;
/// Upper bound on a whole slot's key migration.
const MIGRATE_DEADLINE: Duration = Duration::from_secs(60);
/// How long a replica gets to become master after CLUSTER FAILOVER.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(20);

/// One entry of `CLUSTER SLOTS`: a slot range and the nodes serving it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotRange {
    /// First slot, inclusive.
    pub start: u16,
    /// Last slot, inclusive.
    pub end: u16,
    /// `ip:port` of the master.
    pub master: String,
    /// `ip:port` of each replica.
    pub replicas: Vec<String>,
}

impl Cluster {
    /// `CLUSTER SLOTS` as seen by the first live node.
    ///
    /// # Panics
    /// When no live node answers or the reply has an unexpected shape.
    pub fn slot_ranges(&self) -> Vec<SlotRange> {
        let addr = self.any_live();
        let mut con = self.client(&addr);
        let reply: Vec<Value> =
            redis::cmd("CLUSTER").arg("SLOTS").query(&mut con).unwrap_or_else(|e| panic!("{addr}: CLUSTER SLOTS: {e}"));
        reply.iter().map(parse_slot_range).collect()
    }

    /// The hash slot of `key`, computed by a live node (`CLUSTER KEYSLOT`).
    pub fn slot_for_key(&self, key: &str) -> u16 {
        let addr = self.any_live();
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut self.client(&addr))
            .unwrap_or_else(|e| panic!("{addr}: CLUSTER KEYSLOT: {e}"))
    }

    /// The master serving `slot`, per [`Cluster::slot_ranges`].
    pub fn node_for_slot(&self, slot: u16) -> String {
        self.slot_ranges()
            .into_iter()
            .find(|r| (r.start..=r.end).contains(&slot))
            .map(|r| r.master)
            .unwrap_or_else(|| panic!("slot {slot} is not covered"))
    }

    /// The masters serving slots, in slot order (the order the proxy numbers its masters in).
    pub fn masters_in_slot_order(&self) -> Vec<String> {
        let mut ranges = self.slot_ranges();
        ranges.sort_by_key(|r| r.start);
        let mut masters: Vec<String> = Vec::new();
        for range in ranges {
            if !masters.contains(&range.master) {
                masters.push(range.master);
            }
        }
        masters
    }

    /// One key per master (`<prefix>:<n>`), in the order of [`Cluster::masters_in_slot_order`].
    pub fn key_per_master(&self, prefix: &str) -> Vec<String> {
        let ranges = self.slot_ranges();
        let owner = |key: &str| {
            let slot = self.slot_for_key(key);
            ranges.iter().find(|r| (r.start..=r.end).contains(&slot)).map(|r| r.master.clone())
        };
        self.masters_in_slot_order()
            .iter()
            .map(|master| {
                (0..10_000)
                    .map(|i| format!("{prefix}:{i}"))
                    .find(|key| owner(key).as_ref() == Some(master))
                    .unwrap_or_else(|| panic!("no key of {prefix} hashes to {master}"))
            })
            .collect()
    }

    /// The master serving `key` (`CLUSTER KEYSLOT` + `CLUSTER SLOTS`).
    pub fn node_for_key(&self, key: &str) -> String {
        self.node_for_slot(self.slot_for_key(key))
    }

    /// Promotes a replica with `CLUSTER FAILOVER` and waits until the cluster has settled around
    /// it. Uses `FORCE` when the harness has the old master killed or paused.
    ///
    /// # Panics
    /// When `replica` is not a replica, or it is not master within 20 s.
    pub fn failover(&self, replica: &str) {
        let view = super::topology::View::fetch(replica, &self.access).unwrap_or_else(|e| panic!("failover: {e}"));
        let master_id = view
            .myself()
            .and_then(|m| m.master_id.clone())
            .unwrap_or_else(|| panic!("failover: {replica} is not a replica"));
        let master_down = self.lock().iter().any(|n| n.id == master_id && n.state != NodeState::Running);
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("FAILOVER");
        if master_down {
            cmd.arg("FORCE");
        }
        let _: () = cmd.query(&mut self.client(replica)).unwrap_or_else(|e| panic!("{replica}: CLUSTER FAILOVER: {e}"));
        let promoted = crate::wait_until(FAILOVER_TIMEOUT, Duration::from_millis(100), || {
            self.role(replica).as_deref() == Some("master")
        });
        if !promoted {
            self.fail(&format!("{replica} was not promoted within {FAILOVER_TIMEOUT:?}"));
        }
        self.wait_state_ok();
    }

    /// Moves `slot` from master `from` to master `to` with all its keys, then assigns it to `to`
    /// on every master. Same steps as `redis-cli --cluster reshard`.
    pub fn migrate_slot(&self, slot: u16, from: &str, to: &str) {
        self.begin_slot_migration(slot, from, to);
        let deadline = Instant::now() + MIGRATE_DEADLINE;
        // Each round moves up to a batch; the deadline bounds the loop.
        while self.move_slot_keys(slot, from, to, MIGRATE_BATCH) > 0 {
            if Instant::now() > deadline {
                self.fail(&format!("migrating slot {slot} took over {MIGRATE_DEADLINE:?}"));
            }
        }
        self.finish_slot_migration(slot, from, to);
    }

    /// Marks `slot` IMPORTING on `to` and MIGRATING on `from`: the window where `from` answers
    /// `-ASK` for keys it no longer has.
    pub fn begin_slot_migration(&self, slot: u16, from: &str, to: &str) {
        let slot = slot.to_string();
        let (from_id, to_id) = (self.node_id(from), self.node_id(to));
        let mut to_con = self.client(to);
        self.admin::<()>(&mut to_con, to, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]);
        let mut from_con = self.client(from);
        self.admin::<()>(&mut from_con, from, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]);
    }

    /// MIGRATEs up to `max_keys` keys of `slot` from `from` to `to`; returns how many it moved.
    pub fn move_slot_keys(&self, slot: u16, from: &str, to: &str, max_keys: usize) -> usize {
        let mut con = self.client(from);
        let keys: Vec<Vec<u8>> = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(max_keys)
            .query(&mut con)
            .unwrap_or_else(|e| panic!("{from}: CLUSTER GETKEYSINSLOT {slot}: {e}"));
        if keys.is_empty() {
            return 0;
        }
        let (host, port) = to.rsplit_once(':').expect("addr is host:port");
        let mut cmd = redis::cmd("MIGRATE");
        cmd.arg(host).arg(port).arg("").arg(0).arg(5000).arg("REPLACE");
        if let Some((user, pass)) = &self.access.acl {
            cmd.arg("AUTH2").arg(user).arg(pass);
        }
        cmd.arg("KEYS").arg(&keys);
        let _: Value = cmd.query(&mut con).unwrap_or_else(|e| panic!("{from}: MIGRATE slot {slot} to {to}: {e}"));
        keys.len()
    }

    /// Assigns `slot` to `to` on `to`, `from`, then every other live master, ending a migration.
    pub fn finish_slot_migration(&self, slot: u16, from: &str, to: &str) {
        let to_id = self.node_id(to);
        let slot_arg = slot.to_string();
        let mut order = vec![to.to_owned(), from.to_owned()];
        order.extend(self.masters().into_iter().filter(|m| m != to && m != from));
        for addr in &order {
            let mut con = self.client(addr);
            self.admin::<()>(&mut con, addr, &["CLUSTER", "SETSLOT", &slot_arg, "NODE", &to_id]);
        }
    }

    fn any_live(&self) -> String {
        self.live_nodes()
            .into_iter()
            .find(|a| probe(a, &self.access).is_ok())
            .unwrap_or_else(|| self.fail("no live node answers"))
    }
}

/// Parses one `CLUSTER SLOTS` entry.
pub(crate) fn parse_slot_range(entry: &Value) -> SlotRange {
    let Value::Array(items) = entry else {
        panic!("CLUSTER SLOTS entry is not an array: {entry:?}");
    };
    let int = |v: &Value| match v {
        Value::Int(n) => u16::try_from(*n).expect("slot number fits u16"),
        other => panic!("CLUSTER SLOTS slot is not an integer: {other:?}"),
    };
    let addr = |v: &Value| {
        let Value::Array(node) = v else {
            panic!("CLUSTER SLOTS node is not an array: {v:?}");
        };
        let host = match node.first() {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Value::SimpleString(s)) => s.clone(),
            other => panic!("CLUSTER SLOTS host: {other:?}"),
        };
        let port = match node.get(1) {
            Some(Value::Int(p)) => *p,
            other => panic!("CLUSTER SLOTS port: {other:?}"),
        };
        format!("{host}:{port}")
    };
    assert!(items.len() >= 3, "CLUSTER SLOTS entry too short: {entry:?}");
    SlotRange {
        start: int(&items[0]),
        end: int(&items[1]),
        master: addr(&items[2]),
        replicas: items[3..].iter().map(addr).collect(),
    }
}
