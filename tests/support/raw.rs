//! Raw TCP connections to a proxy, for clients that misbehave on purpose (never read, send
//! partial requests) where a client library would not.

use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::read_until;

/// How long a raw connection's reads and writes may wait.
pub const RAW_TIMEOUT: Duration = Duration::from_secs(5);

/// A plain TCP connection to `addr` with [`RAW_TIMEOUT`] read and write timeouts, for speaking raw
/// RESP.
pub fn raw_connect(addr: &str) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream.set_read_timeout(Some(RAW_TIMEOUT)).expect("read timeout");
    stream.set_write_timeout(Some(RAW_TIMEOUT)).expect("write timeout");
    stream
}

/// Reads until `want` bytes arrived, the peer closed, or [`RAW_TIMEOUT`] passed ([`read_until`]).
pub fn read_some(stream: &mut TcpStream, want: usize) -> Vec<u8> {
    read_until(stream, RAW_TIMEOUT, |got| got.len() >= want)
}

/// Whether the peer has closed: reads (and drops) whatever is still buffered until EOF or a reset,
/// within `timeout`. Returns the bytes drained, `None` when the connection is still open.
pub fn drain_until_closed(stream: &mut TcpStream, timeout: Duration) -> Option<u64> {
    read_until_closed(stream, timeout).map(|bytes| bytes.len() as u64)
}

/// Reads whatever is still buffered until EOF or a reset, within `timeout`: the bytes read, `None`
/// when the connection is still open.
pub fn read_until_closed(stream: &mut TcpStream, timeout: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut read = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    while Instant::now() < deadline {
        stream
            .set_read_timeout(Some(deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1))))
            .ok()?;
        match stream.read(&mut buf) {
            Ok(0) => return Some(read),
            Ok(n) => read.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return None,
            Err(_) => return Some(read),
        }
    }
    None
}
