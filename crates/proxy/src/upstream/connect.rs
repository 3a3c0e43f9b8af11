//! Connecting and logging in to a node, and one-off queries (topology, `COMMAND`) on a short-lived
//! connection that never shares a pipeline with client traffic.

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::{decode::decode, types::OwnedFrame};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::stream::UpstreamStream;
use super::{ConnSettings, UpstreamError};
use crate::resp::{FrameScanner, request::encode_command};

/// Opens a connection to `addr` (TCP, then TLS when configured) within `connect_timeout` and
/// logs in.
///
/// # Errors
/// [`UpstreamError::Unreachable`] when the connection, the handshake, the login or `extra`
/// commands fail.
pub async fn connect(addr: &str, settings: &ConnSettings, extra: &[&[&[u8]]]) -> Result<UpstreamStream, UpstreamError> {
    let unreachable = |reason: String| UpstreamError::Unreachable { addr: addr.to_string(), reason };
    let mut stream = match timeout(settings.connect_timeout, open(addr, settings)).await {
        Err(_) => return Err(unreachable("connect timeout".to_string())),
        Ok(Err(reason)) => return Err(unreachable(reason)),
        Ok(Ok(stream)) => stream,
    };
    let login = async {
        if let Some(auth) = proxy_login(settings) {
            let reply = roundtrip(&mut stream, &auth.iter().map(Vec::as_slice).collect::<Vec<_>>()).await?;
            if reply.first() == Some(&b'-') {
                // The node's own text, e.g. WRONGPASS; never the password.
                return Err(format!("login refused: {}", first_line(&reply)));
            }
        }
        for command in extra {
            let reply = roundtrip(&mut stream, command).await?;
            if reply.first() == Some(&b'-') {
                return Err(format!("{} refused: {}", String::from_utf8_lossy(command[0]), first_line(&reply)));
            }
        }
        Ok(())
    };
    match timeout(settings.command_timeout, login).await {
        Err(_) => Err(unreachable("login timeout".to_string())),
        Ok(Err(reason)) => Err(unreachable(reason)),
        Ok(Ok(())) => Ok(stream),
    }
}

/// The proxy's own login on a node (`upstream.user`/`password`): `AUTH [user] password`, or
/// nothing without a password (the node's `default` user).
pub(super) fn proxy_login(settings: &ConnSettings) -> Option<Vec<Vec<u8>>> {
    let password = settings.password.as_ref()?.as_bytes().to_vec();
    Some(match &settings.user {
        Some(user) => vec![b"AUTH".to_vec(), user.as_bytes().to_vec(), password],
        None => vec![b"AUTH".to_vec(), password],
    })
}

/// TCP connect, then the TLS handshake when `upstream.tls` is on.
async fn open(addr: &str, settings: &ConnSettings) -> Result<UpstreamStream, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    // Small pipelined requests must not wait for Nagle's algorithm.
    let _ = tcp.set_nodelay(true);
    let Some(tls) = &settings.tls else {
        return Ok(UpstreamStream::Plain(tcp));
    };
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let name = crate::tls::server_name(host).map_err(|e| e.to_string())?;
    let stream =
        crate::tls::connect(tcp, std::sync::Arc::clone(tls), name).await.map_err(|e| format!("TLS handshake: {e}"))?;
    Ok(UpstreamStream::Tls(Box::new(stream)))
}

/// Sends one command to `addr` on a fresh connection and decodes the reply.
///
/// # Errors
/// [`UpstreamError`] when the node cannot be reached or does not answer in time. An error *reply*
/// is returned as `Ok(OwnedFrame::Error(..))`.
pub async fn query(addr: &str, settings: &ConnSettings, args: &[&[u8]]) -> Result<OwnedFrame, UpstreamError> {
    let mut frames = query_all(addr, settings, &[args]).await?;
    frames.pop().ok_or_else(|| UpstreamError::ConnectionLost { addr: addr.to_string() })
}

/// Sends several commands to `addr`, one after the other on one fresh connection, and decodes
/// each reply: answers that must describe the same moment of the node (the slot map and the
/// epochs behind it) come from one connection.
///
/// # Errors
/// As [`query`].
pub async fn query_all(
    addr: &str,
    settings: &ConnSettings,
    commands: &[&[&[u8]]],
) -> Result<Vec<OwnedFrame>, UpstreamError> {
    let mut stream = connect(addr, settings, &[]).await?;
    let mut frames = Vec::with_capacity(commands.len());
    for args in commands {
        let reply = match timeout(settings.command_timeout, roundtrip(&mut stream, args)).await {
            Err(_) => return Err(UpstreamError::Timeout),
            Ok(Err(_)) => return Err(UpstreamError::ConnectionLost { addr: addr.to_string() }),
            Ok(Ok(reply)) => reply,
        };
        match decode(&reply) {
            Ok(Some((frame, _))) => frames.push(frame),
            _ => return Err(UpstreamError::ConnectionLost { addr: addr.to_string() }),
        }
    }
    Ok(frames)
}

/// Writes one command and reads exactly one reply frame.
pub async fn roundtrip<S>(stream: &mut S, args: &[&[u8]]) -> Result<Bytes, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream.write_all(&encode_command(args)).await.map_err(|e| e.to_string())?;
    let mut buf = BytesMut::with_capacity(4096);
    let mut scanner = FrameScanner::new();
    loop {
        if let Some(len) = scanner.scan(&buf).map_err(|e| e.to_string())? {
            return Ok(buf.split_to(len).freeze());
        }
        if stream.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("connection closed".to_string());
        }
    }
}

/// The first line of a reply, for log messages.
pub fn first_line(reply: &[u8]) -> String {
    let line = reply.split(|&b| b == b'\r').next().unwrap_or(&[]);
    String::from_utf8_lossy(line.strip_prefix(b"-").unwrap_or(line)).into_owned()
}
