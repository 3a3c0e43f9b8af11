//! # RedisForge proxy
//!
//! One RESP endpoint in front of a whole Redis Cluster: clients talk to the proxy as to a single
//! Redis node, and the proxy routes every command to the node that owns its keys.
//!
//! # Layout
//! A request's path through the crate, top to bottom (a request → a [`router::Route`] → a part
//! per node, [`executor::Part`]):
//!
//! - [`listener`] accepts client connections (connection limit) and spawns a session for each;
//! - [`session`] owns one client (the *downstream* side): `serve.rs` is its event loop (node
//!   replies handled by the connection that read them while it waits: `serve/handover.rs`),
//!   `request.rs` frames requests and runs Redis' admission checks (arity, login, ACL),
//!   `route.rs` carries out the route, `pipeline.rs` writes replies back in request order;
//!   transactions (`transaction.rs`), blocking commands (`blocking.rs`), subscriptions (`pubsub.rs`), local
//!   answers (`local.rs`, `clients.rs`) and operator commands (`admin.rs`) beside them;
//! - [`resp`] frames requests (RESP arrays and inline commands) and scans reply boundaries;
//! - [`command`] knows every command: arity, flags, key positions, how the proxy handles it;
//! - [`router`] turns a request into a [`router::Route`]: one slot, split per slot, fan-out to every
//!   master, answered locally, stateful, or refused;
//! - [`executor`] gets each part answered: chooses the node (`peer.rs`), sends it, and decides on
//!   the reply (`outcome.rs`: done, follow MOVED/ASK, reload a script, retry, fail);
//! - [`upstream`] holds per-node pools of pipelined connections to Redis (the *upstream* side);
//! - [`topology`] keeps the immutable slot map snapshot and refreshes it.
//!
//! Beside the path: [`error`] (the one error vocabulary, turned into RESP in one place),
//! [`shared`] (what every session shares), [`config`] (typed TOML config), [`tls`]
//! (certificates, SIGHUP reload), [`auth`] (client users from a Redis ACL file), [`metrics`]
//! (Prometheus metrics, `/healthz`, `/readyz`), [`health`] (the cluster health poller that feeds
//! them), [`logs`] (rate-limited logging), [`server`] (wiring), [`slot`] (key → slot hashing),
//! [`redirect`] (pure MOVED/ASK decisions), [`merge`] (combining split and fanned-out replies).
//!
//! The pure core (`resp`, `command`, `router`, `slot`, `redirect`, `merge`, `executor::outcome`,
//! `topology::map`) does no I/O.
#![forbid(unsafe_code)]

pub mod auth;
pub mod clock;
pub mod command;
pub mod config;
pub mod error;
pub mod executor;
pub mod fd_limit;
pub mod health;
pub mod identity;
pub mod listener;
pub mod logs;
pub mod merge;
pub mod metrics;
pub mod output_classes;
pub mod readiness;
pub mod redirect;
pub mod resp;
pub mod router;
pub mod server;
pub mod session;
pub mod shared;
pub mod socket;
/// Key → hash slot ([`redisforge_cluster::slot`], shared with the ops toolkit and the tests).
pub use redisforge_cluster::slot;
pub mod tls;
pub mod topology;
pub mod tracking;
pub mod upstream;
pub mod writes;

/// The Redis version the proxy reports in `HELLO` and `INFO` (the command set it was built for).
pub const REDIS_COMPAT_VERSION: &str = "7.0.15";

/// Valkey's own identity, when every node behind the proxy is Valkey (its INFO has
/// `valkey_version`; it reports `redis_version:7.2.4`): HELLO, INFO and CLIENT LIST answer as such
/// a node does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Valkey {
    /// `valkey_version` of the oldest node.
    pub version: String,
    /// The node runs with `extended-redis-compatibility yes`: HELLO calls it `redis` 7.2.4 and
    /// INFO has `redis_mode` (Valkey's `server_mode` otherwise).
    pub redis_compat: bool,
}

impl Valkey {
    /// Whether it is Valkey `major.minor` or later.
    pub fn at_least(&self, major: u64, minor: u64) -> bool {
        version_at_least(&self.version, major, minor)
    }
}

/// Whether `version` (`major.minor.patch`, as a node's `redis_version`) is `major.minor` or later:
/// the replies whose fields grew with Redis' versions follow the nodes behind the proxy.
pub fn version_at_least(version: &str, major: u64, minor: u64) -> bool {
    let key = version_key(version);
    let part = |i: usize| key.get(i).copied().unwrap_or(0);
    (part(0), part(1)) >= (major, minor)
}

/// `7.0.15` → `[7, 0, 15]`, for comparing versions (a missing part sorts first); unparsable parts
/// count as 0.
pub fn version_key(version: &str) -> Vec<u64> {
    version.split('.').map(|part| part.parse().unwrap_or(0)).collect()
}
