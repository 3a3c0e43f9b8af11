//! The proxy talks TLS to the Redis nodes (`upstream.tls`, `ca`, `client_cert`, `client_key`).
//!
//! The clusters here are TLS-only (`port 0`, `tls-port`, `tls-cluster yes`): a proxy that tried
//! plaintext, or picked a node's plain port from the topology, would reach nothing. Each test
//! starts its own cluster, with certificates from `redisforge-ops certs generate`.

use std::path::Path;
use std::time::{Duration, Instant};

use redis::Connection;
use redisforge_tests::{Cluster, ClusterOptions, NodeTls, Proxy, ProxyOptions, generate_certs, wait_until};

/// How long writes to a killed master's slots may fail before the promoted replica serves them.
const FAILOVER_BUDGET: Duration = Duration::from_secs(15);

/// `[upstream]` with TLS to the nodes, trusting `certs/ca.crt`; with `client_identity`, the
/// proxy presents `certs/client.crt` (needed by nodes with `tls-auth-clients yes`).
fn upstream_tls_toml(certs: &Path, client_identity: bool) -> String {
    let mut toml = format!("[upstream]\nseeds = @SEEDS@\ntls = true\nca = \"{}\"\n", certs.join("ca.crt").display());
    if client_identity {
        toml.push_str(&format!(
            "client_cert = \"{}\"\nclient_key = \"{}\"\n",
            certs.join("client.crt").display(),
            certs.join("client.key").display()
        ));
    }
    toml
}

/// The status of the proxy's `/readyz`.
fn ready_status(proxy: &Proxy) -> u16 {
    redisforge_tests::http_get(&proxy.metrics_addr(), "/readyz", Duration::from_secs(2)).0
}

fn start_proxy(cluster: &Cluster, extra_toml: String) -> Proxy {
    Proxy::start(cluster, ProxyOptions { extra_toml, ..ProxyOptions::default() })
}

/// `n` keys whose slots are owned by at least two different masters.
fn keys_across_masters(cluster: &Cluster, prefix: &str, n: usize) -> Vec<String> {
    let keys: Vec<String> = (0..n).map(|i| format!("{prefix}:{i}")).collect();
    let mut owners: Vec<String> = keys.iter().map(|k| cluster.node_for_key(k)).collect();
    owners.sort();
    owners.dedup();
    assert!(owners.len() >= 2, "keys {keys:?} should span several masters, all are on {owners:?}");
    keys
}

fn set_get(con: &mut Connection, proxy: &Proxy, key: &str, value: &str) {
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query(con)
        .unwrap_or_else(|e| panic!("SET {key} via the proxy: {e}\n{}", proxy.log_tail(30)));
    let got: Option<String> =
        redis::cmd("GET").arg(key).query(con).unwrap_or_else(|e| panic!("GET {key} via the proxy: {e}"));
    assert_eq!(got.as_deref(), Some(value), "GET {key}");
}

fn mset_mget(con: &mut Connection, proxy: &Proxy, keys: &[String], tag: &str) {
    let pairs: Vec<(String, String)> = keys.iter().map(|k| (k.clone(), format!("{k}={tag}"))).collect();
    let _: () = redis::cmd("MSET")
        .arg(&pairs)
        .query(con)
        .unwrap_or_else(|e| panic!("MSET across slots via the proxy: {e}\n{}", proxy.log_tail(30)));
    let values: Vec<Option<String>> =
        redis::cmd("MGET").arg(keys).query(con).unwrap_or_else(|e| panic!("MGET across slots via the proxy: {e}"));
    let want: Vec<Option<String>> = pairs.into_iter().map(|(_, v)| Some(v)).collect();
    assert_eq!(values, want);
}

#[test]
fn proxy_serves_a_tls_only_cluster_through_a_failover() {
    let certs = generate_certs();
    let cluster = Cluster::start_tls(ClusterOptions::default(), NodeTls::from_dir(certs.path()));
    // The nodes really are TLS-only: a plaintext PING gets no answer.
    let node = cluster.nodes()[0].clone();
    let plain = redisforge_tests::raw_roundtrip(&node, b"*1\r\n$4\r\nPING\r\n", Duration::from_secs(2));
    assert!(!plain.starts_with(b"+PONG"), "{node} answered a plaintext PING");

    let proxy = start_proxy(&cluster, upstream_tls_toml(certs.path(), false));
    let mut con = proxy.client();
    set_get(&mut con, &proxy, "utls:a", "1");
    let ready = wait_until(Duration::from_secs(15), Duration::from_millis(200), || ready_status(&proxy) == 200);
    assert!(ready, "/readyz with every node reachable over TLS: {}", proxy.log_tail(20));
    let keys = keys_across_masters(&cluster, "utls:m", 12);
    mset_mget(&mut con, &proxy, &keys, "before");

    // Kill the master of one key; its replica takes over and the proxy follows.
    let key = "utls:failover";
    set_get(&mut con, &proxy, key, "before");
    let master = cluster.node_for_key(key);
    let replicas = cluster.replicas_of(&master);
    assert_eq!(replicas.len(), 1, "{master} has one replica: {replicas:?}");
    cluster.kill(&master);
    let killed_at = Instant::now();
    let mut last_error = String::new();
    let recovered = wait_until(FAILOVER_BUDGET, Duration::from_millis(100), || {
        match redis::cmd("SET").arg(key).arg("after").query::<()>(&mut con) {
            Ok(()) => true,
            Err(e) => {
                last_error = e.to_string();
                // A connection the proxy closed is replaced; the test is about the proxy, not it.
                if e.is_connection_dropped() || e.is_io_error() {
                    con = proxy.client();
                }
                false
            }
        }
    });
    assert!(
        recovered,
        "writes did not recover within {FAILOVER_BUDGET:?} of killing {master} (last error: {last_error})\n{}\n{}",
        proxy.log_tail(40),
        cluster.log_tails(10)
    );
    let took = killed_at.elapsed();
    assert_eq!(cluster.role(&replicas[0]).as_deref(), Some("master"), "{} was promoted", replicas[0]);
    let got: Option<String> = redis::cmd("GET").arg(key).query(&mut con).expect("GET after failover");
    assert_eq!(got.as_deref(), Some("after"), "write recovered after {took:?}");
    mset_mget(&mut con, &proxy, &keys, "after");
    // A new client connection is served as well, and the health poller (TLS too) agrees.
    let mut fresh = proxy.client();
    set_get(&mut fresh, &proxy, "utls:fresh", "yes");
    cluster.wait_state_ok();
    let ready = wait_until(Duration::from_secs(15), Duration::from_millis(200), || ready_status(&proxy) == 200);
    assert!(ready, "/readyz after the failover: {}", proxy.log_tail(20));
}

#[test]
fn nodes_requiring_client_certificates_accept_the_proxys_identity() {
    let certs = generate_certs();
    let cluster = Cluster::start_tls(
        ClusterOptions {
            replicas_per_master: 0,
            extra_config: vec!["tls-auth-clients yes".to_owned()],
            ..ClusterOptions::default()
        },
        NodeTls::from_dir(certs.path()),
    );
    let keys = keys_across_masters(&cluster, "mtls:m", 12);

    // The client certificate the brief's config names explicitly.
    let proxy = start_proxy(&cluster, upstream_tls_toml(certs.path(), true));
    let mut con = proxy.client();
    set_get(&mut con, &proxy, "mtls:a", "1");
    mset_mget(&mut con, &proxy, &keys, "explicit");

    // The generated [upstream] for a TLS cluster (`@UPSTREAM_TLS@`) works as is.
    let generated = Proxy::start(&cluster, ProxyOptions::default());
    assert!(generated.config().contains("tls = true"), "{}", generated.config());
    let mut con = generated.client();
    mset_mget(&mut con, &generated, &keys, "generated");

    // TLS but no client certificate: the nodes drop the proxy, whose client gets an error.
    let anonymous = Proxy::spawn(
        &cluster,
        ProxyOptions { extra_toml: upstream_tls_toml(certs.path(), false), ..ProxyOptions::default() },
    );
    anonymous.wait_ready(Duration::from_secs(20)).unwrap_or_else(|why| panic!("{why}"));
    let mut con = anonymous.client();
    let started = Instant::now();
    let reply = redis::cmd("SET").arg("mtls:anonymous").arg("1").query::<()>(&mut con);
    let took = started.elapsed();
    let err = reply.expect_err("nodes that require a client certificate must not serve an anonymous proxy");
    assert!(!err.is_timeout() && !err.is_io_error(), "an error reply, not {err:?} after {took:?}");
    assert!(took < Duration::from_secs(8), "the error took {took:?}");
}

#[test]
fn proxy_without_upstream_tls_answers_errors_instead_of_hanging() {
    let certs = generate_certs();
    let cluster = Cluster::start_tls(
        ClusterOptions { replicas_per_master: 0, ..ClusterOptions::default() },
        NodeTls::from_dir(certs.path()),
    );
    // Plaintext to TLS-only nodes: no topology can ever be loaded.
    let proxy = Proxy::spawn(
        &cluster,
        ProxyOptions { extra_toml: "[upstream]\nseeds = @SEEDS@\n".to_owned(), ..ProxyOptions::default() },
    );
    proxy.wait_ready(Duration::from_secs(20)).unwrap_or_else(|why| panic!("{why}"));
    let mut con = proxy.client();
    let started = Instant::now();
    let reply = redis::cmd("SET").arg("plain:a").arg("1").query::<()>(&mut con);
    let took = started.elapsed();
    let err = reply.expect_err("a proxy that cannot reach the nodes must not report success");
    assert!(
        !err.is_timeout() && !err.is_io_error(),
        "the client should get an error reply, not {err:?} after {took:?}"
    );
    assert!(took < Duration::from_secs(8), "the error took {took:?}");
    assert_eq!(err.code(), Some("CLUSTERDOWN"), "{err:?}");
    // Background refreshes keep failing (and say so) instead of ever serving plaintext.
    let logged = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        proxy.log().contains("topology refresh failed")
    });
    assert!(logged, "failed refreshes should be logged:\n{}", proxy.log_tail(30));
    assert!(proxy.log().contains("no node gave a slot map"), "{}", proxy.log_tail(30));
    let again = redis::cmd("GET").arg("plain:a").query::<Option<String>>(&mut con);
    assert_eq!(again.as_ref().err().and_then(|e| e.code()), Some("CLUSTERDOWN"), "{again:?}");
    assert_eq!(ready_status(&proxy), 503, "/readyz without a slot map");
}

#[test]
fn slot_migration_restart_and_manual_failover_over_tls() {
    let certs = generate_certs();
    let cluster = Cluster::start_tls(ClusterOptions::default(), NodeTls::from_dir(certs.path()));
    let proxy = start_proxy(&cluster, upstream_tls_toml(certs.path(), false));
    let mut con = proxy.client();
    let keys: Vec<String> = (0..20).map(|i| format!("{{utls-mig}}:k{i}")).collect();
    mset_mget(&mut con, &proxy, &keys, "before");

    // MIGRATE runs node to node over TLS (`tls-cluster yes`); the proxy follows MOVED.
    let slot = cluster.slot_for_key(&keys[0]);
    let from = cluster.node_for_slot(slot);
    let to = cluster.masters().into_iter().find(|m| *m != from).expect("another master");
    cluster.migrate_slot(slot, &from, &to);
    assert_eq!(cluster.node_for_slot(slot), to);
    let direct: Option<String> = redis::cmd("GET").arg(&keys[0]).query(&mut cluster.client(&to)).expect("GET on node");
    assert_eq!(direct.as_deref(), Some(format!("{}=before", keys[0]).as_str()));
    mset_mget(&mut con, &proxy, &keys, "migrated");

    // A restarted master comes back over TLS and the cluster takes it back.
    cluster.restart(&from);
    cluster.wait_state_ok();
    assert_eq!(cluster.role(&from).as_deref(), Some("master"));

    // A manual failover of the slot's new owner; the proxy moves to the promoted replica.
    let replica = cluster.replicas_of(&to).pop().expect("the new owner has a replica");
    cluster.failover(&replica);
    assert_eq!(cluster.node_for_slot(slot), replica);
    let served = wait_until(FAILOVER_BUDGET, Duration::from_millis(100), || {
        redis::cmd("SET").arg(&keys[0]).arg("after").query::<()>(&mut con).is_ok()
    });
    assert!(served, "writes after a manual failover: {}", proxy.log_tail(30));
    mset_mget(&mut con, &proxy, &keys, "failed-over");
}
