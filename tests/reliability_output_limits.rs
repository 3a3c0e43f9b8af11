//! Redis' client output classes (`client-output-buffer-limit`): subscribers that do not keep up
//! with their messages are cut off at the `pubsub` class's limits, clients without subscriptions
//! are not; the soft limit only after its time; a `CONFIG SET` of the limits through the proxy;
//! INFO's count of such disconnects; a slow subscriber cut off as a standalone node of the same
//! version cuts it off. A version suite: INFO shows the count from Redis 7.2 on.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use redisforge_tests::raw::{drain_until_closed, raw_connect, read_some, read_until_closed};
use redisforge_tests::resp::{Frame, parse};
use redisforge_tests::{
    Cluster, Proxy, ProxyOptions, RedisServer, proxy_on_own_cluster, read_until, resp_command, wait_until,
};

const MIB: u64 = 1024 * 1024;

fn proxy_with(extra_toml: &str) -> Proxy {
    Proxy::start(Cluster::shared(), ProxyOptions { extra_toml: extra_toml.to_owned(), ..ProxyOptions::default() })
}

/// Subscribes a raw connection (never read after the confirmation) to `channel`.
fn raw_subscriber(proxy: &Proxy, channel: &str) -> TcpStream {
    let mut subscriber = raw_connect(&proxy.addr());
    subscriber.write_all(&resp_command(&[b"SUBSCRIBE", channel.as_bytes()])).expect("send SUBSCRIBE");
    let confirmation = read_some(&mut subscriber, 20);
    assert!(String::from_utf8_lossy(&confirmation).contains("subscribe"), "{confirmation:?}");
    subscriber
}

/// Publishes `batches` × 100 messages of 10 KB to `channel`; the receiver counts PUBLISH answered.
fn publish_10k(publisher: &mut redis::Connection, channel: &str, batches: usize) -> Vec<i64> {
    let message = "m".repeat(10 * 1024);
    let mut counts = Vec::new();
    for _ in 0..batches {
        let mut pipe = redis::pipe();
        for _ in 0..100 {
            pipe.cmd("PUBLISH").arg(channel).arg(&message);
        }
        let batch: Vec<i64> = pipe.query(publisher).expect("PUBLISH batch");
        counts.extend(batch);
    }
    counts
}

/// The lines of the proxy's log that report an output-limit disconnect.
fn output_limit_lines(proxy: &Proxy) -> Vec<String> {
    proxy.log().lines().filter(|l| l.contains("output limit reached")).map(str::to_owned).collect()
}

/// Subscribes a client that never reads to `channel` and publishes 20 MB to it: the proxy must cut
/// it off at a `pubsub` class limit, closing its connection before 15 MB of it arrived. Returns
/// the proxy's log lines about output-limit disconnects.
fn flood_a_subscriber_until_cut_off(proxy: &Proxy, publisher: &mut redis::Connection, channel: &str) -> Vec<String> {
    let mut subscriber = raw_subscriber(proxy, channel);
    let counts = publish_10k(publisher, channel, 20);
    assert!(counts.iter().all(|&c| c == 0 || c == 1), "{counts:?}");
    let cut_off =
        wait_until(Duration::from_secs(10), Duration::from_millis(20), || !output_limit_lines(proxy).is_empty());
    let drained = drain_until_closed(&mut subscriber, Duration::from_secs(10));
    assert!(cut_off, "the subscriber was not cut off at the pubsub limit\n{}", proxy.log_tail(20));
    let lines = output_limit_lines(proxy);
    assert!(lines[0].contains("pubsub"), "{}", lines[0]);
    let drained = drained.expect("the subscriber's connection is closed");
    assert!(drained < 15 * MIB, "the subscriber received {drained} bytes: the limit did not stop the messages");
    lines
}

/// Redis' `pubsub` class: a client with subscriptions is cut off at the class's hard limit
/// (`limits.pubsub_output_limit`), while a client without subscriptions keeps as much unread
/// output under `limits.client_output_limit`.
#[test]
fn a_subscriber_is_cut_off_at_the_pubsub_limit_where_other_clients_are_not() {
    let proxy = proxy_with("[limits]\npubsub_output_limit = 2097152\n");
    let shown = config_get_output_limits(&mut proxy.client());
    assert!(shown.starts_with("normal 0 0 0 ") && shown.ends_with(" pubsub 2097152 8388608 60"), "{shown}");
    // A client without subscriptions leaves 10 MB of replies unread for a while, then reads them all.
    let mut publisher = proxy.client();
    let (mut reader, reply_len) = leave_100k_replies_unread(&proxy, &mut publisher, "cli:pubsub-class:big", 100);

    let channel = "cli:pubsub-class";
    let lines = flood_a_subscriber_until_cut_off(&proxy, &mut publisher, channel);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(unsubscribed(&mut publisher, channel), "the node still delivers to the cut-off subscriber");
    // INFO counts the proxy's disconnect where the nodes' version has the field (Redis 7.2+).
    let field = "client_output_buffer_limit_disconnections:";
    let node_has_it = info_stats(&mut Cluster::shared().client(&Cluster::shared().masters()[0])).contains(field);
    let stats = info_stats(&mut publisher);
    if node_has_it {
        assert!(stats.contains(&format!("{field}1\r\n")), "{stats}");
        // CONFIG RESETSTAT resets it with the nodes' stats, as Redis' resetServerStats does.
        let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query(&mut publisher).expect("CONFIG RESETSTAT");
        let stats = info_stats(&mut publisher);
        assert!(stats.contains(&format!("{field}0\r\n")), "{stats}");
    } else {
        assert!(!stats.contains(field), "{stats}");
    }

    // The other client's 10 MB were all kept for it.
    let got = read_until(&mut reader, Duration::from_secs(10), |got| got.len() >= 100 * reply_len);
    assert_eq!(got.len(), 100 * reply_len, "the client without subscriptions lost replies");
    assert_eq!(output_limit_lines(&proxy).len(), 1, "{}", proxy.log_tail(20));
}

/// Redis' `normal` class from the config file (`limits.normal_output_limit`): a client without
/// subscriptions that keeps replies unread past it is cut off, named so in the log.
#[test]
fn a_client_without_subscriptions_is_cut_off_at_the_normal_class_limit_of_the_config_file() {
    let proxy = proxy_with("[limits]\nnormal_output_limit = 2097152\n");
    // CONFIG GET answers the proxy's classes, the replica class as the nodes have it.
    let shown = config_get_output_limits(&mut proxy.client());
    assert!(shown.starts_with("normal 2097152 0 0 ") && shown.ends_with(" pubsub 33554432 8388608 60"), "{shown}");
    let (key, mut writer) = ("cli:normal-class:big", proxy.client());
    let (mut reader, _) = leave_100k_replies_unread(&proxy, &mut writer, key, 200);
    let cut_off =
        wait_until(Duration::from_secs(10), Duration::from_millis(20), || !output_limit_lines(&proxy).is_empty());
    assert!(cut_off, "the reader was not cut off at the normal class limit\n{}", proxy.log_tail(20));
    let lines = output_limit_lines(&proxy);
    assert!(lines[0].contains("normal class hard limit"), "{lines:?}");
    let drained = drain_until_closed(&mut reader, Duration::from_secs(10)).expect("the reader's connection is closed");
    assert!(drained < 15 * MIB, "the reader received {drained} bytes of 20 MB: the limit did not stop the replies");
    // Another client is served as before.
    let got: String = redis::cmd("GET").arg(key).query(&mut writer).expect("GET");
    assert_eq!(got.len(), 100 * 1024);
}

/// Sets `key` to 100 KB (through `writer`) and sends `gets` GETs of it on a new raw connection that
/// reads nothing yet; returns it and the length of one reply.
fn leave_100k_replies_unread(
    proxy: &Proxy,
    writer: &mut redis::Connection,
    key: &str,
    gets: usize,
) -> (TcpStream, usize) {
    let value = "x".repeat(100 * 1024);
    let _: () = redis::cmd("SET").arg(key).arg(&value).query(writer).expect("SET");
    let mut reader = raw_connect(&proxy.addr());
    reader.write_all(&resp_command(&[b"GET", key.as_bytes()]).repeat(gets)).expect("send the GETs");
    (reader, format!("${}\r\n", value.len()).len() + value.len() + 2)
}

/// `CONFIG GET client-output-buffer-limit`'s value.
fn config_get_output_limits(conn: &mut redis::Connection) -> String {
    let shown: Vec<String> =
        redis::cmd("CONFIG").arg("GET").arg("client-output-buffer-limit").query(conn).expect("CONFIG GET");
    shown.get(1).cloned().unwrap_or_default()
}

/// `INFO stats` of a node or the proxy.
fn info_stats(conn: &mut redis::Connection) -> String {
    redis::cmd("INFO").arg("stats").query(conn).expect("INFO stats")
}

/// Whether PUBLISH to `channel` soon finds no subscriber (the node saw the proxy's subscription
/// connection of a cut-off client close).
fn unsubscribed(publisher: &mut redis::Connection, channel: &str) -> bool {
    wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        redis::cmd("PUBLISH").arg(channel).arg("late").query::<i64>(publisher).ok() == Some(0)
    })
}

/// The `pubsub` class's soft limit: a subscriber over it is cut off once it has stayed over it for
/// longer than `limits.pubsub_output_soft_time`, also when no more output comes (Redis' clientsCron
/// looks at every client each second).
#[test]
fn a_subscriber_over_the_soft_limit_is_cut_off_only_after_its_time() {
    let soft_time = Duration::from_secs(3);
    let proxy = proxy_with(&format!(
        "[limits]\npubsub_output_limit = 0\npubsub_output_soft_limit = 1048576\npubsub_output_soft_time = \"{}s\"\n",
        soft_time.as_secs()
    ));
    let channel = "cli:pubsub-soft";
    let mut subscriber = raw_subscriber(&proxy, channel);
    let mut publisher = proxy.client();
    // 20 MB in a burst: far over the soft limit, then nothing more.
    let burst = Instant::now();
    let counts = publish_10k(&mut publisher, channel, 20);
    let burst_took = burst.elapsed();
    // A burst that took longer than the soft time (a starved machine) says nothing about it.
    if burst_took < soft_time / 2 {
        assert!(counts.iter().all(|&c| c == 1), "a subscriber within its soft time was dropped: {counts:?}");
        assert!(output_limit_lines(&proxy).is_empty(), "cut off within the soft time\n{}", proxy.log_tail(20));
    }
    let cut_off = wait_until(soft_time + Duration::from_secs(10), Duration::from_millis(20), || {
        !output_limit_lines(&proxy).is_empty()
    });
    let cut_after = burst.elapsed();
    assert!(cut_off, "the subscriber over its soft limit was not cut off\n{}", proxy.log_tail(20));
    assert!(cut_after >= soft_time, "cut off {cut_after:?} after the burst began, before the soft time");
    let lines = output_limit_lines(&proxy);
    assert!(lines[0].contains("pubsub class soft limit"), "{lines:?}");
    assert!(
        drain_until_closed(&mut subscriber, Duration::from_secs(10)).is_some(),
        "the subscriber's connection is open"
    );
    assert!(unsubscribed(&mut publisher, channel), "the node still delivers to the cut-off subscriber");
}

/// `CONFIG SET client-output-buffer-limit` through the proxy sets the limits of the proxy's own
/// clients, not the nodes' (its own cluster: the nodes' settings are read).
#[test]
fn config_set_client_output_buffer_limit_through_the_proxy_limits_its_subscribers() {
    let (cluster, proxy, mut admin) = proxy_on_own_cluster(ProxyOptions::default());
    // A value Redis refuses is refused by the nodes (the proxy's own check: `output_classes.rs`).
    let refused =
        redis::cmd("CONFIG").arg("SET").arg("client-output-buffer-limit").arg("pubsub 1mb 1mb").query::<()>(&mut admin);
    let refusal = refused.expect_err("a value of three words is refused").to_string();
    assert!(refusal.contains("Wrong number of arguments in buffer limit configuration"), "{refusal}");
    let set: redis::RedisResult<()> =
        redis::cmd("CONFIG").arg("SET").arg("client-output-buffer-limit").arg("pubsub 2mb 0 0").query(&mut admin);
    set.expect("CONFIG SET client-output-buffer-limit");
    let nodes = config_get_output_limits(&mut cluster.client(&cluster.masters()[0]));
    assert!(nodes.contains("pubsub 33554432 8388608 60"), "the nodes keep their own pubsub class: {nodes}");
    assert!(config_get_output_limits(&mut admin).contains("pubsub 2097152 0 0"), "the proxy shows its own");

    // 20 MB stay under the config file's 32 MiB: only the 2 MiB the CONFIG SET gave cuts it off.
    flood_a_subscriber_until_cut_off(&proxy, &mut admin, "cli:pubsub-config-set");
}

/// The first `CLIENT LIST` line, on any of `cluster`'s masters, that contains `needle` (` cmd=get `,
/// ` name=…`).
fn node_client_line(cluster: &Cluster, needle: &str) -> Option<String> {
    cluster.masters().iter().find_map(|master| {
        let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut cluster.client(master)).expect("CLIENT LIST");
        list.lines().find(|l| l.contains(needle)).map(str::to_owned)
    })
}

/// A node's `maxmemory-clients` evicts the clients using the most memory: the proxy's pooled
/// connections, which carry many clients' requests, ask not to be (`CLIENT NO-EVICT on`, flag `e`
/// in the node's CLIENT LIST), while a client's own connection stays evictable as that client
/// would be on a node (its own cluster: the test reads every connection of the nodes).
#[test]
fn pooled_node_connections_are_exempt_from_client_eviction_and_own_ones_are_not() {
    let (cluster, _proxy, mut client) = proxy_on_own_cluster(ProxyOptions::default());
    let _: Option<String> = redis::cmd("GET").arg("{cli:ne}").query(&mut client).expect("GET");
    let _: Option<(String, String)> =
        redis::cmd("BLPOP").arg("{cli:ne}:list").arg("0.01").query(&mut client).expect("BLPOP");
    let flags = |line: &str| line.split(' ').find_map(|f| f.strip_prefix("flags=")).unwrap_or("").to_owned();
    let pooled = node_client_line(&cluster, " cmd=get ").expect("the pooled connection that ran the GET");
    assert!(flags(&pooled).contains('e'), "{pooled}");
    let own = node_client_line(&cluster, " cmd=blpop ").expect("the own connection that ran the BLPOP");
    assert!(!flags(&own).contains('e'), "{own}");
    // Client-side caching's tracking streams, which every tracking client shares, too.
    let _: () = redis::cmd("CLIENT").arg("TRACKING").arg("on").query(&mut client).expect("CLIENT TRACKING on");
    let _: Option<String> = redis::cmd("GET").arg("{cli:ne}").query(&mut client).expect("GET while tracking");
    let mut tracking = None;
    wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        tracking = node_client_line(&cluster, " name=redisforge-tracking-");
        tracking.is_some()
    });
    let tracking = tracking.expect("a tracking stream on a node");
    assert!(flags(&tracking).contains('e'), "{tracking}");
}

/// What a subscriber that never reads went through where it was cut off ([`cut_off_slow_subscriber`]).
#[derive(Debug, PartialEq)]
struct CutOff {
    /// The messages it received before its connection closed were the first ones published, in
    /// order, none missing.
    a_gapless_prefix: bool,
    /// It received fewer messages than were published while it was subscribed.
    lost_the_rest: bool,
    /// PUBLISH found no subscriber afterwards.
    unsubscribed: bool,
    /// INFO's `client_output_buffer_limit_disconnections` (Redis 7.2+) afterwards.
    disconnections: Option<String>,
}

/// Subscribes a raw connection to `addr` (a node or the proxy), never reads it, and publishes
/// numbered 10 KB messages (at most 20 MB) until PUBLISH finds no subscriber: what the subscriber
/// saw of its cut-off, and what the publisher sees after it.
fn cut_off_slow_subscriber(addr: &str, channel: &str) -> CutOff {
    let mut subscriber = raw_connect(addr);
    subscriber.write_all(&resp_command(&[b"SUBSCRIBE", channel.as_bytes()])).expect("send SUBSCRIBE");
    let confirmation = read_some(&mut subscriber, 20);
    let confirmed = parse(&confirmation).expect("a confirmation").map(|(_, len)| len);
    assert_eq!(confirmed, Some(confirmation.len()), "{confirmation:?}");
    let mut publisher = redisforge_tests::connect(addr).expect("a publisher");
    let padding = "m".repeat(10 * 1024);
    let (mut sent, mut received_by_one) = (0u64, 0u64);
    while sent < 2_000 {
        let mut pipe = redis::pipe();
        for number in sent..sent + 100 {
            pipe.cmd("PUBLISH").arg(channel).arg(format!("{number:08}{padding}"));
        }
        let counts: Vec<i64> = pipe.query(&mut publisher).expect("PUBLISH batch");
        sent += 100;
        received_by_one += counts.iter().filter(|&&c| c == 1).count() as u64;
        if counts.iter().all(|&c| c == 0) {
            break;
        }
    }
    let unsubscribed = wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        redis::cmd("PUBLISH").arg(channel).arg("late").query::<i64>(&mut publisher).ok() == Some(0)
    });
    let bytes =
        read_until_closed(&mut subscriber, Duration::from_secs(10)).expect("the subscriber's connection closed");
    let numbers = message_numbers(&bytes, channel);
    let stats: String = redis::cmd("INFO").arg("stats").query(&mut publisher).expect("INFO stats");
    let field = "client_output_buffer_limit_disconnections:";
    CutOff {
        a_gapless_prefix: numbers.iter().enumerate().all(|(i, &n)| n == i as u64),
        lost_the_rest: (numbers.len() as u64) < received_by_one,
        unsubscribed,
        disconnections: stats.lines().find_map(|l| l.strip_prefix(field)).map(str::to_owned),
    }
}

/// The numbers of the `message` frames of `channel` in `bytes`, up to the first frame cut short.
fn message_numbers(bytes: &[u8], channel: &str) -> Vec<u64> {
    let mut numbers = Vec::new();
    let mut at = 0;
    while let Ok(Some((frame, len))) = parse(&bytes[at..]) {
        at += len;
        let Some([kind, from, payload]) = frame.items() else { panic!("not a message: {frame:?}") };
        assert_eq!((kind.text(), from.text()), (Some(&b"message"[..]), Some(channel.as_bytes())), "{frame:?}");
        let number = payload.text().and_then(|p| std::str::from_utf8(p.get(..8)?).ok()?.parse().ok());
        numbers.push(number.unwrap_or_else(|| panic!("not a numbered message: {:?}", Frame::shape(payload))));
    }
    numbers
}

/// A subscriber that does not read its messages, under `client-output-buffer-limit pubsub 1mb 0 0`,
/// side by side on a standalone node of the same version and through the proxy: both close its
/// connection after it received the first messages in order and lost the rest, unsubscribe it,
/// and count the disconnect in INFO where the version has the field.
#[test]
fn a_slow_subscriber_is_cut_off_as_a_standalone_node_cuts_it_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limit = "client-output-buffer-limit \"pubsub 1mb 0 0\"";
    let node = RedisServer::start(dir.path(), |port| vec![format!("port {port}"), limit.to_owned()])
        .expect("a standalone node");
    let proxy = proxy_with("[limits]\npubsub_output_limit = 1048576\npubsub_output_soft_limit = 0\n");
    let on_node = cut_off_slow_subscriber(&node.addr(), "cli:slow-diff");
    let through_proxy = cut_off_slow_subscriber(&proxy.addr(), "cli:slow-diff");
    assert!(on_node.a_gapless_prefix && on_node.lost_the_rest && on_node.unsubscribed, "{on_node:?}");
    assert_eq!(through_proxy, on_node);
    assert!(on_node.disconnections.as_deref().is_none_or(|count| count == "1"), "{on_node:?}");
}
