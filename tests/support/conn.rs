//! Connections to nodes and proxies with timeouts on every step, authenticated when asked.

use std::time::Duration;

use redis::{Client, Connection, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};

/// Connect and per-command timeout of probes, so a paused node cannot hang the harness.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A short-timeout connection for polling nodes that may be dead or paused.
pub(crate) fn probe(addr: &str, acl: Option<&(String, String)>) -> redis::RedisResult<Connection> {
    connect(addr, acl, PROBE_TIMEOUT)
}

/// Connects to `host:port` with connect/read/write timeouts, authenticating when `acl` is set.
pub(crate) fn connect(addr: &str, acl: Option<&(String, String)>, timeout: Duration) -> redis::RedisResult<Connection> {
    let client = Client::open(connection_info(addr, acl)?)?;
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
