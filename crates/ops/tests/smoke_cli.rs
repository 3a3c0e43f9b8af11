//! `redisforge-ops smoke` against real `redis-server` processes (plain, ACL, mutual TLS) and a
//! dead port. Servers are killed by PID when their guard drops, also when a test panics.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use redisforge_tests::{PortGuard, reserve_port};

const BIN: &str = env!("CARGO_BIN_EXE_redisforge-ops");

/// A plain (non-cluster) `redis-server`, killed on drop.
struct Server {
    port: PortGuard,
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port.port())
    }
}

/// Starts `redis-server` with `extra` config lines; `None` when it exits at once (e.g. no TLS
/// support), with its log printed.
fn start(dir: &Path, extra: &[String], tls: bool) -> Option<Server> {
    for _ in 0..5 {
        let port = reserve_port();
        let mut conf = vec![
            "bind 127.0.0.1".to_owned(),
            "protected-mode no".into(),
            "save \"\"".into(),
            "appendonly no".into(),
            format!("dir \"{}\"", dir.display()),
            format!("logfile \"redis-{}.log\"", port.port()),
        ];
        conf.push(if tls { format!("port 0\ntls-port {}", port.port()) } else { format!("port {}", port.port()) });
        conf.extend(extra.iter().cloned());
        let file = dir.join(format!("redis-{}.conf", port.port()));
        std::fs::write(&file, conf.join("\n") + "\n").unwrap();
        let child = Command::new("redis-server")
            .arg(&file)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (is it installed?)");
        let mut server = Server { port, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut exited = false;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = server.child.try_wait() {
                exited = true;
                break;
            }
            if TcpListener::bind(("127.0.0.1", server.port.port())).is_err() {
                // Something listens; give the server a moment to finish start-up.
                sleep(Duration::from_millis(100));
                return Some(server);
            }
            sleep(Duration::from_millis(25));
        }
        let log = std::fs::read_to_string(dir.join(format!("redis-{}.log", server.port.port()))).unwrap_or_default();
        if log.contains("Address already in use") {
            continue;
        }
        println!("note: redis-server did not start (exited: {exited}); log:\n{log}");
        return None;
    }
    panic!("redis-server could not bind after 5 ports");
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
    let server = start(dir.path(), &[], false).expect("plain redis-server starts");
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
    let server = start(dir.path(), &users, false).expect("redis-server starts");
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
    let Some(server) = start(dir.path(), &tls, true) else {
        println!("note: this redis-server has no TLS support; skipping");
        return;
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
