//! Reading a cluster's state from its nodes: `CLUSTER NODES` parsing and the convergence check.

use std::collections::BTreeMap;

use super::reshard::parse_slot_range;
use crate::conn::{Access, probe};

/// Total hash slots in a Redis Cluster.
pub const SLOTS: usize = 16384;

/// One line of `CLUSTER NODES` as one node sees it.
#[derive(Clone, Debug)]
pub(crate) struct NodeLine {
    pub id: String,
    /// `ip:port` without the bus port.
    pub addr: String,
    pub flags: Vec<String>,
    pub master_id: Option<String>,
    /// Owned slot ranges (importing/migrating markers are left out).
    pub slots: Vec<(u16, u16)>,
}

impl NodeLine {
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    pub fn is_replica(&self) -> bool {
        self.has_flag("slave")
    }

    /// Marked failing, half-introduced or address-less: not a settled member.
    pub fn is_unsettled(&self) -> bool {
        ["fail", "fail?", "handshake", "noaddr"].iter().any(|f| self.has_flag(f))
    }
}

/// Parses `CLUSTER NODES` output.
pub(crate) fn parse_nodes(text: &str) -> Vec<NodeLine> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            // "127.0.0.1:7000@17000[,hostname]"
            let addr = f[1].split(['@', ',']).next().unwrap_or_default().to_owned();
            let slots = f[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|n| (n, n)),
                })
                .collect();
            Some(NodeLine {
                id: f[0].to_owned(),
                addr,
                flags: f[2].split(',').map(str::to_owned).collect(),
                master_id: (f[3] != "-").then(|| f[3].to_owned()),
                slots,
            })
        })
        .collect()
}

/// The value of `key:` in `INFO`/`CLUSTER INFO` output.
pub(crate) fn info_field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.strip_prefix(key).and_then(|rest| rest.strip_prefix(':')).map(str::trim))
}

/// What one node reports: its `CLUSTER INFO`, `CLUSTER NODES` and `INFO replication`.
pub(crate) struct View {
    pub addr: String,
    pub state_ok: bool,
    pub lines: Vec<NodeLine>,
    pub replication: String,
    /// Replicas `CLUSTER SLOTS` lists (Redis 7 hides replicas whose offset is still 0).
    pub slots_replicas: Vec<String>,
}

impl View {
    pub fn fetch(addr: &str, access: &Access) -> Result<View, String> {
        let mut con = probe(addr, access).map_err(|e| format!("{addr}: connect: {e}"))?;
        let mut query = |args: &[&str]| -> Result<String, String> {
            let mut cmd = redis::cmd(args[0]);
            for a in &args[1..] {
                cmd.arg(*a);
            }
            cmd.query::<String>(&mut con).map_err(|e| format!("{addr}: {}: {e}", args.join(" ")))
        };
        let info = query(&["CLUSTER", "INFO"])?;
        let nodes = query(&["CLUSTER", "NODES"])?;
        let replication = query(&["INFO", "replication"])?;
        let slots: Vec<redis::Value> =
            redis::cmd("CLUSTER").arg("SLOTS").query(&mut con).map_err(|e| format!("{addr}: CLUSTER SLOTS: {e}"))?;
        let slots_replicas = slots.iter().flat_map(|entry| parse_slot_range(entry).replicas).collect();
        let mut lines = parse_nodes(&nodes);
        // A node that has met nobody does not know its own IP yet (":port@bus").
        if let Some(me) = lines.iter_mut().find(|l| l.has_flag("myself")) {
            me.addr = addr.to_owned();
        }
        Ok(View {
            addr: addr.to_owned(),
            state_ok: info_field(&info, "cluster_state") == Some("ok"),
            lines,
            replication,
            slots_replicas,
        })
    }

    pub fn myself(&self) -> Option<&NodeLine> {
        self.lines.iter().find(|l| l.has_flag("myself"))
    }

    fn line_for(&self, addr: &str) -> Option<&NodeLine> {
        self.lines.iter().find(|l| l.addr == addr)
    }

    /// Slot → owner address, `None` for uncovered slots.
    fn slot_owners(&self) -> Vec<Option<&str>> {
        let mut owners = vec![None; SLOTS];
        for line in self.lines.iter().filter(|l| !l.is_replica()) {
            for &(a, b) in &line.slots {
                for owner in &mut owners[usize::from(a)..=usize::from(b).min(SLOTS - 1)] {
                    *owner = Some(line.addr.as_str());
                }
            }
        }
        owners
    }
}

/// Checks that the `live` nodes form a settled, healthy cluster; `Err` says what is not yet so.
///
/// Settled means: every live node reports `cluster_state:ok`; every live node's view lists every
/// live node without fail/handshake flags and with the role and master that node reports for
/// itself; all views agree on the owner of each of the 16384 slots and all owners are live;
/// every live replica whose master is live (and `master_live` says so) has finished syncing and
/// is listed by every node's `CLUSTER SLOTS`.
/// With `replicas_per_master`, each master must also have exactly that many replicas.
pub(crate) fn check_settled(
    live: &[String],
    access: &Access,
    replicas_per_master: Option<usize>,
    master_live: &dyn Fn(&str) -> bool,
) -> Result<(), String> {
    let views = live.iter().map(|addr| View::fetch(addr, access)).collect::<Result<Vec<_>, _>>()?;
    let mut own: BTreeMap<&str, &NodeLine> = BTreeMap::new();
    for v in &views {
        if !v.state_ok {
            return Err(format!("{}: cluster_state is not ok", v.addr));
        }
        let me = v.myself().ok_or_else(|| format!("{}: no myself line", v.addr))?;
        own.insert(v.addr.as_str(), me);
    }
    let reference = views.first().ok_or("no live node")?.slot_owners();
    for v in &views {
        for addr in live {
            let line = v.line_for(addr).ok_or_else(|| format!("{} does not know {addr} yet", v.addr))?;
            if line.is_unsettled() {
                return Err(format!("{} sees {addr} as {:?}", v.addr, line.flags));
            }
            let truth = own[addr.as_str()];
            if line.is_replica() != truth.is_replica() || line.master_id != truth.master_id {
                return Err(format!("{} has a stale role for {addr}", v.addr));
            }
        }
        let owners = v.slot_owners();
        if let Some(slot) = owners.iter().position(Option::is_none) {
            return Err(format!("{}: slot {slot} is not covered", v.addr));
        }
        if owners != reference {
            return Err(format!("{} disagrees with {} on slot owners", v.addr, live[0]));
        }
        if let Some(owner) = owners.iter().flatten().find(|o| !live.iter().any(|l| l == *o)) {
            return Err(format!("{}: slots owned by non-live node {owner}", v.addr));
        }
    }
    for v in &views {
        let me = own[v.addr.as_str()];
        let Some(master_id) = &me.master_id else {
            continue;
        };
        let master = v.lines.iter().find(|l| &l.id == master_id);
        if !master.is_some_and(|m| master_live(&m.addr)) {
            continue;
        }
        let link_up = info_field(&v.replication, "master_link_status") == Some("up");
        let syncing = info_field(&v.replication, "master_sync_in_progress") != Some("0");
        if !link_up || syncing {
            return Err(format!("replica {} is not in sync with its master", v.addr));
        }
        if let Some(other) = views.iter().find(|o| !o.slots_replicas.contains(&v.addr)) {
            return Err(format!("{}: CLUSTER SLOTS does not list replica {} yet", other.addr, v.addr));
        }
    }
    if let Some(want) = replicas_per_master {
        for (addr, me) in &own {
            if me.is_replica() {
                continue;
            }
            let have = own.values().filter(|l| l.master_id.as_deref() == Some(me.id.as_str())).count();
            if have != want {
                return Err(format!("master {addr} has {have} replicas, want {want}"));
            }
        }
    }
    Ok(())
}
