//! The cluster's shape as the proxy sees it: an immutable [`Routing`] snapshot swapped atomically
//! (arc-swap), so a request sees either the old map or the new one, never half of each.
//!
//! [`map`] is the pure slot map; [`routing`] pairs it with the nodes' pools; [`epoch`] settles
//! nodes that disagree about it; [`refresh`] holds the live [`Topology`] and fetches the map from
//! the nodes on start-up, on a timer, and at once (debounced) when a `MOVED` or a failed node
//! connection says it is stale.

pub mod epoch;
pub mod map;
pub mod refresh;
mod routing;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::sync::Notify;

pub use map::{Node, Role, Shard, SlotMap};
pub use refresh::Topology;
pub use routing::Routing;

/// Why a topology refresh ran; the label of `topology_refreshes_total{trigger}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Trigger {
    Startup = 1,
    Timer = 2,
    Moved = 4,
    NodeFailure = 8,
    /// A node's own role is not the map's (a manual failover swapped a master and its replica):
    /// seen by the health poll, so that the proxy follows within a poll, without traffic.
    RoleChange = 16,
}

impl Trigger {
    pub const ALL: [Trigger; 5] =
        [Trigger::Startup, Trigger::Timer, Trigger::Moved, Trigger::NodeFailure, Trigger::RoleChange];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Startup => "startup",
            Trigger::Timer => "timer",
            Trigger::Moved => "moved",
            Trigger::NodeFailure => "node_failure",
            Trigger::RoleChange => "role_change",
        }
    }
}

/// Asks the refresher for a refresh without waiting for it. Cheap enough to call on every `MOVED`:
/// requests arriving together collapse into one refresh.
#[derive(Debug, Default)]
pub struct RefreshSignal {
    notify: Notify,
    /// Bit set of [`Trigger`]s requested since the last refresh.
    pending: AtomicU8,
}

impl RefreshSignal {
    /// A signal with nothing pending.
    pub fn new() -> Arc<RefreshSignal> {
        Arc::new(RefreshSignal::default())
    }

    /// Requests a refresh for `trigger`.
    pub fn request(&self, trigger: Trigger) {
        self.pending.fetch_or(trigger as u8, Ordering::Relaxed);
        self.notify.notify_one();
    }

    /// Waits for a request and returns the triggers pending.
    pub(crate) async fn wait(&self) -> Vec<Trigger> {
        self.notify.notified().await;
        self.take()
    }

    /// The triggers pending, clearing them.
    pub(crate) fn take(&self) -> Vec<Trigger> {
        let bits = self.pending.swap(0, Ordering::Relaxed);
        Trigger::ALL.into_iter().filter(|t| bits & (*t as u8) != 0).collect()
    }
}
