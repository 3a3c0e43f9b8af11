//! Topology changes under a live client: a slot migrated, a node restarted, a master failed over.
//! Each test kills or reshards nodes, so each starts its own cluster.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use redisforge_tests::{Cluster, ClusterOptions, Proxy, ProxyOptions, read_until, resp_command, wait_until};

/// Keys with one hash tag all live in one slot; `n` of them.
fn tagged_keys(tag: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{{{tag}}}:k{i}")).collect()
}

/// Writes and reads `keys` through the proxy in a loop until `stop`, counting operations and
/// recording every error with the operation that got it.
fn spawn_client(
    proxy: &Proxy,
    keys: Vec<String>,
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicUsize>,
    errors: Arc<Mutex<Vec<String>>>,
) -> thread::JoinHandle<()> {
    let mut con = proxy.client();
    thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut round = 0u64;
        // Bounded by the deadline and by a generous iteration count.
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && round < 1_000_000 {
            for key in &keys {
                let value = format!("{key}:{round}");
                if let Err(e) = redis::cmd("SET").arg(key).arg(&value).query::<()>(&mut con) {
                    errors.lock().expect("errors lock").push(format!("SET {key}: {e}"));
                    continue;
                }
                match redis::cmd("GET").arg(key).query::<Option<String>>(&mut con) {
                    Ok(Some(got)) if got == value => {}
                    other => errors.lock().expect("errors lock").push(format!("GET {key}: {other:?} (wanted {value})")),
                }
                ops.fetch_add(2, Ordering::Relaxed);
            }
            round += 1;
        }
    })
}

#[test]
fn slot_migrated_live_costs_the_client_no_errors() {
    let cluster = Cluster::start(ClusterOptions::default());
    let proxy = Proxy::start(&cluster, ProxyOptions::default());
    let keys = tagged_keys("mig", 200);
    let slot = cluster.slot_for_key(&keys[0]);
    let from = cluster.node_for_slot(slot);
    let to = cluster.masters().into_iter().find(|m| *m != from).expect("another master");

    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let client = spawn_client(&proxy, keys.clone(), stop.clone(), ops.clone(), errors.clone());
    assert!(wait_until(Duration::from_secs(10), Duration::from_millis(20), || ops.load(Ordering::Relaxed) > 1000));

    // Migrate in small batches so the client hits ASK redirections while keys are split between
    // the two nodes, then MOVED once the slot belongs to the new owner.
    cluster.begin_slot_migration(slot, &from, &to);
    for _ in 0..100 {
        if cluster.move_slot_keys(slot, &from, &to, 10) == 0 {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    cluster.finish_slot_migration(slot, &from, &to);
    let after = ops.load(Ordering::Relaxed);
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(20), || ops.load(Ordering::Relaxed) > after + 2000)
    );
    stop.store(true, Ordering::Relaxed);
    client.join().expect("client thread");

    let errors = errors.lock().expect("errors lock");
    assert!(errors.is_empty(), "{} errors during migration, first: {:?}", errors.len(), errors.first());
    assert_eq!(cluster.node_for_slot(slot), to);
    let mut con = proxy.client();
    for key in &keys {
        let value: Option<String> = redis::cmd("GET").arg(key).query(&mut con).expect("GET after migration");
        assert!(value.is_some_and(|v| v.starts_with(key.as_str())), "{key}");
    }
}

#[test]
fn restarted_master_is_used_again() {
    let cluster = Cluster::start(ClusterOptions::default());
    let proxy = Proxy::start(&cluster, ProxyOptions::default());
    let mut con = proxy.client();
    let keys = tagged_keys("restart", 20);
    for key in &keys {
        let _: () = redis::cmd("SET").arg(key).arg("before").query(&mut con).expect("SET");
    }
    let master = cluster.node_for_key(&keys[0]);
    // Restarted before the cluster can fail it over; the test cluster persists nothing, so the
    // node comes back empty and the test only checks that the proxy serves it again.
    cluster.kill(&master);
    cluster.restart(&master);
    cluster.wait_state_ok();
    // The proxy's old connections broke; it must reconnect (or follow a failover) by itself.
    let recovered = wait_until(Duration::from_secs(15), Duration::from_millis(50), || {
        redis::cmd("SET").arg(&keys[0]).arg("after").query::<()>(&mut con).is_ok()
    });
    assert!(recovered, "writes through the proxy did not recover after a master restart");
    for key in &keys {
        let _: () = redis::cmd("SET").arg(key).arg("after").query(&mut con).expect("SET after restart");
        let got: String = redis::cmd("GET").arg(key).query(&mut con).expect("GET after restart");
        assert_eq!(got, "after");
    }
}

#[test]
fn failed_over_master_is_replaced_by_its_replica() {
    let cluster = Cluster::start(ClusterOptions::default());
    let proxy = Proxy::start(&cluster, ProxyOptions::default());
    let mut con = proxy.client();
    let keys = tagged_keys("failover", 10);
    for key in &keys {
        let _: () = redis::cmd("SET").arg(key).arg("v").query(&mut con).expect("SET");
    }
    let master = cluster.node_for_key(&keys[0]);
    let replica = cluster.replicas_of(&master).pop().expect("a replica");
    cluster.kill(&master);
    let promoted = wait_until(Duration::from_secs(20), Duration::from_millis(50), || {
        cluster.role(&replica).as_deref() == Some("master")
    });
    assert!(promoted, "replica {replica} was not promoted");
    let served = wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        redis::cmd("SET").arg(&keys[0]).arg("w").query::<()>(&mut con).is_ok()
    });
    assert!(served, "proxy did not follow the failover");
    for key in &keys[1..] {
        let got: Option<String> = redis::cmd("GET").arg(key).query(&mut con).expect("GET after failover");
        assert_eq!(got.as_deref(), Some("v"), "{key} lost in failover");
    }
}

/// A manual failover while no client sends anything: the health poll sees the nodes' roles
/// swapped against the map and refreshes it (`trigger="role_change"`), with the timer an hour
/// away and no request to draw a `-MOVED`; the new master is then the map's.
#[test]
fn a_manual_failover_without_traffic_is_followed_within_a_health_poll() {
    let cluster = Cluster::start(ClusterOptions::default());
    let extra_toml = "[topology]\nrefresh_interval = \"1h\"\nrefresh_on_moved = false\n".to_string();
    let proxy = Proxy::start(&cluster, ProxyOptions { extra_toml, ..ProxyOptions::default() });
    let _: () = redis::cmd("SET").arg("{role-change}k").arg("v").query(&mut proxy.client()).expect("SET");
    let master = cluster.node_for_key("{role-change}k");
    let replica = cluster.replicas_of(&master).pop().expect("a replica");
    let role_changes = || proxy.metric(r#"redisforge_topology_refreshes_total{trigger="role_change"}"#);
    assert_eq!(role_changes(), Some(0.0));
    cluster.failover(&replica);
    let master_label = format!(r#"redisforge_node_up{{node="{replica}",role="master"}}"#);
    let followed = wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
        role_changes().is_some_and(|n| n >= 1.0) && proxy.metric(&master_label) == Some(1.0)
    });
    assert!(
        followed,
        "{:?} role-change refreshes, {master_label}: {:?}\n{}",
        role_changes(),
        proxy.metric(&master_label),
        proxy.log_tail(20)
    );
    let got: Option<String> = redis::cmd("GET").arg("{role-change}k").query(&mut proxy.client()).expect("GET");
    assert_eq!(got.as_deref(), Some("v"));
}

#[test]
fn paused_node_costs_only_its_own_requests_bounded_by_command_timeout() {
    let cluster = Cluster::start(ClusterOptions::default());
    let proxy = Proxy::start(
        &cluster,
        ProxyOptions {
            extra_toml: "[upstream]\nseeds = @SEEDS@\n@UPSTREAM_AUTH@\ncommand_timeout = \"500ms\"\n".to_string(),
            ..ProxyOptions::default()
        },
    );
    let mut con = proxy.client();
    let stuck_key = "{pause}:a";
    let paused = cluster.node_for_key(stuck_key);
    let other_key = (0..100)
        .map(|i| format!("{{free{i}}}:b"))
        .find(|k| cluster.node_for_key(k) != paused)
        .expect("a key on another master");
    cluster.pause(&paused);
    let started = Instant::now();
    let stuck = redis::cmd("GET").arg(stuck_key).query::<Option<String>>(&mut con);
    let waited = started.elapsed();
    let other = redis::cmd("SET").arg(&other_key).arg("1").query::<()>(&mut con);
    cluster.resume(&paused);
    let error = stuck.expect_err("a request to a paused node must time out");
    assert!(error.to_string().contains("upstream timeout"), "{error}");
    assert!(waited < Duration::from_secs(2), "timeout took {waited:?}");
    other.expect("requests for other nodes keep working");
    // After the node resumes, its connection was rebuilt and replies are not misattributed.
    let recovered = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        redis::cmd("SET").arg(stuck_key).arg("x").query::<()>(&mut con).is_ok()
    });
    assert!(recovered);
    let got: String = redis::cmd("GET").arg(stuck_key).query(&mut con).expect("GET after resume");
    assert_eq!(got, "x");
    let got: String = redis::cmd("GET").arg(&other_key).query(&mut con).expect("GET other after resume");
    assert_eq!(got, "1");
}

#[test]
fn moved_to_an_unknown_endpoint_goes_to_the_port_on_the_same_host() {
    let cluster = Cluster::start(ClusterOptions::default());
    // No timer refresh and no refresh on MOVED during the test: the redirection alone must do.
    let proxy = Proxy::start(
        &cluster,
        ProxyOptions {
            extra_toml: "[topology]\nrefresh_interval = \"1h\"\nrefresh_on_moved = false\n".to_string(),
            ..Default::default()
        },
    );
    let mut con = proxy.client();
    let key = "{unknown-endpoint}k";
    let _: () = redis::cmd("SET").arg(key).arg("v").query(&mut con).expect("SET");
    let slot = cluster.slot_for_key(key);
    let from = cluster.node_for_slot(slot);
    let to = cluster.masters().into_iter().find(|m| *m != from).expect("another master");
    cluster.migrate_slot(slot, &from, &to);
    // From now on nodes answer `-MOVED slot :port`: "the host you asked, on this port".
    for node in cluster.nodes() {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("cluster-preferred-endpoint-type")
            .arg("unknown-endpoint")
            .query(&mut cluster.client(&node))
            .expect("CONFIG SET cluster-preferred-endpoint-type");
    }
    let moved = redis::cmd("GET").arg(key).query::<String>(&mut cluster.client(&from)).expect_err("moved away");
    assert!(moved.to_string().contains(" :"), "the node names no host: {moved:?}");

    for _ in 0..3 {
        let value: String = redis::cmd("GET").arg(key).query(&mut con).expect("GET follows MOVED :port");
        assert_eq!(value, "v");
    }
    let (_, body) = redisforge_tests::http_get(&proxy.metrics_addr(), "/metrics", Duration::from_secs(5));
    let moved: f64 = body
        .lines()
        .filter(|l| l.starts_with("redisforge_redirections_total{") && l.contains("moved"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(moved >= 3.0, "each GET was redirected: {moved}");
}

/// RESET has the proxy end WATCH on the client's own connection itself (an UNWATCH nobody waits
/// for, as after an aborted EXEC; HELLO and AUTH likewise send HELLO or a login). A WATCH before
/// it that the node answered `-TRYAGAIN` (its slot migrating with one of its keys moved) is sent
/// again later: the UNWATCH must still come after it, or the node keeps watching a key the client
/// stopped watching, and a later transaction of that client fails for a write it never watched.
/// And a WATCH after the RESET must come after the UNWATCH, or it ends at once. As on one node.
#[test]
fn reset_after_a_retried_watch_ends_it_and_only_it() {
    let cluster = Cluster::start(ClusterOptions::default());
    let proxy = Proxy::start(&cluster, ProxyOptions::default());
    let (present, later) = ("{unwatch}a", "{unwatch}c");
    let mut con = proxy.client();
    redis::cmd("SET").arg(present).arg("1").query::<()>(&mut con).expect("SET");
    let mut client = std::net::TcpStream::connect(proxy.addr()).expect("connect to the proxy");

    // The key WATCH named before RESET changes: the transaction commits.
    let replies = retried_watch_then(&cluster, &mut client, &[]);
    assert_eq!(replies, "+OK\r\n+RESET\r\n");
    redis::cmd("SET").arg(present).arg("2").query::<()>(&mut con).expect("SET by another client");
    assert_eq!(transaction(&mut client, later), "*1\r\n+OK\r\n", "WATCH before RESET ended");

    // The key WATCH named after RESET changes: the transaction does not commit.
    let replies = retried_watch_then(&cluster, &mut client, &[b"WATCH", later.as_bytes()]);
    assert_eq!(replies, "+OK\r\n+RESET\r\n+OK\r\n");
    redis::cmd("SET").arg(later).arg("2").query::<()>(&mut con).expect("SET by another client");
    assert_eq!(transaction(&mut client, later), "*-1\r\n", "WATCH after RESET still on");
}

/// Sends `WATCH {unwatch}a {unwatch}b`, `RESET` and `then` in one write while the keys' slot
/// migrates with only `a` on its owner, so the node answers the WATCH `-TRYAGAIN`; calls the
/// migration off after 300 ms, so the proxy's next try succeeds; returns the replies.
fn retried_watch_then(cluster: &Cluster, client: &mut std::net::TcpStream, then: &[&[u8]]) -> String {
    let slot = cluster.slot_for_key("{unwatch}a");
    let from = cluster.node_for_slot(slot);
    let to = cluster.masters().into_iter().find(|m| *m != from).expect("another master");
    let tryagains = || {
        let info: String = redis::cmd("INFO").arg("errorstats").query(&mut cluster.client(&from)).expect("INFO");
        info.lines().find_map(|l| l.strip_prefix("errorstat_TRYAGAIN:count=")?.trim().parse::<u64>().ok()).unwrap_or(0)
    };
    let tryagains_before = tryagains();
    cluster.begin_slot_migration(slot, &from, &to);
    let mut batch = resp_command(&[b"WATCH", b"{unwatch}a", b"{unwatch}b"]);
    batch.extend(resp_command(&[b"RESET"]));
    if !then.is_empty() {
        batch.extend(resp_command(then));
    }
    client.write_all(&batch).expect("WATCH, RESET, …");
    thread::sleep(Duration::from_millis(300));
    for node in [&to, &from] {
        let mut node_con = cluster.client(node);
        redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("STABLE")
            .query::<()>(&mut node_con)
            .expect("SETSLOT STABLE");
    }
    let lines = 2 + usize::from(!then.is_empty());
    let replies =
        read_until(client, Duration::from_secs(10), |got| got.windows(2).filter(|w| w == b"\r\n").count() >= lines);
    assert!(tryagains() > tryagains_before, "the node answered the WATCH -TRYAGAIN");
    String::from_utf8_lossy(&replies).into_owned()
}

/// Runs `MULTI`, `SET key 1`, `EXEC` on `client`; returns EXEC's reply.
fn transaction(client: &mut std::net::TcpStream, key: &str) -> String {
    let mut tx = resp_command(&[b"MULTI"]);
    tx.extend(resp_command(&[b"SET", key.as_bytes(), b"1"]));
    tx.extend(resp_command(&[b"EXEC"]));
    client.write_all(&tx).expect("MULTI, SET, EXEC");
    // MULTI's and SET's replies, then EXEC's: one line (nil, an error) or an array of one.
    let answered = |got: &[u8]| {
        let lines = got.windows(2).filter(|w| w == b"\r\n").count();
        lines >= 4 || (lines == 3 && !got.ends_with(b"*1\r\n"))
    };
    let replies = String::from_utf8_lossy(&read_until(client, Duration::from_secs(10), answered)).into_owned();
    replies.strip_prefix("+OK\r\n+QUEUED\r\n").unwrap_or(&replies).to_string()
}
