//! Fetching the slot map from the nodes and swapping it in.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::time::sleep;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use redis_protocol::resp2::types::OwnedFrame;

use super::epoch::{self, View};
use super::map::{MapError, SlotMap};
use super::{RefreshSignal, Routing, Trigger};
use crate::slot::SLOT_COUNT;
use crate::upstream::{UpstreamError, Upstreams, connect};

/// Least time between two refreshes: a burst of `MOVED` replies during a reshard costs one refresh.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// Nodes asked for their view of the cluster at once.
const VIEWS: usize = 3;

/// How long the other nodes of a batch may take to answer once one has: enough for a healthy node
/// on a LAN, short enough that a paused node barely delays a refresh.
const VIEW_GRACE: Duration = Duration::from_millis(100);

/// Poll interval while some slots have no owner or a master's connections are failing, so that a
/// promoted replica is found within a fraction of a second instead of at the next timer tick.
const FAST_POLL: Duration = Duration::from_millis(100);

/// How long a node that failed a connection keeps the refresher in fast polling.
const SUSPECT_FOR: Duration = Duration::from_secs(30);

/// The live topology: the current [`Routing`] and what keeps it fresh.
pub struct Topology {
    routing: ArcSwap<Routing>,
    upstreams: Arc<Upstreams>,
    signal: Arc<RefreshSignal>,
    seeds: Vec<String>,
    refresh_interval: Duration,
    /// Use the nodes' TLS ports.
    tls: bool,
    /// Open replica pools (for `read_from` other than master).
    use_replicas: bool,
    /// Nodes whose connections failed recently, with when.
    suspects: Mutex<HashMap<String, Instant>>,
    /// `redis_version` of the oldest node, from the health poller, and its `valkey_version` when
    /// every node is Valkey.
    lowest_version: Mutex<Option<(String, Option<crate::Valkey>)>>,
    generation: watch::Sender<u64>,
    /// The generation of the map in `routing`, stored after it: a holder of a snapshot tells
    /// whether it is still the current one with a load, not a snapshot read (see
    /// [`Topology::routing_generation`]).
    installed: AtomicU64,
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topology").field("seeds", &self.seeds).finish_non_exhaustive()
    }
}

/// Settings of the refresher, from `[upstream]` and `[topology]`.
#[derive(Debug, Clone)]
pub struct TopologySettings {
    pub seeds: Vec<String>,
    pub refresh_interval: Duration,
    pub tls: bool,
    pub use_replicas: bool,
}

impl Topology {
    /// A topology with an empty map; call [`Topology::refresh`] or [`Topology::spawn_refresher`].
    pub fn new(settings: TopologySettings, upstreams: Arc<Upstreams>, signal: Arc<RefreshSignal>) -> Arc<Topology> {
        Arc::new(Topology {
            routing: ArcSwap::from_pointee(Routing::empty()),
            upstreams,
            signal,
            seeds: settings.seeds,
            refresh_interval: settings.refresh_interval,
            tls: settings.tls,
            use_replicas: settings.use_replicas,
            suspects: Mutex::new(HashMap::new()),
            lowest_version: Mutex::new(None),
            generation: watch::channel(0).0,
            installed: AtomicU64::new(0),
        })
    }

    /// The current snapshot. Cheap; hold it only for the duration of one routing decision.
    pub fn routing(&self) -> arc_swap::Guard<Arc<Routing>> {
        self.routing.load()
    }

    /// The current snapshot, owned: for a caller that routes several requests by it in one go
    /// and lets it go right after (it keeps the map's pools alive while held).
    pub fn routing_snapshot(&self) -> Arc<Routing> {
        self.routing.load_full()
    }

    /// The generation of the current map ([`Routing::generation`]); a snapshot of that generation
    /// is the current one. Changes after the map does: a holder that sees the old generation
    /// routes by the old map, as if it had looked an instant earlier.
    #[inline]
    pub fn routing_generation(&self) -> u64 {
        self.installed.load(Ordering::Acquire)
    }

    /// The registry of node pools.
    pub fn upstreams(&self) -> &Arc<Upstreams> {
        &self.upstreams
    }

    /// Requests a refresh without waiting for it.
    pub fn request_refresh(&self, trigger: Trigger) {
        self.signal.request(trigger);
    }

    /// Records that connections to `addr` fail, and asks for a refresh. The node's spare own
    /// connections go: they may be dead without knowing it yet, and a client's command sent into
    /// one would wait (a blocking one for good) where a new connection that cannot connect holds
    /// it for the failover.
    pub fn report_failure(&self, addr: &str) {
        if let Ok(mut suspects) = self.suspects.lock() {
            suspects.insert(addr.to_string(), Instant::now());
        }
        self.upstreams.forget_spares(addr);
        self.signal.request(Trigger::NodeFailure);
    }

    /// A node that failed answered again, to a probe sent at `since` (it restarted without a
    /// failover, or a partition healed): it is no longer suspect — the pub/sub home goes back to
    /// it at once rather than [`SUSPECT_FOR`] after its failure — unless a failure was reported
    /// after the probe was sent.
    pub fn report_reachable(&self, addr: &str, since: Instant) {
        if let Ok(mut suspects) = self.suspects.lock()
            && suspects.get(addr).is_some_and(|failed| *failed < since)
        {
            suspects.remove(addr);
        }
    }

    /// Whether connections to `addr` failed lately (within [`SUSPECT_FOR`], while it is a master,
    /// and none was made since): a master the map still names may be dead, its failover not done
    /// yet.
    pub fn is_suspect(&self, addr: &str) -> bool {
        let Ok(suspects) = self.suspects.lock() else {
            return false;
        };
        suspects.get(addr).is_some_and(|since| since.elapsed() < SUSPECT_FOR)
    }

    /// The version the proxy answers for (HELLO, INFO, the fields of CLIENT LIST): the
    /// `redis_version` of the oldest node the health poller reached, or the version the command
    /// table was built for before it has run.
    pub fn reported_version(&self) -> String {
        let lowest = self.lowest_version.lock().ok().and_then(|lowest| lowest.as_ref().map(|(redis, _)| redis.clone()));
        lowest.unwrap_or_else(|| crate::REDIS_COMPAT_VERSION.to_string())
    }

    /// Valkey's identity of the oldest node when every node the health poller reached is Valkey
    /// (`None` for Redis, a mix, or before the first poll): Valkey's own fields follow it.
    pub fn valkey(&self) -> Option<crate::Valkey> {
        self.lowest_version.lock().ok().and_then(|lowest| lowest.as_ref().and_then(|(_, valkey)| valkey.clone()))
    }

    /// The nodes took a `CONFIG SET extended-redis-compatibility`: Valkey ones call
    /// themselves Redis (or Valkey again) from now on, and so does the proxy for them.
    pub fn set_valkey_redis_compat(&self, on: bool) {
        if let Ok(mut lowest) = self.lowest_version.lock()
            && let Some((_, Some(valkey))) = lowest.as_mut()
        {
            valkey.redis_compat = on;
        }
    }

    /// What the health poller found: the oldest node's `redis_version`, and Valkey's identity
    /// when every node is Valkey.
    pub fn set_lowest_node_version(&self, version: &str, valkey: Option<&crate::Valkey>) {
        if let Ok(mut lowest) = self.lowest_version.lock() {
            *lowest = Some((version.to_string(), valkey.cloned()));
        }
    }

    /// A receiver that changes whenever a new snapshot is swapped in.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Fetches the map from the nodes and swaps it in if it changed.
    ///
    /// Nodes are asked [`VIEWS`] at a time, in order: masters of the current map, their replicas,
    /// the configured seeds; nodes with failing connections last. Once one answers, the others of
    /// its batch get [`VIEW_GRACE`] to answer too, and where answers disagree the config epoch
    /// decides (see [`epoch`]).
    ///
    /// # Errors
    /// The last node's error when no node gave a usable map.
    pub async fn refresh(&self, trigger: Trigger) -> Result<(), RefreshError> {
        self.upstreams.metrics().topology_refresh(trigger.as_str()).inc();
        let candidates = self.candidates();
        let mut last_error = RefreshError::NoNodes;
        for batch in candidates.chunks(VIEWS) {
            let (views, error) = self.gather_views(batch).await;
            if let Some(error) = error {
                last_error = error;
            }
            if let Some(map) = epoch::resolve(views) {
                self.install(map, trigger);
                return Ok(());
            }
        }
        Err(last_error)
    }

    /// Asks every node of `batch` at once; returns the usable views in `batch` order and the last
    /// error seen.
    async fn gather_views(&self, batch: &[String]) -> (Vec<View>, Option<RefreshError>) {
        let mut pending: FuturesUnordered<_> =
            batch.iter().enumerate().map(|(i, addr)| async move { (i, addr, self.fetch(addr).await) }).collect();
        let mut views: Vec<(usize, View)> = Vec::new();
        let mut last_error = None;
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let next = match deadline {
                None => pending.next().await,
                Some(deadline) => tokio::time::timeout_at(deadline, pending.next()).await.ok().flatten(),
            };
            let Some((i, addr, answer)) = next else { break };
            match answer {
                Ok(view) if view.map.covered_slots() > 0 => {
                    views.push((i, view));
                    deadline.get_or_insert_with(|| tokio::time::Instant::now() + VIEW_GRACE);
                }
                Ok(_) => last_error = Some(RefreshError::NoSlots(addr.clone())),
                Err(error) => last_error = Some(error),
            }
        }
        views.sort_by_key(|(i, _)| *i);
        (views.into_iter().map(|(_, view)| view).collect(), last_error)
    }

    fn candidates(&self) -> Vec<String> {
        let routing = self.routing();
        let suspects = self.suspects.lock().map(|s| s.clone()).unwrap_or_default();
        let mut healthy = Vec::new();
        let mut suspect = Vec::new();
        for addr in routing.map.nodes().map(|n| n.addr.clone()).chain(self.seeds.iter().cloned()) {
            if healthy.contains(&addr) || suspect.contains(&addr) {
                continue;
            }
            if suspects.contains_key(&addr) {
                suspect.push(addr);
            } else {
                healthy.push(addr);
            }
        }
        healthy.extend(suspect);
        healthy
    }

    /// One node's view: its `CLUSTER SHARDS` (or, before Redis 7, `CLUSTER SLOTS`) with the config
    /// epochs from its `CLUSTER NODES`, read on one connection.
    async fn fetch(&self, addr: &str) -> Result<View, RefreshError> {
        let settings = self.upstreams.settings();
        let query_error = |error: UpstreamError| RefreshError::Query(addr.to_string(), error);
        let answers = connect::query_all(addr, settings, &[&[b"CLUSTER", b"SHARDS"], &[b"CLUSTER", b"NODES"]])
            .await
            .map_err(query_error)?;
        let [shards, nodes] = <[OwnedFrame; 2]>::try_from(answers)
            .map_err(|_| query_error(UpstreamError::ConnectionLost { addr: addr.to_string() }))?;
        let epochs = epoch::parse_cluster_nodes(&nodes);
        let from_slots = || async {
            let slots = connect::query(addr, settings, &[b"CLUSTER", b"SLOTS"]).await.map_err(query_error)?;
            SlotMap::from_cluster_slots(&slots).map_err(|e| RefreshError::Map(addr.to_string(), e))
        };
        let map = match SlotMap::from_cluster_shards(&shards, self.tls) {
            // Redis 7.4.1 lists the shard of a master promoted by a failover with no slots (its
            // CLUSTER SLOTS and NODES have them): a map with unowned slots is checked against
            // CLUSTER SLOTS, and the one that covers more wins.
            Ok(map) if map.covered_slots() < usize::from(SLOT_COUNT) => match from_slots().await {
                Ok(by_slots) if by_slots.covered_slots() > map.covered_slots() => by_slots,
                _ => map,
            },
            Ok(map) => map,
            // Servers before 7.0 have no CLUSTER SHARDS.
            Err(MapError::NodeError(_)) => from_slots().await?,
            Err(error) => return Err(RefreshError::Map(addr.to_string(), error)),
        };
        Ok(View { map, epochs })
    }

    fn install(&self, map: SlotMap, trigger: Trigger) {
        let old = self.routing();
        if old.generation > 0 && old.map == map {
            return;
        }
        let moved = map.slots_moved_since(&old.map);
        let masters = map.shards().iter().map(|shard| self.upstreams.pool(&shard.master.addr, false)).collect();
        let replicas = map
            .shards()
            .iter()
            .map(|shard| {
                if self.use_replicas {
                    shard.replicas.iter().filter(|r| r.healthy).map(|r| self.upstreams.pool(&r.addr, true)).collect()
                } else {
                    Vec::new()
                }
            })
            .collect();
        let generation = old.generation + 1;
        let covered = map.covered_slots();
        let shards = map.shards().len();
        self.upstreams.metrics().cluster_slots_covered.set(covered as i64);
        let routing = Routing { map, masters, replicas, generation };
        // Pools of nodes the new map no longer names go away once their in-flight requests finish.
        let keep: Vec<String> = routing.map.nodes().map(|n| n.addr.clone()).collect();
        self.routing.store(Arc::new(routing));
        self.installed.store(generation, Ordering::Release);
        self.upstreams.retain(|addr| keep.iter().any(|k| k == addr));
        if let Ok(mut suspects) = self.suspects.lock() {
            // A suspect that is no longer a master needs no fast polling.
            let masters: Vec<&String> = keep.iter().take(shards).collect();
            suspects.retain(|addr, since| since.elapsed() < SUSPECT_FOR && masters.contains(&addr));
        }
        self.generation.send_replace(generation);
        tracing::info!(
            trigger = trigger.as_str(),
            generation,
            shards,
            slots_covered = covered,
            slots_moved = moved,
            "topology updated"
        );
    }

    /// Whether the refresher should poll fast: slots without owner, or masters failing.
    fn unsettled(&self) -> bool {
        let routing = self.routing();
        if !routing.is_complete() {
            return true;
        }
        let Ok(suspects) = self.suspects.lock() else {
            return false;
        };
        routing.masters().iter().any(|m| suspects.get(m.addr()).is_some_and(|since| since.elapsed() < SUSPECT_FOR))
    }

    /// Runs the refresh loop until the process ends: every `refresh_interval`, at once on a signal
    /// (debounced), and every [`FAST_POLL`] while the cluster is unsettled.
    pub fn spawn_refresher(self: &Arc<Topology>) {
        let topology = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                let wait = if topology.unsettled() { FAST_POLL } else { topology.refresh_interval };
                let triggers = tokio::select! {
                    _ = sleep(wait) => vec![Trigger::Timer],
                    triggers = topology.signal.wait() => triggers,
                };
                sleep(DEBOUNCE).await;
                let mut triggers = triggers;
                triggers.extend(topology.signal.take());
                let trigger = triggers.iter().copied().find(|t| *t != Trigger::Timer).unwrap_or(Trigger::Timer);
                if let Err(error) = topology.refresh(trigger).await {
                    crate::log_limited!(1, warn, %error, trigger = trigger.as_str(), "topology refresh failed");
                }
            }
        });
    }
}

/// Why no node gave a usable slot map.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RefreshError {
    #[error("no nodes to ask (no seeds configured)")]
    NoNodes,
    #[error("{0}: {1}")]
    Query(String, UpstreamError),
    #[error("{0}: {1}")]
    Map(String, MapError),
    #[error("{0} reports no slots assigned")]
    NoSlots(String),
}
