//! The small optional sections of the config file: `[limits]`, `[tracking]`, `[metrics]`,
//! `[log]`, `[runtime]`.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::values::{duration, optional_addr, optional_count};

/// `[limits]`: bounds that keep one client from exhausting the proxy's memory.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request (one command with its arguments) in bytes, like `proto-max-bulk-len`.
    pub max_request_bytes: usize,
    /// Most elements in one request array.
    pub max_array_len: usize,
    /// Requests queued per client before the proxy stops reading from it.
    pub max_pipeline: usize,
    /// Bytes of buffered replies to a client that does not read before it is disconnected.
    pub client_output_limit: usize,
    /// Bytes of buffered output at which a client without subscriptions is disconnected at once:
    /// the hard limit of Redis' `client-output-buffer-limit normal` class (default 0, none, as
    /// Redis'; `client_output_limit` bounds such a client anyway).
    pub normal_output_limit: usize,
    /// Bytes of buffered output a client without subscriptions may keep for at most
    /// `normal_output_soft_time` (the class's soft limit; default 0, none, as Redis').
    pub normal_output_soft_limit: usize,
    /// How long a client without subscriptions may stay over `normal_output_soft_limit`.
    #[serde(deserialize_with = "duration")]
    pub normal_output_soft_time: Duration,
    /// Bytes of buffered output at which a client with subscriptions is disconnected at once:
    /// the hard limit of Redis' `client-output-buffer-limit pubsub` class (default 32 MiB, as
    /// Redis'); 0: none but `client_output_limit`.
    pub pubsub_output_limit: usize,
    /// Bytes of buffered output a client with subscriptions may keep for at most
    /// `pubsub_output_soft_time` (the class's soft limit; default 8 MiB for 60 s, as Redis');
    /// 0: no soft limit.
    pub pubsub_output_soft_limit: usize,
    /// How long a client with subscriptions may stay over `pubsub_output_soft_limit`.
    #[serde(deserialize_with = "duration")]
    pub pubsub_output_soft_time: Duration,
    /// Requests held at once, proxy-wide, while the cluster fails over (`upstream.failover_wait`).
    pub held_requests: usize,
    /// Bytes of requests held at once, proxy-wide.
    pub held_bytes: usize,
    /// Requests one client may have held at once.
    pub held_requests_per_client: usize,
    /// Bytes of requests one client may have held at once.
    pub held_bytes_per_client: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_request_bytes: 512 * 1024 * 1024,
            max_array_len: 1_048_576,
            max_pipeline: 10_000,
            client_output_limit: 64 * 1024 * 1024,
            normal_output_limit: 0,
            normal_output_soft_limit: 0,
            normal_output_soft_time: Duration::ZERO,
            pubsub_output_limit: 32 * 1024 * 1024,
            pubsub_output_soft_limit: 8 * 1024 * 1024,
            pubsub_output_soft_time: Duration::from_secs(60),
            held_requests: 100_000,
            held_bytes: 256 * 1024 * 1024,
            held_requests_per_client: 10_000,
            held_bytes_per_client: 64 * 1024 * 1024,
        }
    }
}

/// `[tracking]`: client-side caching through the proxy (`crate::tracking`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrackingConfig {
    /// Keys remembered for invalidation, like Redis' `tracking-table-max-keys`: beyond it the
    /// oldest key is invalidated for the clients that read it. Bounds the table's memory (about
    /// key length + 100 bytes per key).
    pub max_keys: usize,
    /// How often each master's tracking stream is checked with a `PING`; a stream that does not
    /// answer within `upstream.command_timeout` is taken as lost (and every cache flushed).
    #[serde(deserialize_with = "duration")]
    pub liveness_interval: Duration,
}

impl Default for TrackingConfig {
    fn default() -> Self {
        Self { max_keys: 1_000_000, liveness_interval: Duration::from_secs(1) }
    }
}

/// `[metrics]`: the HTTP endpoint serving `/metrics`, `/healthz` and `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Listen address; `""` = no metrics endpoint.
    #[serde(deserialize_with = "optional_addr")]
    pub listen: Option<SocketAddr>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { listen: Some(SocketAddr::from(([127, 0, 0, 1], 9901))) }
    }
}

/// `[log]`: log output.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Line format.
    pub format: LogFormat,
    /// A level or `EnvFilter`-style directive list, e.g. `"info,redisforge_proxy=debug"`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Json, level: "info".to_owned() }
    }
}

/// Log line format (`log.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `"json"`: one JSON object per line.
    #[default]
    Json,
    /// `"text"`: human-readable lines.
    Text,
}

/// `[runtime]`: async runtime sizing.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Worker threads; `None` (absent or `0`) = one per CPU core, or a single thread on machines
    /// with two cores or fewer.
    #[serde(deserialize_with = "optional_count")]
    pub worker_threads: Option<usize>,
}
