//! The TLS endpoint: server certificates, mutual TLS, plaintext clients refused, and certificate
//! rotation with SIGHUP while clients stay connected. Certificates come from
//! `redisforge-ops certs generate`, so that command is exercised too.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use redis::{Client, ClientTlsConfig, Connection, TlsCertificates};
use redisforge_tests::{Cluster, Proxy, ProxyOptions, Signal, wait_until};

fn ops_bin() -> PathBuf {
    redisforge_tests::proxy::proxy_bin().with_file_name("redisforge-ops")
}

/// Generates a CA, server and client certificate set into a new temp dir.
fn certs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(ops_bin())
        .args(["certs", "generate"])
        .arg(dir.path())
        .args(["--hosts", "localhost,127.0.0.1"])
        .output()
        .expect("run redisforge-ops certs generate");
    assert!(out.status.success(), "certs generate: {}", String::from_utf8_lossy(&out.stderr));
    dir
}

fn tls_proxy(certs: &Path, client_ca: Option<&Path>) -> Proxy {
    let client_ca = client_ca.map(|p| p.display().to_string()).unwrap_or_default();
    let extra = format!(
        "[listen]\nplain = \"@PLAIN@\"\ntls = \"@TLS@\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{client_ca}\"\n",
        certs.join("server.crt").display(),
        certs.join("server.key").display(),
    );
    Proxy::start(Cluster::shared(), ProxyOptions { extra_toml: extra, ..ProxyOptions::default() })
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A `redis` client over rustls trusting `ca`, with an optional client identity.
fn tls_client(proxy: &Proxy, ca: &Path, identity: Option<&Path>) -> redis::RedisResult<Connection> {
    let addr = proxy.tls_addr().expect("proxy has a TLS listener");
    let client_tls = identity.map(|dir| ClientTlsConfig {
        client_cert: read(&dir.join("client.crt")),
        client_key: read(&dir.join("client.key")),
    });
    let client =
        Client::build_with_tls(format!("rediss://{addr}"), TlsCertificates { client_tls, root_cert: Some(read(ca)) })?;
    client.get_connection_with_timeout(Duration::from_secs(5))
}

fn roundtrip(con: &mut Connection, key: &str) {
    let _: () = redis::cmd("SET").arg(key).arg("v").query(con).expect("SET over TLS");
    let got: String = redis::cmd("GET").arg(key).query(con).expect("GET over TLS");
    assert_eq!(got, "v");
}

#[test]
fn redis_client_over_rustls_reaches_the_cluster() {
    let certs = certs();
    let proxy = tls_proxy(certs.path(), None);
    let mut con = tls_client(&proxy, &certs.path().join("ca.crt"), None).expect("TLS connection");
    roundtrip(&mut con, "tls:a");
    let values: Vec<Option<String>> =
        redis::cmd("MGET").arg(&["tls:a", "tls:missing", "tls:b"]).query(&mut con).expect("MGET over TLS");
    assert_eq!(values, [Some("v".to_string()), None, None]);
}

#[test]
fn large_values_and_long_pipelines_cross_tls_intact() {
    let certs = certs();
    let proxy = tls_proxy(certs.path(), None);
    let mut con = tls_client(&proxy, &certs.path().join("ca.crt"), None).expect("TLS connection");
    // A value of many TLS records each way (records carry at most 16 KiB).
    let large: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let _: () = redis::cmd("SET").arg("tls:large").arg(&large).query(&mut con).expect("SET 3 MB over TLS");
    let got: Vec<u8> = redis::cmd("GET").arg("tls:large").query(&mut con).expect("GET 3 MB over TLS");
    assert!(got == large, "the 3 MB value came back altered ({} bytes)", got.len());
    // 2,000 requests in one write, over many slots: their replies, in order.
    let mut pipe = redis::pipe();
    for i in 0..1000 {
        pipe.cmd("SET").arg(format!("tls:p:{i}")).arg(i).ignore();
        pipe.cmd("GET").arg(format!("tls:p:{i}"));
    }
    let values: Vec<u32> = pipe.query(&mut con).expect("pipeline over TLS");
    assert_eq!(values, (0..1000).collect::<Vec<u32>>());
}

#[test]
fn redis_cli_with_tls_and_cacert_works() {
    let certs = certs();
    let proxy = tls_proxy(certs.path(), None);
    let addr = proxy.tls_addr().expect("tls addr");
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    let out = Command::new("redis-cli")
        .args(["--tls", "--cacert"])
        .arg(certs.path().join("ca.crt"))
        .args(["-h", host, "-p", port, "PING"])
        .output()
        .expect("run redis-cli");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "PONG", "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn mutual_tls_requires_a_client_certificate_from_the_configured_ca() {
    let other = certs();
    let certs = certs();
    let proxy = tls_proxy(certs.path(), Some(&certs.path().join("ca.crt")));
    let ca = certs.path().join("ca.crt");
    let mut con = tls_client(&proxy, &ca, Some(certs.path())).expect("client with the right certificate");
    roundtrip(&mut con, "tls:mtls");
    // Without a certificate, or with one from another CA, the handshake (or the first command,
    // with TLS 1.3's late client-certificate check) fails.
    for identity in [None, Some(other.path())] {
        let refused = match tls_client(&proxy, &ca, identity) {
            Err(_) => true,
            Ok(mut con) => redis::cmd("PING").query::<String>(&mut con).is_err(),
        };
        assert!(refused, "client with identity {identity:?} must be refused");
    }
}

#[test]
fn plaintext_client_on_the_tls_port_is_refused_cleanly() {
    let certs = certs();
    let proxy = tls_proxy(certs.path(), None);
    let mut stream = TcpStream::connect(proxy.tls_addr().expect("tls addr")).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    stream.write_all(b"*1\r\n$4\r\nPING\r\n").expect("write");
    let mut buf = [0u8; 256];
    let got = stream.read(&mut buf).unwrap_or(0);
    assert!(!buf[..got].starts_with(b"+PONG"), "a plaintext client must not be served");
    // The proxy is unaffected.
    let mut con = tls_client(&proxy, &certs.path().join("ca.crt"), None).expect("TLS after a plaintext attempt");
    roundtrip(&mut con, "tls:plain-attempt");
}

#[test]
fn sighup_rotates_the_certificate_and_keeps_open_connections() {
    let first = certs();
    let second = certs();
    // The proxy serves copies, so the files can be replaced under it.
    let live = tempfile::tempdir().expect("tempdir");
    for file in ["server.crt", "server.key"] {
        std::fs::copy(first.path().join(file), live.path().join(file)).expect("copy cert");
    }
    let proxy = tls_proxy(live.path(), None);
    let mut before = tls_client(&proxy, &first.path().join("ca.crt"), None).expect("connect with the first CA");
    roundtrip(&mut before, "tls:rotate");

    for file in ["server.crt", "server.key"] {
        std::fs::copy(second.path().join(file), live.path().join(file)).expect("copy new cert");
    }
    proxy.signal(Signal::Hup);
    let rotated = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        tls_client(&proxy, &second.path().join("ca.crt"), None).is_ok()
    });
    assert!(rotated, "new handshakes must use the new certificate: {}", proxy.log_tail(20));
    assert!(tls_client(&proxy, &first.path().join("ca.crt"), None).is_err(), "the old certificate is gone");
    // The connection opened before the rotation keeps working.
    roundtrip(&mut before, "tls:rotate");

    // A broken new certificate is refused and the current one stays in use.
    std::fs::write(live.path().join("server.crt"), b"not a certificate").expect("break cert");
    proxy.signal(Signal::Hup);
    assert!(wait_until(Duration::from_secs(10), Duration::from_millis(100), || proxy
        .log()
        .contains("TLS reload refused")));
    let mut after = tls_client(&proxy, &second.path().join("ca.crt"), None).expect("old certificate still served");
    roundtrip(&mut after, "tls:rotate");
    roundtrip(&mut before, "tls:rotate");
}
