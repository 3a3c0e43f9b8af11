//! Typed proxy configuration loaded from TOML, validated with the key and line in every error.
//!
//! [`Config::from_toml`] works in three passes over the text:
//! 1. parse it into a span-carrying document (syntax errors, inline secrets, missing `[upstream]`);
//! 2. deserialize the typed sections (unknown keys, wrong types, bad durations and addresses);
//! 3. check the rules that span several keys (listeners, TLS, auth, limits).
//!
//! Every error from passes 2 and 3 is pointed back at the offending key through the document of
//! pass 1, so `--check` can say `config error at line 12: upstream.connect_timeout: …`.
//! File existence of certificates, keys and ACL files is checked by the `tls` and `auth` modules.

use std::net::{Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::de::DeTable;

mod sections;
mod source;
#[cfg(test)]
mod tests;
mod values;

pub use sections::{LimitsConfig, LogConfig, LogFormat, MetricsConfig, RuntimeConfig, TrackingConfig};
use source::{SECRET_HINT, deserialize_error, find_inline_secret, line_of, locate, syntax_error};
#[cfg(test)]
use values::parse_duration;
use values::{duration, optional_addr, optional_count, optional_duration, optional_string};

/// The whole proxy configuration, one field per TOML section.
///
/// `Default` leaves `upstream.seeds` and both listeners empty, so it is not a valid config by
/// itself; it exists so absent sections take their defaults. [`Config::from_toml`] requires
/// `[upstream]` with at least one seed and one listener.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[listen]`: client-facing (downstream) listeners.
    pub listen: ListenConfig,
    /// `[limits]`: per-client resource bounds.
    pub limits: LimitsConfig,
    /// `[tls]`: server certificate for `listen.tls`; absent = no TLS listener possible.
    pub tls: Option<TlsConfig>,
    /// `[upstream]`: how the proxy reaches the Redis Cluster nodes (required).
    pub upstream: UpstreamConfig,
    /// `[topology]`: slot map refresh policy.
    pub topology: TopologyConfig,
    /// `[auth]`: client authentication; absent = anonymous clients, loopback listeners only.
    pub auth: Option<AuthConfig>,
    /// `[tracking]`: client-side caching (CLIENT TRACKING).
    pub tracking: TrackingConfig,
    /// `[metrics]`: the HTTP metrics and health endpoint.
    pub metrics: MetricsConfig,
    /// `[log]`: log output format and filter.
    pub log: LogConfig,
    /// `[runtime]`: async runtime sizing.
    pub runtime: RuntimeConfig,
    /// The file the config was read from, as an absolute path (`INFO server`'s `config_file`);
    /// `None` for a config built in memory.
    #[serde(skip)]
    pub file: Option<PathBuf>,
}

/// `[listen]`: where clients connect and how many may.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenConfig {
    /// TLS listener address; needs `[tls]`. `""` or absent = off.
    #[serde(deserialize_with = "optional_addr")]
    pub tls: Option<SocketAddr>,
    /// Plain-text listener address. `""` or absent = off.
    #[serde(deserialize_with = "optional_addr")]
    pub plain: Option<SocketAddr>,
    /// Connections accepted at once over all listeners; further clients are refused.
    pub max_clients: usize,
    /// How long shutdown waits for in-flight replies before closing connections.
    #[serde(deserialize_with = "duration")]
    pub shutdown_timeout: Duration,
    /// Close clients that neither send nor are sent anything for this long; `"0s"` or absent =
    /// never.
    #[serde(deserialize_with = "optional_duration")]
    pub idle_timeout: Option<Duration>,
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            tls: None,
            plain: None,
            max_clients: 10_000,
            shutdown_timeout: Duration::from_secs(10),
            idle_timeout: None,
        }
    }
}

/// `[tls]`: the server certificate presented on `listen.tls`. No `Default`: both files are required.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// CA bundle for client certificates; set = mutual TLS required. `""` or absent = off.
    #[serde(default, deserialize_with = "optional_string")]
    pub client_ca: Option<PathBuf>,
    /// Log a client in as the ACL user its certificate names (Valkey's `tls-auth-clients-user`):
    /// `"off"` (default), `"cn"` (the subject's common name) or `"san"` (the first DNS, e-mail or
    /// URI subject alternative name). Needs `client_ca` and `[auth] acl_file`.
    #[serde(default)]
    pub client_user: CertificateUser,
}

/// Which field of a client certificate names its ACL user (`tls.client_user`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CertificateUser {
    #[default]
    Off,
    /// The subject's common name.
    Cn,
    /// The first subject alternative name of type DNS, e-mail or URI.
    San,
}

/// `[upstream]`: the Redis Cluster nodes and how the proxy connects to them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// `host:port` of cluster nodes to learn the topology from; at least one.
    pub seeds: Vec<String>,
    /// Redis ACL user the proxy authenticates as.
    #[serde(deserialize_with = "optional_string")]
    pub user: Option<String>,
    /// Name of the environment variable holding that user's password (never the password).
    #[serde(deserialize_with = "optional_string")]
    pub password_env: Option<String>,
    /// Use TLS to the Redis nodes (then `ca` is required).
    pub tls: bool,
    /// CA bundle that signed the nodes' certificates.
    #[serde(deserialize_with = "optional_string")]
    pub ca: Option<PathBuf>,
    /// Client certificate for mutual TLS to the nodes; goes with `client_key`.
    #[serde(deserialize_with = "optional_string")]
    pub client_cert: Option<PathBuf>,
    /// Private key for `client_cert`.
    #[serde(deserialize_with = "optional_string")]
    pub client_key: Option<PathBuf>,
    /// Pipelined connections per node, 1..=64; `None` (absent or `0`) = automatic, see
    /// [`Config::connections_per_node`].
    #[serde(deserialize_with = "optional_count")]
    pub connections_per_node: Option<usize>,
    /// Own connections each master keeps open ahead of need per protocol and node-side user, for
    /// new clients' transactions and blocking commands (`upstream/spares.rs`); 0: opened on use.
    pub spare_connections: usize,
    /// Bound on establishing one node connection (TCP, TLS, AUTH).
    #[serde(deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// Bound on one upstream reply.
    #[serde(deserialize_with = "duration")]
    pub command_timeout: Duration,
    /// How long a request that never reached its node (the master unreachable, `CLUSTERDOWN`, a
    /// slot without an owner) is held for the cluster to fail over before it fails; `0s`: not held.
    #[serde(deserialize_with = "duration")]
    pub failover_wait: Duration,
    /// Which nodes serve read-only commands.
    pub read_from: ReadFrom,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            seeds: Vec::new(),
            user: None,
            password_env: None,
            tls: false,
            ca: None,
            client_cert: None,
            client_key: None,
            connections_per_node: None,
            spare_connections: 2,
            connect_timeout: Duration::from_secs(1),
            command_timeout: Duration::from_secs(2),
            failover_wait: Duration::from_secs(15),
            read_from: ReadFrom::Master,
        }
    }
}

/// Where read-only commands go (`upstream.read_from`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReadFrom {
    /// `"master"`: every command goes to the slot's master.
    #[default]
    Master,
    /// `"prefer-replica"`: reads go to a replica, to the master when none is up.
    PreferReplica,
    /// `"replica"`: reads go to replicas only.
    Replica,
}

/// `[topology]`: when the slot map is refreshed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopologyConfig {
    /// Period of the background `CLUSTER SLOTS` poll.
    #[serde(deserialize_with = "duration")]
    pub refresh_interval: Duration,
    /// Refresh at once when a node answers `-MOVED`.
    pub refresh_on_moved: bool,
}

impl Default for TopologyConfig {
    fn default() -> Self {
        Self { refresh_interval: Duration::from_secs(10), refresh_on_moved: true }
    }
}

/// `[auth]`: who clients may be.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Users in Redis ACL syntax. `""` or absent = none.
    #[serde(deserialize_with = "optional_string")]
    pub acl_file: Option<PathBuf>,
    /// Let clients that never `AUTH` act as the default user with all rights.
    pub allow_anonymous: bool,
}

/// Why a configuration was rejected; every variant names what to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file given to [`Config::load`].
        path: PathBuf,
        /// The I/O error (not found, permission denied, not UTF-8).
        source: std::io::Error,
    },
    /// The text is not valid TOML.
    #[error("{}, column {column}: invalid TOML: {message}", prefix(.file, &Some(*.line)))]
    Syntax {
        /// The file, when loaded with [`Config::load`].
        file: Option<PathBuf>,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column (in characters) of the error.
        column: usize,
        /// What the TOML parser expected.
        message: String,
    },
    /// A key is unknown, missing, of the wrong type, or holds a value the proxy does not accept.
    #[error("{}: {key}: {message}", prefix(.file, .line))]
    Invalid {
        /// The file, when loaded with [`Config::load`].
        file: Option<PathBuf>,
        /// 1-based line of the key (or of its section when the key is absent); `None` when neither
        /// appears in the file.
        line: Option<usize>,
        /// Dotted key path, e.g. `upstream.connect_timeout` or `upstream.seeds[1]`.
        key: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// `upstream.password_env` names an environment variable that is unset, empty or not UTF-8.
    #[error("upstream.password_env: environment variable {var} {problem}")]
    PasswordEnv {
        /// The variable name.
        var: String,
        /// `"is not set"`, `"is empty"` or `"is not valid UTF-8"`.
        problem: &'static str,
    },
}

impl ConfigError {
    /// The dotted key the error is about, when there is one.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Invalid { key, .. } => Some(key),
            Self::PasswordEnv { .. } => Some("upstream.password_env"),
            Self::Read { .. } | Self::Syntax { .. } => None,
        }
    }

    /// The 1-based line in the config text the error points at, when known.
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::Syntax { line, .. } => Some(*line),
            Self::Invalid { line, .. } => *line,
            Self::Read { .. } | Self::PasswordEnv { .. } => None,
        }
    }

    fn in_file(mut self, path: &Path) -> Self {
        if let Self::Syntax { file, .. } | Self::Invalid { file, .. } = &mut self {
            *file = Some(path.to_path_buf());
        }
        self
    }
}

fn prefix(file: &Option<PathBuf>, line: &Option<usize>) -> String {
    let mut out = String::from("config error");
    if let Some(file) = file {
        out.push_str(&format!(" in {}", file.display()));
    }
    if let Some(line) = line {
        out.push_str(&format!(" at line {line}"));
    }
    out
}

/// A rule violation found after deserializing, before its line is known.
struct Problem {
    key: String,
    message: String,
}

fn problem(key: impl Into<String>, message: impl Into<String>) -> Result<(), Problem> {
    let (key, message) = (key.into(), message.into());
    Err(Problem { key, message })
}

impl Config {
    /// Parses and validates a config document.
    ///
    /// # Errors
    /// [`ConfigError::Syntax`] for malformed TOML, [`ConfigError::Invalid`] for anything else,
    /// both with the line (and for `Invalid` the dotted key) to fix.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let doc = DeTable::parse(text).map_err(|e| syntax_error(text, &e))?;
        let doc = doc.into_inner();
        let invalid = |key: String, message: String| {
            let line = locate(&doc, &key).map(|span| line_of(text, span.start));
            ConfigError::Invalid { file: None, line, key, message }
        };
        // Checked on the raw document: a secret must be refused before anything else, and
        // deny_unknown_fields alone would only call it an unknown key.
        if let Some(key) = find_inline_secret(&doc) {
            return Err(invalid(key, SECRET_HINT.to_owned()));
        }
        if !doc.contains_key("upstream") {
            let hint = "missing [upstream] section: set upstream.seeds = [\"host:port\", ...]";
            return Err(invalid("upstream".to_owned(), hint.to_owned()));
        }
        let config: Config = toml::from_str(text).map_err(|e| deserialize_error(text, &doc, &e))?;
        config.validate().map_err(|p| invalid(p.key, p.message))?;
        Ok(config)
    }

    /// The async worker threads to run: as configured, else one per core, but a single thread
    /// (tokio's current-thread scheduler) on machines of two cores or fewer. There the proxy
    /// shares the cores with its clients or nodes, and a second worker costs more in wake-ups
    /// than it adds (measured: 12.8 vs 14–16 µs of CPU per request, bench/RESULTS.md).
    pub fn worker_threads(&self) -> usize {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        self.runtime.worker_threads.unwrap_or(if cores <= 2 { 1 } else { cores })
    }

    /// Pipelined connections per node: as configured, else one with a single worker thread and
    /// two otherwise. Every connection writes its own batches; on one thread a single connection
    /// per node makes them the largest (over 13 alternating rounds of `bench/ab.sh`, equal or a
    /// few percent faster in most rows; bench/RESULTS.md), while several threads need several
    /// connections to work on one node at once.
    pub fn connections_per_node(&self) -> usize {
        self.upstream.connections_per_node.unwrap_or(if self.worker_threads() == 1 { 1 } else { 2 })
    }

    /// Reads and validates the config file at `path`.
    ///
    /// # Errors
    /// [`ConfigError::Read`] when the file cannot be read; otherwise as [`Config::from_toml`],
    /// with the file named in the message.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let mut config = Config::from_toml(&text).map_err(|e| e.in_file(path))?;
        config.file = Some(std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()));
        Ok(config)
    }

    /// The upstream password read from the env var named by password_env (None when unset).
    ///
    /// # Errors
    /// [`ConfigError::PasswordEnv`], naming the variable, when `password_env` is set but the
    /// variable is missing, empty or not UTF-8.
    pub fn upstream_password(&self) -> Result<Option<String>, ConfigError> {
        let Some(var) = &self.upstream.password_env else {
            return Ok(None);
        };
        let fail = |problem| Err(ConfigError::PasswordEnv { var: var.clone(), problem });
        match std::env::var(var) {
            Ok(value) if value.is_empty() => fail("is empty"),
            Ok(value) => Ok(Some(value)),
            Err(std::env::VarError::NotPresent) => fail("is not set"),
            Err(std::env::VarError::NotUnicode(_)) => fail("is not valid UTF-8"),
        }
    }

    /// Checks the rules serde cannot express, returning the first broken one.
    fn validate(&self) -> Result<(), Problem> {
        let (listen, limits, up) = (&self.listen, &self.limits, &self.upstream);
        if listen.tls.is_none() && listen.plain.is_none() {
            problem("listen", "no listener: set listen.plain, listen.tls or both")?;
        }
        if listen.tls.is_some() && self.tls.is_none() {
            problem("listen.tls", "a TLS listener needs a [tls] section with cert and key")?;
        }
        if let Some(tls) = &self.tls
            && tls.client_user != CertificateUser::Off
        {
            if tls.client_ca.is_none() {
                problem("tls.client_user", "needs tls.client_ca: only a verified client certificate may name a user")?;
            }
            if self.auth.as_ref().and_then(|a| a.acl_file.as_ref()).is_none() {
                problem("tls.client_user", "needs [auth] acl_file: the users certificates name live there")?;
            }
        }
        let counts = [
            ("listen.max_clients", listen.max_clients),
            ("limits.max_request_bytes", limits.max_request_bytes),
            ("limits.max_array_len", limits.max_array_len),
            ("limits.max_pipeline", limits.max_pipeline),
            ("limits.client_output_limit", limits.client_output_limit),
            ("limits.held_requests", limits.held_requests),
            ("limits.held_bytes", limits.held_bytes),
            ("limits.held_requests_per_client", limits.held_requests_per_client),
            ("limits.held_bytes_per_client", limits.held_bytes_per_client),
            ("tracking.max_keys", self.tracking.max_keys),
        ];
        if let Some((key, _)) = counts.into_iter().find(|(_, n)| *n == 0) {
            problem(key, "must be at least 1")?;
        }
        // Redis' `maxclients` is an `unsigned int`.
        if u32::try_from(listen.max_clients).is_err() {
            problem("listen.max_clients", "must be at most 4294967295, as Redis' maxclients")?;
        }
        let timeouts = [
            ("listen.shutdown_timeout", listen.shutdown_timeout),
            ("upstream.connect_timeout", up.connect_timeout),
            ("upstream.command_timeout", up.command_timeout),
            ("topology.refresh_interval", self.topology.refresh_interval),
            ("tracking.liveness_interval", self.tracking.liveness_interval),
        ];
        if let Some((key, _)) = timeouts.into_iter().find(|(_, d)| d.is_zero()) {
            problem(key, "must be greater than 0s")?;
        }
        if let Some(tls) = &self.tls {
            let files = [("tls.cert", &tls.cert), ("tls.key", &tls.key)];
            if let Some((key, _)) = files.into_iter().find(|(_, p)| p.as_os_str().is_empty()) {
                problem(key, "must not be empty")?;
            }
        }
        self.validate_upstream()?;
        self.validate_auth()?;
        if let Err(message) = check_log_filter(&self.log.level) {
            problem("log.level", message)?;
        }
        if self.runtime.worker_threads.is_some_and(|n| n > 1024) {
            problem("runtime.worker_threads", "must be at most 1024 (0 = automatic)")?;
        }
        Ok(())
    }

    fn validate_upstream(&self) -> Result<(), Problem> {
        let up = &self.upstream;
        if up.seeds.is_empty() {
            problem("upstream.seeds", "at least one seed is required, e.g. [\"10.0.1.10:6379\"]")?;
        }
        for (i, seed) in up.seeds.iter().enumerate() {
            if let Err(message) = check_seed(seed) {
                problem(format!("upstream.seeds[{i}]"), message)?;
            }
        }
        let var_ok = |var: &String| {
            var.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        if !up.password_env.as_ref().is_none_or(var_ok) {
            // The value is not echoed: a misplaced password must not end up in logs.
            let hint = "must be the name of an environment variable (letters, digits, _)";
            problem("upstream.password_env", format!("{hint}, not the password"))?;
        }
        let files = [("ca", &up.ca), ("client_cert", &up.client_cert), ("client_key", &up.client_key)];
        if let Some((name, _)) = files.iter().find(|(_, path)| !up.tls && path.is_some()) {
            problem(format!("upstream.{name}"), "is set but upstream.tls is false")?;
        }
        if up.tls && up.ca.is_none() {
            problem("upstream.ca", "upstream.tls = true needs the CA that signed the nodes' certs")?;
        }
        match (&up.client_cert, &up.client_key) {
            (Some(_), None) => problem("upstream.client_key", "required with client_cert")?,
            (None, Some(_)) => problem("upstream.client_cert", "required with client_key")?,
            _ => {}
        }
        if up.connections_per_node.is_some_and(|n| n > 64) {
            problem("upstream.connections_per_node", "must be between 1 and 64 (0 = automatic)")?;
        }
        if up.spare_connections > 16 {
            problem("upstream.spare_connections", "must be between 0 and 16")?;
        }
        Ok(())
    }

    fn validate_auth(&self) -> Result<(), Problem> {
        let fix = "add [auth] with acl_file = \"config/users.acl\" or allow_anonymous = true";
        let Some(auth) = &self.auth else {
            // Without [auth] every client has all rights, which is only safe on loopback.
            let listeners = [("listen.tls", self.listen.tls), ("listen.plain", self.listen.plain)];
            for (key, addr) in listeners {
                if let Some(addr) = addr.filter(|a| !a.ip().is_loopback()) {
                    let why = "is not a loopback address and there is no [auth] section";
                    problem(key, format!("{addr} {why}: {fix}"))?;
                }
            }
            return Ok(());
        };
        if auth.acl_file.is_none() && !auth.allow_anonymous {
            problem("auth", "needs acl_file = \"config/users.acl\", allow_anonymous = true, or both")?;
        }
        Ok(())
    }
}

/// Checks a seed is `host:port`: a DNS name or IPv4 address, or a bracketed IPv6 address.
fn check_seed(seed: &str) -> Result<(), String> {
    let bad = || format!("invalid seed {seed:?} (expected host:port, e.g. 10.0.1.10:6379)");
    let (host, port) = seed.rsplit_once(':').ok_or_else(bad)?;
    let host_ok = match host.strip_prefix('[') {
        Some(inner) => inner.strip_suffix(']').is_some_and(|ip| ip.parse::<Ipv6Addr>().is_ok()),
        None => {
            let name_char = |c: char| c.is_ascii_alphanumeric() || "-._".contains(c);
            !host.is_empty() && host.chars().all(name_char)
        }
    };
    match port.parse::<u16>() {
        Ok(p) if host_ok && p > 0 => Ok(()),
        _ => Err(bad()),
    }
}

const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Checks a level filter with a subset of `EnvFilter` syntax: comma-separated `level` or
/// `target=level` directives. A bare word must be a level, so a typo is not read as a target.
fn check_log_filter(filter: &str) -> Result<(), String> {
    let target_char = |c: char| c.is_ascii_alphanumeric() || "_:-.".contains(c);
    let valid = |directive: &str| {
        let level = match directive.trim().split_once('=') {
            Some((target, level)) => (!target.is_empty() && target.chars().all(target_char)).then_some(level),
            None => Some(directive.trim()),
        };
        level.is_some_and(|level| LEVELS.iter().any(|l| l.eq_ignore_ascii_case(level)))
    };
    if filter.split(',').all(valid) {
        return Ok(());
    }
    let levels = LEVELS.join(", ");
    let example = "\"info,redisforge_proxy=debug\"";
    Err(format!("invalid log level {filter:?} (expected {levels}, or directives like {example})"))
}
