//! `redisforge-ops smoke` against real `redis-server` processes (plain, ACL, mutual TLS) and a
//! dead port. Servers are killed by PID when their guard drops, also when a test panics.

use std::path::Path;
use std::process::{Command, Output};

use redisforge_tests::{RedisServer, reserve_port};

const BIN: &str = env!("CARGO_BIN_EXE_redisforge-ops");

/// Starts a plain (non-cluster) `redis-server` with `extra` config lines, listening in TLS only
/// when `tls`; killed by PID when it drops.
///
/// # Errors
/// Its log, when it does not start.
fn start(dir: &Path, extra: &[String], tls: bool) -> Result<RedisServer, String> {
    RedisServer::start(dir, |port| {
        let mut conf = match tls {
            true => vec!["port 0".to_owned(), format!("tls-port {port}")],
            false => vec![format!("port {port}")],
        };
        conf.extend(["save \"\"".to_owned(), "appendonly no".to_owned()]);
        conf.extend(extra.iter().cloned());
        conf
    })
}

fn smoke(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("smoke").args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run redisforge-ops")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The RESULT column of `step`'s row.
fn result_of(stdout: &str, step: &str) -> String {
    let row = stdout.lines().find(|l| l.split_whitespace().next() == Some(step));
    row.and_then(|l| l.split_whitespace().nth(1)).unwrap_or_else(|| panic!("no {step} row in:\n{stdout}")).to_owned()
}

const STEPS: [&str; 6] = ["connect", "ping", "set-get", "mget", "del", "pubsub"];

#[test]
fn smoke_passes_against_a_plain_node_and_prints_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[], false).unwrap_or_else(|e| panic!("{e}"));
    let out = smoke(&[&server.addr()], &[]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.starts_with("STEP") && stdout.contains("LATENCY_MS") && stdout.contains("DETAIL"), "{stdout}");
    for step in STEPS {
        assert_eq!(result_of(&stdout, step), "PASS", "{stdout}");
    }
    assert!(stdout.contains("message received"), "{stdout}");

    let skipped = smoke(&[&server.addr(), "--skip", "pubsub,del"], &[]);
    assert!(skipped.status.success());
    assert_eq!(result_of(&text(&skipped.stdout), "pubsub"), "SKIP");
    assert_eq!(result_of(&text(&skipped.stdout), "del"), "SKIP");
}

#[test]
fn smoke_against_a_dead_port_fails_with_exit_1() {
    let port = reserve_port();
    let out = smoke(&[&format!("127.0.0.1:{}", port.port())], &[]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    for step in STEPS {
        assert_eq!(result_of(&stdout, step), "FAIL", "{stdout}");
    }
    assert!(stdout.contains("not run: no connection"), "{stdout}");
    assert!(text(&out.stderr).contains("6 of 6 step(s) failed"), "{}", text(&out.stderr));
}

#[test]
fn smoke_logs_in_as_an_acl_user_and_reports_a_refused_subscribe() {
    let dir = tempfile::tempdir().unwrap();
    let users = [
        "user default off".to_owned(),
        "user app on >s3cret ~* &* +@all".into(),
        // An endpoint that refuses SUBSCRIBE, like the proxy without pub/sub support.
        "user nosub on >s3cret ~* &* +@all -subscribe".into(),
    ];
    let server = start(dir.path(), &users, false).unwrap_or_else(|e| panic!("{e}"));
    let addr = server.addr();
    let env = [("RF_SMOKE_PASS", "s3cret")];

    let out = smoke(&[&addr, "--user", "app", "--pass-env", "RF_SMOKE_PASS"], &env);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));

    let out = smoke(&[&addr, "--user", "app", "--pass-env", "RF_SMOKE_PASS"], &[("RF_SMOKE_PASS", "wrong")]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(result_of(&text(&out.stdout), "connect"), "FAIL");

    let out = smoke(&[&addr, "--user", "app", "--pass-env", "RF_SMOKE_UNSET_VAR"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("RF_SMOKE_UNSET_VAR"), "{}", text(&out.stderr));

    let out = smoke(&[&addr, "--user", "nosub", "--pass-env", "RF_SMOKE_PASS"], &env);
    assert_eq!(out.status.code(), Some(1), "a failed step fails the run");
    let stdout = text(&out.stdout);
    assert_eq!(result_of(&stdout, "pubsub"), "FAIL");
    assert!(stdout.contains("unsupported by the endpoint:") && stdout.contains("NOPERM"), "{stdout}");
    assert_eq!(result_of(&stdout, "mget"), "PASS");
    let out = smoke(&[&addr, "--user", "nosub", "--pass-env", "RF_SMOKE_PASS", "--skip", "pubsub"], &env);
    assert!(out.status.success(), "{}", text(&out.stdout));
}

#[test]
fn smoke_speaks_mutual_tls_with_generated_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("tls");
    let generated = Command::new(BIN).args(["certs", "generate", certs.to_str().unwrap()]).output().unwrap();
    assert!(generated.status.success(), "{}", text(&generated.stderr));
    let file = |n: &str| certs.join(n).display().to_string();
    let tls = [
        format!("tls-cert-file {}", file("server.crt")),
        format!("tls-key-file {}", file("server.key")),
        format!("tls-ca-cert-file {}", file("ca.crt")),
        "tls-auth-clients yes".into(),
    ];
    let server = match start(dir.path(), &tls, true) {
        Ok(server) => server,
        // A redis-server built without TLS does not know the tls-* directives.
        Err(log) if log.contains("Bad directive") => {
            println!("note: this redis-server has no TLS support; skipping:\n{log}");
            return;
        }
        Err(log) => panic!("{log}"),
    };
    let (ca, cert, key) = (file("ca.crt"), file("client.crt"), file("client.key"));
    let out = smoke(&[&server.addr(), "--tls", "--ca", &ca, "--cert", &cert, "--key", &key], &[]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("(TLS)"), "{stdout}");

    // tls-auth-clients yes: without a client certificate there is no session.
    let out = smoke(&[&server.addr(), "--tls", "--ca", &ca], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(result_of(&text(&out.stdout), "connect"), "FAIL", "{}", text(&out.stdout));
}
