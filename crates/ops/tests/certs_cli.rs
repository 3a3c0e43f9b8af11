//! `redisforge-ops certs generate` as a user runs it: the files it writes, `openssl verify` on the
//! chain, and a real `redis-server` serving TLS with them to `redis-cli` (mutual TLS).
//!
//! The openssl and Redis checks print a note and pass when the tool is not installed.

use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_redisforge-ops");

fn ops(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run redisforge-ops")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn generate(dir: &Path, extra: &[&str]) {
    let mut args = vec!["certs", "generate", dir.to_str().expect("temp dir path is UTF-8")];
    args.extend_from_slice(extra);
    let out = ops(&args);
    assert!(out.status.success(), "certs generate failed: {}{}", text(&out.stdout), text(&out.stderr));
}

fn have(tool: &str) -> bool {
    let found = Command::new(tool).arg("-v").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    if !found {
        println!("note: {tool} is not on PATH; skipping this check");
    }
    found
}

#[test]
fn generate_writes_the_files_and_refuses_to_overwrite_them() {
    let dir = tempfile::tempdir().unwrap();
    let out = ops(&["certs", "generate", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for name in ["ca.crt", "ca.key", "server.crt", "server.key", "client.crt", "client.key"] {
        assert!(dir.path().join(name).is_file(), "{name} missing");
        assert!(stdout.contains(&dir.path().join(name).display().to_string()), "{name} not reported:\n{stdout}");
    }
    let server_crt = fs::read(dir.path().join("server.crt")).unwrap();

    let again = ops(&["certs", "generate", dir.path().to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again.stderr).contains("--force"), "{}", text(&again.stderr));
    assert_eq!(fs::read(dir.path().join("server.crt")).unwrap(), server_crt, "refused run changed a file");

    generate(dir.path(), &["--force"]);
    assert_ne!(fs::read(dir.path().join("server.crt")).unwrap(), server_crt, "--force wrote new certificates");
}

#[test]
fn bad_hosts_and_usage_errors_exit_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let out = ops(&["certs", "generate", dir.path().to_str().unwrap(), "--hosts", "ok.example,not a host"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not a host"), "{}", text(&out.stderr));
    assert!(!dir.path().join("ca.crt").exists());

    assert_eq!(ops(&["certs", "generate"]).status.code(), Some(2), "DIR is required");
    assert_eq!(ops(&[]).status.code(), Some(2), "a verb is required");
}

#[test]
fn openssl_verifies_the_chain_purposes_and_names() {
    if !have("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), &["--hosts", "redis-1.internal,10.0.0.5,[::1]", "--days", "30"]);
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir.path()).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}{}", text(&out.stdout), text(&out.stderr));
        text(&out.stdout)
    };

    openssl(&["verify", "-CAfile", "ca.crt", "-purpose", "sslserver", "server.crt"]);
    // The server certificate doubles as a client one (Redis replication, cluster bus).
    openssl(&["verify", "-CAfile", "ca.crt", "-purpose", "sslclient", "server.crt", "client.crt"]);

    let server = openssl(&["x509", "-in", "server.crt", "-noout", "-text"]);
    for expected in ["DNS:redis-1.internal", "IP Address:10.0.0.5", "IP Address:0:0:0:0:0:0:0:1"] {
        assert!(server.contains(expected), "{expected} missing:\n{server}");
    }
    let client = openssl(&["x509", "-in", "client.crt", "-noout", "-subject"]);
    assert!(client.contains("CN = redisforge-client"), "{client}");

    // The key belongs to the certificate: both yield the same public key.
    for name in ["server", "client", "ca"] {
        let from_cert = openssl(&["x509", "-in", &format!("{name}.crt"), "-noout", "-pubkey"]);
        let from_key = openssl(&["pkey", "-in", &format!("{name}.key"), "-pubout"]);
        assert_eq!(from_cert, from_key, "{name}.key does not match {name}.crt");
    }
}

/// A `redis-server` child, killed (by its PID) when the test ends, passes or panics.
struct RedisGuard(Child);

impl Drop for RedisGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `redis-cli --tls … PING` with the given client identity (`None` = no client certificate).
fn tls_ping(dir: &Path, port: u16, identity: Option<(&str, &str)>) -> Output {
    let mut cmd = Command::new("redis-cli");
    cmd.current_dir(dir).args(["-h", "127.0.0.1", "-p", &port.to_string(), "--tls", "--cacert", "ca.crt"]);
    if let Some((cert, key)) = identity {
        cmd.args(["--cert", cert, "--key", key]);
    }
    cmd.arg("PING").output().unwrap()
}

#[test]
fn redis_server_serves_tls_with_the_generated_certificates() {
    if !have("redis-server") || !have("redis-cli") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), &[]);
    let port = free_port();
    let log = dir.path().join("redis.log");
    let child = Command::new("redis-server")
        .current_dir(dir.path())
        .args(["--port", "0", "--tls-port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--tls-cert-file", "server.crt", "--tls-key-file", "server.key", "--tls-ca-cert-file", "ca.crt"])
        .args(["--tls-auth-clients", "yes", "--save", "", "--appendonly", "no", "--daemonize", "no"])
        .args(["--logfile", log.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start redis-server");
    let mut redis = RedisGuard(child);

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = redis.0.try_wait().unwrap() {
            let mut stderr = String::new();
            if let Some(mut pipe) = redis.0.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
            }
            let log = fs::read_to_string(&log).unwrap_or_default();
            let said = format!("{stderr}{log}").to_lowercase();
            // Only a build without TLS is a reason to skip; a certificate Redis refuses is a failure.
            if said.contains("tls") && (said.contains("not supported") || said.contains("bad directive")) {
                println!("note: this redis-server has no TLS support ({status}); skipping:\n{stderr}{log}");
                return;
            }
            panic!("redis-server exited ({status}):\n{stderr}{log}");
        }
        let out = tls_ping(dir.path(), port, Some(("client.crt", "client.key")));
        if text(&out.stdout).trim() == "PONG" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no PONG over TLS within 10s: {}{}\n{}",
            text(&out.stdout),
            text(&out.stderr),
            fs::read_to_string(&log).unwrap_or_default()
        );
        sleep(Duration::from_millis(100));
    }

    // Redis nodes connect to each other with the server certificate as their client identity.
    let out = tls_ping(dir.path(), port, Some(("server.crt", "server.key")));
    assert_eq!(text(&out.stdout).trim(), "PONG", "{}", text(&out.stderr));

    // tls-auth-clients yes: no client certificate, no session.
    let out = tls_ping(dir.path(), port, None);
    assert_ne!(text(&out.stdout).trim(), "PONG", "redis-server accepted a client without a certificate");

    // A client certificate from another CA is refused too.
    let other = tempfile::tempdir().unwrap();
    generate(other.path(), &[]);
    let (cert, key) = (other.path().join("client.crt"), other.path().join("client.key"));
    let out = tls_ping(dir.path(), port, Some((cert.to_str().unwrap(), key.to_str().unwrap())));
    assert_ne!(text(&out.stdout).trim(), "PONG", "redis-server accepted a client certificate from another CA");
}
