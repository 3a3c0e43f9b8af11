use super::*;

/// The names SPEC "Metrics" promises, without the prefix.
const SPEC_NAMES: &[&str] = &[
    "client_connections",
    "client_connections_total",
    "commands_total",
    "command_duration_seconds",
    "upstream_requests_total",
    "upstream_errors_total",
    "redirections_total",
    "topology_refreshes_total",
    "cluster_slots_covered",
    "node_up",
    "auth_failures_total",
    "tls_handshake_errors_total",
];

/// The value of the sample line `series` (`name{labels}` exactly as rendered), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn every_spec_metric_is_rendered_with_help_and_type_from_the_start() {
    let text = Metrics::new().render();
    for name in SPEC_NAMES {
        let full = format!("{PREFIX}{name}");
        assert!(text.contains(&format!("# HELP {full} ")), "no HELP for {full}:\n{text}");
        assert!(text.contains(&format!("# TYPE {full} ")), "no TYPE for {full}");
    }
    for name in ["cluster_state_ok", "tls_cert_expiry_seconds", "replication_lag_bytes"] {
        assert!(text.contains(&format!("# TYPE {PREFIX}{name} gauge")), "no TYPE for {name}");
    }
    assert!(text.contains("# TYPE redisforge_command_duration_seconds histogram"));
    assert!(text.contains("# TYPE redisforge_upstream_errors_total counter"));
    assert!(text.contains("# TYPE redisforge_node_up gauge"));
}

#[test]
fn every_family_is_described_once() {
    let metrics = Metrics::new();
    let text = metrics.render();
    for name in metrics.family_names() {
        assert!(name.starts_with(PREFIX), "{name} lacks the prefix");
        assert_eq!(text.matches(&format!("# TYPE {name} ")).count(), 1, "TYPE of {name} not exactly once");
    }
}

#[test]
fn fixed_label_series_exist_at_zero() {
    let text = Metrics::new().render();
    for label in labels::LABELS {
        for result in ["ok", "error"] {
            let series = format!("redisforge_commands_total{{command=\"{label}\",result=\"{result}\"}}");
            assert_eq!(sample(&text, &series), Some(0.0), "{series} missing");
        }
        let count = format!("redisforge_command_duration_seconds_count{{command=\"{label}\"}}");
        assert_eq!(sample(&text, &count), Some(0.0), "{count} missing");
    }
    for kind in ["moved", "ask"] {
        assert_eq!(sample(&text, &format!("redisforge_redirections_total{{kind=\"{kind}\"}}")), Some(0.0));
    }
    for trigger in REFRESH_TRIGGERS {
        assert_eq!(sample(&text, &format!("redisforge_topology_refreshes_total{{trigger=\"{trigger}\"}}")), Some(0.0));
    }
    assert_eq!(sample(&text, "redisforge_client_connections"), Some(0.0));
    assert_eq!(sample(&text, "redisforge_cluster_slots_covered"), Some(0.0));
}

#[test]
fn command_handles_count_under_their_label() {
    let metrics = Metrics::new();
    let get = labels::label_index("get");
    metrics.record_commands(get, false, 0.0003, 1);
    metrics.record_commands(get, false, 5.0, 1);
    metrics.record_commands(get, true, 0.00001, 1);
    metrics.record_commands(labels::label_index("bitfield"), false, 0.001, 1);
    // An index past the table is counted as other, not a panic.
    metrics.record_commands(usize::MAX, false, 0.001, 1);
    let text = metrics.render();
    assert_eq!(sample(&text, r#"redisforge_commands_total{command="get",result="ok"}"#), Some(2.0));
    assert_eq!(sample(&text, r#"redisforge_commands_total{command="get",result="error"}"#), Some(1.0));
    assert_eq!(sample(&text, r#"redisforge_commands_total{command="other",result="ok"}"#), Some(2.0));
    assert_eq!(sample(&text, r#"redisforge_command_duration_seconds_bucket{command="get",le="0.0005"}"#), Some(2.0));
    assert_eq!(sample(&text, r#"redisforge_command_duration_seconds_bucket{command="get",le="0.00025"}"#), Some(1.0));
    // Above the last bound: only in +Inf.
    assert_eq!(sample(&text, r#"redisforge_command_duration_seconds_bucket{command="get",le="2"}"#), Some(2.0));
    assert_eq!(sample(&text, r#"redisforge_command_duration_seconds_bucket{command="get",le="+Inf"}"#), Some(3.0));
    assert_eq!(sample(&text, r#"redisforge_command_duration_seconds_count{command="get"}"#), Some(3.0));
    let sum = sample(&text, r#"redisforge_command_duration_seconds_sum{command="get"}"#).expect("sum");
    assert!((sum - 5.00031).abs() < 1e-9, "{sum}");
    assert_eq!(metrics.commands_answered(), 5);
}

#[test]
fn command_counts_from_every_thread_are_summed() {
    let metrics = Metrics::new();
    let get = labels::label_index("get");
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| (0..100).for_each(|_| metrics.record_commands(get, false, 0.001, 1)));
        }
    });
    metrics.record_commands(get, true, 0.001, 1);
    let text = metrics.render();
    assert_eq!(sample(&text, r#"redisforge_commands_total{command="get",result="ok"}"#), Some(400.0));
    assert_eq!(sample(&text, r#"redisforge_commands_total{command="get",result="error"}"#), Some(1.0));
    assert_eq!(sample(&text, r#"redisforge_command_duration_seconds_count{command="get"}"#), Some(401.0));
    // Another registry on the same threads counts apart.
    assert_eq!(Metrics::new().commands_answered(), 0);
}

#[test]
fn duration_buckets_span_50us_to_2s() {
    assert_eq!(DURATION_BUCKETS.first(), Some(&0.00005));
    assert_eq!(DURATION_BUCKETS.last(), Some(&2.0));
    assert!(DURATION_BUCKETS.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn unknown_refresh_triggers_count_as_other() {
    let metrics = Metrics::new();
    metrics.topology_refresh("moved").inc();
    metrics.topology_refresh("cosmic-ray").inc();
    let text = metrics.render();
    assert_eq!(sample(&text, r#"redisforge_topology_refreshes_total{trigger="moved"}"#), Some(1.0));
    assert_eq!(sample(&text, r#"redisforge_topology_refreshes_total{trigger="other"}"#), Some(1.0));
}

#[test]
fn topology_triggers_are_all_known_labels() {
    for trigger in crate::topology::Trigger::ALL {
        assert!(REFRESH_TRIGGERS[..REFRESH_TRIGGERS.len() - 1].contains(&trigger.as_str()), "{trigger:?}");
    }
}

#[test]
fn redirections_count_by_kind() {
    let metrics = Metrics::new();
    metrics.redirections_moved.inc();
    metrics.redirections_ask.inc_by(3);
    let text = metrics.render();
    assert_eq!(sample(&text, r#"redisforge_redirections_total{kind="moved"}"#), Some(1.0));
    assert_eq!(sample(&text, r#"redisforge_redirections_total{kind="ask"}"#), Some(3.0));
}

#[test]
fn node_handles_create_every_error_kind_and_share_series() {
    let metrics = Metrics::new();
    let first = metrics.node("10.0.0.1:6379");
    let second = metrics.node("10.0.0.1:6379");
    first.requests.inc();
    second.requests.inc();
    first.record_error(&UpstreamError::Timeout);
    first.record_error(&UpstreamError::Unreachable { addr: "10.0.0.1:6379".into(), reason: "refused".into() });
    first.record_error(&UpstreamError::ConnectionLost { addr: "10.0.0.1:6379".into() });
    first.protocol_errors.inc();
    let text = metrics.render();
    assert_eq!(sample(&text, r#"redisforge_upstream_requests_total{node="10.0.0.1:6379"}"#), Some(2.0));
    for kind in UPSTREAM_ERROR_KINDS {
        let series = format!("redisforge_upstream_errors_total{{kind=\"{kind}\",node=\"10.0.0.1:6379\"}}");
        assert_eq!(sample(&text, &series), Some(1.0), "{series}");
    }
}

#[test]
fn a_role_change_replaces_the_node_up_series() {
    let metrics = Metrics::new();
    metrics.set_node_up("10.0.0.2:6379", "replica", true);
    metrics.set_node_up("10.0.0.2:6379", "master", true);
    let text = metrics.render();
    assert_eq!(sample(&text, r#"redisforge_node_up{node="10.0.0.2:6379",role="master"}"#), Some(1.0));
    assert_eq!(sample(&text, r#"redisforge_node_up{node="10.0.0.2:6379",role="replica"}"#), None);
    metrics.set_node_up("10.0.0.2:6379", "master", false);
    assert_eq!(sample(&metrics.render(), r#"redisforge_node_up{node="10.0.0.2:6379",role="master"}"#), Some(0.0));
}

#[test]
fn forgetting_a_node_removes_all_its_series() {
    let metrics = Metrics::new();
    let node = metrics.node("10.0.0.3:6379");
    node.requests.inc();
    metrics.set_node_up("10.0.0.3:6379", "replica", true);
    metrics.set_replication_lag("10.0.0.3:6379", 42);
    metrics.set_node_up("10.0.0.4:6379", "master", true);
    assert!(metrics.render().contains("10.0.0.3:6379"));
    metrics.forget_node("10.0.0.3:6379");
    let text = metrics.render();
    assert!(!text.contains("10.0.0.3:6379"), "{text}");
    assert!(text.contains("10.0.0.4:6379"));
    // The families stay described after their last series is gone.
    assert!(text.contains("# TYPE redisforge_replication_lag_bytes gauge"));
    assert!(text.contains("# TYPE redisforge_upstream_requests_total counter"));
    // A pool that still holds handles counts without a panic.
    node.requests.inc();
}

/// Prints every exported name, one per line after a marker, for `scripts/check-dashboard.py`,
/// which fails when a dashboard or alert rule uses a name the proxy does not export.
#[test]
fn print_exported_names() {
    // The harness's `test … ` has no newline yet: start the marked lines on a line of their own.
    println!();
    for name in Metrics::new().family_names() {
        println!("EXPORTED-METRIC {name}");
    }
}

/// Prints a rendering with every family populated, each line after a marker, for
/// `scripts/check-monitoring.sh` to lint with `promtool check metrics`.
#[test]
fn print_rendered_sample() {
    let metrics = Metrics::new();
    metrics.node("127.0.0.1:7000").requests.inc();
    metrics.set_node_up("127.0.0.1:7000", "master", true);
    metrics.set_node_up("127.0.0.1:7001", "replica", true);
    metrics.set_replication_lag("127.0.0.1:7001", 0);
    println!();
    for line in metrics.render().lines() {
        println!("RENDERED-METRICS {line}");
    }
}
