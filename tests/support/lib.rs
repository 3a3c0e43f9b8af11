//! End-to-end test harness for RedisForge: real `redis-server` clusters and proxy processes.
//!
//! # Layout
//! - [`ports`]: port reservation that is safe across parallel test processes (`flock` per port).
//! - [`process`]: signals, the watchdog that kills children when the test process dies, log tails.
//! - [`cluster`]: [`Cluster`], a Redis Cluster of `redis-server` children built natively
//!   (ADDSLOTSRANGE, MEET, REPLICATE) with kill/pause/restart/failover/reshard helpers.
//! - [`proxy`]: [`Proxy`], the `redisforge-proxy` binary run as a child with a generated config.
//! - [`server`]: [`RedisServer`], one `redis-server` with the caller's configuration (the ops suites).
//! - `acl_sides`: [`AclSides`], a proxy and a standalone node loaded with the same ACL file, for
//!   differential ACL tests.
//! - `conn`: `redis` connections with connect/read/write timeouts, optional ACL auth and TLS.
//! - [`tls`]: [`NodeTls`] certificate files for TLS-only clusters ([`Cluster::start_tls`]) and
//!   [`generate_certs`] (`redisforge-ops certs generate`).
//! - this file: [`raw_roundtrip`] and [`read_until`] for byte-level RESP tests, [`wait_until`] for
//!   bounded polling.
//!
//! Every child process is torn down by PID twice over: `Drop` kills and reaps it, and a small
//! `sh` watchdog kills it once the test process is gone (panic=abort, SIGKILL, a `static`
//! cluster that is never dropped). Every wait is bounded in time and in iterations.
//!
//! ```no_run
//! use redisforge_tests::{Cluster, Proxy, ProxyOptions};
//! let cluster = Cluster::shared();
//! let proxy = Proxy::start(cluster, ProxyOptions::default());
//! let mut con = proxy.client();
//! let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut con).expect("SET via proxy");
//! ```

mod acl_sides;
pub mod cluster;
pub mod command_cases;
mod conn;
pub mod modules;
pub mod netns;
pub mod ports;
pub mod process;
pub mod proxy;
pub mod raw;
pub mod resp;
pub mod rng;
pub mod server;
pub mod tls;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

pub use acl_sides::AclSides;
pub use cluster::{Cluster, ClusterOptions, Isolation, SlotRange};
pub use ports::{PortGuard, free_port, reserve_port};
pub use process::Signal;
pub use proxy::{Proxy, ProxyOptions, proxy_on_own_cluster};
pub use server::RedisServer;
pub use tls::{NodeTls, generate_certs};

/// A plain connection to `addr` (the proxy or a node) with bounded connect (5 s), read and write
/// (10 s) times, so a stuck peer fails a test instead of hanging it.
pub fn connect(addr: &str) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(format!("redis://{addr}/"))?;
    let con = client.get_connection_with_timeout(Duration::from_secs(5))?;
    con.set_read_timeout(Some(Duration::from_secs(10)))?;
    con.set_write_timeout(Some(Duration::from_secs(10)))?;
    Ok(con)
}

/// Runs the command `args` (name first) on `con`; the reply, or the error's text.
pub fn query_args(con: &mut redis::Connection, args: &[&str]) -> Result<redis::Value, String> {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query(con).map_err(|e| e.to_string())
}

/// Polls `cond` every `interval` until it returns true or `timeout` passes; returns the last answer.
///
/// Bounded twice: by the deadline and by an iteration count derived from it, so a slow `cond`
/// cannot stretch the wait beyond roughly `timeout` plus one call.
pub fn wait_until(timeout: Duration, interval: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let max_iterations = timeout.as_millis() / interval.as_millis().max(1) + 2;
    for _ in 0..max_iterations {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(interval);
    }
    cond()
}

/// Writes `bytes` to `addr` and returns everything read until the server closes or `timeout`.
///
/// For raw RESP tests (pipelines, malformed frames). The write side stays open, so a server
/// that keeps the connection makes this return at the deadline: use [`raw_roundtrip_until`]
/// to stop as soon as the expected reply is complete.
///
/// # Panics
/// When the connection or the write fails.
pub fn raw_roundtrip(addr: &str, bytes: &[u8], timeout: Duration) -> Vec<u8> {
    raw_roundtrip_until(addr, bytes, timeout, |_| false)
}

/// Like [`raw_roundtrip`] but also stops as soon as `done(received_so_far)` is true.
///
/// # Panics
/// When the connection or the write fails.
pub fn raw_roundtrip_until(addr: &str, bytes: &[u8], timeout: Duration, done: impl FnMut(&[u8]) -> bool) -> Vec<u8> {
    let deadline = Instant::now() + timeout;
    let sock = addr
        .to_socket_addrs()
        .expect("raw_roundtrip: address resolves")
        .next()
        .expect("raw_roundtrip: address has at least one socket address");
    let mut stream =
        TcpStream::connect_timeout(&sock, timeout).unwrap_or_else(|e| panic!("raw_roundtrip: connect to {addr}: {e}"));
    stream.set_write_timeout(Some(timeout)).expect("raw_roundtrip: set write timeout");
    stream.write_all(bytes).unwrap_or_else(|e| panic!("raw_roundtrip: write to {addr}: {e}"));
    read_until(&mut stream, deadline.saturating_duration_since(Instant::now()), done)
}

/// Reads from `stream` until `done(received)`, the peer closes, or `timeout` passes; returns what
/// arrived. Each read is bounded by the time left, and the loop by the deadline.
pub fn read_until(stream: &mut TcpStream, timeout: Duration, mut done: impl FnMut(&[u8]) -> bool) -> Vec<u8> {
    let deadline = Instant::now() + timeout;
    let mut received = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    while !done(&received) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            // A timeout, or a reset after the server replied and closed, ends the read.
            Err(_) => break,
        }
    }
    received
}

/// Encodes `args` as one RESP2 array of bulk strings, the way clients send commands.
pub fn resp_command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// An EVAL of a script that counts to three million before it answers `slow`: for tests that need
/// one reply to come late.
pub fn slow_script_command() -> Vec<u8> {
    resp_command(&[b"EVAL", b"local i = 0 while i < 3000000 do i = i + 1 end return 'slow'", b"0"])
}

/// `GET path` over HTTP/1.1 on `addr` (the metrics endpoint); returns `(status, body)`.
///
/// # Panics
/// When the connection fails or the response has no status line.
pub fn http_get(addr: &str, path: &str, timeout: Duration) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let raw = raw_roundtrip(addr, request.as_bytes(), timeout);
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("GET {path} on {addr}: no HTTP status line in {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}
