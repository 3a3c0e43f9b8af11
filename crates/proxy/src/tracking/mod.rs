//! Client-side caching: which of the proxy's clients read which key, and who must hear that a key
//! changed.
//!
//! Redis remembers, per connection, the keys a tracking client read, and tells it when one of them
//! changes. Behind the proxy, many clients share a node's pooled connections, so the nodes cannot
//! know which client read what. Instead:
//!
//! - per master, while any client tracks, one connection of the proxy's own runs
//!   `CLIENT TRACKING ON BCAST` ([`stream`]): the node tells it every key modified on it (writes,
//!   expiry, eviction, MIGRATE, FLUSHALL);
//! - the [`Hub`] remembers which tracking client read which key (registered *before* the read is
//!   sent), and turns each modified key into a message for each of its readers, and for every
//!   BCAST client whose prefix it matches;
//! - the client's session formats and orders the messages (`session/tracking.rs`).
//!
//! Nothing stale, ever: when the proxy cannot be sure it saw every change (a stream broke or came
//! up, a master left the map, a node flushed), every tracker is told to flush its cache, as Redis
//! does on FLUSHALL; a read sent to a master whose stream is not confirmed is invalidated right
//! after its reply (the session sees [`crate::executor::Part::blind`]). The table is bounded by
//! `tracking.max_keys`: beyond it the oldest key is invalidated for its readers, as Redis does with
//! `tracking-table-max-keys`.

pub mod stream;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::Notify;

use crate::metrics::TrackingMetrics;
use crate::session::clients::ClientEntry;

/// What a tracking client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// These keys changed: one message per key, as Redis sends them in the default mode.
    Keys(Vec<Bytes>),
    /// These keys, matching one prefix of a BCAST client, changed: one message for all of them.
    Prefixed(Vec<Bytes>),
    /// Forget everything cached (Redis' message with a null key list).
    Flush,
}

/// Where an invalidation came from: the master's stream, and how many `PONG`s that stream had
/// seen when it arrived (NOLOOP tokens are matched against it, see [`Hub::barrier`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    pub master: Arc<str>,
    pub pongs: u64,
}

/// An event in a client's tracking inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackingEvent {
    /// For the tracking client itself.
    Mine(Invalidation, Option<Stamp>),
    /// For a client another one redirects its messages to: formatted in this one's protocol.
    Redirected(Invalidation),
}

/// Why every tracker was told to flush (`tracking_flushes_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushReason {
    /// A master's tracking stream broke or timed out.
    StreamLost,
    /// A master's tracking stream came up: reads it did not watch may have been kept.
    StreamUp,
    /// A master left the map (failover, removal) while its stream was up.
    Topology,
    /// A node was flushed (FLUSHALL, FLUSHDB).
    NodeFlush,
}

impl FlushReason {
    pub const ALL: [FlushReason; 4] =
        [FlushReason::StreamLost, FlushReason::StreamUp, FlushReason::Topology, FlushReason::NodeFlush];

    pub fn label(self) -> &'static str {
        match self {
            FlushReason::StreamLost => "stream_lost",
            FlushReason::StreamUp => "stream_up",
            FlushReason::Topology => "topology",
            FlushReason::NodeFlush => "node_flush",
        }
    }
}

/// A tracking client, as the hub reaches it.
#[derive(Debug)]
struct Tracker {
    entry: Arc<ClientEntry>,
    /// BCAST mode: the prefixes it follows (`""` follows every key). `None`: default mode.
    prefixes: Option<Vec<Bytes>>,
}

/// The keys tracking clients read, oldest first for eviction.
#[derive(Debug, Default)]
struct Table {
    keys: HashMap<Bytes, Readers>,
    /// Keys in the order their entries were created, with the entry's generation: an entry removed
    /// and created again has a newer one, so older queue items are skipped (lazy deletion).
    order: VecDeque<(Bytes, u64)>,
    next_generation: u64,
    /// Reader ids over all keys (`tracking_items`).
    items: usize,
}

#[derive(Debug)]
struct Readers {
    ids: Vec<u64>,
    generation: u64,
}

/// One master's tracking stream as the rest of the proxy sees it.
#[derive(Debug, Default)]
pub struct StreamState {
    /// The node answered `CLIENT TRACKING ON BCAST`: every change on it reaches the hub.
    confirmed: AtomicBool,
    /// `PING`s numbered so far (numbered before they are queued) and `PONG`s received.
    pings: AtomicU64,
    pongs: AtomicU64,
    /// Asks the stream for a `PING` now (a NOLOOP barrier).
    ping_now: Notify,
}

/// Who tracks, which keys they read, and each master's stream.
#[derive(Debug)]
pub struct Hub {
    /// The table's bound: `tracking.max_keys`, or the last `CONFIG SET tracking-table-max-keys`.
    max_keys: AtomicUsize,
    table: Mutex<Table>,
    trackers: RwLock<HashMap<u64, Tracker>>,
    streams: DashMap<String, Arc<StreamState>>,
    tracker_count: AtomicUsize,
    /// The stream supervisor waits on it while nobody tracks.
    wake: Notify,
    metrics: TrackingMetrics,
}

impl Hub {
    /// A hub remembering at most `max_keys` keys (at least one).
    pub fn new(max_keys: usize, metrics: TrackingMetrics) -> Hub {
        Hub {
            max_keys: AtomicUsize::new(max_keys.max(1)),
            table: Mutex::new(Table::default()),
            trackers: RwLock::new(HashMap::new()),
            streams: DashMap::new(),
            tracker_count: AtomicUsize::new(0),
            wake: Notify::new(),
            metrics,
        }
    }

    /// Clients tracking now (INFO `tracking_clients`).
    pub fn tracker_count(&self) -> usize {
        self.tracker_count.load(Ordering::Relaxed)
    }

    /// Keys and reader entries in the table (INFO `tracking_total_keys` / `_items`).
    pub fn table_size(&self) -> (usize, usize) {
        self.table.lock().map(|t| (t.keys.len(), t.items)).unwrap_or_default()
    }

    /// Distinct BCAST prefixes over all trackers (INFO `tracking_total_prefixes`: Redis counts
    /// its prefix table's entries, each shared by the clients that asked for it).
    pub fn prefix_count(&self) -> usize {
        let trackers = self.trackers.read().unwrap_or_else(|e| e.into_inner());
        let prefixes: std::collections::HashSet<&Bytes> =
            trackers.values().filter_map(|t| t.prefixes.as_ref()).flatten().collect();
        prefixes.len()
    }

    /// `entry`'s client tracks now, in BCAST mode with `prefixes` or in the default mode.
    pub fn set_tracker(&self, entry: &Arc<ClientEntry>, prefixes: Option<Vec<Bytes>>) {
        let tracker = Tracker { entry: Arc::clone(entry), prefixes };
        let mut trackers = self.trackers.write().unwrap_or_else(|e| e.into_inner());
        trackers.insert(entry.id, tracker);
        let count = trackers.len();
        drop(trackers);
        self.tracker_count.store(count, Ordering::Relaxed);
        self.metrics.clients.set(count as i64);
        self.wake.notify_one();
    }

    /// Client `id` stopped tracking (OFF, RESET, disconnect): nothing of it stays in the table.
    pub fn remove_tracker(&self, id: u64) {
        let mut trackers = self.trackers.write().unwrap_or_else(|e| e.into_inner());
        if trackers.remove(&id).is_none() {
            return;
        }
        let count = trackers.len();
        drop(trackers);
        self.tracker_count.store(count, Ordering::Relaxed);
        self.metrics.clients.set(count as i64);
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        match count {
            0 => *table = Table::default(),
            _ => {
                let mut removed = 0;
                table.keys.retain(|_, readers| {
                    let before = readers.ids.len();
                    readers.ids.retain(|reader| *reader != id);
                    removed += before - readers.ids.len();
                    !readers.ids.is_empty()
                });
                table.items -= removed;
                table.compact();
            }
        }
        self.metrics.keys.set(table.keys.len() as i64);
    }

    /// Remembers that client `id` read `keys`. Called before the read is sent, so the key's next
    /// change reaches the client whenever the read ran. Over the limit, the oldest keys are
    /// invalidated for their readers.
    pub fn register(&self, id: u64, keys: &[Bytes]) {
        self.evict_to_bound(|table| keys.iter().for_each(|key| table.add(key, id)));
    }

    /// The table's bound as `CONFIG GET tracking-table-max-keys` shows it (0: none).
    pub fn max_keys(&self) -> usize {
        match self.max_keys.load(Ordering::Relaxed) {
            usize::MAX => 0,
            max_keys => max_keys,
        }
    }

    /// Bounds the table at `max_keys` keys from now on, 0 for no bound (Redis'
    /// `tracking-table-max-keys`); keys beyond a smaller bound are invalidated for their readers
    /// at once (Redis does it within a second, in its cron).
    pub fn set_max_keys(&self, max_keys: usize) {
        let max_keys = if max_keys == 0 { usize::MAX } else { max_keys };
        self.max_keys.store(max_keys, Ordering::Relaxed);
        self.evict_to_bound(|_| {});
    }

    /// Changes the table with `change`, then, under the same lock, evicts the oldest keys beyond
    /// the bound; their readers are told once the lock is given back.
    fn evict_to_bound(&self, change: impl FnOnce(&mut Table)) {
        let evicted = {
            let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
            change(&mut table);
            let evicted = table.evict_beyond(self.max_keys.load(Ordering::Relaxed));
            self.metrics.keys.set(table.keys.len() as i64);
            evicted
        };
        self.invalidate_evicted(evicted);
    }

    /// Tells the readers of keys the table's bound pushed out that they changed, a message per
    /// key as Redis' `trackingLimitUsedSlots` sends them.
    fn invalidate_evicted(&self, evicted: Vec<(Bytes, Vec<u64>)>) {
        self.metrics.evictions.inc_by(evicted.len() as u64);
        for key in evicted {
            self.deliver_to_readers(vec![key], None);
        }
    }

    /// Client `id` no longer reads `keys` (its own NOLOOP write of them: like Redis, the writer
    /// is dropped from the key's readers and told nothing).
    pub fn forget(&self, id: u64, keys: &[Bytes]) {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        for key in keys {
            table.remove_reader(key, id);
        }
        self.metrics.keys.set(table.keys.len() as i64);
    }

    /// `keys` changed on master `stamp.master`: each key's readers are told, and every BCAST
    /// client whose prefix a key matches.
    pub fn invalidate(&self, keys: Vec<Bytes>, stamp: Stamp) {
        self.metrics.invalidations.inc_by(keys.len() as u64);
        let readers = {
            let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
            let taken = keys.iter().filter_map(|key| table.take(key).map(|ids| (key.clone(), ids))).collect();
            self.metrics.keys.set(table.keys.len() as i64);
            taken
        };
        self.deliver_to_readers(readers, Some(&stamp));
        let trackers = self.trackers.read().unwrap_or_else(|e| e.into_inner());
        for tracker in trackers.values() {
            let Some(prefixes) = &tracker.prefixes else { continue };
            for prefix in prefixes {
                let matching: Vec<Bytes> = keys.iter().filter(|k| k.starts_with(prefix)).cloned().collect();
                if !matching.is_empty() {
                    let event = TrackingEvent::Mine(Invalidation::Prefixed(matching), Some(stamp.clone()));
                    tracker.entry.deliver(event);
                }
            }
        }
    }

    /// Every tracker forgets everything: the table is cleared and each gets a flush.
    pub fn flush(&self, reason: FlushReason) {
        {
            let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
            *table = Table::default();
            self.metrics.keys.set(0);
        }
        self.metrics.flush(reason).inc();
        let trackers = self.trackers.read().unwrap_or_else(|e| e.into_inner());
        if !trackers.is_empty() {
            crate::log_limited!(
                10,
                info,
                reason = reason.label(),
                trackers = trackers.len(),
                "client-side caches flushed"
            );
        }
        for tracker in trackers.values() {
            tracker.entry.deliver(TrackingEvent::Mine(Invalidation::Flush, None));
        }
    }

    /// Tells each reader of the keys its keys (one event per reader; default mode).
    fn deliver_to_readers(&self, readers: Vec<(Bytes, Vec<u64>)>, stamp: Option<&Stamp>) {
        if readers.is_empty() {
            return;
        }
        let mut per_client: HashMap<u64, Vec<Bytes>> = HashMap::new();
        for (key, ids) in readers {
            for id in ids {
                per_client.entry(id).or_default().push(key.clone());
            }
        }
        let trackers = self.trackers.read().unwrap_or_else(|e| e.into_inner());
        for (id, keys) in per_client {
            // A reader that switched to BCAST or stopped tracking is not told (as Redis).
            if let Some(tracker) = trackers.get(&id).filter(|t| t.prefixes.is_none()) {
                tracker.entry.deliver(TrackingEvent::Mine(Invalidation::Keys(keys), stamp.cloned()));
            }
        }
    }

    /// Whether `master`'s stream is confirmed: a read there will hear of the key's next change.
    pub fn is_confirmed(&self, master: &str) -> bool {
        self.streams.get(master).is_some_and(|s| s.confirmed.load(Ordering::Acquire))
    }

    /// Asks `master`'s stream for a `PING` and returns the `PONG` count from which every change
    /// the node made before now has been delivered (the node writes a change's message before the
    /// reply of the command that made it); `None` without a confirmed stream.
    pub fn barrier(&self, master: &str) -> Option<u64> {
        let state = self.streams.get(master)?;
        if !state.confirmed.load(Ordering::Acquire) {
            return None;
        }
        let target = state.pings.load(Ordering::Acquire) + 1;
        state.ping_now.notify_one();
        Some(target)
    }

    /// The state of `master`'s stream, created on first use.
    fn stream_state(&self, master: &str) -> Arc<StreamState> {
        Arc::clone(self.streams.entry(master.to_string()).or_default().value())
    }
}

impl Table {
    fn add(&mut self, key: &Bytes, id: u64) {
        if let Some(readers) = self.keys.get_mut(key) {
            if !readers.ids.contains(&id) {
                readers.ids.push(id);
                self.items += 1;
            }
            return;
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        self.keys.insert(key.clone(), Readers { ids: vec![id], generation });
        self.order.push_back((key.clone(), generation));
        self.items += 1;
    }

    /// Removes `key`'s entry, returning its readers.
    fn take(&mut self, key: &[u8]) -> Option<Vec<u64>> {
        let readers = self.keys.remove(key)?;
        self.items -= readers.ids.len();
        self.compact();
        Some(readers.ids)
    }

    fn remove_reader(&mut self, key: &[u8], id: u64) {
        let Some(readers) = self.keys.get_mut(key) else { return };
        let before = readers.ids.len();
        readers.ids.retain(|reader| *reader != id);
        self.items -= before - readers.ids.len();
        if readers.ids.is_empty() {
            self.keys.remove(key);
            self.compact();
        }
    }

    /// Removes the oldest entries until at most `max` keys remain; returns them with their readers.
    fn evict_beyond(&mut self, max: usize) -> Vec<(Bytes, Vec<u64>)> {
        let mut evicted = Vec::new();
        while self.keys.len() > max {
            let Some((key, generation)) = self.order.pop_front() else { break };
            if self.keys.get(&key).is_some_and(|r| r.generation == generation)
                && let Some(readers) = self.keys.remove(&key)
            {
                self.items -= readers.ids.len();
                evicted.push((key, readers.ids));
            }
        }
        evicted
    }

    /// Drops queue items of removed entries once they outnumber the live ones.
    fn compact(&mut self) {
        if self.order.len() > 2 * self.keys.len() + 1024 {
            let keys = &self.keys;
            self.order.retain(|(key, generation)| keys.get(key).is_some_and(|r| r.generation == *generation));
        }
    }
}

#[cfg(test)]
mod tests;
