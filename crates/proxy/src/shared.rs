//! What every session shares: the command table, the topology, client limits and counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::auth::Access;
use crate::command::CommandTable;
use crate::config::ReadFrom;
use crate::executor::hold::HoldBudget;
use crate::executor::scripts;
use crate::metrics::Metrics;
use crate::resp::Limits;
use crate::session::clients;
use crate::topology::Topology;

/// What every session shares: the command table, the topology, limits and counters.
#[derive(Debug)]
pub struct Shared {
    pub metrics: Arc<Metrics>,
    pub table: Arc<CommandTable>,
    /// Who clients are and what they may do.
    pub access: Access,
    pub topology: Arc<Topology>,
    pub limits: Limits,
    /// Requests a client may have in flight before the proxy stops reading from it.
    pub max_pipeline: usize,
    /// Replies buffered for a client that does not read before it is disconnected.
    pub client_output_limit: usize,
    /// Redis' client classes' output limits, on top of `client_output_limit`.
    pub output_classes: crate::output_classes::OutputClasses,
    /// Clients the listener accepts at once (`listen.max_clients`, or the last `CONFIG SET
    /// maxclients` through the proxy), INFO's `maxclients`.
    pub max_clients: std::sync::atomic::AtomicUsize,
    /// Which field of a verified client certificate names the client's ACL user.
    pub certificate_user: crate::config::CertificateUser,
    /// How long requests for an unreachable node are retried (while the topology catches up).
    pub command_timeout: Duration,
    /// Close clients that neither send nor are sent anything for this long (`listen.idle_timeout`,
    /// or the last `CONFIG SET timeout` through the proxy).
    pub idle_timeout: IdleTimeout,
    /// Whether reads may go to replicas (`upstream.read_from`).
    pub read_from: ReadFrom,
    /// Refresh the topology at once on `MOVED` (`topology.refresh_on_moved`).
    pub refresh_on_moved: bool,
    pub stats: Stats,
    /// What `INFO server` reports about the proxy's process.
    pub identity: crate::identity::Identity,
    /// Whether each function may write, for what a CLIENT PAUSE WRITE lets through.
    pub functions: crate::executor::functions::FunctionFlags,
    /// Bounds and counts of requests held while the cluster fails over.
    pub hold: Arc<HoldBudget>,
    /// Scripts seen through EVAL and SCRIPT LOAD, by SHA1, for NOSCRIPT recovery.
    pub scripts: scripts::Scripts,
    /// The connected clients, for CLIENT LIST / KILL / PAUSE.
    pub clients: clients::Clients,
    /// Client-side caching: who tracks, which keys they read.
    pub tracking: Arc<crate::tracking::Hub>,
}

/// Process-wide counters shown by `INFO`.
#[derive(Debug)]
pub struct Stats {
    pub connected_clients: AtomicUsize,
    pub total_connections: AtomicU64,
    /// Clients disconnected for their output (INFO's `client_output_buffer_limit_disconnections`).
    pub output_limit_disconnections: AtomicU64,
    next_client_id: AtomicU64,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats {
            connected_clients: AtomicUsize::new(0),
            total_connections: AtomicU64::new(0),
            output_limit_disconnections: AtomicU64::new(0),
            next_client_id: AtomicU64::new(1),
        }
    }
}

impl Stats {
    /// A new client id, unique for the process' life (`CLIENT ID`).
    pub fn next_client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// The idle timeout, which a `CONFIG SET timeout` may change while clients are connected (every
/// session is then signalled to follow it).
#[derive(Debug, Default)]
pub struct IdleTimeout {
    /// Whole milliseconds, 0 for none.
    millis: AtomicU64,
    /// How many times it was turned off: a session that sees this change knows its clients'
    /// activity went untimed for a while, even if the timeout is back at the value it had.
    offs: AtomicU64,
}

impl IdleTimeout {
    pub fn new(timeout: Option<Duration>) -> IdleTimeout {
        let idle = IdleTimeout::default();
        idle.set(timeout);
        idle
    }

    pub fn get(&self) -> Option<Duration> {
        match self.millis.load(Ordering::Relaxed) {
            0 => None,
            millis => Some(Duration::from_millis(millis)),
        }
    }

    /// The timeout in force and how many times it was turned off, for a session to follow.
    pub fn now(&self) -> (Option<Duration>, u64) {
        (self.get(), self.offs.load(Ordering::Relaxed))
    }

    /// Whether clients are closed when idle: one load, asked for every read and write.
    #[inline]
    pub fn is_on(&self) -> bool {
        self.millis.load(Ordering::Relaxed) != 0
    }

    /// `None` (or a zero duration) turns it off; a part of a millisecond counts as a whole one.
    pub fn set(&self, timeout: Option<Duration>) {
        let millis = timeout.filter(|t| !t.is_zero()).map_or(0, |t| {
            let whole = u64::try_from(t.as_millis()).unwrap_or(u64::MAX);
            whole.max(1)
        });
        if millis == 0 {
            self.offs.fetch_add(1, Ordering::Relaxed);
        }
        self.millis.store(millis, Ordering::Relaxed);
    }
}
