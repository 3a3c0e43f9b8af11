//! A reply of hundreds of MB streams through the proxy: it is passed on in pieces as it arrives,
//! so the proxy's memory grows by a small fraction of the reply, and every byte arrives in order.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use redisforge_tests::process::rss_bytes;
use redisforge_tests::{Cluster, Proxy, ProxyOptions, resp_command};

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
    let _: () = redis::cmd("DEL").arg(key).query(&mut cluster.client(&node)).expect("DEL");
}
