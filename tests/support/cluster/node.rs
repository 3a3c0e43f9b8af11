//! One `redis-server` cluster node run as a child process in its own directory.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::conn::Access;
use crate::netns::Netns;
use crate::ports::{PortGuard, reserve_port};
use crate::process::{self, Signal};
use crate::server::redis_server_bin;
use crate::tls::NodeTls;

/// How often a node start is retried on a fresh port when the port turns out to be taken.
const START_ATTEMPTS: usize = 5;
/// How long a fresh `redis-server` gets to answer PING.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// Whether the harness started, froze or stopped a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// The process runs and answers.
    Running,
    /// SIGSTOPped by [`crate::Cluster::pause`].
    Paused,
    /// Killed (or shut down); [`crate::Cluster::restart`] brings it back.
    Stopped,
}

/// What every node of one cluster shares in its configuration.
pub(crate) struct NodeConfig<'a> {
    pub root: &'a Path,
    pub acl_user: Option<&'a (String, String)>,
    pub extra_config: &'a [String],
    /// TLS-only nodes when set.
    pub tls: Option<&'a NodeTls>,
    /// How the harness reaches a node (used for the readiness probe).
    pub access: &'a Access,
}

/// Where a node runs: on 127.0.0.1, or alone in namespace `index` of a [`Netns`] (so that it can
/// be partitioned from the other nodes and from the harness).
#[derive(Clone, Debug)]
pub(crate) enum Place {
    Loopback,
    Namespace(Arc<Netns>, usize),
}

impl Place {
    fn ip(&self) -> String {
        match self {
            Place::Loopback => "127.0.0.1".to_owned(),
            Place::Namespace(netns, i) => netns.ip(*i),
        }
    }

    fn command(&self, program: &str) -> Command {
        match self {
            Place::Loopback => Command::new(program),
            Place::Namespace(netns, i) => netns.command(*i, program),
        }
    }
}

/// One node: its reserved port, directory, process and the cluster id it keeps across restarts.
pub(crate) struct Node {
    guard: PortGuard,
    pub place: Place,
    pub dir: PathBuf,
    child: Option<Child>,
    pub state: NodeState,
    pub id: String,
    /// Set while the node is cut off ([`crate::Cluster::isolate`]).
    pub isolated: Option<super::Isolation>,
}

impl Node {
    /// Starts a fresh node on a newly reserved port, retrying on other ports if one is taken.
    pub fn launch(cfg: &NodeConfig<'_>, place: Place) -> Node {
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let guard = reserve_port();
            let dir = cfg.root.join(guard.port().to_string());
            std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create node dir {}: {e}", dir.display()));
            std::fs::write(dir.join("redis.conf"), config_text(cfg, &place.ip(), guard.port(), &dir))
                .unwrap_or_else(|e| panic!("write redis.conf in {}: {e}", dir.display()));
            let mut node = Node {
                guard,
                place: place.clone(),
                dir,
                child: None,
                state: NodeState::Stopped,
                id: String::new(),
                isolated: None,
            };
            match node.spawn(cfg.access) {
                Ok(()) => return node,
                Err(StartError::AddrInUse(msg)) => failures.push(msg),
                Err(StartError::Other(msg)) => panic!("{msg}"),
            }
        }
        panic!("redis-server could not bind after {START_ATTEMPTS} ports:\n{}", failures.join("\n---\n"));
    }

    pub fn addr(&self) -> String {
        format!("{}:{}", self.place.ip(), self.guard.port())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the process again with the same port, directory and `nodes.conf`.
    ///
    /// The port stays reserved by this process, so "in use" can only be a socket still
    /// closing from the previous run: retried a few times before giving up.
    pub fn restart(&mut self, access: &Access) {
        self.kill();
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            match self.spawn(access) {
                Ok(()) => return,
                Err(StartError::AddrInUse(msg)) => {
                    last = msg;
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(StartError::Other(msg)) => panic!("restart {}: {msg}", self.addr()),
            }
        }
        panic!("restart {}: port stayed in use:\n{last}", self.addr());
    }

    /// SIGKILLs and reaps the process; a no-op when it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::kill_and_reap(&mut child);
        }
        self.state = NodeState::Stopped;
    }

    /// Sends SIGSTOP or SIGCONT and records the new state.
    pub fn signal(&mut self, sig: Signal) {
        let pid = self.pid().unwrap_or_else(|| panic!("node {} is not running", self.addr()));
        process::send_signal(pid, sig).unwrap_or_else(|e| panic!("signal {sig:?} to node {}: {e}", self.addr()));
        match sig {
            Signal::Stop => self.state = NodeState::Paused,
            Signal::Cont => self.state = NodeState::Running,
            _ => {}
        }
    }

    /// The last lines of the node's log and stderr, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        format!(
            "== node {} ({:?}) redis.log ==\n{}\n== stderr ==\n{}",
            self.addr(),
            self.state,
            process::tail(&self.dir.join("redis.log"), lines),
            process::tail(&self.dir.join("stderr.log"), lines.min(10)),
        )
    }

    fn spawn(&mut self, access: &Access) -> Result<(), StartError> {
        let stderr = File::create(self.dir.join("stderr.log"))
            .map_err(|e| StartError::Other(format!("create stderr.log: {e}")))?;
        let child = self
            .place
            .command(&redis_server_bin())
            .arg(self.dir.join("redis.conf"))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| {
                StartError::Other(format!(
                    "spawn {}: {e} (install redis-server or set REDIS_SERVER)",
                    redis_server_bin()
                ))
            })?;
        self.child = Some(child);
        self.state = NodeState::Running;
        let addr = self.addr();
        let mut exited = false;
        let ready = crate::wait_until(READY_TIMEOUT, Duration::from_millis(25), || {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                exited = true;
                return true;
            }
            crate::conn::probe(&addr, access).and_then(|mut con| redis::cmd("PING").query::<String>(&mut con)).is_ok()
        });
        if ready && !exited {
            return Ok(());
        }
        let tail = self.log_tail(20);
        self.kill();
        if tail.contains("Address already in use") {
            Err(StartError::AddrInUse(tail))
        } else if exited {
            Err(StartError::Other(format!("redis-server on {addr} exited at start:\n{tail}")))
        } else {
            Err(StartError::Other(format!(
                "redis-server on {addr} did not answer PING within {READY_TIMEOUT:?}:\n{tail}"
            )))
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

enum StartError {
    AddrInUse(String),
    Other(String),
}

fn config_text(cfg: &NodeConfig<'_>, ip: &str, port: u16, dir: &Path) -> String {
    let dir = dir.display();
    let mut lines = match cfg.tls {
        None => vec![format!("port {port}")],
        // TLS only: no plaintext port; the bus port stays `port + 10000`.
        Some(tls) => tls.node_config(port),
    };
    lines.extend([
        format!("bind {ip}"),
        // Loopback or a test's own namespace, so protected mode adds nothing but refusals.
        "protected-mode no".to_owned(),
        "daemonize no".to_owned(),
        "cluster-enabled yes".to_owned(),
        "cluster-config-file nodes.conf".to_owned(),
        // Tests kill masters: failover has to happen within a few seconds.
        "cluster-node-timeout 2000".to_owned(),
        "cluster-allow-replica-migration no".to_owned(),
        "appendonly no".to_owned(),
        "save \"\"".to_owned(),
        // The default 5 s delay would hold every replica's first sync (and cluster start).
        "repl-diskless-sync-delay 0".to_owned(),
        // Redis 7 hides replicas whose replication offset is still 0 from CLUSTER SLOTS/SHARDS;
        // pinging replicas every second moves the offset right after the first sync.
        "repl-ping-replica-period 1".to_owned(),
        format!("dir \"{dir}\""),
        format!("logfile \"{dir}/redis.log\""),
        "loglevel notice".to_owned(),
    ]);
    if let Some((user, pass)) = cfg.acl_user {
        lines.push(format!("user {user} on >{pass} ~* &* +@all"));
        lines.push("user default off".to_owned());
        lines.push(format!("masteruser {user}"));
        lines.push(format!("masterauth \"{pass}\""));
    }
    lines.extend(cfg.extra_config.iter().cloned());
    lines.join("\n") + "\n"
}
