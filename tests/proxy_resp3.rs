//! RESP3 through the proxy: `HELLO 3` switches the client, replies keep their RESP3 types, and
//! RESP2 clients keep RESP2.

use std::time::Duration;

use redisforge_tests::{Cluster, Proxy, ProxyOptions, raw_roundtrip_until};

fn roundtrip(proxy: &Proxy, input: &[u8], until: &[u8]) -> String {
    let reply = raw_roundtrip_until(&proxy.addr(), input, Duration::from_secs(5), |got| got.ends_with(until));
    String::from_utf8_lossy(&reply).into_owned()
}

#[test]
fn hello_3_switches_to_resp3_types_end_to_end() {
    let proxy = Proxy::start(Cluster::shared(), ProxyOptions::default());
    let text = roundtrip(
        &proxy,
        b"HSET r3:h f v\r\nHELLO 3\r\nHGETALL r3:h\r\nGET r3:none\r\nZADD r3:z 1.5 a\r\nZSCORE r3:z a\r\nQUIT\r\n",
        b"+OK\r\n",
    );
    assert!(text.contains("%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n"), "HELLO 3 answers a map: {text}");
    assert!(text.contains("$5\r\nproto\r\n:3\r\n"), "{text}");
    assert!(text.contains("%1\r\n$1\r\nf\r\n$1\r\nv\r\n"), "HGETALL is a map in RESP3: {text}");
    assert!(text.contains("_\r\n"), "null is `_` in RESP3: {text}");
    assert!(text.contains(",1.5\r\n"), "ZSCORE is a double in RESP3: {text}");
}

#[test]
fn resp2_clients_keep_resp2() {
    let proxy = Proxy::start(Cluster::shared(), ProxyOptions::default());
    let text = roundtrip(&proxy, b"HSET r2:h f v\r\nHGETALL r2:h\r\nGET r2:none\r\nQUIT\r\n", b"+OK\r\n");
    assert_eq!(text, ":1\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n$-1\r\n+OK\r\n");
    let text = roundtrip(&proxy, b"HELLO 4\r\nHELLO x\r\nQUIT\r\n", b"+OK\r\n");
    assert_eq!(
        text,
        "-NOPROTO unsupported protocol version\r\n-ERR Protocol version is not an integer or out of range\r\n+OK\r\n"
    );
}

#[test]
fn resp3_subscribers_get_push_frames_and_may_run_other_commands() {
    let proxy = Proxy::start(Cluster::shared(), ProxyOptions::default());
    let mut subscriber = std::net::TcpStream::connect(proxy.addr()).expect("connect");
    std::io::Write::write_all(&mut subscriber, b"HELLO 3\r\nSUBSCRIBE r3:ch\r\nGET r3:none\r\n").expect("write");
    subscriber.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let mut published = false;
    let mut publisher = proxy.client();
    let done = redisforge_tests::wait_until(Duration::from_secs(10), Duration::from_millis(1), || {
        if let Ok(n) = std::io::Read::read(&mut subscriber, &mut buf) {
            seen.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&seen).into_owned();
        if !published && text.contains("_\r\n") {
            // Publish on every master so the subscription's node surely delivers.
            for _ in 0..3 {
                let _: i64 = redis::cmd("PUBLISH").arg("r3:ch").arg("pushed").query(&mut publisher).expect("PUBLISH");
            }
            published = true;
        }
        text.contains("pushed")
    });
    let text = String::from_utf8_lossy(&seen);
    assert!(done, "{text}");
    assert!(text.contains(">3\r\n$9\r\nsubscribe\r\n$5\r\nr3:ch\r\n:1\r\n"), "{text}");
    assert!(text.contains("_\r\n"), "GET runs while subscribed in RESP3: {text}");
    assert!(text.contains(">3\r\n$7\r\nmessage\r\n$5\r\nr3:ch\r\n$6\r\npushed\r\n"), "{text}");
}

/// A RESP3 subscriber may open a transaction (RESP3 has no subscribed-mode limits); a
/// subscription command inside it is refused as any subscription command inside MULTI is through
/// the proxy (it is not sent to one node), and EXEC then fails, instead of subscribing at once
/// outside the transaction.
#[test]
fn a_resp3_subscribers_subscription_inside_multi_is_refused_not_run_at_once() {
    let proxy = Proxy::start(Cluster::shared(), ProxyOptions::default());
    let text = roundtrip(
        &proxy,
        b"CLIENT REPLY SKIP\r\nHELLO 3\r\nSUBSCRIBE r3tx:a\r\nMULTI\r\nSUBSCRIBE r3tx:b\r\nEXEC\r\nPING\r\nQUIT\r\n",
        b"+OK\r\n+PONG\r\n+OK\r\n",
    );
    assert_eq!(
        text,
        ">3\r\n$9\r\nsubscribe\r\n$6\r\nr3tx:a\r\n:1\r\n+OK\r\n\
         -ERR command not allowed inside a transaction through the proxy (it is not sent to a single node)\r\n\
         -EXECABORT Transaction discarded because of previous errors.\r\n+PONG\r\n+OK\r\n"
    );
}
