//! Choose the peer: which node's pool a part goes to now, from the current map, the part's
//! redirection, and whether reads may go to replicas.

use std::sync::Arc;

use bytes::Bytes;

use super::part::{Part, Target};
use crate::config::ReadFrom;
use crate::error::ProxyError;
use crate::topology::Topology;
use crate::upstream::NodePool;

/// The pool a part goes to now, and whether it must be preceded by `ASKING`; the error to
/// answer when the map names no node for it. Never called for [`Target::Owned`].
pub fn choose(
    topology: &Topology,
    read_from: ReadFrom,
    part: &Part,
    affinity: usize,
) -> Result<(Arc<NodePool>, bool), ProxyError> {
    if let Some((addr, asking)) = &part.redirect {
        return Ok((topology.upstreams().pool(addr, false), *asking));
    }
    if let Target::Node { addr, replica } = &part.target {
        return Ok((topology.upstreams().pool(addr, *replica), false));
    }
    let routing = topology.routing();
    let pool = match part.target {
        // Reads may go to a replica of the slot's shard; writes never do, and with no replica up
        // reads fall back to the master.
        Target::Slot(Some(slot)) if !part.write && read_from != ReadFrom::Master => {
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
    match (pool, &part.target) {
        (Some(pool), _) => Ok((Arc::clone(pool), false)),
        (None, Target::Slot(Some(_))) => Err(ProxyError::SlotNotServed),
        (None, _) => Err(ProxyError::NoTopology),
    }
}

/// `ASKING`, sent before a request that follows an `-ASK` redirection.
pub fn asking_command() -> Bytes {
    Bytes::from_static(b"*1\r\n$6\r\nASKING\r\n")
}
