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

/// Connections a node has in read-only mode (`flags=r` in CLIENT LIST): the proxy's replica-pool
/// connections, which send READONLY, and no other.
fn readonly_connections(cluster: &Cluster, node: &str) -> usize {
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut cluster.client(node)).expect("CLIENT LIST");
    list.lines().filter(|line| line.split(' ').any(|field| field.starts_with("flags=") && field.contains('r'))).count()
}

/// A client keeps the map it routed by from one request to the next (a cheaper check than a new
/// snapshot per request), and a map keeps the pools of the nodes it names. A client that stays
/// connected but idle must not keep a removed node's connections open: it lets its map go when
/// its spare memory is given back (after ~2 s idle), and the pool closes.
#[test]
fn an_idle_client_does_not_keep_a_removed_replicas_connections_open() {
    let cluster = Cluster::start(ClusterOptions::default());
    let extra = "[upstream]\nseeds = @SEEDS@\n@UPSTREAM_AUTH@\nread_from = \"replica\"\n\
                 [topology]\nrefresh_interval = \"1s\"\n";
    let proxy = Proxy::start(&cluster, ProxyOptions { extra_toml: extra.to_string(), ..ProxyOptions::default() });
    let key = "rr:removed";
    let master = cluster.node_for_key(key);
    let replica = cluster.replicas_of(&master).pop().expect("a replica");
    let mut idle = proxy.client();
    let _: () = redis::cmd("SET").arg(key).arg("v").query(&mut idle).expect("SET");
    let read = wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        redis::cmd("GET").arg(key).query::<Option<String>>(&mut idle).ok().flatten().as_deref() == Some("v")
    });
    assert!(read, "the read through the replica's pool");
    assert!(readonly_connections(&cluster, &replica) > 0, "the proxy has a replica pool on {replica}");

    // The replica leaves the cluster: it forgets every node, and every other node forgets it.
    let replica_id = cluster.node_id(&replica);
    let _: () = redis::cmd("CLUSTER").arg("RESET").arg("HARD").query(&mut cluster.client(&replica)).expect("RESET");
    for node in cluster.nodes().iter().filter(|n| **n != replica) {
        let _: () =
            redis::cmd("CLUSTER").arg("FORGET").arg(&replica_id).query(&mut cluster.client(node)).expect("FORGET");
    }
    // `idle` sends nothing more, and stays connected.
    let closed = wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
        readonly_connections(&cluster, &replica) == 0
    });
    assert!(closed, "the proxy's connections to the removed replica {replica} stay open");
    let _: Option<String> = redis::cmd("GET").arg(key).query(&mut idle).expect("the idle client still reads");
}
