//! The proxy logs in to Redis nodes as its own ACL user (`upstream.user`, `upstream.password_env`).

use std::time::Duration;

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

/// A client's own connection follows the client's user (AUTH, RESET, an ACL reload) by logging in
/// again on the node as the new user's twin. When the node refuses that login — here the proxy's
/// node user lost the right to set the twin up — the connection is closed rather than left logged
/// in as the previous user: the client's WATCH goes with it, and the transaction it guarded does
/// not run with the previous user's rights.
#[test]
fn a_refused_login_of_the_own_connection_closes_it_and_nothing_runs_as_the_previous_user() {
    let cluster = Cluster::start(ClusterOptions {
        masters: 3,
        replicas_per_master: 0,
        acl_user: Some(("proxyuser".to_string(), "s3cret-pass".to_string())),
        ..ClusterOptions::default()
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let acl = dir.path().join("users.acl");
    std::fs::write(&acl, "user alice on >alice-pass ~* &* +@all\nuser bob on >bob-pass ~* &* +@all\n")
        .expect("write the ACL file");
    let extra_toml = format!("[auth]\nacl_file = \"{}\"\n", acl.display());
    let proxy = Proxy::start(&cluster, ProxyOptions { extra_toml, ..ProxyOptions::default() });
    let key = "relogin:{t}";
    let mut con = proxy.client();
    let _: () = redis::cmd("AUTH").arg("alice").arg("alice-pass").query(&mut con).expect("AUTH alice");
    // WATCH opens the client's own connection, logged in on the node as alice's twin.
    let _: () = redis::cmd("WATCH").arg(key).query(&mut con).expect("WATCH");
    // The proxy's node user may no longer set users up: its pooled connections, logged in
    // already, go on serving; a new login as a twin is refused.
    for node in cluster.masters() {
        let mut admin = cluster.client(&node);
        let _: () =
            redis::cmd("ACL").arg("SETUSER").arg("proxyuser").arg("-acl").query(&mut admin).expect("ACL SETUSER");
    }
    let _: () = redis::cmd("AUTH").arg("bob").arg("bob-pass").query(&mut con).expect("AUTH bob (the proxy's check)");
    let refused = redisforge_tests::wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        proxy.log().contains("could not log in as its new user")
    });
    assert!(refused, "the refused login should be logged: {}", proxy.log());
    // The transaction WATCH guarded must not run as alice on the connection left behind: EXEC is
    // refused (no own connection can log in now), and the key stays unset.
    let _: () = redis::cmd("MULTI").query(&mut con).expect("MULTI");
    let queued: String = redis::cmd("SET").arg(key).arg("as-bob").query(&mut con).expect("SET queued");
    assert_eq!(queued, "QUEUED");
    let exec: redis::RedisResult<redis::Value> = redis::cmd("EXEC").query(&mut con);
    assert!(exec.is_err(), "EXEC ran although no connection could log in as bob: {exec:?}");
    // Commands on pooled connections go on, checked by the proxy as bob.
    let _: () = redis::cmd("SET").arg("relogin:other").arg("1").query(&mut con).expect("SET through the pool");
    let mut bob = proxy.client_as("bob", "bob-pass").expect("a new client as bob");
    let exists: i64 = redis::cmd("EXISTS").arg(key).query(&mut bob).expect("EXISTS");
    assert_eq!(exists, 0, "the transaction wrote its key");
}
