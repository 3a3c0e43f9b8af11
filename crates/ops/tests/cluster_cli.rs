//! `redisforge-ops cluster …` as an operator runs it, against real `redis-server` processes on
//! loopback ports: create (zones, idempotency, refusal), check and `--fix`, add and remove under
//! client load, and a rebalance killed half-way and run again.
//!
//! Every server is killed by PID when its guard drops, also when a test panics.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::sleep;
use std::time::{Duration, Instant};

use redis::Commands;

use redisforge_tests::RedisServer;

const BIN: &str = env!("CARGO_BIN_EXE_redisforge-ops");
/// Upper bound on one `redisforge-ops` run.
const OPS_TIMEOUT: Duration = Duration::from_secs(240);

// ---------------------------------------------------------------------------------------------
// Harness: port reservation, redis-server children, running the binary.

/// A cluster-enabled `redis-server` child in its own directory.
struct Server {
    process: RedisServer,
    /// Started with [`ACL_USER`] and the default user off.
    acl: bool,
}

/// The ACL user of [`start_nodes_with_acl`] clusters and its password.
const ACL_USER: (&str, &str) = ("admin", "ops-secret");

impl Server {
    fn addr(&self) -> String {
        self.process.addr()
    }

    fn url(&self) -> String {
        if self.acl {
            format!("redis://{}:{}@{}", ACL_USER.0, ACL_USER.1, self.addr())
        } else {
            format!("redis://{}", self.addr())
        }
    }

    fn con(&self) -> redis::Connection {
        let client = redis::Client::open(self.url()).unwrap();
        let con = client.get_connection_with_timeout(Duration::from_secs(5)).unwrap();
        con.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        con
    }

    fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut self.con()).unwrap_or_else(|e| panic!("{}: {args:?}: {e}", self.addr()))
    }

    fn nodes(&self) -> String {
        self.cmd(&["CLUSTER", "NODES"])
    }

    fn id(&self) -> String {
        self.cmd(&["CLUSTER", "MYID"])
    }
}

/// Starts `n` empty cluster-enabled nodes; the temp dir lives as long as the returned guard.
fn start_nodes(n: usize) -> (tempfile::TempDir, Vec<Server>) {
    start_nodes_with(n, false)
}

/// As [`start_nodes`], with [`ACL_USER`] as the only user (replication authenticates as it too).
fn start_nodes_with_acl(n: usize) -> (tempfile::TempDir, Vec<Server>) {
    start_nodes_with(n, true)
}

fn start_nodes_with(n: usize, acl: bool) -> (tempfile::TempDir, Vec<Server>) {
    let root = tempfile::Builder::new().prefix("redisforge-ops-cluster-").tempdir().unwrap();
    let servers = (0..n).map(|_| start_server(root.path(), acl)).collect();
    (root, servers)
}

fn start_server(root: &Path, acl: bool) -> Server {
    let process = RedisServer::start(root, |port| {
        let mut conf = vec![
            format!("port {port}"),
            "cluster-enabled yes".into(),
            "cluster-config-file nodes.conf".into(),
            "cluster-node-timeout 2000".into(),
            "save \"\"".into(),
            "appendonly no".into(),
            "repl-diskless-sync-delay 0".into(),
            "repl-ping-replica-period 1".into(),
        ];
        if acl {
            let (user, pass) = ACL_USER;
            conf.extend([
                format!("user {user} on >{pass} ~* &* +@all"),
                "user default off".into(),
                format!("masteruser {user}"),
                format!("masterauth {pass}"),
            ]);
        }
        conf
    })
    .unwrap_or_else(|e| panic!("{e}"));
    Server { process, acl }
}

/// Runs the binary, bounded by [`OPS_TIMEOUT`].
fn ops(args: &[&str]) -> Output {
    ops_env(args, &[])
}

/// [`ops`] with extra environment variables.
fn ops_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(OPS_TIMEOUT) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("redisforge-ops {args:?} did not finish within {OPS_TIMEOUT:?}");
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(args: &[&str]) -> String {
    let out = ops(args);
    assert!(out.status.success(), "{args:?} failed ({}):\n{}\n{}", out.status, text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

/// `cluster create` over `servers` with `--replicas`, returning stdout.
fn create(servers: &[Server], replicas: usize, extra: &[String]) -> String {
    let addrs: Vec<String> = servers.iter().map(Server::addr).collect();
    let replicas = replicas.to_string();
    let mut args: Vec<&str> = vec!["cluster", "create"];
    args.extend(addrs.iter().map(String::as_str));
    args.extend(["--replicas", &replicas, "--timeout", "60s"]);
    args.extend(extra.iter().map(String::as_str));
    ok(&args)
}

/// `(id, addr, is master, master id, slot count)` per line of `CLUSTER NODES`.
fn members(nodes: &str) -> Vec<(String, String, bool, String, usize)> {
    nodes
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let slots = f[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .map(|s| match s.split_once('-') {
                    Some((a, b)) => b.parse::<usize>().unwrap() - a.parse::<usize>().unwrap() + 1,
                    None => 1,
                })
                .sum();
            let addr = f[1].split('@').next().unwrap().to_owned();
            (f[0].to_owned(), addr, f[2].contains("master"), f[3].to_owned(), slots)
        })
        .collect()
}

fn cluster_client(server: &Server) -> redis::cluster::ClusterConnection {
    redis::cluster::ClusterClient::new(vec![server.url()]).unwrap().get_connection().unwrap()
}

// ---------------------------------------------------------------------------------------------

#[test]
fn create_builds_a_zoned_cluster_is_idempotent_and_checks_healthy() {
    let (_dir, servers) = start_nodes(6);
    // Natural order would pair every replica with the master of its own zone.
    let zone_of = |i: usize| format!("z{}", i % 3);
    let zones: Vec<String> = servers
        .iter()
        .enumerate()
        .flat_map(|(i, s)| ["--zone".into(), format!("{}={}", s.addr(), zone_of(i))])
        .collect();
    let out = create(&servers, 1, &zones);
    assert!(out.contains("created: 6 nodes, 3 masters"), "{out}");
    assert!(out.contains("MASTER") && out.contains("REPLICAS"), "summary table:\n{out}");

    let zone_by_addr: BTreeMap<String, String> =
        servers.iter().enumerate().map(|(i, s)| (s.addr(), zone_of(i))).collect();
    let view = members(&servers[0].nodes());
    let masters: Vec<_> = view.iter().filter(|m| m.2).collect();
    assert_eq!(masters.len(), 3);
    assert_eq!(masters.iter().map(|m| m.4).sum::<usize>(), 16384, "all slots covered");
    for replica in view.iter().filter(|m| !m.2) {
        let master = masters.iter().find(|m| m.0 == replica.3).expect("replica of a known master");
        assert_ne!(zone_by_addr[&replica.1], zone_by_addr[&master.1], "{} shares a zone with {}", replica.1, master.1);
    }
    assert!(masters.iter().all(|m| view.iter().filter(|r| r.3 == m.0).count() == 1), "one replica per master");
    for s in &servers {
        let info: String = s.cmd(&["CLUSTER", "INFO"]);
        assert!(info.contains("cluster_state:ok"), "{}: {info}", s.addr());
    }

    let again = create(&servers, 1, &zones);
    assert!(again.contains("already created"), "{again}");

    let mut check: Vec<String> = vec!["cluster".into(), "check".into(), servers[3].addr()];
    check.extend(zones.iter().cloned());
    let report = ok(&check.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(report.contains("OK:"), "{report}");
}

#[test]
fn create_refuses_a_node_holding_a_key() {
    let (_dir, servers) = start_nodes(3);
    // A lone node serves writes only while it owns slots: own all, write, give them back.
    servers[1].cmd::<()>(&["CLUSTER", "ADDSLOTSRANGE", "0", "16383"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut con = servers[1].con();
    while con.set::<_, _, ()>("precious", "1").is_err() {
        assert!(Instant::now() < deadline, "node never became writable");
        sleep(Duration::from_millis(100));
    }
    servers[1].cmd::<()>(&["CLUSTER", "DELSLOTSRANGE", "0", "16383"]);

    let addrs: Vec<String> = servers.iter().map(Server::addr).collect();
    let mut args = vec!["cluster", "create"];
    args.extend(addrs.iter().map(String::as_str));
    let out = ops(&args);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("{} holds 1 keys", addrs[1])) && err.contains("--force"), "{err}");
    for s in &servers {
        assert_eq!(members(&s.nodes()).len(), 1, "{} was touched", s.addr());
        assert_eq!(members(&s.nodes())[0].4, 0, "{} got slots", s.addr());
    }
}

#[test]
fn check_reports_an_open_slot_and_fix_finishes_the_migration() {
    let (_dir, servers) = start_nodes(3);
    create(&servers, 0, &[]);
    let key_slot: i64 = servers[0].cmd(&["CLUSTER", "KEYSLOT", "{fixme}"]);
    let slot = key_slot.to_string();
    let src = servers.iter().find(|s| owns(&servers, &s.addr(), key_slot)).expect("someone owns the slot");
    let dst = servers.iter().find(|s| s.addr() != src.addr()).unwrap();
    let mut con = src.con();
    for i in 0..20 {
        let _: () = con.set(format!("{{fixme}}:{i}"), format!("v{i}")).unwrap();
    }
    dst.cmd::<()>(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &src.id()]);
    src.cmd::<()>(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &dst.id()]);
    // Part of the slot already moved, as when a migration is interrupted.
    let port = dst.process.port().to_string();
    src.cmd::<()>(&["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS", "{fixme}:0", "{fixme}:1", "{fixme}:2"]);

    let seed = servers[0].addr();
    let out = ops(&["cluster", "check", &seed, "--min-replicas", "0"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let report = text(&out.stdout);
    assert!(report.contains(&format!("slot {slot} is open: MIGRATING on {}", src.addr())), "{report}");
    assert!(report.contains(&format!("slot {slot} is open: IMPORTING on {}", dst.addr())), "{report}");

    let fixed = ok(&["cluster", "check", &seed, "--min-replicas", "0", "--fix"]);
    assert!(fixed.contains(&format!("fixed: slot {slot}")) && fixed.contains("OK:"), "{fixed}");
    assert!(ok(&["cluster", "check", &seed, "--min-replicas", "0"]).contains("OK:"));
    assert!(owns(&servers, &dst.addr(), key_slot), "slot {slot} went to the importing node");
    assert_eq!(dst.cmd::<i64>(&["CLUSTER", "COUNTKEYSINSLOT", &slot]), 20);
    assert_eq!(src.cmd::<i64>(&["CLUSTER", "COUNTKEYSINSLOT", &slot]), 0);
}

#[test]
fn rebalance_first_closes_migrations_interrupted_at_either_end() {
    let (_dir, servers) = start_nodes(3);
    create(&servers, 0, &[]);
    let seed = servers[0].addr();
    let slot_of = |tag: &str| servers[0].cmd::<i64>(&["CLUSTER", "KEYSLOT", tag]);
    let owner = |slot: i64| servers.iter().find(|s| owns(&servers, &s.addr(), slot)).expect("slot owned");
    let fill = |s: &Server, tag: &str, n: usize| {
        let mut con = s.con();
        for i in 0..n {
            let _: () = con.set(format!("{tag}:{i}"), i).unwrap();
        }
    };

    // Killed right after the target took the slot: keys moved, the source still MIGRATING.
    let late = slot_of("{late}");
    let (src, late_s) = (owner(late), late.to_string());
    let dst = servers.iter().find(|s| s.addr() != src.addr()).unwrap();
    fill(src, "{late}", 10);
    dst.cmd::<()>(&["CLUSTER", "SETSLOT", &late_s, "IMPORTING", &src.id()]);
    src.cmd::<()>(&["CLUSTER", "SETSLOT", &late_s, "MIGRATING", &dst.id()]);
    let keys: Vec<String> = (0..10).map(|i| format!("{{late}}:{i}")).collect();
    let port = dst.process.port().to_string();
    let mut migrate = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
    migrate.extend(keys.iter().map(String::as_str));
    src.cmd::<()>(&migrate);
    dst.cmd::<()>(&["CLUSTER", "SETSLOT", &late_s, "NODE", &dst.id()]);

    // Killed right after the first step: IMPORTING on the target, nothing else.
    let early = slot_of("{early}");
    let (early_owner, early_s) = (owner(early), early.to_string());
    let other = servers.iter().find(|s| s.addr() != early_owner.addr()).unwrap();
    fill(early_owner, "{early}", 5);
    other.cmd::<()>(&["CLUSTER", "SETSLOT", &early_s, "IMPORTING", &early_owner.id()]);

    let out = ops(&["cluster", "rebalance", &seed]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success() && stdout.contains("balanced"), "{stdout}\n{stderr}");
    assert!(stderr.contains(&format!("slot {early}: nothing had moved; cleared IMPORTING")), "{stderr}");
    assert!(ok(&["cluster", "check", &seed, "--min-replicas", "0"]).contains("OK:"));
    assert!(owns(&servers, &dst.addr(), late), "the late migration was finished towards its target");
    assert_eq!(dst.cmd::<i64>(&["CLUSTER", "COUNTKEYSINSLOT", &late_s]), 10);
    assert!(owns(&servers, &early_owner.addr(), early), "the early migration was cancelled");
    assert_eq!(early_owner.cmd::<i64>(&["CLUSTER", "COUNTKEYSINSLOT", &early_s]), 5);
}

#[test]
fn fix_drops_identical_duplicates_and_stops_on_conflicting_ones() {
    let (_dir, servers) = start_nodes(3);
    create(&servers, 0, &[]);
    let seed = servers[0].addr();
    let slot = servers[0].cmd::<i64>(&["CLUSTER", "KEYSLOT", "{dup}"]);
    let slot_s = slot.to_string();
    let src = servers.iter().find(|s| owns(&servers, &s.addr(), slot)).unwrap();
    let dst = servers.iter().find(|s| s.addr() != src.addr()).unwrap();
    let mut con = src.con();
    for (k, v) in [("{dup}:same", "x"), ("{dup}:diff", "a"), ("{dup}:other", "o")] {
        let _: () = con.set(k, v).unwrap();
    }
    let dump: Vec<u8> = redis::cmd("DUMP").arg("{dup}:same").query(&mut con).unwrap();
    dst.cmd::<()>(&["CLUSTER", "SETSLOT", &slot_s, "IMPORTING", &src.id()]);
    src.cmd::<()>(&["CLUSTER", "SETSLOT", &slot_s, "MIGRATING", &dst.id()]);
    // Copies already on the target, as if a MIGRATE reply had been lost: one identical, one not.
    let mut target = dst.con();
    let asking = |c: &mut redis::Connection| redis::cmd("ASKING").query::<()>(c).unwrap();
    asking(&mut target);
    redis::cmd("RESTORE").arg("{dup}:same").arg(0).arg(dump).query::<()>(&mut target).unwrap();
    asking(&mut target);
    redis::cmd("SET").arg("{dup}:diff").arg("b").query::<()>(&mut target).unwrap();

    let out = ops(&["cluster", "check", &seed, "--min-replicas", "0", "--fix"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}\n{stderr}", text(&out.stdout));
    assert!(stderr.contains("key \"{dup}:diff\"") && stderr.contains("different values"), "{stderr}");

    // The operator keeps the source copy and runs the fix again.
    asking(&mut target);
    redis::cmd("DEL").arg("{dup}:diff").query::<()>(&mut target).unwrap();
    let fixed = ok(&["cluster", "check", &seed, "--min-replicas", "0", "--fix"]);
    assert!(fixed.contains("OK:"), "{fixed}");
    assert!(owns(&servers, &dst.addr(), slot));
    assert_eq!(src.cmd::<i64>(&["CLUSTER", "COUNTKEYSINSLOT", &slot_s]), 0);
    let mut con = dst.con();
    for (k, v) in [("{dup}:same", "x"), ("{dup}:diff", "a"), ("{dup}:other", "o")] {
        assert_eq!(con.get::<_, String>(k).unwrap(), v, "{k}");
    }
}

fn owns(servers: &[Server], addr: &str, slot: i64) -> bool {
    let nodes = servers[0].nodes();
    let line = nodes.lines().find(|l| l.split_whitespace().nth(1).is_some_and(|a| a.starts_with(&format!("{addr}@"))));
    line.is_some_and(|l| {
        l.split_whitespace().skip(8).filter(|s| !s.starts_with('[')).any(|s| match s.split_once('-') {
            Some((a, b)) => (a.parse::<i64>().unwrap()..=b.parse().unwrap()).contains(&slot),
            None => s.parse::<i64>().unwrap() == slot,
        })
    })
}

#[test]
fn add_and_remove_a_master_under_client_load_lose_nothing() {
    let (_dir, servers) = start_nodes(4);
    create(&servers[..3], 0, &[]);
    let seed = servers[0].addr();
    let new = &servers[3];

    let stop = Arc::new(AtomicBool::new(false));
    let (errors_tx, errors_rx) = mpsc::channel::<String>();
    let mut con = cluster_client(&servers[0]);
    // Every key written once before the nodes change, so that the writer may stop at any command:
    // a client whose map went stale after the removal retries each command with backoff (against
    // the reset node's CLUSTERDOWN), and a first round still under way then lasted for hours in CI.
    for i in 0..2000 {
        let _: () = con.set(format!("load:{i}"), format!("v{i}")).unwrap();
    }
    let writer = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut rounds = 0u64;
            // Bounded: the main thread stops it (looked at before every command); the deadline is
            // a backstop.
            let deadline = Instant::now() + Duration::from_secs(300);
            let stopped = || stop.load(Ordering::Relaxed) || Instant::now() > deadline;
            while !stopped() {
                for i in 0..2000 {
                    if stopped() {
                        break;
                    }
                    let (key, value) = (format!("load:{i}"), format!("v{i}"));
                    if let Err(e) = con.set::<_, _, ()>(&key, &value) {
                        let _ = errors_tx.send(format!("SET {key}: {e}"));
                    }
                    match con.get::<_, Option<String>>(&key) {
                        Ok(Some(v)) if v == value => {}
                        other => {
                            let _ = errors_tx.send(format!("GET {key}: {other:?}"));
                        }
                    }
                }
                rounds += 1;
            }
            rounds
        })
    };

    let added = ok(&["cluster", "add", &new.addr(), "--to", &seed]);
    assert!(added.contains("added") && added.contains("as a master"), "{added}");
    let view = members(&servers[0].nodes());
    let new_slots = view.iter().find(|m| m.1 == new.addr()).unwrap().4;
    assert_eq!(new_slots, 4096, "the new master holds its share:\n{added}");

    let new_id = new.id();
    let removed = ok(&["cluster", "remove", &new_id, "--from", &seed]);
    assert!(removed.contains("removed"), "{removed}");
    stop.store(true, Ordering::Relaxed);
    let rounds = writer.join().unwrap();
    let errors: Vec<String> = errors_rx.try_iter().take(10).collect();
    assert!(errors.is_empty(), "client errors during add/remove ({rounds} rounds): {errors:#?}");

    for s in &servers[..3] {
        assert!(!s.nodes().contains(&new_id), "{} still knows the removed node", s.addr());
    }
    assert_eq!(members(&new.nodes()).len(), 1, "the removed node was reset");
    assert_ne!(new.id(), new_id, "CLUSTER RESET HARD gave it a new id");
    let mut con = cluster_client(&servers[0]);
    for i in 0..2000 {
        let v: Option<String> = con.get(format!("load:{i}")).unwrap();
        assert_eq!(v, Some(format!("v{i}")), "key load:{i}");
    }
    let total: i64 = servers[..3].iter().map(|s| s.cmd::<i64>(&["DBSIZE"])).sum();
    assert_eq!(total, 2000, "no key lost or duplicated");
    assert_eq!(new.cmd::<i64>(&["DBSIZE"]), 0);
}

#[test]
fn rebalance_killed_half_way_converges_when_run_again() {
    let (_dir, servers) = start_nodes(4);
    create(&servers[..3], 0, &[]);
    let seed = servers[0].addr();
    let keys = 20_000;
    let mut con = cluster_client(&servers[0]);
    for i in 0..keys {
        let _: () = con.set(format!("rb:{i}"), i).unwrap();
    }
    let added = ok(&["cluster", "add", &servers[3].addr(), "--to", &seed, "--no-rebalance"]);
    assert!(added.contains("empty master"), "{added}");

    let mut child = Command::new(BIN)
        .args(["cluster", "rebalance", &seed, "--batch", "5"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("no progress reported");
        // Not a terminal: plain progress lines, the first as the moves start.
        if line.starts_with("rebalance: ") && line.ends_with(" slots to do") {
            break;
        }
    }
    sleep(Duration::from_millis(300));
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "rebalance finished before it was killed");
    let moved = members(&servers[0].nodes()).iter().find(|m| m.1 == servers[3].addr()).unwrap().4;
    assert!(moved < 4096, "killed after all slots moved ({moved}); the test proves nothing");

    // --quiet: the result on stdout, no progress on stderr.
    let rerun = ops(&["--quiet", "cluster", "rebalance", &seed]);
    let (out, err) = (text(&rerun.stdout), text(&rerun.stderr));
    assert!(rerun.status.success() && (out.contains("rebalanced") || out.contains("balanced")), "{out}\n{err}");
    assert!(!err.contains("slots to do") && !err.contains("done in"), "--quiet printed progress:\n{err}");
    for m in members(&servers[0].nodes()) {
        assert_eq!(m.4, 4096, "{} holds {} slots after the re-run", m.1, m.4);
    }
    let report = ok(&["cluster", "check", &seed, "--min-replicas", "0"]);
    assert!(report.contains("OK:"), "{report}");
    let total: i64 = servers.iter().map(|s| s.cmd::<i64>(&["DBSIZE"])).sum();
    assert_eq!(total, keys, "no key lost or duplicated");
    let mut con = cluster_client(&servers[0]);
    for i in (0..keys).step_by(7) {
        assert_eq!(con.get::<_, Option<i64>>(format!("rb:{i}")).unwrap(), Some(i), "rb:{i}");
    }
}

#[test]
fn acl_protected_cluster_is_created_and_resharded_with_auth2() {
    let (_dir, servers) = start_nodes_with_acl(4);
    let env = [("RF_OPS_PASS", ACL_USER.1)];
    let auth = ["--user", ACL_USER.0, "--pass-env", "RF_OPS_PASS"];
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(auth);
        let out = ops_env(&all, &env);
        assert!(out.status.success(), "{args:?}:\n{}\n{}", text(&out.stdout), text(&out.stderr));
        text(&out.stdout)
    };
    let addrs: Vec<String> = servers.iter().map(Server::addr).collect();
    let seed = addrs[0].as_str();
    run(&["cluster", "create", seed, &addrs[1], &addrs[2]]);
    let mut con = cluster_client(&servers[0]);
    for i in 0..500 {
        let _: () = con.set(format!("acl:{i}"), i).unwrap();
    }
    // MIGRATE has to log in to the new master with AUTH2.
    let added = run(&["cluster", "add", &addrs[3], "--to", seed]);
    assert!(added.contains("as a master"), "{added}");
    assert!(run(&["cluster", "check", seed, "--min-replicas", "0"]).contains("OK:"));
    let total: i64 = servers.iter().map(|s| s.cmd::<i64>(&["DBSIZE"])).sum();
    assert_eq!(total, 500);
    assert!(servers[3].cmd::<i64>(&["DBSIZE"]) > 0, "keys moved onto the new master");
    let mut con = cluster_client(&servers[0]);
    for i in 0..500 {
        assert_eq!(con.get::<_, Option<i64>>(format!("acl:{i}")).unwrap(), Some(i));
    }

    let anonymous = ops(&["cluster", "check", seed, "--min-replicas", "0"]);
    assert_eq!(anonymous.status.code(), Some(1));
    assert!(text(&anonymous.stderr).contains(seed), "{}", text(&anonymous.stderr));
}
