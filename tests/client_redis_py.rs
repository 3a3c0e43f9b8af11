//! A second real client from another ecosystem: redis-py (installed by scripts/test.sh) runs a
//! realistic session through the proxy — transactions with WATCH, pub/sub, blocking pops,
//! scripts, RESP3.

use std::process::Command;

use redisforge_tests::{Cluster, Proxy, ProxyOptions};

#[test]
fn redis_py_session_through_the_proxy() {
    let proxy = Proxy::start(Cluster::shared(), ProxyOptions::default());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/stateful_client.py");
    let out = Command::new("python3").arg(script).arg(proxy.port().to_string()).output().expect("run python3");
    assert!(
        out.status.success(),
        "redis-py session failed (is redis-py installed? scripts/test.sh installs it):\n{}\n{}\nproxy log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        proxy.log_tail(20)
    );
}

/// redis-py's client-side cache (`protocol=3`, `cache_config`) through the proxy: reads come from
/// the cache until another client writes, on every master (tests/python/tracking_client.py).
/// redis-py caches only with Redis 7.4 or later: this runs for real in the server-versions step
/// (Redis 7.4, Valkey 8); against Redis 7.0 the script checks redis-py's refusal instead.
#[test]
fn redis_py_client_side_cache_through_the_proxy() {
    let cluster = Cluster::shared();
    let proxy = Proxy::start(cluster, ProxyOptions::default());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/tracking_client.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(proxy.port().to_string())
        .arg(proxy.metrics_addr())
        .arg(proxy.pid().to_string())
        .args(cluster.masters())
        .args(cluster.key_per_master("py-cache"))
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "redis-py client-side cache failed:\n{stdout}\n{}\nproxy log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        proxy.log_tail(20)
    );
    eprintln!("{stdout}");
}
