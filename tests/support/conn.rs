//! Connections to nodes and proxies with timeouts on every step, authenticated when asked, over
//! TLS when the target only speaks TLS.

use std::time::Duration;

use redis::{Client, Connection, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo, TlsCertificates};

/// Connect and per-command timeout of probes, so a paused node cannot hang the harness.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How the harness reaches a target: an optional ACL login and optional TLS material.
///
/// With `tls` set, connections use `rediss://` with the given CA as the only root and the given
/// client identity (the nodes' own certificate, which carries the clientAuth EKU too).
#[derive(Clone, Debug, Default)]
pub(crate) struct Access {
    pub acl: Option<(String, String)>,
    pub tls: Option<TlsCertificates>,
}

impl Access {
    /// Plaintext, authenticating as `acl` when given.
    pub fn plain(acl: Option<&(String, String)>) -> Access {
        Access { acl: acl.cloned(), tls: None }
    }
}

/// A short-timeout connection for polling nodes that may be dead or paused.
pub(crate) fn probe(addr: &str, access: &Access) -> redis::RedisResult<Connection> {
    connect(addr, access, PROBE_TIMEOUT)
}

/// Connects to `host:port` with connect/read/write timeouts (the TLS handshake happens on the
/// first command, within them), authenticating when `access.acl` is set.
pub(crate) fn connect(addr: &str, access: &Access, timeout: Duration) -> redis::RedisResult<Connection> {
    let info = connection_info(addr, access.acl.as_ref())?;
    let client = match &access.tls {
        None => Client::open(info)?,
        Some(certs) => {
            let tls_info =
                format!("rediss://{addr}").into_connection_info()?.set_redis_settings(info.redis_settings().clone());
            Client::build_with_tls(tls_info, certs.clone())?
        }
    };
    let con = client.get_connection_with_timeout(timeout)?;
    con.set_read_timeout(Some(timeout))?;
    con.set_write_timeout(Some(timeout))?;
    Ok(con)
}

/// Connection parameters for `host:port`, with ACL credentials when given.
pub(crate) fn connection_info(addr: &str, acl: Option<&(String, String)>) -> redis::RedisResult<redis::ConnectionInfo> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "address is not host:port")))?;
    let port: u16 = port
        .parse()
        .map_err(|_| redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "port is not a number")))?;
    let mut redis_info = RedisConnectionInfo::default();
    if let Some((user, pass)) = acl {
        redis_info = redis_info.set_username(user).set_password(pass);
    }
    Ok(ConnectionAddr::Tcp(host.to_owned(), port).into_connection_info()?.set_redis_settings(redis_info))
}
