use std::process::{Child, Command, Stdio};
use std::time::Instant;

use super::*;
use crate::topology::refresh::TopologySettings;
use crate::topology::{RefreshSignal, Trigger};
use crate::upstream::{ConnSettings, Upstreams};

// Captured from redis-server 7.0.15: a master with one replica, that replica, and the replica
// after its master was killed (`redis-cli INFO replication`, CRLF line ends kept).
const MASTER: &str = include_str!("testdata/info_replication_master.txt");
const REPLICA: &str = include_str!("testdata/info_replication_replica.txt");
const REPLICA_LINK_DOWN: &str = include_str!("testdata/info_replication_replica_link_down.txt");

#[test]
fn a_master_reports_its_offset_and_replicas() {
    let info = parse_info_replication(MASTER);
    assert_eq!(info.role, Some(Role::Master));
    assert_eq!(info.master_repl_offset, Some(77));
    assert_eq!(info.slave_repl_offset, None);
    assert_eq!(info.master_addr, None);
    assert_eq!(
        info.replicas,
        vec![ReplicaOffset { addr: "127.0.0.1:27412".into(), state: "online".into(), offset: 77 }]
    );
}

#[test]
fn a_replica_reports_its_master_and_applied_offset() {
    let info = parse_info_replication(REPLICA);
    assert_eq!(info.role, Some(Role::Replica));
    assert_eq!(info.master_addr.as_deref(), Some("127.0.0.1:27411"));
    assert_eq!(info.master_link_up, Some(true));
    assert_eq!(info.slave_repl_offset, Some(77));
    assert!(info.replicas.is_empty());
}

#[test]
fn a_replica_whose_master_died_reports_the_link_down() {
    let info = parse_info_replication(REPLICA_LINK_DOWN);
    assert_eq!(info.role, Some(Role::Replica));
    assert_eq!(info.master_link_up, Some(false));
    assert_eq!(info.slave_repl_offset, Some(77));
}

#[test]
fn parsing_skips_what_it_does_not_know() {
    let text = "# Replication\nrole:master\nslave0:ip=10.0.0.9,port=6379,state=wait_bgsave,offset=0,lag=1\n\
                slave1:garbage\nslavex:ip=1.2.3.4,port=1,offset=5\nmaster_repl_offset:not-a-number\nnew_field:1\n";
    let info = parse_info_replication(text);
    assert_eq!(info.role, Some(Role::Master));
    assert_eq!(info.master_repl_offset, None);
    assert_eq!(info.replicas.len(), 1);
    assert_eq!(info.replicas[0].addr, "10.0.0.9:6379");
    assert_eq!(info.replicas[0].state, "wait_bgsave");
    assert_eq!(parse_info_replication(""), ReplicationInfo::default());
}

#[test]
fn ipv6_replica_addresses_are_bracketed() {
    let info = parse_info_replication("role:master\r\nslave0:ip=::1,port=7001,state=online,offset=3,lag=0\r\n");
    assert_eq!(info.replicas[0].addr, "[::1]:7001");
}

fn master_at(offset: i64, replicas: &[(&str, i64)]) -> ReplicationInfo {
    ReplicationInfo {
        role: Some(Role::Master),
        master_repl_offset: Some(offset),
        replicas: replicas
            .iter()
            .map(|(addr, offset)| ReplicaOffset { addr: addr.to_string(), state: "online".into(), offset: *offset })
            .collect(),
        ..ReplicationInfo::default()
    }
}

fn replica_at(offset: i64) -> ReplicationInfo {
    ReplicationInfo { role: Some(Role::Replica), slave_repl_offset: Some(offset), ..ReplicationInfo::default() }
}

#[test]
fn lag_prefers_the_replicas_own_offset() {
    let master = master_at(1000, &[("r:1", 500)]);
    assert_eq!(replication_lag(&master, "r:1", Some(&replica_at(900))), Some(100));
}

#[test]
fn lag_falls_back_to_the_offset_the_master_lists() {
    let master = master_at(1000, &[("r:1", 500)]);
    assert_eq!(replication_lag(&master, "r:1", None), Some(500));
    // A node that answers as a master (promoted, map not updated yet) has no replica offset.
    assert_eq!(replication_lag(&master, "r:1", Some(&master_at(3, &[]))), Some(500));
    assert_eq!(replication_lag(&master, "r:2", None), None);
}

#[test]
fn lag_is_never_negative_and_unknown_without_the_masters_offset() {
    assert_eq!(replication_lag(&master_at(10, &[]), "r:1", Some(&replica_at(12))), Some(0));
    assert_eq!(replication_lag(&ReplicationInfo::default(), "r:1", Some(&replica_at(12))), None);
}

#[test]
fn lag_from_real_master_and_replica_texts_is_zero() {
    let master = parse_info_replication(MASTER);
    let replica = parse_info_replication(REPLICA);
    assert_eq!(replication_lag(&master, "127.0.0.1:27412", Some(&replica)), Some(0));
    assert_eq!(replication_lag(&master, "127.0.0.1:27412", None), Some(0));
}

fn shard(master: &str, replicas: &[&str]) -> ShardNodes {
    ShardNodes { master: master.into(), replicas: replicas.iter().map(|r| r.to_string()).collect() }
}

#[test]
fn assessment_marks_silent_nodes_down_and_lists_down_masters() {
    let shards = [shard("m1:1", &["r1:1"]), shard("m2:1", &["r2:1"])];
    let probes = HashMap::from([
        ("m1:1".to_string(), Probe::Up(Some(master_at(100, &[])))),
        ("r1:1".to_string(), Probe::Up(Some(replica_at(60)))),
        ("m2:1".to_string(), Probe::Down),
        // r2:1 has no probe at all (its query task failed): down.
    ]);
    let assessment = assess(&shards, &probes);
    assert_eq!(
        assessment.nodes,
        vec![
            ("m1:1".to_string(), Role::Master, true),
            ("r1:1".to_string(), Role::Replica, true),
            ("m2:1".to_string(), Role::Master, false),
            ("r2:1".to_string(), Role::Replica, false),
        ]
    );
    assert_eq!(assessment.masters_down, vec!["m2:1".to_string()]);
    assert_eq!(assessment.lags, vec![("r1:1".to_string(), Some(40)), ("r2:1".to_string(), None)]);
}

#[test]
fn a_node_that_answers_with_an_error_is_up_without_lag() {
    let shards = [shard("m:1", &["r:1"])];
    let probes =
        HashMap::from([("m:1".to_string(), Probe::Up(None)), ("r:1".to_string(), Probe::Up(Some(replica_at(1))))]);
    let assessment = assess(&shards, &probes);
    assert!(assessment.masters_down.is_empty());
    assert_eq!(assessment.lags, vec![("r:1".to_string(), None)]);
}

#[test]
fn nodes_whose_own_role_is_not_the_maps_are_listed() {
    let shards = [shard("m1:1", &["r1:1"]), shard("m2:1", &["r2:1"])];
    let probes = HashMap::from([
        // A manual failover swapped m1:1 and r1:1; the map does not know yet.
        ("m1:1".to_string(), Probe::Up(Some(replica_at(100)))),
        ("r1:1".to_string(), Probe::Up(Some(master_at(100, &[])))),
        ("m2:1".to_string(), Probe::Up(Some(master_at(100, &[])))),
        ("r2:1".to_string(), Probe::Up(None)),
    ]);
    let assessment = assess(&shards, &probes);
    assert_eq!(assessment.roles_changed, vec!["m1:1".to_string(), "r1:1".to_string()]);
    assert!(assess(&shards[1..], &probes).roles_changed.is_empty());
}

// ---- Against real redis-server processes -------------------------------------------------------

fn settings() -> ConnSettings {
    ConnSettings {
        user: None,
        password: None,
        connect_timeout: Duration::from_millis(500),
        command_timeout: Duration::from_secs(2),
        tls: None,
        on_node: Arc::new(|_: &str, _| {}),
        no_evict_refused: Default::default(),
    }
}

fn topology_of(seed: &str) -> Arc<Topology> {
    let upstreams = Arc::new(Upstreams::new(settings(), 1, 0, Metrics::new()));
    let settings = TopologySettings {
        seeds: vec![seed.to_string()],
        refresh_interval: Duration::from_secs(60),
        tls: false,
        use_replicas: false,
    };
    Topology::new(settings, upstreams, RefreshSignal::new())
}

/// A redis-server killed (by PID) when dropped.
struct Node {
    child: Child,
    addr: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port whose cluster bus port (+10000) is free too.
fn free_port_pair() -> u16 {
    loop {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        if port < 55000 && std::net::TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
}

fn have_redis_server() -> bool {
    Command::new("redis-server").arg("--version").stdout(Stdio::null()).status().is_ok_and(|s| s.success())
}

fn start_cluster_node(dir: &std::path::Path) -> Node {
    let port = free_port_pair();
    let dir = dir.join(port.to_string());
    std::fs::create_dir_all(&dir).expect("node dir");
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
        .args(["--repl-diskless-sync-delay", "0", "--repl-ping-replica-period", "1"])
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server");
    Node { child, addr: format!("127.0.0.1:{port}") }
}

async fn send(addr: &str, args: &[&[u8]]) -> Option<OwnedFrame> {
    connect::query(addr, &settings(), args).await.ok()
}

fn text(frame: Option<OwnedFrame>) -> String {
    match frame {
        Some(OwnedFrame::BulkString(b) | OwnedFrame::SimpleString(b)) => String::from_utf8_lossy(&b).into_owned(),
        Some(OwnedFrame::Error(e)) => format!("-{e}"),
        other => format!("{other:?}"),
    }
}

/// Polls `check` every 50ms until it is true, for at most 20s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < Duration::from_secs(20), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn readiness_waits_for_a_topology() {
    let metrics = Metrics::new();
    let topology = topology_of("127.0.0.1:1");
    assert_eq!(readiness(&metrics, &topology), Health::NotReady("topology not loaded yet".into()));
}

#[tokio::test]
async fn poller_reports_a_live_master_and_replica_then_their_deaths() {
    if !have_redis_server() {
        eprintln!("skipped: redis-server not on PATH");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mut master = start_cluster_node(dir.path());
    let replica = start_cluster_node(dir.path());
    let (m, r) = (master.addr.clone(), replica.addr.clone());
    eventually("both nodes to answer", || async {
        text(send(&m, &[b"PING"]).await) == "PONG" && text(send(&r, &[b"PING"]).await) == "PONG"
    })
    .await;
    assert_eq!(text(send(&m, &[b"CLUSTER", b"ADDSLOTSRANGE", b"0", b"16383"]).await), "OK");
    let (host, port) = r.split_once(':').expect("host:port");
    assert_eq!(text(send(&m, &[b"CLUSTER", b"MEET", host.as_bytes(), port.as_bytes()]).await), "OK");
    let master_id = text(send(&m, &[b"CLUSTER", b"MYID"]).await);
    eventually("the replica to replicate", || async {
        text(send(&r, &[b"CLUSTER", b"REPLICATE", master_id.as_bytes()]).await) == "OK"
    })
    .await;
    eventually("the replication link", || async {
        text(send(&r, &[b"INFO", b"replication"]).await).contains("master_link_status:up")
    })
    .await;

    let metrics = Metrics::new();
    let topology = topology_of(&m);
    // Redis 7 lists a replica in CLUSTER SHARDS only once its offset moved.
    eventually("a map with the replica", || async {
        topology.refresh(Trigger::Startup).await.is_ok()
            && topology.routing().map.shards().first().is_some_and(|s| !s.replicas.is_empty())
    })
    .await;
    assert_eq!(readiness(&metrics, &topology), Health::NotReady("node health not checked yet".into()));

    let known = poll_once(&metrics, &topology, HashSet::from(["10.9.9.9:6379".to_string()])).await;
    assert_eq!(known, HashSet::from([m.clone(), r.clone()]));
    let out = metrics.render();
    assert_eq!(sample(&out, &format!("redisforge_node_up{{node=\"{m}\",role=\"master\"}}")), Some(1.0), "{out}");
    assert_eq!(sample(&out, &format!("redisforge_node_up{{node=\"{r}\",role=\"replica\"}}")), Some(1.0));
    let lag = sample(&out, &format!("redisforge_replication_lag_bytes{{node=\"{r}\"}}"));
    assert!(lag.is_some_and(|l| l >= 0.0), "{out}");
    assert_eq!(sample(&out, &format!("redisforge_replication_lag_bytes{{node=\"{m}\"}}")), None);
    assert_eq!(sample(&out, "redisforge_cluster_slots_covered"), Some(16384.0));
    assert_eq!(sample(&out, "redisforge_cluster_state_ok"), Some(1.0));
    assert_eq!(readiness(&metrics, &topology), Health::Ready);

    drop(replica);
    let known = poll_once(&metrics, &topology, known).await;
    let out = metrics.render();
    assert_eq!(sample(&out, &format!("redisforge_node_up{{node=\"{r}\",role=\"replica\"}}")), Some(0.0));
    assert_eq!(sample(&out, &format!("redisforge_replication_lag_bytes{{node=\"{r}\"}}")), None);
    assert_eq!(sample(&out, "redisforge_cluster_state_ok"), Some(1.0));
    assert_eq!(readiness(&metrics, &topology), Health::Ready, "a dead replica does not make the proxy unready");

    let _ = master.child.kill();
    let _ = master.child.wait();
    poll_once(&metrics, &topology, known).await;
    let out = metrics.render();
    assert_eq!(sample(&out, &format!("redisforge_node_up{{node=\"{m}\",role=\"master\"}}")), Some(0.0));
    assert_eq!(sample(&out, "redisforge_cluster_state_ok"), Some(0.0));
    assert_eq!(readiness(&metrics, &topology), Health::NotReady(format!("master {m} unreachable")));
}

#[tokio::test]
async fn the_spawned_poller_polls_at_once() {
    let metrics = Metrics::new();
    let topology = topology_of("127.0.0.1:1");
    let poller = spawn_health_poller(Arc::clone(&metrics), topology, Duration::ZERO);
    let start = Instant::now();
    while !metrics.poll.lock().expect("poll state").polled {
        assert!(start.elapsed() < Duration::from_secs(5), "no poll ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    poller.abort();
    // An empty topology covers nothing and is not ok.
    assert_eq!(metrics.cluster_state_ok.get(), 0);
}
