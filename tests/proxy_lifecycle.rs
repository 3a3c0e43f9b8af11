//! Start-up, `--check`, `--version` and graceful shutdown of the proxy process.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use redisforge_tests::{Cluster, Proxy, ProxyOptions, Signal};

#[test]
fn sigterm_finishes_in_flight_replies_and_exits_zero() {
    let proxy = Proxy::start(Cluster::shared(), ProxyOptions::default());
    let mut stream = TcpStream::connect(proxy.addr()).expect("connect");
    let mut idle = TcpStream::connect(proxy.addr()).expect("connect idle client");
    let count = 2_000;
    let mut batch = Vec::new();
    for i in 0..count {
        batch.extend_from_slice(&redisforge_tests::resp_command(&[b"SET", format!("life:{i}").as_bytes(), b"v"]));
    }
    stream.write_all(&batch).expect("write pipeline");
    // Let the proxy read the pipeline before the signal arrives.
    std::thread::sleep(Duration::from_millis(300));
    proxy.signal(Signal::Term);
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut received = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 65536];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    assert_eq!(received, b"+OK\r\n".repeat(count), "every request read before SIGTERM is answered, then EOF");
    idle.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    assert_eq!(idle.read(&mut buf).expect("idle client gets EOF"), 0);
    let status = proxy.wait_exit(Duration::from_secs(10)).expect("proxy exits after SIGTERM");
    assert!(status.success(), "{status:?}");
}

fn proxy_bin() -> std::path::PathBuf {
    redisforge_tests::proxy::proxy_bin()
}

#[test]
fn check_accepts_the_example_configs_and_names_bad_keys() {
    let root = env!("CARGO_MANIFEST_DIR");
    let check = |file: &str| {
        Command::new(proxy_bin())
            .args(["--config", &format!("{root}/{file}"), "--check"])
            .current_dir(root)
            .env("REDIS_ACL_PASS", "x")
            .output()
            .expect("run --check")
    };
    let dev = check("config/redisforge.dev.toml");
    assert!(dev.status.success(), "dev config: {}", String::from_utf8_lossy(&dev.stderr));
    // The production example names certificate files that only exist on a real deployment: it
    // must fail for exactly that reason, naming the file.
    let production = check("config/redisforge.example.toml");
    let stderr = String::from_utf8_lossy(&production.stderr);
    assert_eq!(production.status.code(), Some(1));
    assert!(stderr.contains("config/tls/server.crt"), "{stderr}");
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[listen]\nplain = \"127.0.0.1:1\"\n\n[upstream]\nseeds = [\"127.0.0.1:2\"]\nconnect_timeout = \"5\"\n",
    )
    .expect("write config");
    let out = Command::new(proxy_bin()).args(["--config"]).arg(&bad).arg("--check").output().expect("run --check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("upstream.connect_timeout") && stderr.contains("line 6"), "{stderr}");
}

#[test]
fn version_flag_prints_the_version() {
    let out = Command::new(proxy_bin()).arg("--version").output().expect("run --version");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn idle_clients_are_closed_after_idle_timeout() {
    let proxy = Proxy::start(
        Cluster::shared(),
        ProxyOptions {
            extra_toml: "[listen]\nplain = \"@PLAIN@\"\nidle_timeout = \"1s\"\n".to_string(),
            ..ProxyOptions::default()
        },
    );
    let mut active = proxy.client();
    let mut idle = TcpStream::connect(proxy.addr()).expect("connect");
    idle.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let started = Instant::now();
    // The active client keeps talking for longer than the timeout and is not closed.
    for _ in 0..15 {
        let pong: String = redis::cmd("PING").query(&mut active).expect("active client stays connected");
        assert_eq!(pong, "PONG");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut buf = [0u8; 16];
    assert_eq!(idle.read(&mut buf).expect("EOF for the idle client"), 0);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(5), "{waited:?}");
}

#[test]
fn systemd_is_notified_when_ready_on_reload_and_on_stop() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().expect("tempdir");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind notify socket");
    socket.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let proxy = Proxy::start(
        Cluster::shared(),
        ProxyOptions {
            env: vec![("NOTIFY_SOCKET".to_string(), socket_path.display().to_string())],
            ..ProxyOptions::default()
        },
    );
    let next = || {
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert!(next().contains("READY=1"), "READY=1 once the topology is loaded");
    proxy.signal(Signal::Hup);
    assert!(next().contains("RELOADING=1"));
    assert!(next().contains("READY=1"));
    proxy.signal(Signal::Term);
    assert!(next().contains("STOPPING=1"));
    assert!(proxy.wait_exit(Duration::from_secs(10)).is_some_and(|s| s.success()));
}
