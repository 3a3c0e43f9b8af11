//! Connections to cluster nodes and to the temporary loader: timeouts on every step, an optional ACL
//! login, and errors that name the node and the command.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use redis::{Client, ConnectionAddr, FromRedisValue, IntoConnectionInfo, RedisConnectionInfo, TlsCertificates};

use super::{BackupError, ConnArgs};
use crate::cluster::node::{NodeError, tls_certificates};

/// Connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Read/write timeout per command: long enough for DUMP of a big key or a `WAIT`.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// An ACL login, and TLS material when the nodes speak TLS; the password is never printed
/// (`Debug` redacts it).
#[derive(Clone, Default)]
pub struct Login {
    user: Option<String>,
    password: Option<String>,
    /// The PEM files of `--tls --ca F [--cert F --key F]`, as the cluster verbs read them.
    tls: Option<TlsCertificates>,
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "…"))
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Login {
    /// Reads the password from the variable `--pass-env` names.
    ///
    /// # Errors
    /// [`BackupError::PassEnvUnset`] when that variable is not set (or not UTF-8).
    pub fn from_args(args: &ConnArgs) -> Result<Login, BackupError> {
        let password = match &args.pass_env {
            Some(var) => Some(std::env::var(var).map_err(|_| BackupError::PassEnvUnset(var.clone()))?),
            None => None,
        };
        let tls = tls_certificates(args).map_err(|e| match e {
            NodeError::ReadFile { path, source } => BackupError::io(&path, source),
            other => BackupError::Node { node: "--tls".to_owned(), why: other.to_string() },
        })?;
        Ok(Login { user: args.user.clone(), password, tls })
    }

    /// The TLS material, when the nodes speak TLS.
    pub fn tls(&self) -> Option<&TlsCertificates> {
        self.tls.as_ref()
    }

    /// The arguments of `AUTH` for this login (`[user, password]` or `[password]`), `None` without
    /// a password: for connections that speak RESP by hand (the replication handshake).
    pub fn auth_args(&self) -> Option<Vec<String>> {
        let password = self.password.clone()?;
        Some(self.user.clone().into_iter().chain(std::iter::once(password)).collect())
    }

    fn settings(&self) -> RedisConnectionInfo {
        let mut info = RedisConnectionInfo::default();
        if let Some(user) = &self.user {
            info = info.set_username(user);
        }
        if let Some(password) = &self.password {
            info = info.set_password(password);
        }
        info
    }
}

/// One synchronous connection, labelled for error messages.
pub struct Node {
    name: String,
    con: redis::Connection,
}

impl Node {
    /// Connects to `host:port` (IPv6 as `[addr]:port`) and logs in.
    ///
    /// # Errors
    /// [`BackupError::Redis`] when the node does not answer or refuses the login.
    pub fn connect(addr: &str, login: &Login) -> Result<Node, BackupError> {
        let (host, port) = split_addr(addr)
            .ok_or_else(|| BackupError::Node { node: addr.to_owned(), why: "not a host:port address".to_owned() })?;
        let target = match login.tls {
            None => ConnectionAddr::Tcp(host.to_owned(), port),
            Some(_) => ConnectionAddr::TcpTls { host: host.to_owned(), port, insecure: false, tls_params: None },
        };
        Node::open(addr, target, login)
    }

    /// Connects to the unix socket of a temporary loader.
    ///
    /// # Errors
    /// [`BackupError::Redis`] when nothing answers there.
    pub fn connect_unix(socket: &Path, name: &str) -> Result<Node, BackupError> {
        Node::open(name, ConnectionAddr::Unix(socket.to_path_buf()), &Login::default())
    }

    fn open(name: &str, addr: ConnectionAddr, login: &Login) -> Result<Node, BackupError> {
        let fail = |source| BackupError::Redis { node: name.to_owned(), what: "connect".to_owned(), source };
        let over_tls = matches!(addr, ConnectionAddr::TcpTls { .. });
        let info = addr.into_connection_info().map_err(fail)?.set_redis_settings(login.settings());
        let client = match (&login.tls, over_tls) {
            (Some(certificates), true) => Client::build_with_tls(info, certificates.clone()).map_err(fail)?,
            _ => Client::open(info).map_err(fail)?,
        };
        let con = client.get_connection_with_timeout(CONNECT_TIMEOUT).map_err(fail)?;
        con.set_read_timeout(Some(COMMAND_TIMEOUT)).map_err(fail)?;
        con.set_write_timeout(Some(COMMAND_TIMEOUT)).map_err(fail)?;
        Ok(Node { name: name.to_owned(), con })
    }

    /// The label used in errors (`host:port`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The connection, for pipelines.
    pub fn con(&mut self) -> &mut redis::Connection {
        &mut self.con
    }

    /// Runs a command, returning the raw client result (for callers that retry on some replies).
    pub fn try_query<T: FromRedisValue>(&mut self, args: &[&str]) -> redis::RedisResult<T> {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut self.con)
    }

    /// Runs a command that must succeed.
    ///
    /// # Errors
    /// [`BackupError::Redis`] naming the node and the command (its first two words).
    pub fn query<T: FromRedisValue>(&mut self, args: &[&str]) -> Result<T, BackupError> {
        self.try_query(args).map_err(|source| self.error(args, source))
    }

    /// A [`BackupError::Redis`] for a failed command of this node.
    pub fn error(&self, args: &[&str], source: redis::RedisError) -> BackupError {
        // Only the command's name and subcommand: later words may be keys or payloads.
        let what = args.iter().take(2).copied().collect::<Vec<_>>().join(" ");
        BackupError::Redis { node: self.name.clone(), what, source }
    }

    /// `INFO section`.
    ///
    /// # Errors
    /// As [`Node::query`].
    pub fn info(&mut self, section: &str) -> Result<String, BackupError> {
        self.query(&["INFO", section])
    }

    /// `CONFIG GET key`; `None` when the server does not know the parameter.
    ///
    /// # Errors
    /// As [`Node::query`] (for example when CONFIG is renamed or the ACL user may not run it).
    pub fn config_get(&mut self, key: &str) -> Result<Option<String>, BackupError> {
        let pairs: Vec<String> = self.query(&["CONFIG", "GET", key])?;
        Ok(pairs.chunks(2).find(|p| p.len() == 2 && p[0].eq_ignore_ascii_case(key)).map(|p| p[1].clone()))
    }
}

pub use redisforge_cluster::addr::split_addr;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_debug_hides_the_password() {
        let login = Login { user: Some("ops".to_owned()), password: Some("s3cret".to_owned()), tls: None };
        let text = format!("{login:?}");
        assert!(text.contains("ops") && !text.contains("s3cret"), "{text}");
    }
}
