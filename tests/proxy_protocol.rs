//! Malformed and hostile input from raw TCP sockets: Redis-style errors, the connection closed the
//! way Redis closes it, and other clients unaffected.

use std::time::Duration;

use redisforge_tests::{Cluster, Proxy, ProxyOptions, raw_roundtrip};

const WAIT: Duration = Duration::from_secs(5);

fn proxy() -> Proxy {
    Proxy::start(
        Cluster::shared(),
        ProxyOptions {
            extra_toml: "[limits]\nmax_request_bytes = 1048576\nmax_array_len = 1000\n".to_string(),
            ..ProxyOptions::default()
        },
    )
}

fn assert_protocol_error(proxy: &Proxy, input: &[u8], expected: &str) {
    let reply = raw_roundtrip(&proxy.addr(), input, WAIT);
    let text = String::from_utf8_lossy(&reply);
    assert_eq!(text, format!("-ERR Protocol error: {expected}\r\n"), "input {:?}", String::from_utf8_lossy(input));
}

#[test]
fn malformed_requests_get_protocol_errors_and_the_connection_closes() {
    let proxy = proxy();
    assert_protocol_error(&proxy, b"*1\r\n+PING\r\n", "expected '$', got '+'");
    assert_protocol_error(&proxy, b"*x\r\n", "invalid multibulk length");
    assert_protocol_error(&proxy, b"*1\r\n$-7\r\n", "invalid bulk length");
    assert_protocol_error(&proxy, b"ECHO \"unterminated\r\n", "unbalanced quotes in request");
    assert_protocol_error(&proxy, b"*1001\r\n", "invalid multibulk length");
    // Valid requests before the bad one are answered first.
    let reply = raw_roundtrip(&proxy.addr(), b"PING\r\n*1\r\n:1\r\n", WAIT);
    assert_eq!(reply, b"+PONG\r\n-ERR Protocol error: expected '$', got ':'\r\n");
}

#[test]
fn huge_bulk_lengths_are_refused_without_buffering() {
    let proxy = proxy();
    // Only the header arrives; the proxy must answer at once, not wait for 2 GB.
    assert_protocol_error(&proxy, b"*2\r\n$3\r\nSET\r\n$2147483648\r\n", "invalid bulk length");
    assert_protocol_error(
        &proxy,
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1048570\r\n",
        "request larger than max_request_bytes (1048576 bytes)",
    );
}

#[test]
fn inline_commands_work_like_redis() {
    let proxy = proxy();
    let reply = raw_roundtrip(&proxy.addr(), b"SET proto:inline \"a b\"\r\nGET proto:inline\r\n\r\nQUIT\r\n", WAIT);
    assert_eq!(reply, b"+OK\r\n$3\r\na b\r\n+OK\r\n");
}

#[test]
fn a_bad_client_does_not_affect_others() {
    let proxy = proxy();
    let mut good = proxy.client();
    let _: () = redis::cmd("SET").arg("proto:good").arg("1").query(&mut good).expect("SET");
    for _ in 0..20 {
        let _ = raw_roundtrip(&proxy.addr(), b"*2\r\n$3\r\nGET\r\n$9999999999999\r\n", WAIT);
        let _ = raw_roundtrip(&proxy.addr(), b"\x00\x01\x02garbage\r\nQUIT\r\n", WAIT);
    }
    let value: String = redis::cmd("GET").arg("proto:good").query(&mut good).expect("GET");
    assert_eq!(value, "1");
}

#[test]
fn partial_request_then_disconnect_is_harmless() {
    let proxy = proxy();
    let _ = raw_roundtrip(&proxy.addr(), b"*3\r\n$3\r\nSET\r\n$1\r\nk", Duration::from_millis(200));
    let mut con = proxy.client();
    let pong: String = redis::cmd("PING").query(&mut con).expect("PING");
    assert_eq!(pong, "PONG");
}
