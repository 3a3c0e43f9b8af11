//! Clients that misbehave or churn: one that never reads its replies, more clients than
//! `listen.max_clients`, 10,000 connect/disconnect cycles, and requests over `max_request_bytes`.
//! The proxy must stay within bounds (memory, file descriptors, its own counters) and keep serving
//! everyone else.

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use redisforge_tests::process::{fd_count, rss_bytes};
use redisforge_tests::raw::{drain_until_closed, raw_connect, read_some};
use redisforge_tests::{Cluster, Proxy, ProxyOptions, resp_command, wait_until};

const MIB: u64 = 1024 * 1024;

/// The value of the sample named exactly `series` on `/metrics`.
fn metric(proxy: &Proxy, series: &str) -> Option<f64> {
    proxy.metric(series)
}

fn proxy_with(extra_toml: &str) -> Proxy {
    Proxy::start(Cluster::shared(), ProxyOptions { extra_toml: extra_toml.to_owned(), ..ProxyOptions::default() })
}

#[test]
fn client_that_never_reads_is_disconnected_at_the_output_limit_with_memory_bounded() {
    let proxy = proxy_with("[limits]\nclient_output_limit = 4194304\n");
    let pid = proxy.pid();
    let big_key = "cli:big";
    let big_value = "x".repeat(100 * 1024);
    let mut good = proxy.client();
    let _: () = redis::cmd("SET").arg(big_key).arg(&big_value).query(&mut good).expect("SET the 100 KB value");
    // Warm up the paths a big reply takes, so the baseline is not an empty process.
    for _ in 0..50 {
        let got: String = redis::cmd("GET").arg(big_key).query(&mut good).expect("GET the 100 KB value");
        assert_eq!(got.len(), big_value.len());
    }
    let rss_start = rss_bytes(pid);

    // 3,000 GETs of 100 KB: 300 MB of replies that the client never reads.
    let mut hog = raw_connect(&proxy.addr());
    let get = resp_command(&[b"GET", big_key.as_bytes()]);
    let flood: Vec<u8> = get.iter().copied().cycle().take(get.len() * 3000).collect();
    hog.write_all(&flood).expect("send the GETs");
    let hog_sent = Instant::now();

    // Meanwhile another client works as usual, every reply checked and timed.
    let stop = Arc::new(AtomicBool::new(false));
    let good_ops = Arc::new(AtomicU64::new(0));
    let good_problems = Arc::new(Mutex::new(Vec::new()));
    let good_thread = {
        let (stop, ops, problems) = (stop.clone(), good_ops.clone(), good_problems.clone());
        thread::spawn(move || {
            let mut slowest = Duration::ZERO;
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let (key, value) = (format!("cli:good:{}", i % 100), format!("v{i}"));
                let started = Instant::now();
                let set = redis::cmd("SET").arg(&key).arg(&value).query::<()>(&mut good);
                let got = redis::cmd("GET").arg(&key).query::<String>(&mut good);
                slowest = slowest.max(started.elapsed());
                match (set, got) {
                    (Ok(()), Ok(got)) if got == value => {}
                    other => problems.lock().expect("problems lock").push(format!("{key}: {other:?}")),
                }
                ops.fetch_add(2, Ordering::Relaxed);
                i += 1;
            }
            slowest
        })
    };

    let mut rss_peak = rss_start;
    let disconnected = wait_until(Duration::from_secs(30), Duration::from_millis(20), || {
        rss_peak = rss_peak.max(rss_bytes(pid));
        proxy.log().contains("output limit reached")
    });
    let disconnect_took = hog_sent.elapsed();
    // Memory keeps being sampled a little longer: the node still sends the rest of the replies,
    // which the proxy must read and drop.
    for _ in 0..50 {
        rss_peak = rss_peak.max(rss_bytes(pid));
        thread::sleep(Duration::from_millis(20));
    }
    let drained = drain_until_closed(&mut hog, Duration::from_secs(10));
    stop.store(true, Ordering::Relaxed);
    let slowest_good = good_thread.join().expect("good client");
    // Both clients are gone now (the other one with its thread): the proxy counts none.
    let clients_back = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        metric(&proxy, "redisforge_client_connections") == Some(0.0)
    });

    let growth = rss_peak.saturating_sub(rss_start);
    println!(
        "RELIABILITY non-reading client: disconnected {disconnect_took:?} after sending 3,000 GETs of 100 KB; \
         it had received {} KiB; proxy VmRSS {} MiB at start, peak {} MiB (+{} MiB); \
         other client: {} ops, slowest SET+GET {slowest_good:?}",
        drained.unwrap_or(0) / 1024,
        rss_start / MIB,
        rss_peak / MIB,
        growth / MIB,
        good_ops.load(Ordering::Relaxed)
    );
    assert!(disconnected, "the proxy did not disconnect the client at the output limit\n{}", proxy.log_tail(20));
    let drained = drained.expect("the connection of the client over its output limit is closed");
    assert!(drained < 100 * MIB, "the client received {drained} bytes: the limit did not stop the replies");
    assert!(growth < 64 * MIB, "proxy RSS grew by {} MiB (start {} MiB)", growth / MIB, rss_start / MIB);
    assert!(clients_back, "client_connections did not drop back after the disconnect");
    let problems = good_problems.lock().expect("problems lock");
    assert!(problems.is_empty(), "the other client was affected: {:?}", problems.first());
    assert!(good_ops.load(Ordering::Relaxed) > 0, "the other client made no progress");
    assert!(slowest_good < Duration::from_secs(1), "the other client waited {slowest_good:?} for one SET+GET");
}

#[test]
fn subscriber_that_never_reads_is_disconnected_at_the_output_limit_with_memory_bounded() {
    let proxy = proxy_with("[limits]\nclient_output_limit = 4194304\n");
    let pid = proxy.pid();
    let channel = "cli:slow-subscriber";
    let mut slow = raw_connect(&proxy.addr());
    slow.write_all(&resp_command(&[b"SUBSCRIBE", channel.as_bytes()])).expect("send SUBSCRIBE");
    let confirmation = read_some(&mut slow, 20);
    assert!(String::from_utf8_lossy(&confirmation).contains("subscribe"), "{confirmation:?}");
    let mut publisher = proxy.client();
    let rss_start = rss_bytes(pid);

    // 3,000 messages of 10 KB (30 MB) that the subscriber never reads, in pipelined batches; every
    // PUBLISH is answered (1 receiver while it is subscribed, 0 once the proxy dropped it).
    let message = "m".repeat(10 * 1024);
    let mut rss_peak = rss_start;
    let started = Instant::now();
    let mut receivers_seen = Vec::new();
    for _ in 0..30 {
        let mut pipe = redis::pipe();
        for _ in 0..100 {
            pipe.cmd("PUBLISH").arg(channel).arg(&message);
        }
        let counts: Vec<i64> = pipe.query(&mut publisher).expect("PUBLISH batch");
        assert!(counts.iter().all(|&c| c == 0 || c == 1), "{counts:?}");
        receivers_seen.extend(counts);
        rss_peak = rss_peak.max(rss_bytes(pid));
    }
    let published_in = started.elapsed();
    let disconnected = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        rss_peak = rss_peak.max(rss_bytes(pid));
        proxy.log().contains("output limit reached")
    });
    let drained = drain_until_closed(&mut slow, Duration::from_secs(10));
    let growth = rss_peak.saturating_sub(rss_start);
    println!(
        "RELIABILITY slow subscriber: 3,000 messages of 10 KB published in {published_in:?}; the subscriber had \
         received {} KiB when closed; proxy VmRSS {} MiB at start, peak {} MiB (+{} MiB)",
        drained.unwrap_or(0) / 1024,
        rss_start / MIB,
        rss_peak / MIB,
        growth / MIB
    );
    assert!(disconnected, "the slow subscriber was not disconnected at the output limit\n{}", proxy.log_tail(20));
    let drained = drained.expect("the slow subscriber's connection is closed");
    assert!(drained < 20 * MIB, "the subscriber received {drained} bytes: the limit did not stop the messages");
    assert!(growth < 64 * MIB, "proxy RSS grew by {} MiB (start {} MiB)", growth / MIB, rss_start / MIB);
    assert_eq!(receivers_seen.last(), Some(&0), "the node still delivers to the dropped subscriber");
    // The publisher's connection was never affected.
    let pong: String = redis::cmd("PING").query(&mut publisher).expect("PING");
    assert_eq!(pong, "PONG");
}

/// PING on a raw connection; the reply as text.
fn ping(stream: &mut TcpStream) -> String {
    if stream.write_all(b"PING\r\n").is_err() {
        return String::new();
    }
    String::from_utf8_lossy(&read_some(stream, 7)).into_owned()
}

#[test]
fn connections_beyond_max_clients_are_refused_until_one_leaves() {
    let proxy = proxy_with("[listen]\nplain = \"@PLAIN@\"\nmax_clients = 5\n");
    // The start-up readiness probe's connection must be gone before counting to five.
    let idle = wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        metric(&proxy, "redisforge_client_connections") == Some(0.0)
    });
    assert!(idle, "the readiness probe's connection is still counted");
    let mut admitted: Vec<TcpStream> = (0..5).map(|_| raw_connect(&proxy.addr())).collect();
    for (i, stream) in admitted.iter_mut().enumerate() {
        assert_eq!(ping(stream), "+PONG\r\n", "client {i} of 5");
    }
    // CONFIG GET answers the proxy's bound, the one its clients are under (as INFO's maxclients).
    admitted[0].write_all(&resp_command(&[b"CONFIG", b"GET", b"maxclients"])).expect("send CONFIG GET");
    assert_eq!(read_some(&mut admitted[0], 28), b"*2\r\n$10\r\nmaxclients\r\n$1\r\n5\r\n");
    let mut sixth = raw_connect(&proxy.addr());
    let refusal = read_some(&mut sixth, 64);
    assert_eq!(String::from_utf8_lossy(&refusal), "-ERR max number of clients reached\r\n");
    assert_eq!(drain_until_closed(&mut sixth, Duration::from_secs(5)), Some(0), "the refused connection is closed");

    drop(admitted.pop());
    // The freed place is counted back once the proxy has seen the close.
    let mut accepted = None;
    let freed = wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        let mut stream = raw_connect(&proxy.addr());
        let ok = ping(&mut stream) == "+PONG\r\n";
        if ok {
            accepted = Some(stream);
        }
        ok
    });
    assert!(freed, "no new client was accepted after one of the 5 left");
    let mut seventh = raw_connect(&proxy.addr());
    assert_eq!(String::from_utf8_lossy(&read_some(&mut seventh, 64)), "-ERR max number of clients reached\r\n");
    for (i, stream) in admitted.iter_mut().enumerate() {
        assert_eq!(ping(stream), "+PONG\r\n", "client {i} still served");
    }
}

/// Which clients the idle timeout spares, as Redis' `clientsCronHandleTimeout`: one held by
/// CLIENT PAUSE; one whose reply came after a long wait gets the whole timeout from that reply (a
/// write is activity); one that leaves its replies unread is not spared.
#[test]
fn the_idle_timeout_spares_paused_clients_and_counts_writes_as_activity() {
    let proxy = proxy_with("[listen]\nplain = \"@PLAIN@\"\nidle_timeout = \"1s\"\n");
    // Held by a 2.5 s write pause: not closed meanwhile; its SET runs after the pause.
    let _: () = redis::cmd("CLIENT").arg("PAUSE").arg(2500).arg("WRITE").query(&mut proxy.client()).expect("PAUSE");
    let mut held = raw_connect(&proxy.addr());
    held.write_all(&resp_command(&[b"SET", b"cli:idle-exempt", b"v"])).expect("send SET");
    let started = Instant::now();
    let reply = redisforge_tests::read_until(&mut held, Duration::from_secs(6), |got| got.len() >= 5);
    assert_eq!(String::from_utf8_lossy(&reply), "+OK\r\n", "the held client was answered");
    assert!(started.elapsed() >= Duration::from_millis(1500), "{:?}: not held", started.elapsed());
    // Blocked 1.5 s, then quiet 0.6 s: the reply counts as activity, so it is still served.
    let mut waiter = raw_connect(&proxy.addr());
    waiter.write_all(&resp_command(&[b"BLPOP", b"cli:idle-exempt:list", b"1.5"])).expect("send BLPOP");
    let reply = redisforge_tests::read_until(&mut waiter, Duration::from_secs(6), |got| got.len() >= 5);
    assert_eq!(String::from_utf8_lossy(&reply), "*-1\r\n");
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(ping(&mut waiter), "+PONG\r\n", "closed right after a reply that came after a long wait");
    // 20 MB of replies left unread: closed once nothing more can be written for the timeout.
    let value = "x".repeat(100 * 1024);
    let _: () = redis::cmd("SET").arg("cli:idle-exempt:big").arg(&value).query(&mut proxy.client()).expect("SET");
    let mut reader = raw_connect(&proxy.addr());
    reader.write_all(&resp_command(&[b"GET", b"cli:idle-exempt:big"]).repeat(200)).expect("send the GETs");
    std::thread::sleep(Duration::from_secs(4));
    let drained = drain_until_closed(&mut reader, Duration::from_secs(10)).expect("the reader's connection closed");
    assert!(drained < 15 * 1024 * 1024, "{drained} bytes: the reader was not closed while it read nothing");
}

/// One connect/disconnect cycle of kind `i % 4`: a full PING, a QUIT, a bare connect and close,
/// a request cut off half way. Returns whether the proxy behaved.
fn churn_once(addr: &str, i: usize) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return false;
    };
    if stream.set_read_timeout(Some(Duration::from_secs(5))).is_err() {
        return false;
    }
    match i % 4 {
        0 => ping(&mut stream) == "+PONG\r\n",
        1 => stream.write_all(b"QUIT\r\n").is_ok() && read_some(&mut stream, 5) == b"+OK\r\n",
        2 => true,
        _ => stream.write_all(b"*3\r\n$3\r\nSET\r\n$9\r\nchurn:key\r\n$5\r\nab").is_ok(),
    }
}

#[test]
fn ten_thousand_connect_disconnect_cycles_leak_no_fds_memory_or_client_count() {
    const THREADS: usize = 8;
    const CYCLES: usize = 10_000;
    let proxy = proxy_with("");
    let pid = proxy.pid();
    let addr = proxy.addr();
    // Warm-up: upstream connections opened, allocator arenas in use, before the baseline.
    for i in 0..400 {
        assert!(churn_once(&addr, i), "warm-up cycle {i}");
    }
    let settled = |fds: usize| {
        wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            fd_count(pid) <= fds && metric(&proxy, "redisforge_client_connections") == Some(0.0)
        })
    };
    assert!(settled(usize::MAX), "warm-up clients did not all leave");
    let (fds_start, rss_start) = (fd_count(pid), rss_bytes(pid));
    let clients_start = metric(&proxy, "redisforge_client_connections").expect("client_connections");
    let accepted_start = metric(&proxy, "redisforge_client_connections_total").expect("client_connections_total");

    let started = Instant::now();
    let deadline = started + Duration::from_secs(90);
    let failures = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (addr, failures, done) = (addr.clone(), failures.clone(), done.clone());
            thread::spawn(move || {
                for i in (t..CYCLES).step_by(THREADS) {
                    if Instant::now() > deadline {
                        return;
                    }
                    if !churn_once(&addr, i) {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().expect("churn thread"));
    let took = started.elapsed();
    let back = settled(fds_start + 2);
    let (fds_end, rss_end) = (fd_count(pid), rss_bytes(pid));
    let clients_end = metric(&proxy, "redisforge_client_connections").expect("client_connections");
    let accepted = metric(&proxy, "redisforge_client_connections_total").expect("total") - accepted_start;

    println!(
        "RELIABILITY churn: {} connect/disconnect cycles in {took:?} ({:.0}/s), {} failed; proxy fds {fds_start} -> \
         {fds_end}, VmRSS {} -> {} MiB, client_connections {clients_start} -> {clients_end}, {accepted} accepted",
        done.load(Ordering::Relaxed),
        done.load(Ordering::Relaxed) as f64 / took.as_secs_f64(),
        failures.load(Ordering::Relaxed),
        rss_start / MIB,
        rss_end / MIB
    );
    assert_eq!(done.load(Ordering::Relaxed), CYCLES as u64, "the cycles did not finish within 90 s");
    assert_eq!(failures.load(Ordering::Relaxed), 0, "cycles where the proxy misbehaved");
    assert!(back, "fds {fds_start} -> {fds_end} or client_connections {clients_end} did not come back");
    assert_eq!(clients_end, clients_start);
    assert_eq!(accepted, CYCLES as f64, "every connection counted once");
    let growth = rss_end.saturating_sub(rss_start);
    assert!(growth < 32 * MIB, "VmRSS grew by {} MiB over 10,000 cycles", growth / MIB);
    let mut con = proxy.client();
    let pong: String = redis::cmd("PING").query(&mut con).expect("PING after the churn");
    assert_eq!(pong, "PONG");
}

/// Sends `header` alone and returns what the proxy answered within 5 s, and whether it then closed.
fn answer_to_header_alone(proxy: &Proxy, header: &[u8]) -> (String, bool) {
    let mut stream = raw_connect(&proxy.addr());
    stream.write_all(header).expect("send the header");
    let reply = String::from_utf8_lossy(&read_some(&mut stream, 200)).into_owned();
    let closed = drain_until_closed(&mut stream, Duration::from_secs(5)).is_some();
    (reply, closed)
}

#[test]
fn requests_over_max_request_bytes_are_refused_from_their_header_before_the_body_is_sent() {
    let proxy = proxy_with("[limits]\nmax_request_bytes = 1048576\n");
    let started = Instant::now();
    // One argument longer than the limit: refused from its length alone.
    let (reply, closed) = answer_to_header_alone(&proxy, b"*3\r\n$3\r\nSET\r\n$8\r\ncli:huge\r\n$2000000\r\n");
    assert_eq!(reply, "-ERR Protocol error: invalid bulk length\r\n");
    assert!(closed, "the connection stays open after a protocol error");
    // Arguments that are each within the limit but not together: the first 600 KB value is sent
    // whole, the second only as its header, which is enough to know the request is too big.
    let mut header = b"*5\r\n$4\r\nMSET\r\n$5\r\ncli:a\r\n$600000\r\n".to_vec();
    header.extend(std::iter::repeat_n(b'a', 600_000));
    header.extend_from_slice(b"\r\n$5\r\ncli:b\r\n$600000\r\n");
    let (reply, closed) = answer_to_header_alone(&proxy, &header);
    assert_eq!(reply, "-ERR Protocol error: request larger than max_request_bytes (1048576 bytes)\r\n");
    assert!(closed, "the connection stays open after a protocol error");
    let took = started.elapsed();

    // Just under the limit is served, and the refused MSET wrote nothing.
    let mut con = proxy.client();
    let value = "v".repeat(1_048_576 - 64);
    let _: () = redis::cmd("SET").arg("cli:max").arg(&value).query(&mut con).expect("SET just under the limit");
    let got: String = redis::cmd("GET").arg("cli:max").query(&mut con).expect("GET");
    assert_eq!(got.len(), value.len());
    let exists: i64 = redis::cmd("EXISTS").arg("cli:a").arg("cli:b").query(&mut con).expect("EXISTS");
    assert_eq!(exists, 0, "a refused request must not be executed in part");
    println!("RELIABILITY max_request_bytes: both oversized requests refused from their headers in {took:?}");
}
