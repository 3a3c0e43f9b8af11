//! One `redis-server` child with a configuration of the caller's, for suites that build their own
//! topology (the ops suites: fresh nodes to create a cluster from, plain and TLS servers for
//! `smoke`). [`crate::Cluster`] runs its nodes with more around them (restarts, pauses, ACL and TLS
//! access); both take ports from [`reserve_port`].

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::ports::{PortGuard, reserve_port};
use crate::process;

/// How often a start is retried on a fresh port when the port turns out to be taken.
const START_ATTEMPTS: usize = 5;
/// How long a fresh server gets to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A `redis-server` child in its own directory, killed and reaped on drop.
pub struct RedisServer {
    guard: PortGuard,
    dir: PathBuf,
    child: Child,
}

impl RedisServer {
    /// Starts `redis-server` in `root/<port>`, with the lines `config(port)` returns after the
    /// harness's own (bind to loopback, no protected mode, in the foreground, directory and
    /// `redis.log` there). `config` must listen on the port, in plain (`port N`) or TLS
    /// (`port 0` and `tls-port N`). Ready once the port accepts connections.
    ///
    /// # Errors
    /// The server's log when it exits at start or does not listen in time, other than for a port
    /// taken meanwhile (then another port is tried).
    pub fn start(root: &Path, config: impl Fn(u16) -> Vec<String>) -> Result<RedisServer, String> {
        RedisServer::launch(root, config, false)
    }

    /// Like [`RedisServer::start`], but the server's `dir` is a tmpfs mounted only in a mount
    /// namespace of its own (`unshare --mount`): its RDB, AOF and `nodes.conf` exist for it alone,
    /// as on another host. Its configuration and log live beside that directory
    /// (`root/<port>.conf`, `root/<port>.log`). Needs root; see [`can_hide_files`].
    ///
    /// # Errors
    /// As [`RedisServer::start`].
    pub fn start_hidden(root: &Path, config: impl Fn(u16) -> Vec<String>) -> Result<RedisServer, String> {
        RedisServer::launch(root, config, true)
    }

    fn launch(root: &Path, config: impl Fn(u16) -> Vec<String>, hidden: bool) -> Result<RedisServer, String> {
        let mut taken = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let guard = reserve_port();
            let dir = root.join(guard.port().to_string());
            std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
            let (conf, log) = if hidden {
                (root.join(format!("{}.conf", guard.port())), root.join(format!("{}.log", guard.port())))
            } else {
                (dir.join("redis.conf"), dir.join("redis.log"))
            };
            let mut lines = vec![
                "bind 127.0.0.1".to_owned(),
                "protected-mode no".to_owned(),
                "daemonize no".to_owned(),
                format!("dir \"{}\"", dir.display()),
                format!("logfile \"{}\"", log.display()),
            ];
            lines.extend(config(guard.port()));
            std::fs::write(&conf, lines.join("\n") + "\n").map_err(|e| format!("write {}: {e}", conf.display()))?;
            let bin = redis_server_bin();
            let mut command = if hidden {
                // unshare and sh exec in place: the child's pid is redis-server's.
                let mut command = Command::new("unshare");
                command.args(["--mount", "--propagation", "private", "sh", "-c"]);
                command.arg(r#"mount -t tmpfs tmpfs "$1" && cd "$1" && exec "$2" "$3""#).arg("sh");
                command.arg(&dir).arg(&bin).arg(&conf);
                command
            } else {
                let mut command = Command::new(&bin);
                command.arg(&conf);
                command
            };
            let child = command
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("spawn {bin}: {e} (install redis-server or set REDIS_SERVER)"))?;
            let mut server = RedisServer { guard, dir, child };
            let mut exited = false;
            let listening = crate::wait_until(READY_TIMEOUT, Duration::from_millis(25), || {
                exited = matches!(server.child.try_wait(), Ok(Some(_)));
                exited || TcpStream::connect(server.addr()).is_ok()
            });
            if listening && !exited {
                return Ok(server);
            }
            let log = process::tail(&log, 30);
            if !log.contains("Address already in use") {
                return Err(format!("redis-server on {} did not start (exited: {exited}):\n{log}", server.addr()));
            }
            taken.push(log);
        }
        Err(format!("redis-server could not bind after {START_ATTEMPTS} ports:\n{}", taken.join("\n---\n")))
    }

    pub fn port(&self) -> u16 {
        self.guard.port()
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        self.guard.addr()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Whether this machine can run [`RedisServer::start_hidden`] (root, `unshare`, tmpfs); `Err`
/// says why not.
pub fn can_hide_files() -> Result<(), String> {
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", "mount -t tmpfs tmpfs /mnt"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("unshare: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("unshare --mount: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// `REDIS_SERVER` from the environment, else `redis-server` on PATH.
pub fn redis_server_bin() -> String {
    std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned())
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        process::kill_and_reap(&mut self.child);
    }
}
