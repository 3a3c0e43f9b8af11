//! A reply of hundreds of MB streams through the proxy: it is passed on in pieces as it arrives,
//! so the proxy's memory grows by a small fraction of the reply, and every byte arrives in order.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use redisforge_tests::process::rss_bytes;
use redisforge_tests::{Cluster, ClusterOptions, Proxy, ProxyOptions, resp_command};

const MIB: usize = 1024 * 1024;
/// The value GET returns through the proxy.
const VALUE_LEN: usize = 300 * MIB;

#[test]
fn a_reply_of_300_mb_streams_through_without_being_held_whole() {
    let cluster = Cluster::shared();
    // Default limits: the 64 MiB client output limit is far below the reply, so only a reply
    // that streams (with the node's connection waiting for the client) can arrive whole.
    let proxy = Proxy::start(cluster, ProxyOptions::default());
    let key = "stream:{big}";
    // Written on the owning node directly: the request path is not what this test is about.
    let node = cluster.node_for_key(key);
    let pattern: Vec<u8> = (0..VALUE_LEN).map(|i| (i % 251) as u8).collect();
    let _: () = redis::cmd("SET").arg(key).arg(&pattern).query(&mut cluster.client(&node)).expect("SET 300 MB");

    let pid = proxy.pid();
    let before = rss_bytes(pid) as usize;
    let mut client = TcpStream::connect(proxy.addr()).expect("connect");
    client.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    client.write_all(&resp_command(&[b"GET", key.as_bytes()])).expect("send GET");
    let header = format!("${VALUE_LEN}\r\n").into_bytes();
    let total = header.len() + VALUE_LEN + 2;
    let mut got = 0usize;
    let mut peak = before;
    let mut buf = vec![0u8; 4 * MIB];
    let mut checked = Vec::with_capacity(header.len());
    let started = Instant::now();
    // Bounded: every read makes progress or times out, and the whole reply has a deadline.
    while got < total && started.elapsed() < Duration::from_secs(120) {
        let n = client.read(&mut buf).expect("read the reply");
        assert!(n > 0, "the proxy closed the connection after {got} of {total} bytes");
        for (i, &byte) in buf[..n].iter().enumerate() {
            let at = got + i;
            if at < header.len() {
                checked.push(byte);
            } else if at < header.len() + VALUE_LEN {
                let expected = ((at - header.len()) % 251) as u8;
                assert_eq!(byte, expected, "byte {at} of the reply");
            }
        }
        got += n;
        if got % (16 * MIB) < n {
            peak = peak.max(rss_bytes(pid) as usize);
        }
    }
    let took = started.elapsed();
    assert_eq!(got, total, "the whole reply arrived");
    assert_eq!(checked, header);
    let growth = peak.saturating_sub(before);
    println!(
        "STREAMING: {} MB through the proxy in {took:?}; proxy VmRSS {} MiB before, peak {} MiB (+{} MiB)",
        VALUE_LEN / MIB,
        before / MIB,
        peak / MIB,
        growth / MIB
    );
    // Held whole, the reply alone would add 300 MiB (twice that with the copy for the client).
    assert!(growth < 100 * MIB, "the proxy grew by {} MiB for a {} MiB reply", growth / MIB, VALUE_LEN / MIB);

    // The connection is still in step: the next reply is its own.
    client.write_all(&resp_command(&[b"PING"])).expect("PING");
    let mut pong = [0u8; 7];
    client.read_exact(&mut pong).expect("PONG");
    assert_eq!(&pong, b"+PONG\r\n");
    // Through the proxy: under load the node may have failed over meanwhile.
    let _: () = redis::cmd("DEL").arg(key).query(&mut proxy.client()).expect("DEL");
}

/// A key of the form `stream:{tag}:name` served by a node other than `other`'s.
fn key_elsewhere(cluster: &Cluster, other: &str, name: &str) -> String {
    let avoid = cluster.node_for_key(other);
    (0..100)
        .map(|i| format!("stream:{{t{i}}}:{name}"))
        .find(|key| cluster.node_for_key(key) != avoid)
        .expect("a slot on another node among 100 tags")
}

/// Writes a value of `len` bytes of the test pattern on the node that owns `key`.
fn set_pattern(cluster: &Cluster, key: &str, len: usize) {
    let pattern: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let _: () =
        redis::cmd("SET").arg(key).arg(&pattern).query(&mut cluster.client(&cluster.node_for_key(key))).expect("SET");
}

/// Runs `body` with the node of `key` frozen (SIGSTOP) for its first `for_how_long` (shorter
/// than the cluster's node timeout, so no failover): the proxy's requests to it wait meanwhile,
/// with no CPU spent, unlike a busy script. The node is woken however `body` ends. Only on a
/// cluster of the test's own ([`Cluster::shared`] must not have paused nodes).
fn with_node_frozen<T>(cluster: &Cluster, key: &str, for_how_long: Duration, body: impl FnOnce() -> T) -> T {
    let node = cluster.node_for_key(key);
    cluster.pause(&node);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            std::thread::sleep(for_how_long);
            cluster.resume(&node);
        });
        body()
    })
}

/// Reads until `want` bytes came, the peer closed, or `deadline` passed.
fn read_up_to(client: &mut TcpStream, want: usize, deadline: Duration) -> Vec<u8> {
    let started = Instant::now();
    let mut got = Vec::with_capacity(want);
    let mut buf = vec![0u8; MIB];
    while got.len() < want && started.elapsed() < deadline {
        match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got
}

/// Whether `bytes` start with the bulk string of `len` bytes of the test pattern; returns its
/// length on the wire.
fn pattern_bulk_at(bytes: &[u8], len: usize) -> Result<usize, String> {
    let header = format!("${len}\r\n").into_bytes();
    if !bytes.starts_with(&header) {
        return Err(format!("no bulk header of {len}: {}", redisforge_tests::resp::show(bytes, 40)));
    }
    let body = &bytes[header.len()..];
    if body.len() < len + 2 {
        return Err(format!("the bulk string broke off after {} of {len} bytes", body.len()));
    }
    if let Some(at) = (0..len).find(|&i| body[i] != (i % 251) as u8) {
        return Err(format!(
            "byte {at} of the bulk string is foreign: {}",
            redisforge_tests::resp::show(&body[at..], 60)
        ));
    }
    match &body[len..len + 2] {
        b"\r\n" => Ok(header.len() + len + 2),
        _ => Err("no CRLF after the bulk string".to_string()),
    }
}

/// A large reply that arrives while an earlier request of the same client is still out waits in
/// the proxy, and streams on once the earlier reply is in. (The waiting pieces' flow-control
/// credit used to stay lent until the reply's next piece came, which a node connection past its
/// 8 MiB window never read: the reply stalled until `command_timeout` let the connection read on.)
#[test]
fn a_large_reply_behind_a_slow_one_streams_on_once_the_slow_one_is_in() {
    const LEN: usize = 24 * MIB;
    let cluster = Cluster::start(ClusterOptions::default());
    // A long command timeout, so that a stall shows as one.
    let upstream = "[upstream]\nseeds = @SEEDS@\n@UPSTREAM_AUTH@\ncommand_timeout = \"30s\"\n";
    let proxy = Proxy::start(&cluster, ProxyOptions { extra_toml: upstream.to_string(), ..ProxyOptions::default() });
    let slow_key = "stream:{slow}:frozen";
    let big_key = key_elsewhere(&cluster, slow_key, "behind");
    set_pattern(&cluster, &big_key, LEN);

    let mut client = TcpStream::connect(proxy.addr()).expect("connect");
    client.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    // A GET on a node frozen for a second, then the large GET on another node.
    let first = b"$-1\r\n";
    let bulk = format!("${LEN}\r\n").len() + LEN + 2;
    let got = with_node_frozen(&cluster, slow_key, Duration::from_secs(1), || {
        let slow = resp_command(&[b"GET", slow_key.as_bytes()]);
        client.write_all(&[slow, resp_command(&[b"GET", big_key.as_bytes()])].concat()).expect("send");
        // The frozen node answers after about a second; the reply then streams on at once.
        read_up_to(&mut client, first.len() + bulk, Duration::from_secs(10))
    });
    assert!(got.starts_with(first), "{}", redisforge_tests::resp::show(&got, 80));
    assert_eq!(pattern_bulk_at(&got[first.len()..], LEN), Ok(bulk));
    let _: () = redis::cmd("DEL").arg(&big_key).query(&mut proxy.client()).expect("DEL");
}

/// Pub/sub pushes that come while a large reply streams to a RESP3 client wait for its end: a
/// push written in the middle of a bulk string would corrupt it.
#[test]
fn pushes_wait_for_the_end_of_a_streamed_reply() {
    const LEN: usize = 24 * MIB;
    let cluster = Cluster::shared();
    let proxy = Proxy::start(cluster, ProxyOptions::default());
    let big_key = "stream:{push}:big";
    set_pattern(cluster, big_key, LEN);

    let mut client = TcpStream::connect(proxy.addr()).expect("connect");
    client.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    client.write_all(&resp_command(&[b"HELLO", b"3"])).expect("HELLO");
    let hello = read_up_to(&mut client, 1, Duration::from_secs(5));
    assert!(hello.starts_with(b"%"), "{}", redisforge_tests::resp::show(&hello, 80));
    client.write_all(&resp_command(&[b"SUBSCRIBE", b"stream:chan"])).expect("SUBSCRIBE");
    let confirmation = b">3\r\n$9\r\nsubscribe\r\n$11\r\nstream:chan\r\n:1\r\n";
    assert_eq!(read_up_to(&mut client, confirmation.len(), Duration::from_secs(5)), confirmation);

    // The reply fills the socket and the proxy's window while the client reads nothing; the
    // messages come meanwhile.
    client.write_all(&resp_command(&[b"GET", big_key.as_bytes()])).expect("GET");
    std::thread::sleep(Duration::from_millis(300));
    let mut publisher = proxy.client();
    for i in 0..5 {
        let receivers: i64 =
            redis::cmd("PUBLISH").arg("stream:chan").arg(format!("m{i}")).query(&mut publisher).expect("PUBLISH");
        assert_eq!(receivers, 1);
    }
    let message = |i: usize| format!(">3\r\n$7\r\nmessage\r\n$11\r\nstream:chan\r\n$2\r\nm{i}\r\n").into_bytes();
    let messages: Vec<u8> = (0..5).flat_map(message).collect();
    let bulk = format!("${LEN}\r\n").len() + LEN + 2;
    let got = read_up_to(&mut client, bulk + messages.len(), Duration::from_secs(30));
    assert_eq!(pattern_bulk_at(&got, LEN), Ok(bulk), "the reply arrived whole, with no push inside");
    assert_eq!(redisforge_tests::resp::show(&got[bulk..], 400), redisforge_tests::resp::show(&messages, 400));
    let _: () = redis::cmd("DEL").arg(big_key).query(&mut proxy.client()).expect("DEL");
}

/// Pieces of a large reply that wait behind an earlier, slow reply are output the client has not
/// taken: past `limits.client_output_limit` the client is disconnected, as when its write buffer
/// grows past it, and the proxy does not keep the reply. (Once a stall outlasted
/// `command_timeout`, such pieces used to pile up with no bound but the reply's size.)
#[test]
fn a_large_reply_waiting_behind_a_slow_one_counts_against_the_output_limit() {
    const LEN: usize = 64 * MIB;
    let cluster = Cluster::start(ClusterOptions::default());
    // A command timeout well past the frozen node's 1.5 s, so that nothing but the limit ends the
    // wait.
    let upstream = "[upstream]\nseeds = @SEEDS@\n@UPSTREAM_AUTH@\ncommand_timeout = \"20s\"\n";
    let config = format!("[limits]\nclient_output_limit = 2097152\n{upstream}");
    let proxy = Proxy::start(&cluster, ProxyOptions { extra_toml: config, ..ProxyOptions::default() });
    let slow_key = "stream:{limit}:frozen";
    let big_key = key_elsewhere(&cluster, slow_key, "limited");
    set_pattern(&cluster, &big_key, LEN);
    let before = rss_bytes(proxy.pid()) as usize;

    let mut client = TcpStream::connect(proxy.addr()).expect("connect");
    client.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let (got, closed_after) = with_node_frozen(&cluster, slow_key, Duration::from_millis(1500), || {
        let slow = resp_command(&[b"GET", slow_key.as_bytes()]);
        let sent = Instant::now();
        client.write_all(&[slow, resp_command(&[b"GET", big_key.as_bytes()])].concat()).expect("send");
        let got = read_up_to(&mut client, LEN, Duration::from_secs(20));
        (got, sent.elapsed())
    });
    assert!(
        got.is_empty(),
        "the client is disconnected before the slow reply is written: {}",
        redisforge_tests::resp::show(&got, 80)
    );
    // As soon as the waiting pieces pass the limit, not once the frozen node answers (1.5 s) and
    // they reach the write buffer.
    assert!(closed_after < Duration::from_millis(1200), "disconnected after {closed_after:?}");
    let grown = (rss_bytes(proxy.pid()) as usize).saturating_sub(before);
    assert!(grown < 32 * MIB, "the proxy grew by {} MiB for a {} MiB reply", grown / MIB, LEN / MIB);
    // Other clients are served.
    let pong: String = redis::cmd("PING").query(&mut proxy.client()).expect("PING");
    assert_eq!(pong, "PONG");
    let _: () = redis::cmd("DEL").arg(&big_key).query(&mut proxy.client()).expect("DEL");
}
