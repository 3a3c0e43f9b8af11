//! What every soak worker shares: the stop flag, the record of failures injected, and what the
//! workers saw (errors, wrong replies, writes lost by Redis).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// What happened to the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// SIGKILL, then a restart some seconds later.
    Kill,
    /// SIGSTOP, SIGCONT some seconds later.
    Pause,
    /// Cut from the other nodes; the proxy still reaches it.
    SplitFromNodes,
    /// Cut from the other nodes and the proxy.
    SplitFromEveryone,
    /// A slot moved to another master (MIGRATE under load, ASK/MOVED).
    Migration,
}

impl Kind {
    /// Whether requests may fail because of it: everything but a migration, which must cost
    /// clients nothing.
    pub fn is_fault(self) -> bool {
        self != Kind::Migration
    }
}

/// One injected event, from its start until the cluster settled again.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: Kind,
    pub node: String,
    /// The slots the node served as a master when the event began (empty for a replica):
    /// acknowledged writes on them may be lost (asynchronous replication).
    pub slots: Arc<Vec<bool>>,
    pub start: Instant,
    pub end: Option<Instant>,
    /// What the driver measured (promotion, recovery).
    pub note: String,
}

/// An error reply or a broken connection, with when the request went out and came back.
#[derive(Debug, Clone)]
pub struct Failure {
    pub sent: Instant,
    pub answered: Instant,
    pub text: String,
}

/// How long after an event closes requests sent before may still fail: they were held or
/// being retried when the cluster settled.
pub const ERROR_GRACE: Duration = Duration::from_secs(2);
/// How long after a fault closes its effects on data may still surface: a write that timed out at
/// the proxy while its node was paused sits in the node's socket buffer and is applied when the
/// node wakes, possibly after a later read on another connection (its outcome was reported
/// unknown, as a client-side timeout on one Redis node would).
const RISK_GRACE: Duration = Duration::from_secs(2);

#[derive(Default)]
pub struct Soak {
    pub stop: AtomicBool,
    pub ops: AtomicU64,
    /// Acknowledged writes Redis lost in a failover (a later read found an older value).
    pub lost: AtomicU64,
    pub wrong: Mutex<Vec<String>>,
    pub failures: Mutex<Vec<Failure>>,
    pub events: Mutex<Vec<Event>>,
    pub scans_checked: AtomicU64,
    pub scans_skipped: AtomicU64,
    /// When the soak started, for times in messages.
    pub began: OnceLock<Instant>,
}

impl Soak {
    pub fn wrong(&self, what: String) {
        self.wrong.lock().expect("wrong lock").push(what);
    }

    pub fn failed(&self, sent: Instant, text: String) {
        self.failures.lock().expect("failures lock").push(Failure { sent, answered: Instant::now(), text });
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Seconds since the soak began, for messages.
    pub fn at(&self, t: Instant) -> String {
        let began = self.began.get().copied().unwrap_or(t);
        format!("+{:.1}s", t.saturating_duration_since(began).as_secs_f64())
    }

    /// Records the start of an event; returns its index for [`Soak::close`].
    pub fn open(&self, kind: Kind, node: &str, slots: Arc<Vec<bool>>) -> usize {
        let mut events = self.events.lock().expect("events lock");
        events.push(Event {
            kind,
            node: node.to_owned(),
            slots,
            start: Instant::now(),
            end: None,
            note: String::new(),
        });
        events.len() - 1
    }

    pub fn close(&self, index: usize, note: String) {
        let mut events = self.events.lock().expect("events lock");
        events[index].end = Some(Instant::now());
        events[index].note = note;
    }

    /// Whether any event overlapped `from..=to`.
    pub fn unsettled(&self, from: Instant, to: Instant) -> bool {
        self.events.lock().expect("events lock").iter().any(|e| overlaps(e, from, to, Duration::ZERO))
    }

    /// Whether a failure of `slot`'s master overlapped `from..=to`: a value acknowledged at `from`
    /// and not found at `to` was lost by Redis, not by the proxy.
    pub fn at_risk(&self, slot: u16, from: Instant, to: Instant) -> bool {
        self.events
            .lock()
            .expect("events lock")
            .iter()
            .any(|e| e.kind.is_fault() && e.slots[usize::from(slot)] && overlaps(e, from, to, RISK_GRACE))
    }

    /// Whether a request sent at `sent` and answered at `answered` overlapped a fault (plus the
    /// grace after it): the only requests allowed to fail.
    pub fn in_fault_window(&self, f: &Failure) -> bool {
        self.events
            .lock()
            .expect("events lock")
            .iter()
            .any(|e| e.kind.is_fault() && overlaps(e, f.sent, f.answered, ERROR_GRACE))
    }
}

/// Whether `event` (extended by `grace` at its end; still open counts as open) overlaps `from..=to`.
fn overlaps(event: &Event, from: Instant, to: Instant, grace: Duration) -> bool {
    event.start <= to && event.end.is_none_or(|end| end + grace >= from)
}
