//! A small synchronous client for administering nodes: connection options shared by every verb
//! (ACL user, password from an env var, TLS), one connection per node with timeouts, and a pool
//! that keeps one connection per address for the duration of a verb.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;

use redis::{Client, ConnectionAddr, FromRedisValue, IntoConnectionInfo, RedisConnectionInfo, TlsCertificates};

use redisforge_cluster::info::info_fields;
use redisforge_cluster::nodes::{ParseError, View};

/// Connect and per-command timeout; MIGRATE batches get their own, longer timeout on top.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach and authenticate to nodes (or the proxy), shared by the cluster verbs and `smoke`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConnArgs {
    /// Redis ACL user to authenticate as (with the password from --pass-env).
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Name of the environment variable holding the password (never the password itself).
    #[arg(long, value_name = "VAR")]
    pub pass_env: Option<String>,
    /// Connect with TLS.
    #[arg(long)]
    pub tls: bool,
    /// CA certificate (PEM) to verify the server with; the system roots when absent.
    #[arg(long, value_name = "FILE", requires = "tls")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long, value_name = "FILE", requires_all = ["tls", "key"])]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
}

/// Why talking to a node failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    // --- The user's input. ---
    /// `--pass-env` names a variable that is not set.
    #[error("--pass-env {0}: the environment variable is not set")]
    PasswordEnv(String),
    /// A certificate or key file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// An address that is not `host:port`.
    #[error("{0:?} is not host:port")]
    BadAddress(String),

    // --- The node. ---
    /// Connecting (TCP, TLS or AUTH) failed.
    #[error("{addr}: cannot connect: {source}")]
    Connect {
        /// The node.
        addr: String,
        /// What the client said.
        source: redis::RedisError,
    },
    /// A command failed or got an error reply.
    #[error("{addr}: {what}: {source}")]
    Command {
        /// The node.
        addr: String,
        /// The command, without secrets.
        what: String,
        /// What the node or client said.
        source: redis::RedisError,
    },
    /// `CLUSTER NODES` could not be parsed.
    #[error("{addr}: {source}")]
    Parse {
        /// The node.
        addr: String,
        /// The bad line.
        source: ParseError,
    },
}

impl NodeError {
    /// The node answered `-ASK` or `-MOVED`: the key or slot is served elsewhere.
    pub fn is_redirect(&self) -> bool {
        matches!(self, NodeError::Command { source, .. } if matches!(source.code(), Some("ASK" | "MOVED")))
    }

    /// The reply's error text when a node answered with an error (not an I/O failure).
    pub fn reply_text(&self) -> Option<String> {
        match self {
            NodeError::Command { source, .. } if !source.is_io_error() => Some(source.to_string()),
            _ => None,
        }
    }
}

/// Splits `host:port` (also `[v6]:port`).
///
/// # Errors
/// [`NodeError::BadAddress`].
pub fn split_addr(addr: &str) -> Result<(String, u16), NodeError> {
    let (host, port) =
        redisforge_cluster::addr::split_addr(addr).ok_or_else(|| NodeError::BadAddress(addr.to_owned()))?;
    Ok((host.to_owned(), port))
}

/// Resolved connection options: credentials read, certificate files loaded.
#[derive(Clone)]
pub struct Connector {
    user: Option<String>,
    pass: Option<String>,
    tls: Option<TlsCertificates>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector").field("user", &self.user).field("tls", &self.tls.is_some()).finish_non_exhaustive()
    }
}

impl Connector {
    /// Reads the password variable and certificate files named by `args`.
    ///
    /// # Errors
    /// [`NodeError::PasswordEnv`], [`NodeError::ReadFile`].
    pub fn new(args: &ConnArgs) -> Result<Connector, NodeError> {
        let pass = match &args.pass_env {
            Some(var) => Some(std::env::var(var).map_err(|_| NodeError::PasswordEnv(var.clone()))?),
            None => None,
        };
        Ok(Connector { user: args.user.clone(), pass, tls: tls_certificates(args)? })
    }

    /// Opens a connection to `addr` with [`IO_TIMEOUT`] on connect, reads and writes.
    ///
    /// # Errors
    /// [`NodeError::BadAddress`], [`NodeError::Connect`].
    pub fn connect(&self, addr: &str) -> Result<Node, NodeError> {
        let (host, port) = split_addr(addr)?;
        let connect_err = |source| NodeError::Connect { addr: addr.to_owned(), source };
        // No CLIENT SETINFO: the proxy may not know it, and it only adds a round trip.
        let mut settings = RedisConnectionInfo::default().set_skip_set_lib_name();
        if let Some(user) = &self.user {
            settings = settings.set_username(user);
        }
        if let Some(pass) = &self.pass {
            settings = settings.set_password(pass);
        }
        let client = match &self.tls {
            None => {
                let info = ConnectionAddr::Tcp(host, port).into_connection_info().map_err(connect_err)?;
                Client::open(info.set_redis_settings(settings)).map_err(connect_err)?
            }
            Some(certs) => {
                let addr = ConnectionAddr::TcpTls { host, port, insecure: false, tls_params: None };
                let info = addr.into_connection_info().map_err(connect_err)?.set_redis_settings(settings);
                Client::build_with_tls(info, certs.clone()).map_err(connect_err)?
            }
        };
        let con = client.get_connection_with_timeout(IO_TIMEOUT).map_err(connect_err)?;
        con.set_read_timeout(Some(IO_TIMEOUT)).map_err(connect_err)?;
        con.set_write_timeout(Some(IO_TIMEOUT)).map_err(connect_err)?;
        Ok(Node { addr: addr.to_owned(), con })
    }

    /// The `AUTH`/`AUTH2` arguments MIGRATE needs to log in to the target node.
    pub fn migrate_auth(&self) -> Vec<String> {
        match (&self.user, &self.pass) {
            (Some(user), Some(pass)) => vec!["AUTH2".into(), user.clone(), pass.clone()],
            (None, Some(pass)) => vec!["AUTH".into(), pass.clone()],
            _ => Vec::new(),
        }
    }
}

/// The PEM files of `--tls --ca F [--cert F --key F]`, read once, for `redis` clients (and the
/// backup's own TLS stream); `None` without `--tls`. Makes rustls' ring provider the default.
///
/// # Errors
/// [`NodeError::ReadFile`].
pub fn tls_certificates(args: &ConnArgs) -> Result<Option<TlsCertificates>, NodeError> {
    if !args.tls {
        return Ok(None);
    }
    install_crypto_provider();
    let read = |p: &Path| std::fs::read(p).map_err(|source| NodeError::ReadFile { path: p.to_owned(), source });
    let client_tls = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig { client_cert: read(cert)?, client_key: read(key)? }),
        _ => None,
    };
    let root_cert = args.ca.as_deref().map(read).transpose()?;
    Ok(Some(TlsCertificates { client_tls, root_cert }))
}

/// Installs rustls' ring provider as the process default once (redis builds its TLS config from
/// the process default; this crate never enables aws-lc-rs).
fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means another provider was installed first, which is just as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// One open connection to a node.
pub struct Node {
    /// `host:port` it was opened to.
    pub addr: String,
    con: redis::Connection,
}

impl Node {
    /// Runs `args` as one command.
    ///
    /// # Errors
    /// [`NodeError::Command`] with the command's first words (never secrets: callers pass MIGRATE
    /// through [`Node::query_as`]).
    pub fn query<T: FromRedisValue>(&mut self, args: &[&str]) -> Result<T, NodeError> {
        let what = args.iter().take(4).copied().collect::<Vec<_>>().join(" ");
        self.query_as(&what, args)
    }

    /// Runs `args`, describing it as `what` in errors.
    ///
    /// # Errors
    /// [`NodeError::Command`].
    pub fn query_as<T: FromRedisValue, A: redis::ToRedisArgs>(
        &mut self,
        what: &str,
        args: &[A],
    ) -> Result<T, NodeError> {
        let mut cmd = redis::Cmd::new();
        for a in args {
            cmd.arg(a);
        }
        cmd.query(&mut self.con).map_err(|source| NodeError::Command {
            addr: self.addr.clone(),
            what: what.to_owned(),
            source,
        })
    }

    /// Sets the read timeout (for long MIGRATE batches or pub/sub waits).
    ///
    /// # Errors
    /// [`NodeError::Command`] when the socket refuses it.
    pub fn set_read_timeout(&mut self, timeout: Duration) -> Result<(), NodeError> {
        self.con.set_read_timeout(Some(timeout)).map_err(|source| NodeError::Command {
            addr: self.addr.clone(),
            what: "set read timeout".into(),
            source,
        })
    }

    /// The raw connection, for pub/sub.
    pub fn connection(&mut self) -> &mut redis::Connection {
        &mut self.con
    }

    /// `CLUSTER NODES`, parsed.
    ///
    /// # Errors
    /// [`NodeError::Command`], [`NodeError::Parse`].
    pub fn cluster_nodes(&mut self) -> Result<View, NodeError> {
        let text: String = self.query(&["CLUSTER", "NODES"])?;
        View::parse(&text).map_err(|source| NodeError::Parse { addr: self.addr.clone(), source })
    }

    /// One field of `CLUSTER INFO` (`cluster_state`, …).
    ///
    /// # Errors
    /// [`NodeError::Command`].
    pub fn cluster_info(&mut self, field: &str) -> Result<Option<String>, NodeError> {
        let text: String = self.query(&["CLUSTER", "INFO"])?;
        Ok(info_fields(&text).remove(field))
    }

    /// One field of `INFO section`.
    ///
    /// # Errors
    /// [`NodeError::Command`].
    pub fn info(&mut self, section: &str, field: &str) -> Result<Option<String>, NodeError> {
        let text: String = self.query(&["INFO", section])?;
        Ok(info_fields(&text).remove(field))
    }
}

/// One connection per address, opened on first use and reopened after an I/O error.
pub struct Pool {
    connector: Connector,
    nodes: HashMap<String, Node>,
}

impl Pool {
    /// An empty pool.
    pub fn new(connector: Connector) -> Pool {
        Pool { connector, nodes: HashMap::new() }
    }

    /// The connection options.
    pub fn connector(&self) -> &Connector {
        &self.connector
    }

    /// Runs `f` on the connection to `addr`; a connection that failed with an I/O error is
    /// dropped so that the next use reconnects.
    ///
    /// # Errors
    /// Connection errors and whatever `f` returns.
    pub fn with<T>(&mut self, addr: &str, f: impl FnOnce(&mut Node) -> Result<T, NodeError>) -> Result<T, NodeError> {
        if !self.nodes.contains_key(addr) {
            let node = self.connector.connect(addr)?;
            self.nodes.insert(addr.to_owned(), node);
        }
        let node = self.nodes.get_mut(addr).ok_or_else(|| NodeError::BadAddress(addr.to_owned()))?;
        let result = f(node);
        if let Err(NodeError::Command { source, .. }) = &result
            && (source.is_io_error() || source.is_connection_dropped() || source.is_timeout())
        {
            self.nodes.remove(addr);
        }
        result
    }

    /// [`Node::query`] on `addr`.
    ///
    /// # Errors
    /// As [`Pool::with`].
    pub fn query<T: FromRedisValue>(&mut self, addr: &str, args: &[&str]) -> Result<T, NodeError> {
        self.with(addr, |n| n.query(args))
    }

    /// [`Node::cluster_nodes`] on `addr`.
    ///
    /// # Errors
    /// As [`Pool::with`].
    pub fn cluster_nodes(&mut self, addr: &str) -> Result<View, NodeError> {
        self.with(addr, Node::cluster_nodes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_split_into_host_and_port() {
        assert_eq!(split_addr("127.0.0.1:7000").unwrap(), ("127.0.0.1".to_owned(), 7000));
        assert_eq!(split_addr("[::1]:7000").unwrap(), ("::1".to_owned(), 7000));
        for bad in ["7000", "host:", ":7000", "host:99999"] {
            assert!(matches!(split_addr(bad), Err(NodeError::BadAddress(_))), "{bad}");
        }
    }

    #[test]
    fn migrate_auth_matches_the_credentials() {
        let none = Connector { user: None, pass: None, tls: None };
        assert!(none.migrate_auth().is_empty());
        let pass = Connector { user: None, pass: Some("p".into()), tls: None };
        assert_eq!(pass.migrate_auth(), ["AUTH", "p"]);
        let acl = Connector { user: Some("u".into()), pass: Some("p".into()), tls: None };
        assert_eq!(acl.migrate_auth(), ["AUTH2", "u", "p"]);
        assert!(!format!("{acl:?}").contains("\"p\""), "no password in Debug");
    }

    #[test]
    fn unset_password_variable_is_named() {
        let args = ConnArgs { pass_env: Some("REDISFORGE_TEST_SURELY_UNSET".into()), ..ConnArgs::default() };
        let err = Connector::new(&args).unwrap_err();
        assert!(err.to_string().contains("REDISFORGE_TEST_SURELY_UNSET"), "{err}");
    }
}
