//! `/metrics`, `/healthz` and `/readyz` after real traffic, and through a master failure.

use std::time::Duration;

use redisforge_tests::{Cluster, ClusterOptions, Proxy, ProxyOptions, http_get, wait_until};

/// The value of the first sample whose line starts with `series` (name plus labels).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn scrape(proxy: &Proxy) -> String {
    let (status, body) = http_get(&proxy.metrics_addr(), "/metrics", Duration::from_secs(5));
    assert_eq!(status, 200);
    body
}

#[test]
fn counters_histograms_and_gauges_move_with_traffic() {
    let proxy = Proxy::start(Cluster::shared(), ProxyOptions::default());
    let mut con = proxy.client();
    for i in 0..50 {
        let _: () = redis::cmd("SET").arg(format!("met:{i}")).arg(i).query(&mut con).expect("SET");
        let _: Option<String> = redis::cmd("GET").arg(format!("met:{i}")).query(&mut con).expect("GET");
    }
    let _ = redis::cmd("NOSUCHCOMMAND").query::<()>(&mut con);
    let _: Vec<Option<String>> = redis::cmd("MGET").arg(&["met:1", "met:2", "met:3"]).query(&mut con).expect("MGET");
    let body = scrape(&proxy);
    let at_least = |series: &str, n: f64| {
        let value = sample(&body, series).unwrap_or_else(|| panic!("{series} missing from /metrics"));
        assert!(value >= n, "{series} = {value}, wanted at least {n}");
    };
    at_least(r#"redisforge_commands_total{command="set",result="ok"}"#, 50.0);
    at_least(r#"redisforge_commands_total{command="get",result="ok"}"#, 50.0);
    at_least(r#"redisforge_commands_total{command="other",result="error"}"#, 1.0);
    at_least(r#"redisforge_command_duration_seconds_count{command="get"}"#, 50.0);
    at_least("redisforge_client_connections", 1.0);
    at_least("redisforge_client_connections_total", 1.0);
    at_least("redisforge_cluster_slots_covered", 16384.0);
    at_least(r#"redisforge_topology_refreshes_total{trigger="startup"}"#, 1.0);
    let upstream: f64 = body
        .lines()
        .filter(|l| l.starts_with("redisforge_upstream_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(upstream >= 100.0, "upstream requests {upstream}");
    for name in [
        "redisforge_upstream_errors_total",
        "redisforge_redirections_total",
        "redisforge_node_up",
        "redisforge_auth_failures_total",
        "redisforge_tls_handshake_errors_total",
    ] {
        assert!(body.contains(&format!("# TYPE {name} ")), "{name} not exported");
    }
    let (status, _) = http_get(&proxy.metrics_addr(), "/healthz", Duration::from_secs(5));
    assert_eq!(status, 200);
    let (status, _) = http_get(&proxy.metrics_addr(), "/nope", Duration::from_secs(5));
    assert_eq!(status, 404);
}

#[test]
fn readyz_and_node_up_follow_a_master_failure() {
    let cluster = Cluster::start(ClusterOptions::default());
    let proxy = Proxy::start(&cluster, ProxyOptions::default());
    let ready = |want: u16| {
        wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
            http_get(&proxy.metrics_addr(), "/readyz", Duration::from_secs(2)).0 == want
        })
    };
    assert!(ready(200), "proxy never became ready");
    let master = cluster.masters().pop().expect("a master");
    let series = format!(r#"redisforge_node_up{{node="{master}",role="master"}}"#);
    assert_eq!(sample(&scrape(&proxy), &series), Some(1.0));
    cluster.kill(&master);
    assert!(ready(503), "/readyz must turn 503 while a master is down");
    assert!(
        wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
            let body = scrape(&proxy);
            sample(&body, &series) == Some(0.0) || !body.contains(&series)
        }),
        "node_up must drop for the killed master"
    );
    assert!(ready(200), "/readyz must recover once the replica took over");
}
