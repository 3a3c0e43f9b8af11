//! [`Proxy`]: the `redisforge-proxy` binary run as a child process with a generated config.

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use redis::Connection;

use crate::cluster::Cluster;
use crate::conn::{Access, connect, connection_info};
use crate::ports::{PortGuard, reserve_port};
use crate::process::{self, Signal, Watchdog};
use crate::tls::NodeTls;

/// How long a proxy gets to answer PING after start.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Per-command timeout of connections handed to tests.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// The env var that carries the upstream ACL password to the proxy.
pub const UPSTREAM_PASSWORD_ENV: &str = "REDISFORGE_TEST_UPSTREAM_PASS";

/// How to run a proxy beyond the generated defaults.
///
/// The generated config has `[listen]`, `[upstream]`, `[metrics]` and `[log]`. `extra_toml` is
/// split at its `[section]` headers: a section named like a generated one replaces it whole, any
/// other is appended; lines before the first header go to the top of the file. Placeholders,
/// replaced everywhere: `@PLAIN@` and `@METRICS@` (the reserved `127.0.0.1:port` addresses),
/// `@TLS@` (a further reserved address, only reserved when used), `@SEEDS@` (a TOML array),
/// `@UPSTREAM_AUTH@` (the `user`/`password_env` lines, empty without an ACL user),
/// `@UPSTREAM_TLS@` (`tls`/`ca`/`client_cert`/`client_key` lines for a TLS-only cluster started
/// with [`Cluster::start_tls`], see [`NodeTls::proxy_upstream_toml`]; empty otherwise and with
/// the `*_with_seeds` constructors), `@DIR@` (the proxy's temp dir, e.g. for certs). So a test
/// that tunes `[upstream]` writes
/// `"[upstream]\nseeds = @SEEDS@\n@UPSTREAM_AUTH@\n@UPSTREAM_TLS@\ncommand_timeout = \"500ms\"\n"`.
#[derive(Clone, Debug, Default)]
pub struct ProxyOptions {
    /// TOML merged into the generated config (see above).
    pub extra_toml: String,
    /// Extra environment variables for the proxy process.
    pub env: Vec<(String, String)>,
    /// Extra command-line arguments after `--config FILE`.
    pub args: Vec<String>,
    /// Run this binary instead of [`proxy_bin`] (e.g. a stand-in, or a release build).
    pub bin: Option<PathBuf>,
}

/// A running `redisforge-proxy`; dropping it kills the process and removes its directory.
pub struct Proxy {
    child: Mutex<Child>,
    pid: u32,
    plain: PortGuard,
    metrics: PortGuard,
    tls: Option<PortGuard>,
    config_text: String,
    log_path: PathBuf,
    _watchdog: Watchdog,
    dir: tempfile::TempDir,
}

impl Proxy {
    /// Starts a proxy in front of `cluster` and waits until it answers PING.
    ///
    /// # Panics
    /// When the binary is missing, exits, or does not answer within 20 s (with its log tail).
    pub fn start(cluster: &Cluster, opts: ProxyOptions) -> Proxy {
        let proxy = Proxy::spawn(cluster, opts);
        if let Err(why) = proxy.wait_ready(READY_TIMEOUT) {
            panic!("{why}");
        }
        proxy
    }

    /// Starts a proxy with explicit seeds and upstream credentials and waits until it answers.
    ///
    /// # Panics
    /// As [`Proxy::start`].
    pub fn start_with_seeds(seeds: &[String], acl_user: Option<&(String, String)>, opts: ProxyOptions) -> Proxy {
        let proxy = Proxy::spawn_with_seeds(seeds, acl_user, opts);
        if let Err(why) = proxy.wait_ready(READY_TIMEOUT) {
            panic!("{why}");
        }
        proxy
    }

    /// Starts a proxy in front of `cluster` without waiting for it (for start-up failure tests).
    ///
    /// For a TLS-only cluster the generated `[upstream]` has TLS on (`@UPSTREAM_TLS@`).
    pub fn spawn(cluster: &Cluster, opts: ProxyOptions) -> Proxy {
        Proxy::spawn_upstream(&cluster.seeds(), cluster.acl_user(), cluster.tls(), opts)
    }

    /// Starts a proxy with explicit seeds and upstream credentials, without waiting for it.
    ///
    /// # Panics
    /// When the binary cannot be started.
    pub fn spawn_with_seeds(seeds: &[String], acl_user: Option<&(String, String)>, opts: ProxyOptions) -> Proxy {
        Proxy::spawn_upstream(seeds, acl_user, None, opts)
    }

    fn spawn_upstream(
        seeds: &[String],
        acl_user: Option<&(String, String)>,
        upstream_tls: Option<&NodeTls>,
        opts: ProxyOptions,
    ) -> Proxy {
        let dir = tempfile::Builder::new().prefix("redisforge-proxy-").tempdir().expect("create the proxy temp dir");
        let (plain, metrics) = (reserve_port(), reserve_port());
        let tls = opts.extra_toml.contains("@TLS@").then(reserve_port);
        let upstream_auth = acl_user
            .map(|(user, _)| format!("user = \"{user}\"\npassword_env = \"{UPSTREAM_PASSWORD_ENV}\""))
            .unwrap_or_default();
        let seeds_toml = format!("[{}]", seeds.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", "));
        let config_text = merge_config(&opts.extra_toml)
            .replace("@PLAIN@", &plain.addr())
            .replace("@METRICS@", &metrics.addr())
            .replace("@TLS@", &tls.as_ref().map(PortGuard::addr).unwrap_or_default())
            .replace("@SEEDS@", &seeds_toml)
            .replace("@UPSTREAM_AUTH@", &upstream_auth)
            .replace("@UPSTREAM_TLS@", &upstream_tls.map(NodeTls::proxy_upstream_toml).unwrap_or_default())
            .replace("@DIR@", &dir.path().display().to_string());
        let config_path = dir.path().join("redisforge.toml");
        std::fs::write(&config_path, &config_text).expect("write the proxy config");
        let log_path = dir.path().join("proxy.log");
        let log = File::create(&log_path).expect("create proxy.log");
        let bin = opts.bin.clone().unwrap_or_else(proxy_bin);
        let mut cmd = Command::new(&bin);
        cmd.arg("--config")
            .arg(&config_path)
            .args(&opts.args)
            .current_dir(dir.path())
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup proxy.log"))
            .stderr(log);
        if let Some((_, pass)) = acl_user {
            cmd.env(UPSTREAM_PASSWORD_ENV, pass);
        }
        cmd.envs(opts.env.iter().map(|(k, v)| (k, v)));
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("spawn {}: {e} (run `cargo build -p redisforge-proxy` or set REDISFORGE_PROXY_BIN)", bin.display())
        });
        let pid = child.id();
        let pid_file = dir.path().join("pids");
        process::write_pid_file(&pid_file, [pid]);
        let watchdog = Watchdog::spawn(&pid_file, Some(dir.path()));
        Proxy { child: Mutex::new(child), pid, plain, metrics, tls, config_text, log_path, _watchdog: watchdog, dir }
    }

    /// Waits until the proxy answers PING on its plain listener (`+PONG`, or `-NOAUTH` when it
    /// requires auth); without a plain listener, until the TLS or metrics port accepts.
    ///
    /// # Errors
    /// When the process exits or `timeout` passes; the message carries the log tail.
    pub fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        let plain = self.config_text.contains(&self.plain.addr());
        let target = match &self.tls {
            _ if plain => self.addr(),
            Some(tls) => tls.addr(),
            None => self.metrics_addr(),
        };
        let mut exited = None;
        let ready = crate::wait_until(timeout, Duration::from_millis(50), || {
            if let Ok(Some(status)) = self.lock().try_wait() {
                exited = Some(status);
                return true;
            }
            if plain { answers_ping(&target) } else { TcpStream::connect(&target).is_ok() }
        });
        match exited {
            Some(status) => Err(format!("redisforge-proxy exited during start ({status}):\n{}", self.log_tail(40))),
            None if ready => Ok(()),
            None => Err(format!(
                "redisforge-proxy did not get ready on {target} within {timeout:?}:\n{}",
                self.log_tail(40)
            )),
        }
    }

    /// The plain listener, `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        self.plain.addr()
    }

    /// The plain listener's port.
    pub fn port(&self) -> u16 {
        self.plain.port()
    }

    /// The metrics listener, `127.0.0.1:port`.
    /// The value of the sample named exactly `series` (with its labels, e.g.
    /// `redisforge_held_requests` or `redisforge_redirections_total{kind="moved"}`) on `/metrics`.
    ///
    /// # Panics
    /// When `/metrics` does not answer 200.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let (status, body) = crate::http_get(&self.metrics_addr(), "/metrics", Duration::from_secs(5));
        assert_eq!(status, 200, "/metrics");
        body.lines()
            .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    pub fn metrics_addr(&self) -> String {
        self.metrics.addr()
    }

    /// The address `@TLS@` stood for, when the options used it.
    pub fn tls_addr(&self) -> Option<String> {
        self.tls.as_ref().map(PortGuard::addr)
    }

    /// The proxy's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The proxy's temp dir (config, log, anything a test puts there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The config file as written.
    pub fn config(&self) -> &str {
        &self.config_text
    }

    /// A plain (non-cluster) client on the plain listener, as the default user.
    ///
    /// # Panics
    /// When the connection fails.
    pub fn client(&self) -> Connection {
        connect(&self.addr(), &Access::default(), CLIENT_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to proxy {}: {e}\n{}", self.addr(), self.log_tail(20)))
    }

    /// A plain client that authenticates as `user`.
    ///
    /// # Errors
    /// When the connection or AUTH fails (so auth tests can assert on it).
    pub fn client_as(&self, user: &str, pass: &str) -> redis::RedisResult<Connection> {
        let creds = (user.to_owned(), pass.to_owned());
        connect(&self.addr(), &Access::plain(Some(&creds)), CLIENT_TIMEOUT)
    }

    /// A multiplexed async client on the plain listener; needs a Tokio runtime.
    ///
    /// # Panics
    /// When the connection fails.
    pub async fn async_client(&self) -> redis::aio::MultiplexedConnection {
        let info = connection_info(&self.addr(), None).expect("proxy address is host:port");
        let client = redis::Client::open(info).expect("client for the proxy address");
        client
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("async connect to proxy {}: {e}", self.addr()))
    }

    /// Sends a signal to the proxy process.
    ///
    /// # Panics
    /// When the signal cannot be delivered (the process is gone).
    pub fn signal(&self, sig: Signal) {
        process::send_signal(self.pid, sig).unwrap_or_else(|e| panic!("signal {sig:?} to proxy {}: {e}", self.pid));
    }

    /// SIGKILLs the proxy and reaps it.
    pub fn kill(&self) -> Option<ExitStatus> {
        process::kill_and_reap(&mut self.lock())
    }

    /// Waits up to `timeout` for the proxy to exit; `None` if it is still running.
    pub fn wait_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        process::wait_exit(&mut self.lock(), timeout)
    }

    /// Everything the proxy has written to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// The last `lines` lines of the log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        format!("== proxy.log ==\n{}", process::tail(&self.log_path, lines))
    }

    fn lock(&self) -> MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        process::kill_and_reap(&mut self.lock());
    }
}

/// `REDISFORGE_PROXY_BIN`, else `redisforge-proxy` next to the `deps/` dir of this test binary.
pub fn proxy_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("REDISFORGE_PROXY_BIN") {
        // Made absolute here: the proxy is started in its temp dir, where a relative path given
        // from the repository (`target/release/redisforge-proxy`) would not be found.
        return std::path::absolute(PathBuf::from(bin)).expect("REDISFORGE_PROXY_BIN as an absolute path");
    }
    let exe = std::env::current_exe().expect("path of the running test binary");
    // target/debug/deps/<test> → target/debug/redisforge-proxy
    let profile_dir = exe.parent().and_then(Path::parent).expect("test binary lives in target/<profile>/deps");
    profile_dir.join("redisforge-proxy")
}

fn answers_ping(addr: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return false;
    };
    let timeout = Some(Duration::from_secs(1));
    if stream.set_read_timeout(timeout).is_err() || stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(n) => buf[..n].starts_with(b"+PONG") || buf[..n].starts_with(b"-NOAUTH"),
        Err(_) => false,
    }
}

/// The generated sections with `extra` merged in (see [`ProxyOptions`]).
fn merge_config(extra: &str) -> String {
    let generated = [
        ("listen", "plain = \"@PLAIN@\"\n"),
        ("upstream", "seeds = @SEEDS@\n@UPSTREAM_AUTH@\n@UPSTREAM_TLS@\n"),
        ("metrics", "listen = \"@METRICS@\"\n"),
        ("log", "format = \"text\"\nlevel = \"info\"\n"),
    ];
    let (preamble, mut chunks) = split_sections(extra);
    let mut out = preamble;
    for (name, body) in generated {
        match chunks.iter().position(|(n, _)| n == name) {
            Some(i) => out.push_str(&chunks.remove(i).1),
            None => out.push_str(&format!("[{name}]\n{body}")),
        }
        out.push('\n');
    }
    for (_, chunk) in chunks {
        out.push_str(&chunk);
        out.push('\n');
    }
    out
}

/// Three masters without replicas for one test alone (what it sets on the nodes, a CONFIG SET
/// through the proxy, reaches no other test, and it may read every connection of the nodes), a
/// proxy in front of them with `opts`, and a client of the proxy once the proxy has the slot map.
pub fn proxy_on_own_cluster(opts: ProxyOptions) -> (Cluster, Proxy, Connection) {
    let cluster = Cluster::start(crate::ClusterOptions { replicas_per_master: 0, ..Default::default() });
    let proxy = Proxy::start(&cluster, opts);
    let mut client = proxy.client();
    let mapped = crate::wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        redis::cmd("SET").arg("own-cluster-ready").arg("1").query::<()>(&mut client).is_ok()
    });
    assert!(mapped, "the proxy did not map its cluster\n{}", proxy.log_tail(20));
    (cluster, proxy, client)
}

/// Splits TOML text at `[table]` headers (not `[[array]]` ones) into the text before the first
/// header and `(name, header + body)` chunks.
fn split_sections(text: &str) -> (String, Vec<(String, String)>) {
    let mut preamble = String::new();
    let mut chunks: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let trimmed = line.split('#').next().unwrap_or_default().trim();
        let header =
            trimmed.strip_prefix('[').filter(|rest| !rest.starts_with('[')).and_then(|rest| rest.strip_suffix(']'));
        match (header, chunks.last_mut()) {
            (Some(name), _) => chunks.push((name.trim().to_owned(), format!("{line}\n"))),
            (None, Some((_, chunk))) => chunk.push_str(&format!("{line}\n")),
            (None, None) => preamble.push_str(&format!("{line}\n")),
        }
    }
    (preamble, chunks)
}
