//! The harness itself: real clusters start, route keys, fail over, and leave no process behind.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use redisforge_tests::{
    Cluster, ClusterOptions, Proxy, ProxyOptions, Signal, SlotRange, raw_roundtrip_until, reserve_port, resp_command,
    wait_until,
};

fn pid_alive(pid: u32) -> bool {
    // A reaped process has no /proc entry; a zombie would still have one.
    Path::new(&format!("/proc/{pid}")).exists()
}

fn assert_full_coverage(ranges: &[SlotRange]) {
    let mut covered = vec![false; 16384];
    for r in ranges {
        for slot in r.start..=r.end {
            assert!(!covered[usize::from(slot)], "slot {slot} listed twice");
            covered[usize::from(slot)] = true;
        }
    }
    assert!(covered.iter().all(|c| *c), "not every slot is covered: {ranges:?}");
}

#[test]
fn own_cluster_routes_keys_fails_over_and_leaves_no_process() {
    let cluster = Cluster::start(ClusterOptions::default());
    assert_eq!(cluster.nodes().len(), 6);
    let masters = cluster.masters();
    let replicas = cluster.replicas();
    assert_eq!(masters.len(), 3, "masters: {masters:?}");
    assert_eq!(replicas.len(), 3, "replicas: {replicas:?}");

    let ranges = cluster.slot_ranges();
    assert_full_coverage(&ranges);
    assert!(ranges.iter().all(|r| r.replicas.len() == 1), "{ranges:?}");

    // Keys land on every master, and each is readable on its owner only.
    let mut owners = HashSet::new();
    for i in 0..30 {
        let key = format!("selftest:{i}");
        let owner = cluster.node_for_key(&key);
        owners.insert(owner.clone());
        let mut con = cluster.client(&owner);
        let _: () = redis::cmd("SET").arg(&key).arg(i).query(&mut con).expect("SET on owner");
        let got: i64 = redis::cmd("GET").arg(&key).query(&mut con).expect("GET on owner");
        assert_eq!(got, i);
        let other = masters.iter().find(|m| **m != owner).expect("another master");
        let moved = redis::cmd("GET")
            .arg(&key)
            .query::<Option<String>>(&mut cluster.client(other))
            .expect_err("non-owner redirects");
        assert!(moved.to_string().to_lowercase().contains("moved"), "{moved}");
    }
    assert_eq!(owners.len(), 3, "30 keys should spread over all masters");

    // Kill the owner of a key; its replica takes over within ~10 s and keeps the data.
    let victim = cluster.node_for_key("selftest:0");
    let replica = cluster.replicas_of(&victim);
    assert_eq!(replica.len(), 1, "replicas of {victim}: {replica:?}");
    let replica = &replica[0];
    // Let the replica acknowledge the writes before the master dies.
    let _: i64 = redis::cmd("WAIT").arg(1).arg(2000).query(&mut cluster.client(&victim)).expect("WAIT for replica");
    let killed_at = Instant::now();
    cluster.kill(&victim);
    let promoted = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        cluster.role(replica).as_deref() == Some("master")
    });
    assert!(promoted, "{replica} not promoted after 10 s\n{}", cluster.log_tails(10));
    eprintln!("failover took {:?}", killed_at.elapsed());
    cluster.wait_state_ok();
    assert_eq!(cluster.node_for_key("selftest:0"), *replica);
    let got: i64 =
        redis::cmd("GET").arg("selftest:0").query(&mut cluster.client(replica)).expect("GET on promoted replica");
    assert_eq!(got, 0);

    // The old master comes back as a replica of the new one.
    cluster.restart(&victim);
    cluster.wait_state_ok();
    assert_eq!(cluster.role(&victim).as_deref(), Some("slave"));

    let pids = cluster.pids();
    assert_eq!(pids.len(), 6);
    let dir = cluster.dir().to_path_buf();
    drop(cluster);
    for pid in pids {
        assert!(!pid_alive(pid), "redis-server {pid} survived the drop");
    }
    assert!(!dir.exists(), "{} survived the drop", dir.display());
}

#[test]
fn shared_cluster_serves_reads_and_writes() {
    let cluster = Cluster::shared();
    assert!(std::ptr::eq(cluster, Cluster::shared()), "one cluster per binary");
    assert_eq!(cluster.masters().len(), 3);
    for i in 0..10 {
        let key = format!("shared:{}:{i}", std::process::id());
        let mut con = cluster.client(&cluster.node_for_key(&key));
        let _: () = redis::cmd("SET").arg(&key).arg("v").query(&mut con).expect("SET");
        let got: String = redis::cmd("GET").arg(&key).query(&mut con).expect("GET");
        assert_eq!(got, "v");
    }
}

#[test]
fn slot_migration_moves_keys_and_ownership() {
    let cluster = Cluster::start(ClusterOptions {
        masters: 2,
        replicas_per_master: 0,
        acl_user: Some(("forge".into(), "s3cret-pass".into())),
        extra_config: vec!["maxmemory-policy noeviction".into()],
    });
    let key = "{migrate}:a";
    let slot = cluster.slot_for_key(key);
    let from = cluster.node_for_slot(slot);
    let to = cluster.masters().into_iter().find(|m| *m != from).expect("a second master");
    let mut con = cluster.client(&from);
    for suffix in ["a", "b", "c"] {
        let _: () = redis::cmd("SET")
            .arg(format!("{{migrate}}:{suffix}"))
            .arg(suffix)
            .query(&mut con)
            .expect("SET before migration");
    }
    cluster.begin_slot_migration(slot, &from, &to);
    assert_eq!(cluster.move_slot_keys(slot, &from, &to, 1), 1);
    cluster.migrate_slot(slot, &from, &to);
    cluster.wait_state_ok();
    assert_eq!(cluster.node_for_key(key), to);
    let got: String = redis::cmd("GET").arg(key).query(&mut cluster.client(&to)).expect("GET on new owner");
    assert_eq!(got, "a");
    let keys: i64 = redis::cmd("CLUSTER")
        .arg("COUNTKEYSINSLOT")
        .arg(slot)
        .query(&mut cluster.client(&to))
        .expect("COUNTKEYSINSLOT");
    assert_eq!(keys, 3);
}

#[test]
fn pause_and_resume_keep_the_node() {
    let cluster = Cluster::start(ClusterOptions { masters: 3, replicas_per_master: 0, ..ClusterOptions::default() });
    let node = cluster.masters()[0].clone();
    cluster.pause(&node);
    assert!(cluster.role(&node).is_none(), "a paused node answers nothing");
    cluster.resume(&node);
    cluster.wait_state_ok();
    assert_eq!(cluster.role(&node).as_deref(), Some("master"));
}

#[test]
fn manual_failover_swaps_roles() {
    let cluster = Cluster::start(ClusterOptions::default());
    let replica = cluster.replicas()[0].clone();
    cluster.failover(&replica);
    assert_eq!(cluster.role(&replica).as_deref(), Some("master"));
    assert_eq!(cluster.masters().len(), 3);
}

#[test]
fn reserved_ports_are_distinct_while_held() {
    let guards: Vec<_> = (0..50).map(|_| reserve_port()).collect();
    let ports: HashSet<u16> = guards.iter().map(|g| g.port()).collect();
    assert_eq!(ports.len(), guards.len());
}

/// A stand-in for `redisforge-proxy`: a `redis-server` on the config's plain port, so the
/// `Proxy` half of the harness is tested without the real binary.
const STAND_IN_PROXY: &str = r#"#!/bin/sh
[ "$1" = "--config" ] || { echo "usage: $0 --config FILE" >&2; exit 2; }
port=$(sed -n 's/^plain = "127.0.0.1:\([0-9]*\)"$/\1/p' "$2")
echo "stand-in proxy on port $port, upstream pass: ${REDISFORGE_TEST_UPSTREAM_PASS:-none}, extra: ${EXTRA:-none}"
exec redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no
"#;

fn stand_in_bin(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("stand-in-proxy");
    std::fs::write(&bin, STAND_IN_PROXY).expect("write stand-in proxy");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    bin
}

#[test]
fn proxy_harness_writes_config_waits_and_signals() {
    let tools = tempfile::tempdir().expect("tempdir");
    let seeds = vec!["127.0.0.1:1".to_owned(), "127.0.0.1:2".to_owned()];
    let acl = ("forge".to_owned(), "pw".to_owned());
    let proxy = Proxy::start_with_seeds(
        &seeds,
        Some(&acl),
        ProxyOptions {
            extra_toml: "[log]\nformat = \"json\"\nlevel = \"debug\"\n[listen]\nplain = \"@PLAIN@\"\ntls = \"@TLS@\"\n[auth]\nacl_file = \"@DIR@/users.acl\"\n".into(),
            env: vec![("EXTRA".into(), "yes".into())],
            bin: Some(stand_in_bin(tools.path())),
            ..ProxyOptions::default()
        },
    );
    let config = proxy.config();
    assert!(config.contains(r#"seeds = ["127.0.0.1:1", "127.0.0.1:2"]"#), "{config}");
    assert!(config.contains("password_env = \"REDISFORGE_TEST_UPSTREAM_PASS\""), "{config}");
    assert_eq!(config.matches("[log]").count(), 1, "{config}");
    assert_eq!(config.matches("[listen]").count(), 1, "{config}");
    assert!(config.contains("format = \"json\""), "{config}");
    let tls = proxy.tls_addr().expect("@TLS@ reserved a port");
    assert!(config.contains(&format!("tls = \"{tls}\"")), "{config}");
    assert!(config.contains(&format!("{}/users.acl", proxy.dir().display())));
    assert!(config.contains(&format!("listen = \"{}\"", proxy.metrics_addr())));

    let mut con = proxy.client();
    let pong: String = redis::cmd("PING").query(&mut con).expect("PING");
    assert_eq!(pong, "PONG");
    let raw = raw_roundtrip_until(&proxy.addr(), &resp_command(&[b"ECHO", b"hi"]), Duration::from_secs(5), |b| {
        b.ends_with(b"hi\r\n")
    });
    assert_eq!(raw, b"$2\r\nhi\r\n");
    let log = proxy.log();
    assert!(log.contains("upstream pass: pw, extra: yes"), "{log}");

    proxy.signal(Signal::Term);
    let status = proxy.wait_exit(Duration::from_secs(10)).expect("exits on SIGTERM");
    assert!(status.success(), "{status}");
    let pid = proxy.pid();
    drop(proxy);
    assert!(!pid_alive(pid));
}

#[test]
fn proxy_harness_reports_a_binary_that_exits() {
    let tools = tempfile::tempdir().expect("tempdir");
    let bin = tools.path().join("fails");
    std::fs::write(&bin, "#!/bin/sh\necho 'bad key: upstream.seeds' >&2\nexit 1\n").expect("write");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let proxy = Proxy::spawn_with_seeds(&[], None, ProxyOptions { bin: Some(bin), ..ProxyOptions::default() });
    let err = proxy.wait_ready(Duration::from_secs(10)).expect_err("an exiting binary is not ready");
    assert!(err.contains("bad key: upstream.seeds"), "{err}");
    assert_eq!(proxy.wait_exit(Duration::from_secs(1)).and_then(|s| s.code()), Some(1));
}
