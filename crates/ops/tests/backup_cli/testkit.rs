//! Test harness for the backup suites: real `redis-server` clusters on loopback, test data of every
//! type, a key-by-key dump for comparisons, and the moto S3 server of `scripts/s3-test-server.sh`.
//!
//! Not part of the binary: the backup suite's own helpers (`mod testkit` in `main.rs`).
//! Ports come from the workspace harness (`redisforge_tests::reserve_port`, a flock per port shared
//! with every other suite); servers are still retried on a fresh port if a bind fails.
//! Every process started here is killed by PID on drop, and by a watchdog if the test process
//! dies first.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use redis::Value;
use sha2::{Digest, Sha256};

/// How long a cluster gets to settle.
const SETTLE: Duration = Duration::from_secs(30);

use redisforge_tests::process::{Watchdog, write_pid_file};
pub use redisforge_tests::server::can_hide_files;
pub use redisforge_tests::{RedisServer, reserve_port};

/// A cluster-enabled node that knows no one yet, in `root/<port>` (a directory only the node can
/// see when `hidden`, see [`RedisServer::start_hidden`]).
fn start_node(root: &Path, extra: &[&str], hidden: bool) -> RedisServer {
    let config = |port: u16| {
        let mut conf = vec![
            format!("port {port}"),
            "cluster-enabled yes".into(),
            "cluster-config-file nodes.conf".into(),
            "cluster-node-timeout 2000".into(),
            "appendonly no".into(),
            "save \"\"".into(),
            "repl-diskless-sync-delay 0".into(),
        ];
        conf.extend(extra.iter().map(|l| (*l).to_owned()));
        conf
    };
    let started = if hidden { RedisServer::start_hidden(root, config) } else { RedisServer::start(root, config) };
    started.unwrap_or_else(|e| panic!("{e}"))
}

/// Nodes of one test, in a temp dir, with a watchdog that kills them if the test process dies.
pub struct Nodes {
    /// Dropped first (fields drop in order): the nodes stop before their watchdog does.
    pub servers: Vec<RedisServer>,
    _watchdog: Watchdog,
    _dir: tempfile::TempDir,
}

impl Nodes {
    /// `n` fresh, empty cluster-enabled nodes that know no one (restore targets).
    pub fn fresh(n: usize, extra: &[&str]) -> Nodes {
        Nodes::fresh_with(n, extra, false)
    }

    fn fresh_with(n: usize, extra: &[&str], hidden: bool) -> Nodes {
        let dir = tempfile::Builder::new().prefix("rf-backup-").tempdir().expect("temp dir");
        let servers: Vec<RedisServer> = (0..n).map(|_| start_node(dir.path(), extra, hidden)).collect();
        // Kills the nodes within a second or two of the test process dying without unwinding.
        let pid_file = dir.path().join("pids");
        write_pid_file(&pid_file, servers.iter().map(RedisServer::pid));
        let watchdog = Watchdog::spawn(&pid_file, None);
        Nodes { servers, _watchdog: watchdog, _dir: dir }
    }

    /// A settled cluster: `masters` masters with the slots split evenly, `replicas` each.
    pub fn cluster(masters: usize, replicas: usize, extra: &[&str]) -> Nodes {
        Nodes::cluster_with(masters, replicas, extra, false)
    }

    /// A settled cluster whose nodes' files this process cannot read: each node's `dir` is a
    /// tmpfs in a mount namespace of its own, as if the nodes ran on other hosts.
    pub fn hidden_cluster(masters: usize, replicas: usize, extra: &[&str]) -> Nodes {
        Nodes::cluster_with(masters, replicas, extra, true)
    }

    fn cluster_with(masters: usize, replicas: usize, extra: &[&str], hidden: bool) -> Nodes {
        let nodes = Nodes::fresh_with(masters * (1 + replicas), extra, hidden);
        let addrs = nodes.addrs();
        let mut ids = Vec::new();
        for (i, addr) in addrs.iter().enumerate() {
            query::<()>(addr, &["CLUSTER", "SET-CONFIG-EPOCH", &(i + 1).to_string()]).expect("epoch");
            if i < masters {
                let (first, last) = (i * 16384 / masters, (i + 1) * 16384 / masters - 1);
                query::<()>(addr, &["CLUSTER", "ADDSLOTSRANGE", &first.to_string(), &last.to_string()]).expect("slots");
            }
            ids.push(query::<String>(addr, &["CLUSTER", "MYID"]).expect("myid"));
        }
        for addr in &addrs[1..] {
            let port = addr.rsplit_once(':').expect("host:port").1;
            query::<()>(&addrs[0], &["CLUSTER", "MEET", "127.0.0.1", port]).expect("meet");
        }
        let met = wait_until(SETTLE, || {
            addrs.iter().all(|a| {
                query::<String>(a, &["CLUSTER", "NODES"])
                    .is_ok_and(|t| t.lines().count() == addrs.len() && !t.contains("handshake"))
            })
        });
        assert!(met, "nodes did not meet");
        for (i, addr) in addrs.iter().enumerate().skip(masters) {
            let master = &ids[(i - masters) / replicas];
            let ok = wait_until(SETTLE, || query::<()>(addr, &["CLUSTER", "REPLICATE", master]).is_ok());
            assert!(ok, "{addr} could not replicate {master}");
        }
        nodes.wait_settled(masters);
        nodes
    }

    /// Waits until every node has `cluster_state:ok` and sees `masters` masters owning slots and
    /// every other node as a replica, and every replica's link to its master is up.
    pub fn wait_settled(&self, masters: usize) {
        let addrs = self.addrs();
        let settled = wait_until(SETTLE, || {
            addrs.iter().all(|a| {
                let state = query::<String>(a, &["CLUSTER", "INFO"]).unwrap_or_default();
                let nodes = query::<String>(a, &["CLUSTER", "NODES"]).unwrap_or_default();
                let repl = query::<String>(a, &["INFO", "replication"]).unwrap_or_default();
                let with = |role: &str| -> Vec<&str> {
                    nodes.lines().filter(|l| l.split(' ').nth(2).is_some_and(|f| f.contains(role))).collect()
                };
                let owners = with("master").iter().filter(|l| l.split(' ').count() > 8).count();
                state.contains("cluster_state:ok")
                    && owners == masters
                    && with("master").len() == masters
                    && with("slave").len() == addrs.len() - masters
                    && (repl.contains("role:master") || repl.contains("master_link_status:up"))
            })
        });
        assert!(settled, "cluster did not settle within {SETTLE:?}");
    }

    /// Every node's address.
    pub fn addrs(&self) -> Vec<String> {
        self.servers.iter().map(RedisServer::addr).collect()
    }

    /// Nodes that report role master.
    pub fn masters(&self) -> Vec<String> {
        self.role("role:master")
    }

    /// Nodes that report role slave.
    pub fn replicas(&self) -> Vec<String> {
        self.role("role:slave")
    }

    fn role(&self, role: &str) -> Vec<String> {
        let is = |a: &String| query::<String>(a, &["INFO", "replication"]).is_ok_and(|i| i.contains(role));
        self.addrs().into_iter().filter(is).collect()
    }
}

/// Runs one command on `addr` over a fresh connection.
pub fn query<T: redis::FromRedisValue>(addr: &str, args: &[&str]) -> redis::RedisResult<T> {
    let client = redis::Client::open(format!("redis://{addr}/"))?;
    let mut con = client.get_connection_with_timeout(Duration::from_secs(5))?;
    con.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut cmd = redis::cmd(args[0]);
    args[1..].iter().for_each(|a| {
        cmd.arg(*a);
    });
    cmd.query(&mut con)
}

/// Polls `f` every 50 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writes `n` keys through the cluster client, cycling through strings (every other one binary),
/// hashes, lists, sets, sorted sets and streams; every 7th key gets a one-hour TTL.
pub fn fill(seed: &str, n: usize) {
    let client = redis::cluster::ClusterClient::new(vec![format!("redis://{seed}/")]).expect("cluster client");
    let mut con = client.get_connection().expect("cluster connection");
    for i in 0..n {
        let key = format!("key:{i}");
        let mut cmd = match i % 6 {
            0 if i % 12 == 0 => redis::cmd("SET").arg(&key).arg(vec![0u8, 255, 13, 10, i as u8]).clone(),
            0 => redis::cmd("SET").arg(&key).arg(format!("value-{i}")).clone(),
            1 => redis::cmd("HSET").arg(&key).arg("a").arg(i).arg("b").arg(vec![0u8, 255, 10, i as u8]).clone(),
            2 => redis::cmd("RPUSH").arg(&key).arg("x").arg(i).arg("z").arg("x").clone(),
            3 => redis::cmd("SADD").arg(&key).arg(i).arg("m").arg("n").clone(),
            4 => redis::cmd("ZADD").arg(&key).arg(1.5).arg("one").arg(i).arg("two").arg(-3).arg("three").clone(),
            _ => redis::cmd("XADD").arg(&key).arg("*").arg("field").arg(i).clone(),
        };
        let _: Value = cmd.query(&mut con).unwrap_or_else(|e| panic!("write {key}: {e}"));
        if i % 6 == 5 {
            cmd = redis::cmd("XADD").arg(&key).arg("*").arg("more").arg("x").clone();
            let _: Value = cmd.query(&mut con).expect("xadd");
        }
        if i % 7 == 0 {
            let _: Value = redis::cmd("PEXPIRE").arg(&key).arg(3_600_000).query(&mut con).expect("pexpire");
        }
    }
}

/// Writes one string of `size` incompressible bytes (so the RDB holding it is about as large).
pub fn fill_big(seed: &str, key: &str, size: usize) {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let bytes: Vec<u8> = (0..size)
        .map(|_| {
            // xorshift64: random enough that LZF cannot shrink it.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let client = redis::cluster::ClusterClient::new(vec![format!("redis://{seed}/")]).expect("cluster client");
    let mut con = client.get_connection().expect("cluster connection");
    let _: () = redis::cmd("SET").arg(key).arg(bytes).query(&mut con).expect("SET big value");
}

/// What a key holds: type, value in a canonical form, and whether it has a TTL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyState {
    pub kind: String,
    pub value: String,
    pub has_ttl: bool,
}

/// Every key of every master in `masters`, read from the node that holds it.
pub fn dump(masters: &[String]) -> BTreeMap<Vec<u8>, KeyState> {
    let mut all = BTreeMap::new();
    for addr in masters {
        let client = redis::Client::open(format!("redis://{addr}/")).expect("client");
        let mut con = client.get_connection_with_timeout(Duration::from_secs(5)).expect("connect");
        let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut con).expect("KEYS");
        for key in keys {
            let kind: String = redis::cmd("TYPE").arg(&key).query(&mut con).expect("TYPE");
            let value = match kind.as_str() {
                "string" => {
                    let bytes: Vec<u8> = redis::cmd("GET").arg(&key).query(&mut con).expect("GET");
                    // A big value by its digest, not as a multi-megabyte debug string.
                    if bytes.len() > 4096 {
                        format!("sha256:{}", hex::encode(Sha256::digest(&bytes)))
                    } else {
                        format!("{bytes:?}")
                    }
                }
                "hash" => sorted(redis::cmd("HGETALL").arg(&key).query::<Vec<(Vec<u8>, Vec<u8>)>>(&mut con)),
                "list" => {
                    format!("{:?}", redis::cmd("LRANGE").arg(&key).arg(0).arg(-1).query::<Vec<Vec<u8>>>(&mut con))
                }
                "set" => sorted(redis::cmd("SMEMBERS").arg(&key).query::<Vec<Vec<u8>>>(&mut con)),
                "zset" => format!(
                    "{:?}",
                    redis::cmd("ZRANGE").arg(&key).arg(0).arg(-1).arg("WITHSCORES").query::<Vec<Vec<u8>>>(&mut con)
                ),
                _ => format!(
                    "{:?} groups {:?}",
                    redis::cmd("XRANGE").arg(&key).arg("-").arg("+").query::<Value>(&mut con),
                    redis::cmd("XINFO").arg("GROUPS").arg(&key).query::<Value>(&mut con)
                ),
            };
            // Big values are compared by digest, not by a multi-megabyte debug string.
            let value =
                if value.len() > 4096 { format!("sha256:{}", hex::encode(Sha256::digest(&value))) } else { value };
            let ttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut con).expect("PTTL");
            all.insert(key, KeyState { kind, value, has_ttl: ttl > 0 });
        }
    }
    all
}

fn sorted<T: Ord + std::fmt::Debug>(v: redis::RedisResult<Vec<T>>) -> String {
    let mut v = v.expect("read");
    v.sort();
    format!("{v:?}")
}

/// Prints a note that shows even when the test passes: libtest captures `print!`/`eprint!` of
/// passing tests, not writes to the stderr handle, and a skipped check must never be silent.
pub fn note(msg: &str) {
    let _ = writeln!(std::io::stderr(), "note: {msg}");
}

/// A test server run by one of the `scripts/*-test-server.sh` scripts (`start DIR PORT ARGS…`,
/// `stop DIR`) on a reserved port, stopped on drop.
pub struct ScriptServer {
    pub port: u16,
    dir: tempfile::TempDir,
    script: PathBuf,
}

impl ScriptServer {
    /// Starts `scripts/<script> start DIR PORT args…`, on up to three fresh ports; `Err` with the
    /// script's last message. `hopeless(message)` stops the tries early (nothing to install with).
    fn start(
        script: &str,
        prefix: &str,
        args: &[&str],
        hopeless: impl Fn(&str) -> bool,
    ) -> Result<ScriptServer, String> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts").join(script);
        let mut last = String::new();
        for _ in 0..3 {
            let guard = reserve_port();
            let dir = tempfile::Builder::new().prefix(prefix).tempdir().expect("temp dir");
            let out = Command::new("bash")
                .arg(&script)
                .arg("start")
                .arg(dir.path())
                .arg(guard.port().to_string())
                .args(args)
                .output()
                .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
            if out.status.success() {
                return Ok(ScriptServer { port: guard.port(), dir, script });
            }
            last = String::from_utf8_lossy(&out.stderr).into_owned();
            if hopeless(&last) {
                break;
            }
        }
        Err(last)
    }
}

impl Drop for ScriptServer {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(&self.script).arg("stop").arg(self.dir.path()).status();
    }
}

/// A moto S3 server started with `scripts/s3-test-server.sh`, stopped on drop.
pub struct S3Server {
    pub port: u16,
    _server: ScriptServer,
}

impl S3Server {
    /// Starts moto (installing it from PyPI when missing). `None`, with a printed note, only when
    /// moto cannot be installed or started (no network, no python3).
    pub fn start() -> Option<S3Server> {
        let hopeless = |m: &str| m.contains("install") || m.contains("python3");
        match ScriptServer::start("s3-test-server.sh", "rf-moto-", &[], hopeless) {
            Ok(server) => Some(S3Server { port: server.port, _server: server }),
            Err(last) => {
                note(&format!("SKIPPED the S3 checks: the moto S3 server could not be installed or started: {last}"));
                None
            }
        }
    }

    /// The environment a client needs to reach it.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{}", self.port)),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
            ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
        ]
    }

    /// An unsigned `PUT /path` (moto accepts it for new buckets and objects).
    pub fn put(&self, path: &str, body: &[u8]) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to moto");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let head = format!(
            "PUT {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.port,
            body.len()
        );
        stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(body)).expect("send");
        let mut reply = String::new();
        let _ = stream.read_to_string(&mut reply);
        assert!(reply.starts_with("HTTP/1.1 200"), "PUT {path}: {}", reply.lines().next().unwrap_or_default());
    }
}

/// An Azurite blob service started with `scripts/az-test-server.sh`, stopped on drop.
pub struct AzServer {
    pub port: u16,
    _server: ScriptServer,
}

impl AzServer {
    /// Starts Azurite with `container` created (installing it from npm when missing). `None`,
    /// with a printed note, only when it cannot be installed (no npm, no network).
    pub fn start(container: &str) -> Option<AzServer> {
        let hopeless = |m: &str| {
            assert!(!m.contains("exited at start") || m.contains("EADDRINUSE"), "Azurite failed: {m}");
            m.contains("install") || m.contains("is needed")
        };
        match ScriptServer::start("az-test-server.sh", "rf-azurite-", &[container], hopeless) {
            Ok(server) => Some(AzServer { port: server.port, _server: server }),
            Err(last) => {
                note(&format!("SKIPPED the Azure checks: Azurite could not be installed or started: {last}"));
                None
            }
        }
    }

    /// The environment a client needs to reach it (the emulator's well-known account).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AZURE_STORAGE_USE_EMULATOR", "true".to_owned()),
            ("AZURITE_BLOB_STORAGE_URL", format!("http://127.0.0.1:{}", self.port)),
        ]
    }
}
