//! TLS material for TLS-only clusters: [`NodeTls`] and [`generate_certs`].

use std::path::{Path, PathBuf};
use std::process::Command;

use redis::{ClientTlsConfig, TlsCertificates};

/// Certificate files for a TLS-only cluster (see [`crate::ClusterOptions::tls`]), as made by
/// `redisforge-ops certs generate DIR --hosts localhost,127.0.0.1` ([`generate_certs`]).
///
/// `cert`/`key` are every node's certificate: presented to clients, and used as the client
/// identity for replication, the cluster bus and MIGRATE, so it needs both the serverAuth and
/// clientAuth EKUs and a SAN for 127.0.0.1. The harness presents it as its own client
/// certificate too, so it also reaches nodes started with `tls-auth-clients yes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeTls {
    /// The CA that signed `cert` (and any client certificate the nodes should accept).
    pub ca: PathBuf,
    /// The nodes' certificate (PEM).
    pub cert: PathBuf,
    /// The private key of `cert` (PEM).
    pub key: PathBuf,
}

impl NodeTls {
    /// `ca.crt`, `server.crt` and `server.key` in `dir` (the layout `certs generate` writes).
    pub fn from_dir(dir: &Path) -> NodeTls {
        NodeTls { ca: dir.join("ca.crt"), cert: dir.join("server.crt"), key: dir.join("server.key") }
    }

    /// The files loaded for a `redis` client: `ca` as the only root, `cert`/`key` as identity.
    ///
    /// # Panics
    /// When a file cannot be read.
    pub fn client_certificates(&self) -> TlsCertificates {
        TlsCertificates {
            client_tls: Some(ClientTlsConfig { client_cert: read(&self.cert), client_key: read(&self.key) }),
            root_cert: Some(read(&self.ca)),
        }
    }

    /// `redis.conf` lines that make a node TLS-only on `port`: the plain port is off, the
    /// cluster bus (`port + 10000`) and replication use TLS, client certificates are optional.
    pub(crate) fn node_config(&self, port: u16) -> Vec<String> {
        vec![
            "port 0".to_owned(),
            format!("tls-port {port}"),
            "tls-cluster yes".to_owned(),
            "tls-replication yes".to_owned(),
            format!("tls-cert-file \"{}\"", self.cert.display()),
            format!("tls-key-file \"{}\"", self.key.display()),
            format!("tls-ca-cert-file \"{}\"", self.ca.display()),
            // Clients (the proxy) may connect without a certificate; a test that wants them
            // required adds `tls-auth-clients yes` to `extra_config`, which comes later.
            "tls-auth-clients optional".to_owned(),
        ]
    }

    /// `[upstream]` lines that point a proxy at nodes using these files: TLS on, `ca` trusted,
    /// `cert`/`key` as the client identity (accepted by nodes with `tls-auth-clients yes`).
    pub fn proxy_upstream_toml(&self) -> String {
        format!(
            "tls = true\nca = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"",
            self.ca.display(),
            self.cert.display(),
            self.key.display()
        )
    }
}

/// `redisforge-ops`, next to the proxy binary ([`crate::proxy::proxy_bin`]).
pub fn ops_bin() -> PathBuf {
    crate::proxy::proxy_bin().with_file_name("redisforge-ops")
}

/// Runs `redisforge-ops certs generate DIR --hosts localhost,127.0.0.1` into a new temp dir:
/// `ca.crt`/`ca.key`, `server.crt`/`server.key` (serverAuth + clientAuth, SANs localhost and
/// 127.0.0.1) and `client.crt`/`client.key` (clientAuth). Keep the dir alive while it is used;
/// [`NodeTls::from_dir`] picks the node files out of it.
///
/// # Panics
/// When `redisforge-ops` is missing (run `cargo build --workspace --bins`) or fails.
pub fn generate_certs() -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("redisforge-certs-").tempdir().expect("create the certs temp dir");
    let bin = ops_bin();
    let out = Command::new(&bin)
        .args(["certs", "generate"])
        .arg(dir.path())
        .args(["--hosts", "localhost,127.0.0.1"])
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e} (run `cargo build --workspace --bins`)", bin.display()));
    assert!(out.status.success(), "redisforge-ops certs generate: {}", String::from_utf8_lossy(&out.stderr));
    dir
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}
