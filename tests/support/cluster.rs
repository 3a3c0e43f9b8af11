//! [`Cluster`]: a real Redis Cluster of `redis-server` children on 127.0.0.1.
//!
//! Built natively, the way the ops tool builds one: SET-CONFIG-EPOCH and ADDSLOTSRANGE on the
//! masters, MEET from the first node, REPLICATE once every node knows every other, then a wait
//! until all views agree (see [`Cluster::try_wait_state_ok`]).

mod node;
mod partition;
mod reshard;
mod topology;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use redis::Connection;

pub use node::NodeState;
pub use partition::Isolation;
pub use reshard::SlotRange;
pub use topology::SLOTS;

use crate::conn::{Access, connect, probe};
use crate::netns::Netns;
use crate::process::{self, Signal, Watchdog};
use crate::tls::NodeTls;
use node::{Node, NodeConfig, Place};

/// How long a whole cluster gets to settle after start, restart or failover.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Per-command timeout of connections handed to tests.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// What cluster to start.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Masters; the 16384 slots are split evenly between them.
    pub masters: usize,
    /// Replicas attached to each master.
    pub replicas_per_master: usize,
    /// `(user, password)`: nodes get `user NAME on >PASS ~* &* +@all`, the default user is off
    /// and replication authenticates as this user. The password must not contain whitespace.
    pub acl_user: Option<(String, String)>,
    /// Extra `redis.conf` lines for every node.
    pub extra_config: Vec<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions { masters: 3, replicas_per_master: 1, acl_user: None, extra_config: Vec::new() }
    }
}

/// A running Redis Cluster; dropping it kills every node and removes its directory.
pub struct Cluster {
    // Field order matters for Drop: nodes die before the watchdog and the directory go.
    nodes: Mutex<Vec<Node>>,
    /// The namespaces of a partitionable cluster, one per node ([`Cluster::start_partitionable`]).
    network: Option<Arc<Netns>>,
    watchdog: Mutex<Option<Watchdog>>,
    /// ACL login and TLS material of every harness connection to the nodes.
    access: Access,
    tls: Option<NodeTls>,
    extra_config: Vec<String>,
    pid_file: PathBuf,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts a cluster and blocks until it is settled (state ok everywhere, replicas in sync).
    ///
    /// # Panics
    /// When a node cannot start or the cluster does not settle within 30 s; the message carries
    /// the tail of every node's log.
    pub fn start(opts: ClusterOptions) -> Cluster {
        Cluster::launch(opts, None, None)
    }

    /// Starts a TLS-only cluster and blocks until it is settled.
    ///
    /// Every node listens on `tls-port P` only (`port 0`), with `tls-cluster yes` (bus on
    /// `P + 10000` over TLS, TLS ports announced in `CLUSTER SLOTS`/`SHARDS`/`NODES`),
    /// `tls-replication yes` and `tls-auth-clients optional`; add `tls-auth-clients yes` to
    /// `opts.extra_config` to require client certificates. Addresses ([`Cluster::nodes`],
    /// [`Cluster::seeds`]) are the TLS ports, and every harness connection (setup, probes,
    /// [`Cluster::client`], failover, reshard) uses TLS with `tls.ca` as root and `tls.cert`/
    /// `tls.key` as client identity. `tls`'s files must outlive the cluster.
    ///
    /// A separate entry point rather than a `ClusterOptions` field so that exhaustive
    /// `ClusterOptions { .. }` literals in existing suites keep compiling.
    ///
    /// # Panics
    /// As [`Cluster::start`]; also when a certificate file cannot be read.
    pub fn start_tls(opts: ClusterOptions, tls: NodeTls) -> Cluster {
        Cluster::launch(opts, Some(tls), None)
    }

    fn launch(opts: ClusterOptions, tls: Option<NodeTls>, network: Option<Arc<Netns>>) -> Cluster {
        assert!(opts.masters >= 1, "a cluster needs at least one master");
        let dir =
            tempfile::Builder::new().prefix("redisforge-cluster-").tempdir().expect("create the cluster temp dir");
        let pid_file = dir.path().join("pids");
        process::write_pid_file(&pid_file, []);
        let cluster = Cluster {
            nodes: Mutex::new(Vec::new()),
            network,
            watchdog: Mutex::new(Some(Watchdog::spawn(&pid_file, Some(dir.path())))),
            access: Access { acl: opts.acl_user.clone(), tls: tls.as_ref().map(NodeTls::client_certificates) },
            tls,
            extra_config: opts.extra_config.clone(),
            pid_file,
            dir,
        };
        let total = opts.masters * (1 + opts.replicas_per_master);
        for i in 0..total {
            let place = match &cluster.network {
                Some(netns) => Place::Namespace(Arc::clone(netns), i),
                None => Place::Loopback,
            };
            let node = Node::launch(&cluster.node_config(), place);
            let mut nodes = cluster.lock();
            nodes.push(node);
            cluster.write_pids(&nodes);
        }
        cluster.create(opts.masters, opts.replicas_per_master);
        cluster
    }

    /// A 3-master, 1-replica-each cluster started once per test binary and never torn down by
    /// `Drop`: the watchdog kills it after the process exits.
    ///
    /// Only for tests that read and write their own keys; tests that kill, pause, fail over or
    /// reshard start their own. (Under nextest each test is its own process, so "shared" means
    /// one cluster per test there.)
    pub fn shared() -> &'static Cluster {
        static SHARED: OnceLock<Cluster> = OnceLock::new();
        SHARED.get_or_init(|| Cluster::start(ClusterOptions::default()))
    }

    /// Every node's address (`127.0.0.1:port`, or its namespace's address), in start order,
    /// whatever its state.
    pub fn nodes(&self) -> Vec<String> {
        self.lock().iter().map(Node::addr).collect()
    }

    /// Addresses to hand a client or the proxy as seeds: every node.
    pub fn seeds(&self) -> Vec<String> {
        self.nodes()
    }

    /// Nodes the harness has running and not paused.
    pub fn live_nodes(&self) -> Vec<String> {
        self.nodes_in(NodeState::Running)
    }

    /// The harness's record of a node's process state.
    pub fn state(&self, addr: &str) -> NodeState {
        self.with_node(addr, |n| n.state)
    }

    /// The process id of a node, `None` when stopped.
    pub fn pid(&self, addr: &str) -> Option<u32> {
        self.with_node(addr, |n| n.pid())
    }

    /// PIDs of every node process the harness has running (including paused ones).
    pub fn pids(&self) -> Vec<u32> {
        self.lock().iter().filter_map(Node::pid).collect()
    }

    /// The node's cluster id (stable across restarts).
    pub fn node_id(&self, addr: &str) -> String {
        self.with_node(addr, |n| n.id.clone())
    }

    /// The `(user, password)` every node requires, when the cluster was started with one.
    pub fn acl_user(&self) -> Option<&(String, String)> {
        self.access.acl.as_ref()
    }

    /// The certificate files of a TLS-only cluster ([`Cluster::start_tls`]), `None` for plain.
    pub fn tls(&self) -> Option<&NodeTls> {
        self.tls.as_ref()
    }

    /// The cluster's temp dir; each node lives in `<dir>/<port>` with `redis.log`, `nodes.conf`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Live nodes that currently report themselves master (re-read from the nodes).
    pub fn masters(&self) -> Vec<String> {
        self.live_with_role("master")
    }

    /// The master that holds the proxy's subscribed connection (`sub=1` in its CLIENT LIST).
    ///
    /// # Panics
    /// When no master has one.
    pub fn master_with_subscription(&self) -> String {
        self.masters()
            .into_iter()
            .find(|m| {
                let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut self.client(m)).expect("CLIENT LIST");
                list.lines().any(|l| l.contains("sub=1"))
            })
            .expect("a master carries the subscription")
    }

    /// Live nodes that currently report themselves replica (re-read from the nodes).
    pub fn replicas(&self) -> Vec<String> {
        self.live_with_role("slave")
    }

    /// `"master"` or `"slave"` as the node reports it, `None` when it does not answer.
    pub fn role(&self, addr: &str) -> Option<String> {
        let mut con = probe(addr, &self.access).ok()?;
        let info: String = redis::cmd("INFO").arg("replication").query(&mut con).ok()?;
        topology::info_field(&info, "role").map(str::to_owned)
    }

    /// Live replicas whose master is `master` (as each replica reports it).
    pub fn replicas_of(&self, master: &str) -> Vec<String> {
        let master_id = self.node_id(master);
        self.replicas()
            .into_iter()
            .filter(|r| {
                topology::View::fetch(r, &self.access)
                    .ok()
                    .and_then(|v| v.myself().and_then(|m| m.master_id.clone()))
                    .is_some_and(|id| id == master_id)
            })
            .collect()
    }

    /// A connection to one node, authenticated when the cluster has an ACL user.
    ///
    /// # Panics
    /// When the node does not accept the connection.
    pub fn client(&self, addr: &str) -> Connection {
        connect(addr, &self.access, CLIENT_TIMEOUT).unwrap_or_else(|e| panic!("connect to node {addr}: {e}"))
    }

    /// SIGKILLs a node and reaps it.
    pub fn kill(&self, addr: &str) {
        let mut nodes = self.lock();
        find(&mut nodes, addr).kill();
        self.write_pids(&nodes);
    }

    /// Freezes a node with SIGSTOP: its sockets stay open but it answers nothing.
    pub fn pause(&self, addr: &str) {
        find(&mut self.lock(), addr).signal(Signal::Stop);
    }

    /// Wakes a node frozen by [`Cluster::pause`].
    pub fn resume(&self, addr: &str) {
        find(&mut self.lock(), addr).signal(Signal::Cont);
    }

    /// Starts a node again with the same port, directory and `nodes.conf` (killing it first if
    /// it runs) and waits until it answers PING; call [`Cluster::wait_state_ok`] to wait for the
    /// cluster to take it back.
    pub fn restart(&self, addr: &str) {
        let mut nodes = self.lock();
        find(&mut nodes, addr).restart(&self.access);
        self.write_pids(&nodes);
    }

    /// Waits until the live nodes form a settled cluster (see [`Cluster::try_wait_state_ok`]).
    ///
    /// # Panics
    /// After 30 s, with the reason and every node's log tail.
    pub fn wait_state_ok(&self) {
        if let Err(why) = self.try_wait_state_ok(SETTLE_TIMEOUT) {
            self.fail(&format!("cluster did not settle within {SETTLE_TIMEOUT:?}: {why}"));
        }
    }

    /// Waits up to `timeout` until every live node reports `cluster_state:ok`, all views agree on
    /// roles and slot owners (all of them live, all 16384 covered) and replicas of live masters
    /// are in sync. `Err` says what was still wrong at the deadline.
    pub fn try_wait_state_ok(&self, timeout: Duration) -> Result<(), String> {
        self.wait_settled(timeout, None)
    }

    /// Kills every node and the watchdog; idempotent (`Drop` calls it too).
    pub fn shutdown(&self) {
        let mut nodes = self.lock();
        nodes.iter_mut().for_each(Node::kill);
        self.write_pids(&nodes);
        drop(nodes);
        self.watchdog.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Every node's log tail, for failure messages in tests.
    pub fn log_tails(&self, lines: usize) -> String {
        self.lock().iter().map(|n| n.log_tail(lines)).collect::<Vec<_>>().join("\n")
    }

    fn create(&self, masters: usize, replicas_per_master: usize) {
        let addrs = self.nodes();
        let mut ids = Vec::with_capacity(addrs.len());
        for (i, addr) in addrs.iter().enumerate() {
            let mut con = self.client(addr);
            let id: String = self.admin(&mut con, addr, &["CLUSTER", "MYID"]);
            // Distinct epochs up front avoid the collision-resolution dance after MEET.
            let epoch = (i + 1).to_string();
            self.admin::<()>(&mut con, addr, &["CLUSTER", "SET-CONFIG-EPOCH", &epoch]);
            if i < masters {
                let first = (i * SLOTS / masters).to_string();
                let last = ((i + 1) * SLOTS / masters - 1).to_string();
                self.admin::<()>(&mut con, addr, &["CLUSTER", "ADDSLOTSRANGE", &first, &last]);
            }
            ids.push(id);
        }
        for (node, id) in self.lock().iter_mut().zip(&ids) {
            node.id.clone_from(id);
        }
        let mut first = self.client(&addrs[0]);
        for addr in &addrs[1..] {
            let (host, port) = addr.split_once(':').expect("addr is host:port");
            self.admin::<()>(&mut first, &addrs[0], &["CLUSTER", "MEET", host, port]);
        }
        let everyone_known = crate::wait_until(SETTLE_TIMEOUT, Duration::from_millis(50), || {
            addrs.iter().all(|a| {
                topology::View::fetch(a, &self.access)
                    .is_ok_and(|v| v.lines.len() == addrs.len() && v.lines.iter().all(|l| !l.is_unsettled()))
            })
        });
        if !everyone_known {
            self.fail("nodes did not all meet");
        }
        for (i, addr) in addrs.iter().enumerate().skip(masters) {
            let master_id = &ids[(i - masters) / replicas_per_master.max(1)];
            let mut con = self.client(addr);
            self.admin::<()>(&mut con, addr, &["CLUSTER", "REPLICATE", master_id]);
        }
        if let Err(why) = self.wait_settled(SETTLE_TIMEOUT, Some(replicas_per_master)) {
            self.fail(&format!("new cluster did not settle within {SETTLE_TIMEOUT:?}: {why}"));
        }
    }

    fn wait_settled(&self, timeout: Duration, replicas: Option<usize>) -> Result<(), String> {
        let mut last = String::from("not checked");
        let settled = crate::wait_until(timeout, Duration::from_millis(100), || {
            let live = self.live_nodes();
            let is_live = |a: &str| live.iter().any(|l| l == a);
            match topology::check_settled(&live, &self.access, replicas, &is_live) {
                Ok(()) => true,
                Err(why) => {
                    last = why;
                    false
                }
            }
        });
        if settled { Ok(()) } else { Err(last) }
    }

    /// Runs an admin command that must succeed.
    fn admin<T: redis::FromRedisValue>(&self, con: &mut Connection, addr: &str, args: &[&str]) -> T {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        match cmd.query(con) {
            Ok(v) => v,
            Err(e) => self.fail(&format!("{addr}: {}: {e}", args.join(" "))),
        }
    }

    fn fail(&self, msg: &str) -> ! {
        panic!("{msg}\n{}", self.log_tails(15));
    }

    fn live_with_role(&self, role: &str) -> Vec<String> {
        self.live_nodes().into_iter().filter(|a| self.role(a).as_deref() == Some(role)).collect()
    }

    fn nodes_in(&self, state: NodeState) -> Vec<String> {
        self.lock().iter().filter(|n| n.state == state).map(Node::addr).collect()
    }

    fn with_node<T>(&self, addr: &str, f: impl FnOnce(&mut Node) -> T) -> T {
        f(find(&mut self.lock(), addr))
    }

    fn node_config(&self) -> NodeConfig<'_> {
        NodeConfig {
            root: self.dir.path(),
            acl_user: self.access.acl.as_ref(),
            extra_config: &self.extra_config,
            tls: self.tls.as_ref(),
            access: &self.access,
        }
    }

    fn write_pids(&self, nodes: &[Node]) {
        process::write_pid_file(&self.pid_file, nodes.iter().filter_map(Node::pid));
    }

    /// The node list; a test that panicked while holding it must not break the shared cluster.
    fn lock(&self) -> MutexGuard<'_, Vec<Node>> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn find<'a>(nodes: &'a mut [Node], addr: &str) -> &'a mut Node {
    nodes.iter_mut().find(|n| n.addr() == addr).unwrap_or_else(|| panic!("{addr} is not a node of this cluster"))
}
