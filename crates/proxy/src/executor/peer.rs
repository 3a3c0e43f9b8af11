//! Choose the peer: which node's pool a part goes to now, from the current map, the part's
//! redirection, and whether reads may go to replicas.

use std::sync::Arc;

use bytes::Bytes;

use super::part::{Part, Target};
use crate::config::ReadFrom;
use crate::error::ProxyError;
use crate::slot::Slot;
use crate::topology::{Routing, Topology};
use crate::upstream::{NodePool, Upstreams};

/// The pool a part goes to now, and whether it must be preceded by `ASKING`; `None` when the
/// map names no node for it ([`no_peer`] says why). Never called for [`Target::Owned`].
#[inline]
pub fn choose(
    (routing, upstreams): (&Routing, &Upstreams),
    read_from: ReadFrom,
    part: &Part,
    affinity: usize,
) -> Option<(Arc<NodePool>, bool)> {
    if let Some((addr, asking)) = part.redirect() {
        return Some((upstreams.pool(addr, false), *asking));
    }
    if let Target::Node { addr, replica } = &part.target {
        return Some((upstreams.pool(addr, *replica), false));
    }
    let pool = match part.target {
        // Reads may go to a replica of the slot's shard; writes never do, and with no replica up
        // reads fall back to the master.
        // Tracked reads go to masters: the tracking streams watch masters only.
        Target::Slot(Some(slot)) if !part.write && !part.tracked && read_from != ReadFrom::Master => {
            let replicas = routing.replicas(slot);
            match replicas.is_empty() {
                true => routing.master(slot),
                false => Some(&replicas[affinity % replicas.len()]),
            }
        }
        Target::Slot(Some(slot)) => routing.master(slot),
        // Keyless commands spread over the masters by client; any one can answer them.
        Target::Slot(None) => routing.any_master(affinity),
        Target::Master(n) => routing.masters().get(n),
        Target::Owned | Target::Node { .. } => None,
    };
    pool.map(|pool| (Arc::clone(pool), false))
}

/// Where a client's own connection for `slot` goes: the slot's master; for keyless commands the
/// master it is at (`current`) while that is one, else any master (spread by `affinity`). `None`
/// when the map names none.
///
/// A keyless transaction may run on any master, and moving the connection would drop it with
/// whatever the client still awaits on it: it stays where it is.
pub fn own_master(topology: &Topology, slot: Option<Slot>, affinity: usize, current: Option<&str>) -> Option<String> {
    let routing = topology.routing();
    let master = match slot {
        Some(slot) => routing.master(slot),
        None => match current.and_then(|addr| routing.masters().iter().find(|m| m.addr() == addr)) {
            Some(current) => Some(current),
            None => routing.any_master(affinity),
        },
    };
    master.map(|m| m.addr().to_string())
}

/// Why [`choose`] found no node in `routing` (the same map) for a part aimed at `target`: Redis'
/// answer for a slot without an owner in a map that has masters (a failover may give it one), or
/// the proxy's when it has no map at all (it could not load one: nothing to wait for).
pub fn no_peer(routing: &Routing, target: &Target) -> ProxyError {
    match target {
        Target::Slot(Some(_)) if !routing.masters().is_empty() => ProxyError::SlotNotServed,
        _ => ProxyError::NoTopology,
    }
}

/// `ASKING`, sent before a request that follows an `-ASK` redirection.
pub fn asking_command() -> Bytes {
    Bytes::from_static(b"*1\r\n$6\r\nASKING\r\n")
}
