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
