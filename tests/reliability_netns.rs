//! A real network partition: a master and the proxy on one side (network namespace A), the rest
//! of the cluster — the majority, and the master's replica — on the other (B). The majority fails
//! the master over; once the partition heals the old master learns the newer config epoch and
//! turns replica, and the proxy must follow: every write after it learned lands on the new
//! master, none on the demoted one, and what it saw is in its log and metrics.
//!
//! Needs root to create namespaces (`ip netns`); elsewhere the test says why and passes without
//! running, and CI prints that line.

use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use redis::{Connection, Value};
use redisforge_proxy::slot::key_slot;
use redisforge_tests::netns::{self, Netns};
use redisforge_tests::proxy::proxy_bin;
use redisforge_tests::server::redis_server_bin;
use redisforge_tests::{connect, http_get, query_args, wait_until};

/// The two sides of the partition: namespace 0 holds the first master and the proxy, namespace 1
/// the majority.
const SIDE_A: usize = 0;
const SIDE_B: usize = 1;
/// Nodes: (side, port). The first three are masters; node 3 + i replicates master i.
const NODES: [(usize, u16); 6] =
    [(SIDE_A, 7001), (SIDE_B, 7002), (SIDE_B, 7003), (SIDE_B, 7004), (SIDE_B, 7005), (SIDE_B, 7006)];
const PROXY_PORT: u16 = 6390;
const METRICS_PORT: u16 = 9990;
/// Upper bound on any wait in this test.
const WAIT: Duration = Duration::from_secs(40);

/// Processes in the namespaces, killed before the namespaces go.
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        self.0.iter_mut().for_each(netns::kill);
    }
}

fn node_config(dir: &std::path::Path, ip: &str, port: u16) -> String {
    let dir = dir.display();
    [
        format!("port {port}"),
        format!("bind {ip}"),
        "protected-mode no".to_owned(),
        "cluster-enabled yes".to_owned(),
        "cluster-config-file nodes.conf".to_owned(),
        "cluster-node-timeout 2000".to_owned(),
        "appendonly no".to_owned(),
        "save \"\"".to_owned(),
        "repl-diskless-sync-delay 0".to_owned(),
        "repl-ping-replica-period 1".to_owned(),
        format!("dir \"{dir}\""),
        format!("logfile \"{dir}/redis.log\""),
    ]
    .join("\n")
        + "\n"
}

fn role(addr: &str) -> Option<String> {
    let mut con = connect(addr).ok()?;
    let info: String = redis::cmd("INFO").arg("replication").query(&mut con).ok()?;
    info.lines().find_map(|l| l.strip_prefix("role:")).map(str::to_owned)
}

fn node_id(addr: &str) -> String {
    let mut con = connect(addr).unwrap_or_else(|e| panic!("{addr}: {e}"));
    redis::cmd("CLUSTER").arg("MYID").query(&mut con).expect("CLUSTER MYID")
}

/// `rejected_calls` of SET on a node, from INFO commandstats: writes it refused (a replica
/// answers `MOVED`). Its `calls` would count the SETs it replicates from its master too.
fn set_refusals(addr: &str) -> u64 {
    let mut con = connect(addr).unwrap_or_else(|e| panic!("{addr}: {e}"));
    let info: String = redis::cmd("INFO").arg("commandstats").query(&mut con).expect("INFO commandstats");
    let Some(line) = info.lines().find(|l| l.starts_with("cmdstat_set:")) else { return 0 };
    line.split(',')
        .filter_map(|field| field.split_once('='))
        .filter(|(k, _)| *k == "rejected_calls")
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .sum()
}

/// Starts the six nodes and forms the cluster: masters with a third of the slots each, node
/// 3 + i replicating master i.
fn start_cluster(ns: &Netns, root: &std::path::Path) -> (Processes, Vec<String>) {
    let mut children = Vec::new();
    let mut addrs = Vec::new();
    for (side, port) in NODES {
        let ip = ns.ip(side);
        let dir = root.join(port.to_string());
        std::fs::create_dir_all(&dir).expect("node dir");
        std::fs::write(dir.join("redis.conf"), node_config(&dir, &ip, port)).expect("redis.conf");
        let child = ns
            .command(side, &redis_server_bin())
            .arg(dir.join("redis.conf"))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server in a namespace");
        children.push(child);
        addrs.push(format!("{ip}:{port}"));
    }
    let processes = Processes(children);
    for addr in &addrs {
        assert!(wait_until(WAIT, Duration::from_millis(50), || connect(addr).is_ok()), "{addr} did not start");
    }
    let ranges = [(0, 5460), (5461, 10922), (10923, 16383)];
    for (i, (first, last)) in ranges.iter().enumerate() {
        let mut con = connect(&addrs[i]).expect("master");
        let epoch = (i + 1).to_string();
        assert_eq!(query_args(&mut con, &["CLUSTER", "SET-CONFIG-EPOCH", &epoch]), Ok(Value::Okay));
        let range = [first.to_string(), last.to_string()];
        assert_eq!(query_args(&mut con, &["CLUSTER", "ADDSLOTSRANGE", &range[0], &range[1]]), Ok(Value::Okay));
    }
    let mut first = connect(&addrs[0]).expect("first node");
    for addr in &addrs[1..] {
        let (host, port) = addr.rsplit_once(':').expect("host:port");
        assert_eq!(query_args(&mut first, &["CLUSTER", "MEET", host, port]), Ok(Value::Okay));
    }
    let all_known = wait_until(WAIT, Duration::from_millis(100), || {
        addrs.iter().all(|addr| {
            connect(addr)
                .ok()
                .and_then(|mut c| redis::cmd("CLUSTER").arg("NODES").query::<String>(&mut c).ok())
                .is_some_and(|nodes| nodes.lines().count() == 6 && !nodes.contains("handshake"))
        })
    });
    assert!(all_known, "the nodes did not meet");
    for i in 0..3 {
        let master = node_id(&addrs[i]);
        let mut replica = connect(&addrs[3 + i]).expect("replica");
        assert_eq!(query_args(&mut replica, &["CLUSTER", "REPLICATE", &master]), Ok(Value::Okay));
    }
    let settled = wait_until(WAIT, Duration::from_millis(100), || {
        addrs.iter().all(|addr| {
            connect(addr)
                .ok()
                .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut c).ok())
                .is_some_and(|info| info.contains("cluster_state:ok"))
        }) && (3..6).all(|i| role(&addrs[i]).as_deref() == Some("slave"))
    });
    assert!(settled, "the cluster did not settle");
    (processes, addrs)
}

/// The proxy, in namespace A beside the first master.
fn start_proxy(ns: &Netns, root: &std::path::Path, seeds: &[String]) -> (Child, String) {
    let ip = ns.ip(SIDE_A);
    let acl = root.join("users.acl");
    std::fs::write(&acl, "user default on nopass ~* &* +@all\n").expect("users.acl");
    let seeds: Vec<String> = seeds.iter().map(|s| format!("\"{s}\"")).collect();
    let config = format!(
        "[listen]\nplain = \"{ip}:{PROXY_PORT}\"\n[metrics]\nlisten = \"{ip}:{METRICS_PORT}\"\n\
         [upstream]\nseeds = [{}]\nfailover_wait = \"30s\"\n[auth]\nacl_file = \"{}\"\nallow_anonymous = true\n\
         [log]\nformat = \"text\"\nlevel = \"info\"\n",
        seeds.join(", "),
        acl.display()
    );
    let config_path = root.join("proxy.toml");
    std::fs::write(&config_path, config).expect("proxy.toml");
    let log = std::fs::File::create(root.join("proxy.log")).expect("proxy.log");
    let child = ns
        .command(SIDE_A, &proxy_bin().display().to_string())
        .arg("--config")
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn the proxy in namespace A");
    let addr = format!("{ip}:{PROXY_PORT}");
    let ready = wait_until(WAIT, Duration::from_millis(100), || {
        connect(&addr)
            .ok()
            .and_then(|mut c| redis::cmd("SET").arg("netns:ready").arg("1").query::<()>(&mut c).ok())
            .is_some()
    });
    assert!(ready, "the proxy did not serve:\n{}", std::fs::read_to_string(root.join("proxy.log")).unwrap_or_default());
    (child, addr)
}

/// Keys of the first master's slots.
fn keys_of_first_master(n: usize) -> Vec<String> {
    (0..).map(|i| format!("netns:{i}")).filter(|k| key_slot(k.as_bytes()) <= 5460).take(n).collect()
}

/// SETs through the proxy until stopped (at most `WAIT`); each result with when it was sent.
fn spawn_writer(addr: String, stop: Arc<AtomicBool>) -> thread::JoinHandle<Vec<(Instant, Result<(), String>)>> {
    thread::spawn(move || {
        let mut con: Connection = connect(&addr).expect("writer connection");
        con.set_read_timeout(Some(Duration::from_secs(45))).expect("read timeout");
        let keys = keys_of_first_master(50);
        let deadline = Instant::now() + WAIT * 2;
        let mut results = Vec::new();
        for seq in 0u64.. {
            if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                break;
            }
            let key = &keys[seq as usize % keys.len()];
            let sent = Instant::now();
            let result = query_args(&mut con, &["SET", key, &seq.to_string()]).map(drop);
            results.push((sent, result));
            thread::sleep(Duration::from_millis(20));
        }
        results
    })
}

#[test]
fn after_a_partition_heals_the_proxy_follows_the_majoritys_newer_epoch() {
    let ns = match Netns::create(2) {
        Ok(ns) => ns,
        Err(why) => {
            println!("SKIP reliability_netns: cannot create network namespaces here ({why})");
            return;
        }
    };
    let dir = tempfile::Builder::new().prefix("redisforge-netns-").tempdir().expect("temp dir");
    let (mut processes, addrs) = start_cluster(&ns, dir.path());
    let (proxy, proxy_addr) = start_proxy(&ns, dir.path(), &addrs);
    processes.0.push(proxy);
    let metrics_addr = format!("{}:{METRICS_PORT}", ns.ip(SIDE_A));
    let (old_master, new_master) = (addrs[0].clone(), addrs[3].clone());

    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(proxy_addr.clone(), Arc::clone(&stop));
    thread::sleep(Duration::from_millis(500));

    // The master and the proxy are cut off from the majority, which fails the master over.
    let cut = Instant::now();
    ns.cut(SIDE_A, SIDE_B).expect("cut the sides apart");
    let promoted = wait_until(WAIT, Duration::from_millis(100), || role(&new_master).as_deref() == Some("master"));
    assert!(promoted, "the majority did not promote the replica");
    let promoted_after = cut.elapsed();
    thread::sleep(Duration::from_secs(1));
    let healed = Instant::now();
    ns.mend(SIDE_A, SIDE_B).expect("join the sides again");
    let demoted = wait_until(WAIT, Duration::from_millis(100), || role(&old_master).as_deref() == Some("slave"));
    assert!(demoted, "the old master did not learn the newer epoch");

    // The proxy learns the new master: from the first write it routes there, never back.
    let mut con = connect(&proxy_addr).expect("proxy");
    let key = &keys_of_first_master(1)[0];
    let learned = wait_until(WAIT, Duration::from_millis(100), || {
        query_args(&mut con, &["SET", key, "after"]).is_ok()
            && connect(&new_master)
                .ok()
                .and_then(|mut c| redis::cmd("GET").arg(key).query::<Option<String>>(&mut c).ok())
                .flatten()
                .as_deref()
                == Some("after")
    });
    assert!(learned, "writes through the proxy did not reach the new master");
    let learned_after = healed.elapsed();
    thread::sleep(Duration::from_secs(1));
    let old_refusals = set_refusals(&old_master);
    let moved = |metrics: &str| {
        metrics.lines().find(|l| l.starts_with("redisforge_redirections_total{kind=\"moved\"}")).map(str::to_owned)
    };
    let moved_before = moved(&http_get(&metrics_addr, "/metrics", Duration::from_secs(5)).1);
    for (i, key) in keys_of_first_master(200).iter().enumerate() {
        assert_eq!(query_args(&mut con, &["SET", key, &format!("v{i}")]), Ok(Value::Okay), "SET {key}");
    }
    let log_now = std::fs::read_to_string(dir.path().join("proxy.log")).unwrap_or_default();
    assert_eq!(set_refusals(&old_master), old_refusals, "writes reached the demoted master; proxy log:\n{log_now}");
    let moved_after = moved(&http_get(&metrics_addr, "/metrics", Duration::from_secs(5)).1);
    assert_eq!(moved_before, moved_after, "the proxy was redirected after it learned the new master");
    let mut check = connect(&new_master).expect("new master");
    let last = &keys_of_first_master(200)[199];
    assert_eq!(query_args(&mut check, &["GET", last]), Ok(Value::BulkString(b"v199".to_vec())));

    stop.store(true, Ordering::Relaxed);
    let results = writer.join().expect("writer");
    let errors: Vec<&(Instant, Result<(), String>)> = results.iter().filter(|r| r.1.is_err()).collect();
    let log = std::fs::read_to_string(dir.path().join("proxy.log")).unwrap_or_default();
    let (_, metrics) = http_get(&metrics_addr, "/metrics", Duration::from_secs(5));
    let series = |name: &str| metrics.lines().filter(|l| l.starts_with(name)).collect::<Vec<_>>().join("; ");
    println!(
        "RELIABILITY partition: promotion {promoted_after:?} after the cut; proxy on the new master {learned_after:?} \
         after the heal; writer: {} SETs, {} errors ({:?}); {}; {}",
        results.len(),
        errors.len(),
        errors.first().map(|e| e.1.as_ref().err()),
        series("redisforge_held_requests_released_total"),
        series("redisforge_topology_refreshes_total"),
    );
    assert!(log.contains("topology updated"), "the proxy's log says nothing of the new map:\n{log}");
    println!(
        "RELIABILITY partition: proxy log: {}",
        log.lines().rfind(|l| l.contains("topology updated") || l.contains("refresh failed")).unwrap_or("")
    );
    drop(processes);
}
