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
        let mut taken = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let guard = reserve_port();
            let dir = root.join(guard.port().to_string());
            std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
            let mut lines = vec![
                "bind 127.0.0.1".to_owned(),
                "protected-mode no".to_owned(),
                "daemonize no".to_owned(),
                format!("dir \"{}\"", dir.display()),
                "logfile \"redis.log\"".to_owned(),
            ];
            lines.extend(config(guard.port()));
            let conf = dir.join("redis.conf");
            std::fs::write(&conf, lines.join("\n") + "\n").map_err(|e| format!("write {}: {e}", conf.display()))?;
            let bin = redis_server_bin();
            let child = Command::new(&bin)
                .arg(&conf)
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
            let log = process::tail(&server.dir.join("redis.log"), 30);
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

/// `REDIS_SERVER` from the environment, else `redis-server` on PATH.
pub fn redis_server_bin() -> String {
    std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned())
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        process::kill_and_reap(&mut self.child);
    }
}
