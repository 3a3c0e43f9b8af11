//! # RedisForge proxy
//!
//! One RESP endpoint in front of a whole Redis Cluster: clients talk to the proxy as to a single
//! Redis node, and the proxy routes every command to the node that owns its keys.
//!
//! # Layout
//! A request's path through the crate, top to bottom:
//!
//! - [`listener`] accepts client connections (connection limit) and spawns a session for each;
//! - [`session`] owns one client: reads pipelined requests, dispatches them, and writes replies back
//!   in request order;
//! - [`resp`] frames requests (RESP arrays and inline commands) and scans reply boundaries;
//! - [`command`] knows every command: arity, flags, key positions, how the proxy handles it;
//! - [`router`] turns a request into a [`router::Route`]: one slot, split per slot, fan-out to every
//!   master, answered locally, or refused;
//! - [`upstream`] holds per-node pools of pipelined connections to Redis;
//! - [`topology`] keeps the immutable slot map snapshot and refreshes it.
//!
//! Beside the path: [`config`] (typed TOML config), [`tls`] (certificates, SIGHUP reload),
//! [`auth`] (client users from a Redis ACL file), [`metrics`] (Prometheus metrics, `/healthz`,
//! `/readyz`), [`health`] (the cluster health poller that feeds them), [`logs`] (rate-limited
//! logging), [`server`] (wiring),
//! [`slot`] (key → slot hashing), [`redirect`] (pure MOVED/ASK decisions), [`merge`] (combining
//! split and fanned-out replies).
//!
//! The pure core (`resp`, `command`, `slot`, `redirect`, `merge`, `topology::map`) does no I/O.
#![forbid(unsafe_code)]

pub mod auth;
pub mod command;
pub mod config;
pub mod error;
pub mod executor;
pub mod health;
pub mod listener;
pub mod logs;
pub mod merge;
pub mod metrics;
pub mod redirect;
pub mod resp;
pub mod router;
pub mod server;
pub mod session;
pub mod shared;
/// Key → hash slot ([`redisforge_cluster::slot`], shared with the ops toolkit and the tests).
pub use redisforge_cluster::slot;
pub mod tls;
pub mod topology;
pub mod upstream;

/// The Redis version the proxy reports in `HELLO` and `INFO` (the command set it was built for).
pub const REDIS_COMPAT_VERSION: &str = "7.0.15";
