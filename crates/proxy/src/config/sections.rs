//! The small optional sections of the config file: `[tracking]`, `[metrics]`, `[log]`,
//! `[runtime]`.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::values::{duration, optional_addr, optional_count};

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
