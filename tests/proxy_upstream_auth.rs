//! The proxy logs in to Redis nodes as its own ACL user (`upstream.user`, `upstream.password_env`).

use redisforge_tests::{Cluster, ClusterOptions, Proxy, ProxyOptions};

#[test]
fn proxy_authenticates_to_acl_protected_nodes() {
    let cluster = Cluster::start(ClusterOptions {
        acl_user: Some(("proxyuser".to_string(), "s3cret-pass".to_string())),
        ..ClusterOptions::default()
    });
    // The node refuses unauthenticated clients, so everything below goes through the proxy's login.
    let proxy = Proxy::start(&cluster, ProxyOptions::default());
    let mut con = proxy.client();
    let _: () = redis::cmd("MSET").arg(&["auth:a", "1", "auth:b", "2", "auth:c", "3"]).query(&mut con).expect("MSET");
    let values: Vec<String> = redis::cmd("MGET").arg(&["auth:a", "auth:b", "auth:c"]).query(&mut con).expect("MGET");
    assert_eq!(values, ["1", "2", "3"]);
    let log = proxy.log();
    assert!(!log.contains("s3cret-pass"), "the upstream password must never be logged");
}

#[test]
fn wrong_upstream_password_is_reported_without_the_password() {
    let cluster = Cluster::start(ClusterOptions {
        masters: 3,
        replicas_per_master: 0,
        acl_user: Some(("proxyuser".to_string(), "right-pass".to_string())),
        ..ClusterOptions::default()
    });
    let proxy = Proxy::spawn_with_seeds(
        &cluster.seeds(),
        Some(&("proxyuser".to_string(), "wrong-pass".to_string())),
        ProxyOptions::default(),
    );
    let ready =
        redisforge_tests::wait_until(std::time::Duration::from_secs(10), std::time::Duration::from_millis(100), || {
            proxy.log().contains("WRONGPASS")
        });
    let log = proxy.log();
    assert!(ready, "the login failure should be logged: {log}");
    assert!(!log.contains("wrong-pass"), "the password must never be logged");
}
