use super::*;

const MINIMAL: &str = "[listen]\nplain = \"127.0.0.1:6379\"\n[upstream]\nseeds = [\"10.0.1.10:6379\"]\n";

fn parse(text: &str) -> Config {
    match Config::from_toml(text) {
        Ok(config) => config,
        Err(e) => panic!("expected a valid config, got: {e}\n---\n{text}"),
    }
}

fn reject(text: &str) -> ConfigError {
    match Config::from_toml(text) {
        Ok(config) => panic!("expected an error, got {config:?}\n---\n{text}"),
        Err(e) => e,
    }
}

/// Asserts the error names `key` at `line` and that its message contains `needle`.
fn assert_error(text: &str, key: &str, line: usize, needle: &str) {
    let error = reject(text);
    let shown = error.to_string();
    assert_eq!(error.key(), Some(key), "wrong key in: {shown}");
    assert_eq!(error.line(), Some(line), "wrong line in: {shown}");
    assert!(shown.contains(&format!("line {line}: {key}: ")), "{shown}");
    assert!(shown.contains(needle), "{shown:?} lacks {needle:?}");
}

/// `MINIMAL` with `extra` lines appended to the `[upstream]` section (which ends the file).
fn with_upstream(extra: &str) -> String {
    format!("{MINIMAL}{extra}\n")
}

#[test]
fn minimal_file_gets_every_default() {
    let config = parse(MINIMAL);
    assert_eq!(config.listen.plain, Some("127.0.0.1:6379".parse().expect("addr")));
    assert_eq!(config.listen.tls, None);
    assert_eq!(config.listen.max_clients, 10_000);
    assert_eq!(config.listen.shutdown_timeout, Duration::from_secs(10));
    assert_eq!(config.listen.idle_timeout, None);
    assert_eq!(config.limits, LimitsConfig::default());
    assert_eq!(config.limits.max_request_bytes, 512 * 1024 * 1024);
    assert_eq!(config.limits.max_array_len, 1_048_576);
    assert_eq!(config.limits.max_pipeline, 10_000);
    assert_eq!(config.limits.client_output_limit, 64 * 1024 * 1024);
    // Redis' `client-output-buffer-limit pubsub 32mb 8mb 60`.
    assert_eq!(
        (
            config.limits.normal_output_limit,
            config.limits.normal_output_soft_limit,
            config.limits.normal_output_soft_time
        ),
        (0, 0, Duration::ZERO),
        "Redis' `normal 0 0 0`"
    );
    assert_eq!(config.limits.pubsub_output_limit, 32 * 1024 * 1024);
    assert_eq!(config.limits.pubsub_output_soft_limit, 8 * 1024 * 1024);
    assert_eq!(config.limits.pubsub_output_soft_time, Duration::from_secs(60));
    assert_eq!(config.tls, None);
    assert_eq!(config.upstream.seeds, ["10.0.1.10:6379"]);
    assert_eq!(config.upstream.user, None);
    assert_eq!(config.upstream.password_env, None);
    assert!(!config.upstream.tls);
    assert_eq!(config.upstream.connections_per_node, None);
    assert_eq!(config.upstream.connect_timeout, Duration::from_secs(1));
    assert_eq!(config.upstream.command_timeout, Duration::from_secs(2));
    assert_eq!(config.upstream.read_from, ReadFrom::Master);
    assert_eq!(config.topology.refresh_interval, Duration::from_secs(10));
    assert!(config.topology.refresh_on_moved);
    assert_eq!(config.auth, None);
    assert_eq!(config.metrics.listen, Some("127.0.0.1:9901".parse().expect("addr")));
    assert_eq!(config.log.format, LogFormat::Json);
    assert_eq!(config.log.level, "info");
    assert_eq!(config.runtime.worker_threads, None);
}

#[test]
fn every_duration_unit_parses() {
    let cases = [
        ("1500us", Duration::from_micros(1500)),
        ("1500µs", Duration::from_micros(1500)),
        ("20ns", Duration::from_nanos(20)),
        ("250ms", Duration::from_millis(250)),
        ("10s", Duration::from_secs(10)),
        ("1m", Duration::from_secs(60)),
        ("2h", Duration::from_secs(7200)),
        ("0s", Duration::ZERO),
    ];
    for (text, expected) in cases {
        assert_eq!(parse_duration(text), Ok(expected), "{text}");
        let config = parse(&format!(
            "[listen]\nplain = \"127.0.0.1:1\"\nidle_timeout = \"{text}\"\n{}",
            "[upstream]\nseeds = [\"a:1\"]\n"
        ));
        assert_eq!(config.listen.idle_timeout, (!expected.is_zero()).then_some(expected), "{text}");
    }
}

#[test]
fn malformed_durations_are_rejected() {
    for text in ["10", "-1s", "1.5s", "s", "", "10 s", " 10s", "10sec", "1d", "ten", "99999999999999999999s"] {
        assert!(parse_duration(text).is_err(), "{text:?} should not parse");
    }
    assert!(parse_duration("18446744073709551615h").is_err_and(|e| e.contains("too large")));
}

#[test]
fn duration_without_unit_names_key_and_line() {
    let text = with_upstream("connect_timeout = \"5\"");
    assert_error(&text, "upstream.connect_timeout", 5, "invalid duration \"5\" (expected a number with a unit");
    assert_eq!(
        reject(&text).to_string(),
        "config error at line 5: upstream.connect_timeout: invalid duration \"5\" \
         (expected a number with a unit: 250ms, 1s, 1m)"
    );
}

#[test]
fn bare_integer_duration_suggests_a_unit() {
    let text = with_upstream("command_timeout = 5");
    assert_error(&text, "upstream.command_timeout", 5, "expected a string with a unit");
}

#[test]
fn zero_timeouts_are_rejected() {
    assert_error(&with_upstream("command_timeout = \"0ms\""), "upstream.command_timeout", 5, "greater than 0s");
    assert_error(&with_upstream("connect_timeout = \"0s\""), "upstream.connect_timeout", 5, "greater than 0s");
    let text = format!("{MINIMAL}[topology]\nrefresh_interval = \"0s\"\n");
    assert_error(&text, "topology.refresh_interval", 6, "greater than 0s");
    let text = "[listen]\nplain = \"127.0.0.1:1\"\nshutdown_timeout = \"0s\"\n[upstream]\nseeds = [\"a:1\"]\n";
    assert_error(text, "listen.shutdown_timeout", 3, "greater than 0s");
}

#[test]
fn read_from_accepts_the_three_modes() {
    for (text, expected) in
        [("master", ReadFrom::Master), ("prefer-replica", ReadFrom::PreferReplica), ("replica", ReadFrom::Replica)]
    {
        let config = parse(&with_upstream(&format!("read_from = \"{text}\"")));
        assert_eq!(config.upstream.read_from, expected);
    }
    assert_error(&with_upstream("read_from = \"slave\""), "upstream.read_from", 5, "prefer-replica");
    assert_error(&with_upstream("read_from = \"PreferReplica\""), "upstream.read_from", 5, "unknown variant");
}

#[test]
fn unknown_key_is_an_error_naming_it() {
    assert_error(&with_upstream("conections_per_node = 3"), "upstream.conections_per_node", 5, "unknown key");
    assert_error(&format!("{MINIMAL}[extra]\nx = 1\n"), "extra", 5, "unknown key");
    assert_error(
        "[listen]\nplain = \"127.0.0.1:1\"\nbogus = true\n[upstream]\nseeds = [\"a:1\"]\n",
        "listen.bogus",
        3,
        "expected one of",
    );
}

#[test]
fn wrong_type_names_key_and_line() {
    assert_error(&with_upstream("connections_per_node = \"two\""), "upstream.connections_per_node", 5, "invalid type");
    assert_error(&with_upstream("tls = \"yes\""), "upstream.tls", 5, "expected a boolean");
    let text = "[listen]\nplain = \"127.0.0.1:1\"\n[upstream]\nseeds = \"a:1\"\n";
    assert_error(text, "upstream.seeds", 4, "expected a sequence");
    let text = "[listen]\nplain = \"127.0.0.1:1\"\n[upstream]\nseeds = [\n  \"a:1\",\n  7,\n]\n";
    assert_error(text, "upstream.seeds[1]", 6, "expected a string");
}

#[test]
fn negative_count_is_rejected() {
    assert_error(&with_upstream("connections_per_node = -1"), "upstream.connections_per_node", 5, "invalid value");
}

#[test]
fn inline_password_is_rejected_with_a_pointer_to_password_env() {
    assert_error(&with_upstream("password = \"hunter2\""), "upstream.password", 5, "password_env");
    assert_error(
        &format!("{MINIMAL}[auth]\nacl_file = \"u.acl\"\npassword = \"x\"\n"),
        "auth.password",
        7,
        "password_env",
    );
    assert_error(
        &format!("{MINIMAL}[tls]\ncert = \"c\"\nkey = \"k\"\nkey_password = \"x\"\n"),
        "tls.key_password",
        8,
        "never written inline",
    );
    let shown = reject(&with_upstream("password = \"hunter2\"")).to_string();
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[test]
fn password_env_must_be_a_variable_name_and_is_not_echoed() {
    let text = with_upstream("password_env = \"s3cr3t pass!\"");
    assert_error(&text, "upstream.password_env", 5, "name of an environment variable");
    assert!(!reject(&text).to_string().contains("s3cr3t"));
}

#[test]
fn upstream_password_reads_the_named_variable() {
    assert_eq!(parse(MINIMAL).upstream_password().ok(), Some(None));
    // Cargo sets CARGO_PKG_NAME for test processes; the crate forbids unsafe, so no set_var.
    let config = parse(&with_upstream("password_env = \"CARGO_PKG_NAME\""));
    assert_eq!(config.upstream_password().ok(), Some(Some("redisforge-proxy".to_owned())));
    let config = parse(&with_upstream("password_env = \"REDISFORGE_TEST_SURELY_UNSET_4F2A\""));
    let error = config.upstream_password().expect_err("variable is unset");
    assert_eq!(error.key(), Some("upstream.password_env"));
    assert_eq!(
        error.to_string(),
        "upstream.password_env: environment variable REDISFORGE_TEST_SURELY_UNSET_4F2A is not set"
    );
}

#[test]
fn missing_upstream_section_is_named() {
    let error = reject("[listen]\nplain = \"127.0.0.1:1\"\n");
    assert_eq!(error.key(), Some("upstream"));
    assert_eq!(error.line(), None);
    assert!(error.to_string().starts_with("config error: upstream: missing [upstream]"), "{error}");
}

#[test]
fn empty_seeds_are_rejected_at_their_line() {
    assert_error(
        "[listen]\nplain = \"127.0.0.1:1\"\n[upstream]\nseeds = []\n",
        "upstream.seeds",
        4,
        "at least one seed",
    );
    assert_error(
        "[listen]\nplain = \"127.0.0.1:1\"\n\n[upstream]\nuser = \"p\"\n",
        "upstream.seeds",
        4,
        "at least one seed",
    );
}

#[test]
fn each_seed_must_be_host_and_port() {
    for bad in ["10.0.1.10", "10.0.1.10:", ":6379", "host:0", "host:70000", "::1:6379", "[::1:6379", "a b:1", "h:p"] {
        let text = format!("[listen]\nplain = \"127.0.0.1:1\"\n[upstream]\nseeds = [\"ok:1\",\n  \"{bad}\"]\n");
        assert_error(&text, "upstream.seeds[1]", 5, "seed");
    }
    let config = parse(
        "[listen]\nplain = \"127.0.0.1:1\"\n[upstream]\nseeds = [\"redis-0.redis.svc:6379\", \"[::1]:7000\", \"10.0.0.1:1\"]\n",
    );
    assert_eq!(config.upstream.seeds.len(), 3);
}

#[test]
fn a_listener_is_required() {
    assert_error("[listen]\nmax_clients = 5\n[upstream]\nseeds = [\"a:1\"]\n", "listen", 1, "no listener");
    let error = reject("[upstream]\nseeds = [\"a:1\"]\n");
    assert_eq!((error.key(), error.line()), (Some("listen"), None));
    assert_error("[listen]\nplain = \"\"\n[upstream]\nseeds = [\"a:1\"]\n", "listen", 1, "no listener");
}

#[test]
fn bad_listener_address_names_key() {
    assert_error(
        "[listen]\nplain = \"localhost:6379\"\n[upstream]\nseeds = [\"a:1\"]\n",
        "listen.plain",
        2,
        "invalid address",
    );
    assert_error(&format!("{MINIMAL}[metrics]\nlisten = \"9901\"\n"), "metrics.listen", 6, "invalid address");
}

#[test]
fn tls_listener_needs_tls_section() {
    let text = "[listen]\ntls = \"127.0.0.1:6380\"\n[upstream]\nseeds = [\"a:1\"]\n";
    assert_error(text, "listen.tls", 2, "[tls]");
    let config = parse(&format!("{text}[tls]\ncert = \"s.crt\"\nkey = \"s.key\"\nclient_ca = \"\"\n"));
    let tls = config.tls.expect("tls section");
    assert_eq!((tls.cert, tls.key, tls.client_ca), ("s.crt".into(), "s.key".into(), None));
}

#[test]
fn certificate_users_need_mutual_tls_and_an_acl_file() {
    let tls = "[tls]\ncert = \"s.crt\"\nkey = \"s.key\"\n";
    let without_ca = reject(&format!("{MINIMAL}{tls}client_user = \"cn\"\n"));
    assert_eq!(without_ca.key(), Some("tls.client_user"), "{without_ca}");
    assert!(without_ca.to_string().contains("tls.client_ca"), "{without_ca}");
    let without_users = reject(&format!("{MINIMAL}{tls}client_ca = \"ca.crt\"\nclient_user = \"san\"\n"));
    assert!(without_users.to_string().contains("acl_file"), "{without_users}");
    let config =
        parse(&format!("{MINIMAL}{tls}client_ca = \"ca.crt\"\nclient_user = \"cn\"\n[auth]\nacl_file = \"u.acl\"\n"));
    assert_eq!(config.tls.map(|t| t.client_user), Some(crate::config::CertificateUser::Cn));
    let unknown = reject(&format!("{MINIMAL}{tls}client_user = \"serial\"\n"));
    assert_eq!(unknown.key(), Some("tls.client_user"), "{unknown}");
}

#[test]
fn tls_section_needs_cert_and_key() {
    let text = format!("{MINIMAL}[tls]\ncert = \"s.crt\"\n");
    assert_error(&text, "tls.key", 5, "required key is missing");
    assert_error(&format!("{MINIMAL}[tls]\ncert = \"\"\nkey = \"k\"\n"), "tls.cert", 6, "must not be empty");
}

#[test]
fn upstream_tls_needs_a_ca_and_ca_needs_tls() {
    assert_error(&with_upstream("tls = true"), "upstream.ca", 3, "needs the CA");
    assert_error(&with_upstream("ca = \"ca.crt\""), "upstream.ca", 5, "upstream.tls is false");
    let config = parse(&with_upstream("tls = true\nca = \"ca.crt\""));
    assert_eq!(config.upstream.ca, Some(PathBuf::from("ca.crt")));
}

#[test]
fn client_cert_and_key_go_together() {
    assert_error(
        &with_upstream("tls = true\nca = \"c\"\nclient_cert = \"x.crt\""),
        "upstream.client_key",
        3,
        "client_cert",
    );
    assert_error(
        &with_upstream("tls = true\nca = \"c\"\nclient_key = \"x.key\""),
        "upstream.client_cert",
        3,
        "client_key",
    );
    parse(&with_upstream("tls = true\nca = \"c\"\nclient_cert = \"x.crt\"\nclient_key = \"x.key\""));
}

#[test]
fn connections_per_node_is_bounded() {
    assert_error(&with_upstream("connections_per_node = 65"), "upstream.connections_per_node", 5, "between 1 and 64");
    assert_eq!(parse(&with_upstream("connections_per_node = 64")).connections_per_node(), 64);
}

#[test]
fn spare_connections_default_to_two_and_are_bounded() {
    assert_eq!(parse(&with_upstream("")).upstream.spare_connections, 2);
    assert_eq!(parse(&with_upstream("spare_connections = 0")).upstream.spare_connections, 0);
    assert_error(&with_upstream("spare_connections = 17"), "upstream.spare_connections", 5, "between 0 and 16");
    assert_error(&with_upstream("spare_connections = -1"), "upstream.spare_connections", 5, "invalid value");
}

#[test]
fn connections_per_node_zero_is_one_per_single_thread_else_two() {
    let auto = parse(&with_upstream("connections_per_node = 0"));
    assert_eq!(auto.upstream.connections_per_node, None);
    let one_thread = parse(&format!("{}[runtime]\nworker_threads = 1\n", with_upstream("connections_per_node = 0")));
    assert_eq!(one_thread.connections_per_node(), 1);
    let four_threads = parse(&format!("{}[runtime]\nworker_threads = 4\n", with_upstream("")));
    assert_eq!(four_threads.connections_per_node(), 2);
}

#[test]
fn zero_limits_are_rejected() {
    for key in ["max_request_bytes", "max_array_len", "max_pipeline", "client_output_limit"] {
        let text = format!("{MINIMAL}\n[limits]\n{key} = 0\n");
        assert_error(&text, &format!("limits.{key}"), 7, "at least 1");
    }
    let text = "[listen]\nplain = \"127.0.0.1:1\"\nmax_clients = 0\n[upstream]\nseeds = [\"a:1\"]\n";
    assert_error(text, "listen.max_clients", 3, "at least 1");
}

#[test]
fn pubsub_output_limits_may_be_turned_off_and_take_a_duration() {
    let text = format!(
        "{MINIMAL}\n[limits]\npubsub_output_limit = 0\npubsub_output_soft_limit = 1024\npubsub_output_soft_time = \"250ms\"\n"
    );
    let limits = parse(&text).limits;
    assert_eq!(limits.pubsub_output_limit, 0);
    assert_eq!(limits.pubsub_output_soft_limit, 1024);
    assert_eq!(limits.pubsub_output_soft_time, Duration::from_millis(250));
    let text = format!("{MINIMAL}\n[limits]\npubsub_output_soft_time = 60\n");
    assert_error(&text, "limits.pubsub_output_soft_time", 7, "expected a string with a unit");
}

#[test]
fn normal_output_limits_are_redis_normal_class() {
    let text = format!(
        "{MINIMAL}\n[limits]\nnormal_output_limit = 4096\nnormal_output_soft_limit = 1024\nnormal_output_soft_time = \"2s\"\n"
    );
    let limits = parse(&text).limits;
    assert_eq!(
        (limits.normal_output_limit, limits.normal_output_soft_limit, limits.normal_output_soft_time),
        (4096, 1024, Duration::from_secs(2))
    );
    let text = format!("{MINIMAL}\n[limits]\nnormal_output_soft_time = 60\n");
    assert_error(&text, "limits.normal_output_soft_time", 7, "expected a string with a unit");
}

#[test]
fn non_loopback_listener_without_auth_is_rejected() {
    let text = "[listen]\nplain = \"0.0.0.0:6379\"\n[upstream]\nseeds = [\"a:1\"]\n";
    assert_error(text, "listen.plain", 2, "add [auth] with acl_file");
    assert_error(text, "listen.plain", 2, "allow_anonymous = true");
    parse(&format!("{text}[auth]\nallow_anonymous = true\n"));
    parse(&format!("{text}[auth]\nacl_file = \"users.acl\"\n"));
    parse("[listen]\nplain = \"[::1]:6379\"\n[upstream]\nseeds = [\"a:1\"]\n");
}

#[test]
fn auth_section_needs_acl_file_or_anonymous() {
    assert_error(&format!("{MINIMAL}[auth]\nallow_anonymous = false\n"), "auth", 5, "acl_file");
    assert_error(&format!("{MINIMAL}[auth]\nacl_file = \"\"\n"), "auth", 5, "allow_anonymous = true");
}

#[test]
fn log_level_accepts_levels_and_directive_lists() {
    for level in ["info", "DEBUG", "off", "info,redisforge_proxy=debug", "warn, redisforge_proxy::session=trace"] {
        assert_eq!(parse(&format!("{MINIMAL}[log]\nlevel = \"{level}\"\n")).log.level, level);
    }
    for level in ["", "verbose", "inf", "info,", "=debug", "a b=info", "redisforge_proxy=loud"] {
        assert_error(
            &format!("{MINIMAL}[log]\nformat = \"text\"\nlevel = \"{level}\"\n"),
            "log.level",
            7,
            "invalid log level",
        );
    }
    assert_error(&format!("{MINIMAL}[log]\nformat = \"xml\"\n"), "log.format", 6, "json");
}

#[test]
fn worker_threads_zero_means_per_core() {
    assert_eq!(parse(&format!("{MINIMAL}[runtime]\nworker_threads = 0\n")).runtime.worker_threads, None);
    assert_eq!(parse(&format!("{MINIMAL}[runtime]\nworker_threads = 4\n")).runtime.worker_threads, Some(4));
    assert_error(&format!("{MINIMAL}[runtime]\nworker_threads = 5000\n"), "runtime.worker_threads", 6, "at most 1024");
}

#[test]
fn metrics_can_be_disabled() {
    assert_eq!(parse(&format!("{MINIMAL}[metrics]\nlisten = \"\"\n")).metrics.listen, None);
}

#[test]
fn dotted_and_inline_keys_are_located_too() {
    let text = "listen.plain = \"127.0.0.1:1\"\nupstream = { seeds = [\"a:1\"], connect_timeout = \"x\" }\n";
    assert_error(text, "upstream.connect_timeout", 2, "invalid duration \"x\"");
}

#[test]
fn syntax_errors_carry_line_and_column() {
    let error = reject("[listen]\nplain = \"127.0.0.1:1\"\n[upstream]\nseeds = [\"a:1\"\n");
    assert!(matches!(error, ConfigError::Syntax { line: 4, .. }), "{error:?}");
    assert!(error.to_string().starts_with("config error at line 4, column "), "{error}");
    let error = reject("[listen]\nplain = \"127.0.0.1:1\"\nplain = \"127.0.0.1:2\"\n");
    assert_eq!(error.line(), Some(3), "{error}");
}

#[test]
fn load_names_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, with_upstream("read_from = \"any\"")).expect("write");
    let shown = Config::load(&path).expect_err("invalid").to_string();
    assert!(
        shown.starts_with(&format!("config error in {} at line 5: upstream.read_from:", path.display())),
        "{shown}"
    );

    let missing = dir.path().join("absent.toml");
    let error = Config::load(&missing).expect_err("absent");
    assert!(matches!(error, ConfigError::Read { .. }));
    assert!(error.to_string().contains("absent.toml"), "{error}");

    std::fs::write(&path, MINIMAL).expect("write");
    let loaded = Config::load(&path).expect("valid");
    // The file is remembered (INFO server's config_file), as an absolute path.
    assert_eq!(loaded.file.as_deref(), Some(path.as_path()));
    assert_eq!(Some(Config { file: None, ..loaded }), Config::from_toml(MINIMAL).ok());
}

#[test]
fn example_config_is_valid_and_shows_defaults() {
    let config = parse(include_str!("../../../../config/redisforge.example.toml"));
    assert_eq!(config.listen.max_clients, ListenConfig::default().max_clients);
    assert_eq!(config.limits, LimitsConfig::default());
    assert_eq!(config.topology, TopologyConfig::default());
    assert_eq!(config.metrics, MetricsConfig::default());
    assert_eq!(config.upstream.password_env.as_deref(), Some("REDIS_ACL_PASS"));
    assert!(config.tls.is_some() && config.auth.is_some());
}

#[test]
fn dev_config_is_valid() {
    let config = parse(include_str!("../../../../config/redisforge.dev.toml"));
    assert_eq!(config.listen.plain, Some("127.0.0.1:7379".parse().expect("addr")));
    assert_eq!(config.listen.tls, None);
    assert_eq!(config.tls, None);
    assert_eq!(config.upstream.seeds, ["127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"]);
    assert_eq!(config.metrics.listen, Some("127.0.0.1:9901".parse().expect("addr")));
    assert_eq!((config.log.format, config.log.level.as_str()), (LogFormat::Text, "info"));
}

#[test]
fn failover_holding_defaults_and_bounds() {
    let config = parse(MINIMAL);
    assert_eq!(config.upstream.failover_wait, Duration::from_secs(15));
    assert_eq!(config.limits.held_requests, 100_000);
    assert_eq!(config.limits.held_requests_per_client, 10_000);
    // 0s turns holding off; a zero bound is refused like every other count.
    let off = parse(&with_upstream("failover_wait = \"0s\""));
    assert_eq!(off.upstream.failover_wait, Duration::ZERO);
    let text = format!("{MINIMAL}[limits]\nheld_requests_per_client = 0\n");
    assert!(reject(&text).to_string().contains("limits.held_requests_per_client"), "{}", reject(&text));
}

#[test]
fn tracking_section_sets_the_table_limit_and_refuses_zero() {
    assert_eq!(parse(MINIMAL).tracking, TrackingConfig::default());
    assert_eq!(parse(MINIMAL).tracking.max_keys, 1_000_000);
    let text = format!("{MINIMAL}[tracking]\nmax_keys = 1000\nliveness_interval = \"500ms\"\n");
    let tracking = parse(&text).tracking;
    assert_eq!((tracking.max_keys, tracking.liveness_interval), (1000, Duration::from_millis(500)));
    assert_error(&format!("{MINIMAL}[tracking]\nmax_keys = 0\n"), "tracking.max_keys", 6, "must be at least 1");
}

#[test]
fn max_clients_is_bounded_as_redis_maxclients() {
    let with = |max: &str| MINIMAL.replace("[upstream]", &format!("max_clients = {max}\n[upstream]"));
    let text = with("4294967296");
    assert!(reject(&text).to_string().contains("listen.max_clients"), "{}", reject(&text));
    let text = with("4294967295");
    assert_eq!(parse(&text).listen.max_clients, 4_294_967_295);
}
