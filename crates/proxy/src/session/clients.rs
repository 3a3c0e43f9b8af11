//! The proxy's own clients as `CLIENT LIST`, `CLIENT KILL` and `CLIENT PAUSE` see them.
//!
//! Behind a proxy, a node's `CLIENT LIST` shows the proxy's pooled connections, not the
//! applications; so these commands act on the proxy's clients instead. Each session registers an
//! entry; what other sessions may read of it is behind a mutex that is only written when the
//! client changes its description (name, user, library, protocol), and the keys it blocks on or
//! watches behind another, written only by blocking commands and WATCH, while the per-request
//! fields are relaxed atomics, so the hot path pays a couple of plain stores.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use futures_util::task::AtomicWaker;

use super::ClientState;
use crate::command::CommandTable;
use crate::resp::reply::Protocol;
use crate::tracking::TrackingEvent;

/// Every connected client, and the pause set by `CLIENT PAUSE`.
#[derive(Debug)]
pub struct Clients {
    entries: DashMap<u64, Arc<ClientEntry>>,
    /// Fast check on every request: is any pause in force?
    paused: AtomicBool,
    pause: Mutex<Option<Pause>>,
    started: Instant,
    /// The server is shutting down: sessions stop reading (see [`Clients::stop_all`]).
    stopping: AtomicBool,
}

/// A `CLIENT PAUSE` in force.
#[derive(Debug, Clone, Copy)]
pub struct Pause {
    pub until: Instant,
    /// `WRITE`: only commands that may change data wait; `ALL`: every command does.
    pub writes_only: bool,
}

/// How `CLIENT UNBLOCK` ends a block: as if it timed out, or with `-UNBLOCKED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unblock {
    Timeout = 1,
    Error = 2,
}

/// The proxy's clients as `INFO clients` counts them.
#[derive(Debug, Default, Clone, Copy)]
pub struct ClientTotals {
    pub blocked_clients: u64,
    pub pubsub_clients: u64,
    pub watching_clients: u64,
    pub clients_in_timeout_table: u64,
    pub total_watched_keys: u64,
    pub total_blocking_keys: u64,
    pub total_blocking_keys_on_nokey: u64,
}

/// One client, as other sessions may see and signal it.
#[derive(Debug)]
pub struct ClientEntry {
    pub id: u64,
    pub socket: ClientSocket,
    connected: Instant,
    description: Mutex<Description>,
    /// Milliseconds since the registry started, at the client's last request.
    last_active_ms: AtomicU64,
    /// The client's last command, as its place in the command table (`usize::MAX`: none yet).
    last_command: AtomicUsize,
    subscribed: AtomicBool,
    /// The client is blocked (on the keys in `keys_held`; in WAIT, on none).
    blocked: AtomicBool,
    /// The block has a timeout (Redis keeps such clients in its timeout table).
    blocked_with_timeout: AtomicBool,
    /// A request of the client waits out a CLIENT PAUSE. Redis blocks such a client too (as
    /// `BLOCKED_POSTPONE`): INFO's `blocked_clients` counts it and CLIENT LIST flags it `b`; but
    /// CLIENT UNBLOCK does not end the wait, so it is kept apart from `blocked`.
    postponed: AtomicBool,
    /// How many keys the client WATCHes (CLIENT LIST's `watch=`).
    watched_keys: AtomicU32,
    /// The keys themselves, blocked on and watched, for INFO's counts of distinct keys.
    keys_held: Mutex<KeysHeld>,
    /// A `CLIENT UNBLOCK` for the session to carry out ([`Unblock`] as a number; 0: none).
    unblock: AtomicU8,
    killed: AtomicBool,
    /// Something for the session to look at (a kill, the end of a pause, an unblock, tracking
    /// messages, a trim).
    signalled: AtomicBool,
    /// The session is asked to give back the memory an idle client need not keep
    /// ([`Clients::trim_idle`]).
    trim: AtomicBool,
    /// The `last_active_ms` of the idle spell the session was last asked to trim for, so that
    /// it is asked once per spell (`u64::MAX`: never asked).
    trim_asked_for: AtomicU64,
    waker: AtomicWaker,
    /// Client-side caching messages for the session to send ([`crate::tracking`]).
    inbox: Mutex<Vec<TrackingEvent>>,
    /// CLIENT LIST's tracking flags ([`TRACKING`], [`BROKEN_REDIRECT`], [`BCAST`]) and `redir=`.
    tracking_flags: AtomicU8,
    redirect: AtomicI64,
    /// What the session published of its buffers, subscriptions and transaction (see `line.rs`).
    published: line::Published,
}

/// The keys a client is blocked on and watches. INFO clients counts them over every client, each
/// key once however many clients hold it (Redis 7.2's `total_blocking_keys` and
/// `total_blocking_keys_on_nokey`, 7.4's `total_watched_keys`: the sizes of a node's dicts of
/// such keys), so they are kept by name; only blocking commands and WATCH write them.
#[derive(Debug, Default)]
struct KeysHeld {
    blocking: Vec<Bytes>,
    /// The block ends if a key is deleted (XREADGROUP): Redis counts its keys in `_on_nokey` too.
    unblock_on_nokey: bool,
    watched: Vec<Bytes>,
}

/// [`ClientEntry::set_tracking`] flags, shown as `t`, `R` and `B` in CLIENT LIST.
pub const TRACKING: u8 = 1;
pub const BROKEN_REDIRECT: u8 = 2;
pub const BCAST: u8 = 4;

#[derive(Debug, Default, Clone)]
struct Description {
    name: String,
    user: String,
    lib_name: String,
    lib_ver: String,
    resp: u8,
    modes: super::local::ClientModes,
}

impl Default for Clients {
    fn default() -> Clients {
        Clients {
            entries: DashMap::new(),
            paused: AtomicBool::new(false),
            pause: Mutex::new(None),
            started: Instant::now(),
            stopping: AtomicBool::new(false),
        }
    }
}

impl Clients {
    /// Registers a new client; it stays listed until [`Clients::remove`].
    pub fn register(&self, state: &ClientState, socket: ClientSocket) -> Arc<ClientEntry> {
        let entry = Arc::new(ClientEntry {
            id: state.id,
            socket,
            connected: Instant::now(),
            description: Mutex::new(Description::default()),
            last_active_ms: AtomicU64::new(self.now_ms()),
            last_command: AtomicUsize::new(usize::MAX),
            subscribed: AtomicBool::new(false),
            blocked: AtomicBool::new(false),
            blocked_with_timeout: AtomicBool::new(false),
            postponed: AtomicBool::new(false),
            watched_keys: AtomicU32::new(0),
            keys_held: Mutex::new(KeysHeld::default()),
            unblock: AtomicU8::new(0),
            killed: AtomicBool::new(false),
            signalled: AtomicBool::new(false),
            trim: AtomicBool::new(false),
            trim_asked_for: AtomicU64::new(u64::MAX),
            waker: AtomicWaker::new(),
            inbox: Mutex::new(Vec::new()),
            tracking_flags: AtomicU8::new(0),
            redirect: AtomicI64::new(-1),
            published: line::Published::default(),
        });
        entry.describe(state);
        self.entries.insert(state.id, Arc::clone(&entry));
        entry
    }

    /// Shutdown: every session stops reading, writes the replies of what it read, and closes.
    /// Sessions learn it by their one signal (no shutdown branch polled on every request); one
    /// registered after this call sees [`Clients::is_stopping`] when it starts.
    pub fn stop_all(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        for entry in self.entries.iter() {
            entry.signal();
        }
    }

    /// Whether the server is shutting down.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// The connected client `id`.
    pub fn entry(&self, id: u64) -> Option<Arc<ClientEntry>> {
        self.entries.get(&id).map(|e| Arc::clone(e.value()))
    }

    pub fn remove(&self, id: u64) {
        self.entries.remove(&id);
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Records that `entry`'s client sent something, read at `at` (for `idle=` and the idle
    /// trimmer): on a read, as Redis updates a client's last interaction when it reads from it,
    /// at most every 10 ms of a busy client (`Session::on_input`).
    pub fn touch(&self, entry: &ClientEntry, at: Instant) {
        entry.last_active_ms.store(at.saturating_duration_since(self.started).as_millis() as u64, Ordering::Relaxed);
    }

    /// What `INFO clients` counts about the proxy's clients, summed over them.
    pub fn totals(&self) -> ClientTotals {
        let mut totals = ClientTotals::default();
        let (mut blocking, mut on_nokey, mut watched) = (HashSet::new(), HashSet::new(), HashSet::new());
        for entry in self.entries.iter() {
            let blocked = entry.blocked.load(Ordering::Relaxed);
            totals.blocked_clients += u64::from(blocked || entry.is_postponed());
            totals.clients_in_timeout_table += u64::from(blocked && entry.blocked_with_timeout.load(Ordering::Relaxed));
            totals.pubsub_clients += u64::from(entry.is_subscribed());
            let watching = entry.watched_keys.load(Ordering::Relaxed) > 0;
            totals.watching_clients += u64::from(watching);
            if !blocked && !watching {
                continue;
            }
            let held = entry.keys_held();
            blocking.extend(held.blocking.iter().cloned());
            if held.unblock_on_nokey {
                on_nokey.extend(held.blocking.iter().cloned());
            }
            watched.extend(held.watched.iter().cloned());
        }
        totals.total_blocking_keys = blocking.len() as u64;
        totals.total_blocking_keys_on_nokey = on_nokey.len() as u64;
        totals.total_watched_keys = watched.len() as u64;
        totals
    }

    /// Asks each client that sent nothing for `after` to give back the buffers its busy moments
    /// left it, once per idle spell, as Redis' `clientsCron` frees an idle client's query buffer:
    /// an idle client then holds little more than its socket. Called about once a second (see
    /// `server::spawn_idle_trimmer`); a busy client pays nothing for it.
    pub fn trim_idle(&self, after: Duration) {
        let now = self.now_ms();
        let after = after.as_millis() as u64;
        for entry in self.entries.iter() {
            let last_active = entry.last_active_ms.load(Ordering::Relaxed);
            if now.saturating_sub(last_active) >= after
                && entry.trim_asked_for.swap(last_active, Ordering::Relaxed) != last_active
            {
                entry.trim.store(true, Ordering::Release);
                entry.signal();
            }
        }
    }

    /// The slot map changed: every subscribed client's session is asked to look, so that its
    /// subscriptions follow the map now rather than at its next message or command.
    pub fn signal_subscribed(&self) {
        for entry in self.entries.iter().filter(|entry| entry.is_subscribed()) {
            entry.signal();
        }
    }

    /// `CLIENT UNBLOCK id`: asks client `id`'s session to unblock it; whether it was blocked.
    pub fn unblock(&self, id: u64, how: Unblock) -> bool {
        let Some(entry) = self.entries.get(&id).map(|e| Arc::clone(&e)) else {
            return false;
        };
        if !entry.blocked.load(Ordering::Acquire) {
            return false;
        }
        entry.unblock.store(how as u8, Ordering::Release);
        entry.signal();
        true
    }

    /// `CLIENT LIST` lines of the clients `keep` accepts, in id order.
    pub fn list(
        &self,
        keep: impl Fn(&ClientEntry) -> bool,
        names: &CommandTable,
        format: LineFormat,
        asking: Option<Asking>,
    ) -> String {
        // A killed client is gone for Redis at once; its session may still be closing.
        let listed = |e: &ClientEntry| !e.is_killed() && keep(e);
        let mut entries: Vec<Arc<ClientEntry>> =
            self.entries.iter().filter(|e| listed(e.value())).map(|e| Arc::clone(e.value())).collect();
        entries.sort_by_key(|e| e.id);
        let now = self.now_ms();
        let mut out = String::new();
        for entry in entries {
            out.push_str(&entry.line(now, names, format, asking));
        }
        out
    }

    /// `CLIENT LIST ID …`: the clients with these ids, in the order asked, each as often as asked
    /// (Redis looks each id up in turn).
    pub fn list_ids(&self, ids: &[i64], names: &CommandTable, format: LineFormat, asking: Option<Asking>) -> String {
        let now = self.now_ms();
        let found = ids.iter().filter_map(|&id| self.entry(u64::try_from(id).ok()?).filter(|e| !e.is_killed()));
        found.map(|entry| entry.line(now, names, format, asking)).collect()
    }

    /// Closes the clients `matches` accepts; returns how many (one killed already is gone).
    pub fn kill(&self, matches: impl Fn(&ClientEntry) -> bool) -> usize {
        let mut killed = 0;
        for entry in self.entries.iter().filter(|e| !e.is_killed() && matches(e.value())) {
            entry.killed.store(true, Ordering::Relaxed);
            entry.signal();
            killed += 1;
        }
        killed
    }

    /// `CLIENT PAUSE`: a longer pause replaces a shorter one, and `ALL` wins over `WRITE`, as in
    /// Redis.
    pub fn pause(&self, timeout: Duration, writes_only: bool) {
        let until = Instant::now() + timeout;
        if let Ok(mut pause) = self.pause.lock() {
            let merged = match *pause {
                Some(old) if old.until > Instant::now() => {
                    Pause { until: old.until.max(until), writes_only: old.writes_only && writes_only }
                }
                _ => Pause { until, writes_only },
            };
            *pause = Some(merged);
            self.paused.store(true, Ordering::Release);
        }
    }

    /// `CLIENT UNPAUSE`: held clients go on at once.
    pub fn unpause(&self) {
        if let Ok(mut pause) = self.pause.lock() {
            *pause = None;
            self.paused.store(false, Ordering::Release);
        }
        self.signal_all();
    }

    /// Has every client look at what it holds again (a pause ended, or lets more through) and at
    /// the idle timeout (a `CONFIG SET timeout` changed it).
    pub fn signal_all(&self) {
        for entry in self.entries.iter() {
            entry.signal();
        }
    }

    /// The pause in force, if any. Asked for every request: the usual answer (no pause) is one
    /// load, inlined.
    #[inline]
    pub fn current_pause(&self) -> Option<Pause> {
        match self.paused.load(Ordering::Acquire) {
            true => self.pause_in_force(),
            false => None,
        }
    }

    /// [`Clients::current_pause`] once a pause was set: apart, so that the inlined check stays
    /// one load. Clears a pause whose time is up.
    #[inline(never)]
    fn pause_in_force(&self) -> Option<Pause> {
        let mut pause = self.pause.lock().ok()?;
        match *pause {
            Some(p) if p.until > Instant::now() => Some(p),
            _ => {
                *pause = None;
                self.paused.store(false, Ordering::Release);
                None
            }
        }
    }
}

impl ClientEntry {
    /// Copies what `CLIENT LIST` shows of `state`; called when the client changes it.
    pub fn describe(&self, state: &ClientState) {
        let text = |v: &Option<Vec<u8>>| v.as_deref().map(String::from_utf8_lossy).unwrap_or_default().into_owned();
        let description = Description {
            name: text(&state.name),
            user: state.user.as_ref().map_or_else(String::new, |u| u.name.clone()),
            lib_name: text(&state.lib_name),
            lib_ver: text(&state.lib_ver),
            resp: if state.protocol == Protocol::Resp3 { 3 } else { 2 },
            modes: state.modes,
        };
        if let Ok(mut current) = self.description.lock() {
            *current = description;
        }
    }

    pub fn set_subscribed(&self, subscribed: bool) {
        self.subscribed.store(subscribed, Ordering::Relaxed);
    }

    pub fn is_subscribed(&self) -> bool {
        self.subscribed.load(Ordering::Relaxed)
    }

    /// The client is blocked on `keys` (none: in WAIT), with a timeout or not; a block that a
    /// key's deletion ends (XREADGROUP) with `unblock_on_nokey`.
    pub fn block(&self, keys: Vec<Bytes>, unblock_on_nokey: bool, with_timeout: bool) {
        let mut held = self.keys_held();
        held.blocking = keys;
        held.unblock_on_nokey = unblock_on_nokey;
        self.blocked_with_timeout.store(with_timeout, Ordering::Relaxed);
        self.blocked.store(true, Ordering::Release);
    }

    /// A request of the client waits out a CLIENT PAUSE (`true`), or no longer does.
    pub fn set_postponed(&self, postponed: bool) {
        self.postponed.store(postponed, Ordering::Relaxed);
    }

    pub fn is_postponed(&self) -> bool {
        self.postponed.load(Ordering::Relaxed)
    }

    /// The client is no longer blocked; a `CLIENT UNBLOCK` not yet carried out is dropped.
    pub fn unblocked(&self) {
        self.keys_held().blocking = Vec::new();
        self.blocked_with_timeout.store(false, Ordering::Relaxed);
        self.blocked.store(false, Ordering::Release);
        self.unblock.store(0, Ordering::Release);
    }

    /// The client watches `keys` too (a key watched again is counted once, as Redis'
    /// `watchForKey` skips it).
    pub fn watch<'k>(&self, keys: impl Iterator<Item = &'k [u8]>) {
        let mut held = self.keys_held();
        for key in keys {
            if !held.watched.iter().any(|watched| watched.as_ref() == key) {
                held.watched.push(Bytes::copy_from_slice(key));
            }
        }
        self.watched_keys.store(u32::try_from(held.watched.len()).unwrap_or(u32::MAX), Ordering::Relaxed);
    }

    /// The client watches nothing now (UNWATCH, EXEC, DISCARD, a reset).
    pub fn unwatch(&self) {
        if self.watched_keys.load(Ordering::Relaxed) == 0 {
            return;
        }
        self.keys_held().watched = Vec::new();
        self.watched_keys.store(0, Ordering::Relaxed);
    }

    fn keys_held(&self) -> std::sync::MutexGuard<'_, KeysHeld> {
        // A panic while holding the lock leaves valid lists: go on with them.
        self.keys_held.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A pending `CLIENT UNBLOCK`, taken (the session carries it out once).
    pub fn take_unblock(&self) -> Option<Unblock> {
        match self.unblock.swap(0, Ordering::AcqRel) {
            1 => Some(Unblock::Timeout),
            2 => Some(Unblock::Error),
            _ => None,
        }
    }

    /// Whether the session was asked to trim its buffers since it last looked.
    pub fn take_trim(&self) -> bool {
        self.trim.swap(false, Ordering::AcqRel)
    }

    pub fn user(&self) -> String {
        self.description.lock().map(|d| d.user.clone()).unwrap_or_default()
    }

    pub fn age(&self) -> Duration {
        self.connected.elapsed()
    }

    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Relaxed)
    }

    /// Queues a client-side caching message for the session and wakes it.
    pub fn deliver(&self, event: TrackingEvent) {
        self.inbox.lock().unwrap_or_else(|e| e.into_inner()).push(event);
        self.signal();
    }

    /// The messages queued since the last call.
    pub fn take_inbox(&self) -> Vec<TrackingEvent> {
        std::mem::take(&mut *self.inbox.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// What CLIENT LIST shows of the client's tracking: flags, and the redirect (-1: off).
    pub fn set_tracking(&self, flags: u8, redirect: i64) {
        self.tracking_flags.store(flags, Ordering::Relaxed);
        self.redirect.store(redirect, Ordering::Relaxed);
    }

    fn signal(&self) {
        self.signalled.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Records the command of the client's latest request (for `cmd=`).
    #[inline]
    pub fn record_command(&self, index: usize) {
        self.last_command.store(index, Ordering::Relaxed);
    }

    /// Ready when another session signalled this one (a kill, an unpause) since last asked.
    pub fn poll_signalled(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.waker.register(cx.waker());
        match self.signalled.swap(false, Ordering::AcqRel) {
            true => std::task::Poll::Ready(()),
            false => std::task::Poll::Pending,
        }
    }
}

mod command;
mod line;
pub use command::command;
pub use line::{Asking, ClientSocket, LineFormat, Traffic};

#[cfg(test)]
mod tests;
