//! `upstream.read_from`: reads go to replicas (READONLY on their connections), writes never do,
//! and reads fall back to the master when no replica is up.

use std::time::Duration;

use redisforge_tests::{Cluster, ClusterOptions, Proxy, ProxyOptions, wait_until};

/// `cmdstat_<command>` calls on a node.
fn calls(cluster: &Cluster, node: &str, command: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(&mut cluster.client(node)).expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn proxy(cluster: &Cluster, read_from: &str) -> Proxy {
    let extra = format!("[upstream]\nseeds = @SEEDS@\n@UPSTREAM_AUTH@\nread_from = \"{read_from}\"\n");
    Proxy::start(cluster, ProxyOptions { extra_toml: extra, ..ProxyOptions::default() })
}

#[test]
fn reads_go_to_replicas_and_writes_to_masters() {
    let cluster = Cluster::start(ClusterOptions::default());
    let proxy = proxy(&cluster, "replica");
    let mut con = proxy.client();
    let key = "rr:key";
    let master = cluster.node_for_key(key);
    let replica = cluster.replicas_of(&master).pop().expect("a replica");
    let _: () = redis::cmd("SET").arg(key).arg("v").query(&mut con).expect("SET");
    // A write sent to a replica would have failed with READONLY/MOVED; the master ran it.
    assert!(calls(&cluster, &master, "set") >= 1, "writes go to the master");
    // The replica may lag a moment behind the write.
    let replicated = wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        redis::cmd("GET").arg(key).query::<Option<String>>(&mut con).ok().flatten().as_deref() == Some("v")
    });
    assert!(replicated);
    let before = calls(&cluster, &replica, "get");
    for _ in 0..20 {
        let _: Option<String> = redis::cmd("GET").arg(key).query(&mut con).expect("GET");
    }
    assert!(calls(&cluster, &replica, "get") >= before + 20, "reads go to the replica");
}

#[test]
fn reads_fall_back_to_the_master_when_the_replica_is_down() {
    let cluster = Cluster::start(ClusterOptions::default());
    let proxy = proxy(&cluster, "prefer-replica");
    let mut con = proxy.client();
    let key = "rr:fallback";
    let _: () = redis::cmd("SET").arg(key).arg("v").query(&mut con).expect("SET");
    let master = cluster.node_for_key(key);
    let replica = cluster.replicas_of(&master).pop().expect("a replica");
    cluster.kill(&replica);
    // Every read succeeds: straight after the kill it is retried on the master, later the
    // topology no longer lists the replica.
    for i in 0..50 {
        let got: Option<String> =
            redis::cmd("GET").arg(key).query(&mut con).unwrap_or_else(|e| panic!("GET #{i}: {e}"));
        assert_eq!(got.as_deref(), Some("v"));
        std::thread::sleep(Duration::from_millis(50));
    }
}
