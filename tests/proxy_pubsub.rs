//! Pub/Sub through the proxy: classic, pattern and sharded subscriptions, subscribed-mode rules,
//! resubscription when the node carrying a subscription dies, a multi-channel first subscription
//! the node refuses with one error, a shard channel following its slot to another master (or
//! unsubscribed when no node serves it), an SUNSUBSCRIBE following `-MOVED`, keyspace
//! notifications while a master stands in for a dead pub/sub home and from a promoted replica to
//! a subscriber that sends nothing, a RESP3 subscription behind an
//! earlier request's reply, RESET leaving subscribed mode in RESP3, and a subscriber disconnected
//! when its subscriptions cannot be restored.

use std::time::Duration;

use redis::{Connection, Value};
use redisforge_tests::{Cluster, ClusterOptions, Proxy, ProxyOptions, raw_roundtrip_until, wait_until};

fn raw(con: &mut Connection, args: &[&str]) -> Result<Value, String> {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query(con).map_err(|e| e.to_string())
}

/// Waits for the next message on a subscribed connection.
fn next_message(pubsub: &mut redis::PubSub<'_>) -> (String, String) {
    pubsub.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let msg = pubsub.get_message().expect("a message within 10 s");
    (msg.get_channel_name().to_string(), msg.get_payload().expect("payload"))
}

/// A proxy that never refreshes its slot map after start-up (no timer to speak of, none on
/// `-MOVED`): a slot moved later leaves it stale.
fn proxy_keeping_its_first_map(cluster: &Cluster) -> Proxy {
    let options = ProxyOptions {
        extra_toml: "[topology]\nrefresh_interval = \"1h\"\nrefresh_on_moved = false\n".to_string(),
        ..ProxyOptions::default()
    };
    Proxy::start(cluster, options)
}

#[test]
fn two_proxy_clients_receive_what_a_publisher_on_any_node_publishes() {
    let cluster = Cluster::shared();
    let proxy = Proxy::start(cluster, ProxyOptions::default());
    let mut first = proxy.client();
    let mut second = proxy.client();
    let mut a = first.as_pubsub();
    let mut b = second.as_pubsub();
    a.subscribe("ps:news").expect("SUBSCRIBE");
    b.psubscribe("ps:n*").expect("PSUBSCRIBE");
    // A publisher straight on each master: the cluster delivers PUBLISH everywhere.
    for (i, master) in cluster.masters().iter().enumerate() {
        let mut publisher = cluster.client(master);
        let text = format!("hello-{i}");
        let _: i64 = redis::cmd("PUBLISH").arg("ps:news").arg(&text).query(&mut publisher).expect("PUBLISH");
        assert_eq!(next_message(&mut a), ("ps:news".to_string(), text.clone()));
        assert_eq!(next_message(&mut b), ("ps:news".to_string(), text));
    }
    // And through the proxy.
    let mut publisher = proxy.client();
    // PUBLISH counts the receivers on the node that ran it, as in any Redis Cluster.
    let _: i64 = redis::cmd("PUBLISH").arg("ps:news").arg("via-proxy").query(&mut publisher).expect("PUBLISH");
    assert_eq!(next_message(&mut a).1, "via-proxy");
}

#[test]
fn subscribed_mode_follows_redis_rules() {
    let proxy = Proxy::start(Cluster::shared(), ProxyOptions::default());
    let reply = raw_roundtrip_until(
        &proxy.addr(),
        b"SUBSCRIBE ps:rules\r\nGET x\r\nPING\r\nUNSUBSCRIBE ps:rules\r\nGET ps:rules:key\r\n",
        Duration::from_secs(5),
        |got| got.ends_with(b"$-1\r\n"),
    );
    let text = String::from_utf8_lossy(&reply);
    assert!(text.starts_with("*3\r\n$9\r\nsubscribe\r\n$8\r\nps:rules\r\n:1\r\n"), "{text}");
    assert!(
        text.contains("-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n"),
        "{text}"
    );
    assert!(text.contains("*2\r\n$4\r\npong\r\n$0\r\n\r\n"), "{text}");
    assert!(text.contains("*3\r\n$11\r\nunsubscribe\r\n$8\r\nps:rules\r\n:0\r\n"), "{text}");
    assert!(text.ends_with("$-1\r\n"), "after the last UNSUBSCRIBE normal commands work again: {text}");
}

#[test]
fn earlier_replies_come_before_the_subscription_confirmation() {
    let proxy = Proxy::start(Cluster::shared(), ProxyOptions::default());
    let reply = raw_roundtrip_until(
        &proxy.addr(),
        b"SET ps:order 1\r\nGET ps:order\r\nSUBSCRIBE ps:order-ch\r\n",
        Duration::from_secs(5),
        |got| got.ends_with(b":1\r\n"),
    );
    assert_eq!(
        String::from_utf8_lossy(&reply),
        "+OK\r\n$1\r\n1\r\n*3\r\n$9\r\nsubscribe\r\n$11\r\nps:order-ch\r\n:1\r\n"
    );
}

#[test]
fn sharded_pubsub_is_routed_by_shard() {
    let proxy = Proxy::start(Cluster::shared(), ProxyOptions::default());
    let mut subscriber = std::net::TcpStream::connect(proxy.addr()).expect("connect");
    std::io::Write::write_all(&mut subscriber, b"SSUBSCRIBE {ps}a {ps}b\r\n").expect("write");
    subscriber.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let mut published = false;
    let mut publisher = proxy.client();
    let done = wait_until(Duration::from_secs(10), Duration::from_millis(1), || {
        if let Ok(n) = std::io::Read::read(&mut subscriber, &mut buf) {
            seen.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&seen);
        if !published && text.matches("ssubscribe").count() == 2 {
            assert_eq!(raw(&mut publisher, &["SPUBLISH", "{ps}a", "shard-msg"]), Ok(Value::Int(1)));
            published = true;
        }
        text.contains("shard-msg")
    });
    let text = String::from_utf8_lossy(&seen);
    assert!(done, "{text}");
    assert!(text.contains("*3\r\n$8\r\nsmessage\r\n$5\r\n{ps}a\r\n$9\r\nshard-msg\r\n"), "{text}");
}

#[test]
fn subscription_moves_to_another_node_when_its_node_dies() {
    let cluster = Cluster::start(ClusterOptions::default());
    let proxy = Proxy::start(&cluster, ProxyOptions::default());
    let mut subscriber = proxy.client();
    let mut pubsub = subscriber.as_pubsub();
    pubsub.subscribe("ps:failover").expect("SUBSCRIBE");
    // Find the master that carries the proxy's subscription connection.
    let carrier = cluster.master_with_subscription();
    cluster.kill(&carrier);
    let survivor = cluster.masters().into_iter().find(|m| *m != carrier).expect("another master");
    let mut publisher = cluster.client(&survivor);
    pubsub.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    // Publish until the resubscribed connection delivers (bounded).
    let mut delivered = false;
    let mut attempt = 0;
    let _ = wait_until(Duration::from_secs(20), Duration::from_millis(10), || {
        attempt += 1;
        let _: Result<i64, _> =
            redis::cmd("PUBLISH").arg("ps:failover").arg(format!("m{attempt}")).query(&mut publisher);
        if let Ok(msg) = pubsub.get_message() {
            delivered = msg.get_channel_name() == "ps:failover";
        }
        delivered
    });
    assert!(delivered, "no message after the subscription's node died");
}

#[test]
fn sharded_subscriptions_of_two_slots_move_together_when_their_node_dies() {
    let cluster = Cluster::start(ClusterOptions::default());
    let proxy = Proxy::start(&cluster, ProxyOptions::default());
    // Two channels of different slots on one master: one subscription connection carries both.
    let first = "{sa}ch".to_string();
    let node = cluster.node_for_key(&first);
    let second = (0..1000)
        .map(|i| format!("{{sb{i}}}ch"))
        .find(|c| cluster.node_for_key(c) == node && cluster.slot_for_key(c) != cluster.slot_for_key(&first))
        .expect("another slot of the same master");
    let mut subscriber = std::net::TcpStream::connect(proxy.addr()).expect("connect");
    let subscribe = format!("SSUBSCRIBE {first}\r\nSSUBSCRIBE {second}\r\n");
    std::io::Write::write_all(&mut subscriber, subscribe.as_bytes()).expect("write");
    let confirmed = redisforge_tests::read_until(&mut subscriber, Duration::from_secs(5), |r| r.ends_with(b":2\r\n"));
    assert!(confirmed.ends_with(b":2\r\n"), "{}", String::from_utf8_lossy(&confirmed));

    cluster.kill(&node);
    // Publish on both channels until each delivers through the replacement (bounded).
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    subscriber.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
    let mut publisher = proxy.client();
    let mut attempt = 0;
    let both = wait_until(Duration::from_secs(30), Duration::from_millis(10), || {
        attempt += 1;
        for channel in [&first, &second] {
            let _: Result<i64, _> =
                redis::cmd("SPUBLISH").arg(channel).arg(format!("m{attempt}")).query(&mut publisher);
        }
        if let Ok(n) = std::io::Read::read(&mut subscriber, &mut buf) {
            seen.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&seen);
        text.contains(&format!("smessage\r\n${}\r\n{first}\r\n", first.len()))
            && text.contains(&format!("smessage\r\n${}\r\n{second}\r\n", second.len()))
    });
    let text = String::from_utf8_lossy(&seen).into_owned();
    assert!(both, "not both channels delivered after their node died: {text}");
    // The resubscription is the proxy's own: no confirmation or error of it reaches the client.
    assert!(!text.contains("ssubscribe") && !text.starts_with('-') && !text.contains("\r\n-"), "{text}");
}

#[test]
fn a_sharded_subscription_follows_moved_and_one_the_node_refuses_leaves_normal_mode() {
    // The proxy's map is stale: the slot moved after the proxy read it, so the sharded
    // subscription goes to the old owner, which refuses both channels with a single -MOVED. The
    // proxy follows it, as it does for any request: the client only sees the confirmations.
    let cluster = Cluster::start(ClusterOptions::default());
    let proxy = Proxy::start(&cluster, ProxyOptions::default());
    let slot = cluster.slot_for_key("{refused}a");
    let from = cluster.node_for_slot(slot);
    let to = cluster.masters().into_iter().find(|m| *m != from).expect("another master");
    cluster.migrate_slot(slot, &from, &to);
    let mut client = std::net::TcpStream::connect(proxy.addr()).expect("connect");
    std::io::Write::write_all(&mut client, b"SSUBSCRIBE {refused}a {refused}b\r\n").expect("write");
    let wait = Duration::from_secs(5);
    let confirmed = redisforge_tests::read_until(&mut client, wait, |r| r.ends_with(b":2\r\n"));
    let expected =
        "*3\r\n$10\r\nssubscribe\r\n$10\r\n{refused}a\r\n:1\r\n*3\r\n$10\r\nssubscribe\r\n$10\r\n{refused}b\r\n:2\r\n";
    assert_eq!(String::from_utf8_lossy(&confirmed), expected);
    let receivers: i64 =
        redis::cmd("SPUBLISH").arg("{refused}a").arg("hi").query(&mut proxy.client()).expect("SPUBLISH");
    assert_eq!(receivers, 1, "subscribed on the slot's new owner");
    let message = redisforge_tests::read_until(&mut client, wait, |r| r.ends_with(b"hi\r\n"));
    assert_eq!(String::from_utf8_lossy(&message), "*3\r\n$8\r\nsmessage\r\n$10\r\n{refused}a\r\n$2\r\nhi\r\n");
    std::io::Write::write_all(&mut client, b"SUNSUBSCRIBE\r\nGET {refused}a\r\n").expect("write");
    let left = redisforge_tests::read_until(&mut client, wait, |r| r.ends_with(b"$-1\r\n"));
    assert!(String::from_utf8_lossy(&left).ends_with(":0\r\n$-1\r\n"), "{}", String::from_utf8_lossy(&left));

    // A refusal that is no redirection (the nodes' default user, which the proxy logs in as,
    // may not use the channel) reaches the client; its first subscription refused, the client
    // is not subscribed (as on Redis), and nothing waits for confirmations that never come.
    for node in cluster.masters() {
        let _: () = redis::cmd("ACL")
            .arg(&["SETUSER", "default", "resetchannels", "&{refused}a"])
            .query(&mut cluster.client(&node))
            .expect("ACL SETUSER");
    }
    let mut client = std::net::TcpStream::connect(proxy.addr()).expect("connect");
    std::io::Write::write_all(&mut client, b"SSUBSCRIBE {refused}c\r\n").expect("write");
    let refusal = redisforge_tests::read_until(&mut client, wait, |r| r.ends_with(b"\r\n"));
    let refusal = String::from_utf8_lossy(&refusal).into_owned();
    assert!(refusal.starts_with("-NOPERM"), "{refusal}");
    std::io::Write::write_all(&mut client, b"GET {refused}a\r\n").expect("write");
    let got = redisforge_tests::read_until(&mut client, wait, |r| r.ends_with(b"\r\n"));
    assert_eq!(String::from_utf8_lossy(&got), "$-1\r\n", "GET after {refusal:?}");
}

#[test]
fn a_shard_channel_follows_its_slot_to_another_master() {
    // A node that loses a slot unsubscribes the slot's shard channels itself (Redis sends an
    // `sunsubscribe` push). A client of one node never sees that: the proxy subscribes the
    // channel again on the slot's new master, and the counts stay the client's.
    let cluster = Cluster::start(ClusterOptions::default());
    let proxy = Proxy::start(&cluster, ProxyOptions::default());
    let moving = "{moving}a".to_string();
    let slot = cluster.slot_for_key(&moving);
    let from = cluster.node_for_slot(slot);
    let to = cluster.masters().into_iter().find(|m| *m != from).expect("another master");
    let staying = (0..1000)
        .map(|i| format!("{{staying{i}}}b"))
        .find(|c| cluster.node_for_key(c) == from && cluster.slot_for_key(c) != slot)
        .expect("another slot of the same master");
    let mut client = std::net::TcpStream::connect(proxy.addr()).expect("connect");
    let subscribe = format!("SSUBSCRIBE {moving}\r\nSSUBSCRIBE {staying}\r\n");
    std::io::Write::write_all(&mut client, subscribe.as_bytes()).expect("write");
    let wait = Duration::from_secs(5);
    let confirmed = redisforge_tests::read_until(&mut client, wait, |r| r.ends_with(b":2\r\n"));
    assert!(confirmed.ends_with(b":2\r\n"), "{}", String::from_utf8_lossy(&confirmed));

    cluster.migrate_slot(slot, &from, &to);
    let mut publisher = proxy.client();
    let mut attempt = 0;
    let delivered = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        attempt += 1;
        let receivers: Result<i64, _> =
            redis::cmd("SPUBLISH").arg(&moving).arg(format!("m{attempt}")).query(&mut publisher);
        receivers == Ok(1)
    });
    assert!(delivered, "the channel is not subscribed on the slot's new master");
    let message = format!("$9\r\n{moving}\r\n$2\r\nm{attempt}\r\n");
    let got = redisforge_tests::read_until(&mut client, wait, |r| r.ends_with(message.as_bytes()));
    let got = String::from_utf8_lossy(&got).into_owned();
    assert!(got.ends_with(&message), "{got}");
    assert!(!got.contains("sunsubscribe"), "the node's own unsubscribe reached the client: {got}");

    // One more channel of the moved slot, then an unsubscribe from everything (two masters now).
    std::io::Write::write_all(&mut client, b"SSUBSCRIBE {moving}c\r\n").expect("write");
    let third = redisforge_tests::read_until(&mut client, wait, |r| r.ends_with(b"\r\n:3\r\n"));
    assert!(third.ends_with(b"$9\r\n{moving}c\r\n:3\r\n"), "{}", String::from_utf8_lossy(&third));
    std::io::Write::write_all(&mut client, b"SUNSUBSCRIBE\r\nGET {moving}a\r\n").expect("write");
    let left = redisforge_tests::read_until(&mut client, wait, |r| r.ends_with(b"$-1\r\n"));
    let left = String::from_utf8_lossy(&left).into_owned();
    let counts: Vec<&str> = left.lines().filter(|line| line.starts_with(':')).collect();
    assert_eq!(counts, [":2", ":1", ":0"], "{left}");
    assert!(left.ends_with(":0\r\n$-1\r\n"), "back in normal mode: {left}");
}

#[test]
fn a_shard_channel_whose_slot_is_served_nowhere_is_unsubscribed_as_a_node_does() {
    // The slot's owner drops the slot (CLUSTER DELSLOTS) and with it the channel, telling its
    // subscribers with an `sunsubscribe` push. The proxy tries the slot's master (its map, not
    // refreshed here, still names the same node), which refuses; the client then gets the push
    // a node sends, and with no channel left is back in normal mode.
    let cluster = Cluster::start(ClusterOptions::default());
    let proxy = proxy_keeping_its_first_map(&cluster);
    let slot = cluster.slot_for_key("{nowhere}a");
    let owner = cluster.node_for_slot(slot);
    let mut client = std::net::TcpStream::connect(proxy.addr()).expect("connect");
    let wait = Duration::from_secs(5);
    std::io::Write::write_all(&mut client, b"SSUBSCRIBE {nowhere}a\r\n").expect("write");
    let confirmed = redisforge_tests::read_until(&mut client, wait, |r| r.ends_with(b":1\r\n"));
    assert!(confirmed.ends_with(b":1\r\n"), "{}", String::from_utf8_lossy(&confirmed));
    let _: () = redis::cmd("CLUSTER").arg("DELSLOTS").arg(slot).query(&mut cluster.client(&owner)).expect("DELSLOTS");
    let told = redisforge_tests::read_until(&mut client, wait, |r| r.ends_with(b":0\r\n"));
    assert_eq!(String::from_utf8_lossy(&told), "*3\r\n$12\r\nsunsubscribe\r\n$10\r\n{nowhere}a\r\n:0\r\n");
    std::io::Write::write_all(&mut client, b"PING\r\n").expect("write");
    let pong = redisforge_tests::read_until(&mut client, wait, |r| r.ends_with(b"\r\n"));
    assert_eq!(String::from_utf8_lossy(&pong), "+PONG\r\n", "back in normal mode");
}

#[test]
fn an_sunsubscribe_through_a_stale_map_follows_moved() {
    // The map stays stale (no refresh): an SUNSUBSCRIBE of a channel the client never subscribed
    // goes to the slot's old owner, which answers `-MOVED`; a node answers it with a
    // confirmation, and so does the proxy, from the node the redirection names.
    let cluster = Cluster::start(ClusterOptions::default());
    let proxy = proxy_keeping_its_first_map(&cluster);
    let slot = cluster.slot_for_key("{stale}a");
    let from = cluster.node_for_slot(slot);
    let to = cluster.masters().into_iter().find(|m| *m != from).expect("another master");
    cluster.migrate_slot(slot, &from, &to);
    let mut client = std::net::TcpStream::connect(proxy.addr()).expect("connect");
    let wait = Duration::from_secs(5);
    std::io::Write::write_all(
        &mut client,
        b"SSUBSCRIBE {stale}a\r\nSUNSUBSCRIBE {stale}b\r\nSUNSUBSCRIBE {stale}a\r\n",
    )
    .expect("write");
    let got = redisforge_tests::read_until(&mut client, wait, |r| r.ends_with(b"{stale}a\r\n:0\r\n"));
    let expected = "*3\r\n$10\r\nssubscribe\r\n$8\r\n{stale}a\r\n:1\r\n\
                    *3\r\n$12\r\nsunsubscribe\r\n$8\r\n{stale}b\r\n:1\r\n\
                    *3\r\n$12\r\nsunsubscribe\r\n$8\r\n{stale}a\r\n:0\r\n";
    assert_eq!(String::from_utf8_lossy(&got), expected);
}

#[test]
fn keyspace_notifications_arrive_once_while_another_master_stands_in_for_a_dead_home() {
    // No replicas, and the nodes serve their slots without full coverage: once the pub/sub home
    // dies nothing takes its slots, the map keeps naming it, and another master stands in for it.
    // The stand-in publishes its own keys' notifications on the subscription connection itself,
    // so its mirror must go; and the subscriptions must not be moved back to the dead home.
    let options = ClusterOptions {
        replicas_per_master: 0,
        extra_config: vec!["cluster-require-full-coverage no".into(), "notify-keyspace-events KA".into()],
        ..ClusterOptions::default()
    };
    let cluster = Cluster::start(options);
    let proxy = Proxy::start(&cluster, ProxyOptions::default());
    let mut client = std::net::TcpStream::connect(proxy.addr()).expect("connect");
    std::io::Write::write_all(&mut client, b"PSUBSCRIBE __keyspace@0__:once:*\r\n").expect("write");
    let confirmed = redisforge_tests::read_until(&mut client, Duration::from_secs(5), |r| r.ends_with(b":1\r\n"));
    assert!(confirmed.ends_with(b":1\r\n"), "{}", String::from_utf8_lossy(&confirmed));
    let home = cluster.node_for_slot(0);
    let keys: Vec<(String, String)> = cluster
        .key_per_master("once")
        .into_iter()
        .map(|key| (cluster.node_for_key(&key), key))
        .filter(|(node, _)| *node != home)
        .collect();
    cluster.kill(&home);

    // Until every live master's notifications come through (bounded).
    let notified =
        |seen: &[u8], key: &str| String::from_utf8_lossy(seen).matches(&format!(":{key}\r\n$3\r\nset")).count();
    let set_each = || {
        for (node, key) in &keys {
            let _: Result<(), _> = redis::cmd("SET").arg(key).arg("v").query(&mut cluster.client(node));
        }
    };
    let all_notified = |seen: &[u8]| keys.iter().all(|(_, key)| notified(seen, key) > 0);
    let seen = read_while(&mut client, Duration::from_secs(20), set_each, all_notified);
    assert!(all_notified(&seen), "not every live master's notifications came: {}", String::from_utf8_lossy(&seen));
    // Settled: one SET on each live master is one notification, also a few moments later.
    std::thread::sleep(Duration::from_millis(300));
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n) = std::io::Read::read(&mut client, &mut buf) {
        if n == 0 {
            break;
        }
    }
    for round in 0..3 {
        for (node, key) in &keys {
            let _: () = redis::cmd("SET").arg(key).arg("v").query(&mut cluster.client(node)).expect("SET");
        }
        let seen = read_while(&mut client, Duration::from_millis(500), || {}, |_| false);
        for (_, key) in &keys {
            assert_eq!(notified(&seen, key), 1, "round {round}, {key}: {}", String::from_utf8_lossy(&seen));
        }
    }
}

/// Reads what arrives on `client` until `done` says it is all there, or `timeout`; each turn
/// first runs `nudge` (writes that make the nodes publish).
fn read_while(
    client: &mut std::net::TcpStream,
    timeout: Duration,
    mut nudge: impl FnMut(),
    done: impl Fn(&[u8]) -> bool,
) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    client.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
    wait_until(timeout, Duration::from_millis(10), || {
        nudge();
        if let Ok(n) = std::io::Read::read(client, &mut buf) {
            seen.extend_from_slice(&buf[..n]);
        }
        done(&seen)
    });
    seen
}

#[test]
fn keyspace_notifications_of_a_promoted_master_reach_a_subscriber_that_sends_nothing() {
    // A subscriber that only listens sends nothing, and with no other master writing it receives
    // nothing either: the promoted replica's notifications must come because the map named it,
    // not because the subscriber happened to do something.
    let options =
        ClusterOptions { extra_config: vec!["notify-keyspace-events KA".into()], ..ClusterOptions::default() };
    let cluster = Cluster::start(options);
    let proxy = Proxy::start(&cluster, ProxyOptions::default());
    let home = cluster.node_for_slot(0);
    let key = cluster.key_per_master("promoted").into_iter().find(|k| cluster.node_for_key(k) != home).expect("a key");
    let master = cluster.node_for_key(&key);
    let replica = cluster.replicas_of(&master).pop().expect("a replica");
    let mut client = std::net::TcpStream::connect(proxy.addr()).expect("connect");
    std::io::Write::write_all(&mut client, b"PSUBSCRIBE __keyspace@0__:promoted*\r\n").expect("write");
    let confirmed = redisforge_tests::read_until(&mut client, Duration::from_secs(5), |r| r.ends_with(b":1\r\n"));
    assert!(confirmed.ends_with(b":1\r\n"), "{}", String::from_utf8_lossy(&confirmed));
    // SET before the failover, APPEND after it: a late notification of the old master's cannot
    // pass for one of the promoted replica's.
    let notified = |event: &str| {
        let wanted = format!(":{key}\r\n${}\r\n{event}", event.len());
        move |seen: &[u8]| String::from_utf8_lossy(seen).contains(&wanted)
    };
    let write_on = |node: &str, command: &str| {
        let _: Result<(), _> = redis::cmd(command).arg(&key).arg("v").query(&mut cluster.client(node));
    };
    let seen = read_while(&mut client, Duration::from_secs(10), || write_on(&master, "SET"), notified("set"));
    assert!(notified("set")(&seen), "the master's notifications: {}", String::from_utf8_lossy(&seen));

    cluster.kill(&master);
    let promoted = wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        cluster.role(&replica).as_deref() == Some("master")
    });
    assert!(promoted, "{replica} was not promoted");
    let seen = read_while(&mut client, Duration::from_secs(15), || write_on(&replica, "APPEND"), notified("append"));
    let seen = String::from_utf8_lossy(&seen);
    let from_replica = notified("append")(seen.as_bytes());
    assert!(from_replica, "no notification from the promoted {replica}: {seen}\n{}", proxy.log_tail(30));
}

#[test]
fn a_subscriber_whose_subscriptions_cannot_be_restored_is_disconnected() {
    // The nodes' user loses its channel permissions: Redis disconnects the proxy's subscription
    // connection (as it does any subscriber of a channel it may no longer use), and the
    // resubscription is refused with -NOPERM for good. The client is disconnected too, as it
    // would be by the node, so that it reconnects and subscribes again, not left waiting.
    let cluster = Cluster::start(ClusterOptions::default());
    let proxy = Proxy::start(&cluster, ProxyOptions::default());
    let mut client = std::net::TcpStream::connect(proxy.addr()).expect("connect");
    let wait = Duration::from_secs(5);
    std::io::Write::write_all(&mut client, b"SUBSCRIBE lost:ch\r\n").expect("write");
    let confirmed = redisforge_tests::read_until(&mut client, wait, |r| r.ends_with(b":1\r\n"));
    assert!(confirmed.ends_with(b":1\r\n"), "{}", String::from_utf8_lossy(&confirmed));
    for node in cluster.nodes() {
        let _: () = redis::cmd("ACL")
            .arg(&["SETUSER", "default", "resetchannels"])
            .query(&mut cluster.client(&node))
            .expect("ACL SETUSER");
    }
    client.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut rest = Vec::new();
    let read = std::io::Read::read_to_end(&mut client, &mut rest);
    assert!(read.is_ok(), "the client was not disconnected: {read:?} after {}", String::from_utf8_lossy(&rest));
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
}

#[test]
fn a_resp3_subscription_does_not_overtake_an_earlier_reply() {
    let proxy = Proxy::start(Cluster::shared(), ProxyOptions::default());
    let mut client = std::net::TcpStream::connect(proxy.addr()).expect("connect");
    let first = b"HELLO 3\r\nSUBSCRIBE {order}a\r\n";
    std::io::Write::write_all(&mut client, first).expect("write");
    let subscribed = redisforge_tests::read_until(&mut client, Duration::from_secs(5), |r| {
        String::from_utf8_lossy(r).contains("{order}a\r\n:1\r\n")
    });
    assert!(String::from_utf8_lossy(&subscribed).contains("{order}a\r\n:1\r\n"));
    // A script that takes a while, then another subscription: its confirmation is a push that
    // must come after the script's reply, as one node sends them.
    let mut next = redisforge_tests::slow_script_command();
    next.extend_from_slice(b"SUBSCRIBE {order}b\r\n");
    std::io::Write::write_all(&mut client, &next).expect("write");
    let rest = redisforge_tests::read_until(&mut client, Duration::from_secs(10), |r| {
        let text = String::from_utf8_lossy(r);
        text.contains("{order}b\r\n:2\r\n") && text.contains("slow")
    });
    let rest = String::from_utf8_lossy(&rest);
    let (slow, confirmed) = (rest.find("slow"), rest.find("{order}b"));
    assert!(slow.is_some() && confirmed.is_some() && slow < confirmed, "{rest}");
}

#[test]
fn reset_from_a_resp3_subscriber_leaves_subscribed_mode() {
    let proxy = Proxy::start(Cluster::shared(), ProxyOptions::default());
    let mut client = std::net::TcpStream::connect(proxy.addr()).expect("connect");
    std::io::Write::write_all(&mut client, b"HELLO 3\r\nSUBSCRIBE {reset3}ch\r\n").expect("write");
    let subscribed = redisforge_tests::read_until(&mut client, Duration::from_secs(5), |r| {
        String::from_utf8_lossy(r).contains("{reset3}ch\r\n:1\r\n")
    });
    assert!(String::from_utf8_lossy(&subscribed).contains("{reset3}ch\r\n:1\r\n"));
    // RESET: back to RESP2, no subscription; the GET runs as in normal mode (a RESP2 null).
    std::io::Write::write_all(&mut client, b"RESET\r\nGET {reset3}k\r\n").expect("write");
    let after = redisforge_tests::read_until(&mut client, Duration::from_secs(5), |r| r.ends_with(b"$-1\r\n"));
    assert_eq!(String::from_utf8_lossy(&after), "+RESET\r\n$-1\r\n");
    // Its subscription connection is closed: once the node has seen that, nobody hears the channel.
    let mut publisher = proxy.client();
    let unheard = wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        raw(&mut publisher, &["PUBLISH", "{reset3}ch", "late"]) == Ok(Value::Int(0))
    });
    assert!(unheard, "the channel still has a subscriber after RESET");
}

/// A pattern subscription's confirmation promises, as on one node, every notification published
/// after it: it waits until the mirrors on the other masters subscribed too. Here one of those
/// masters is frozen while the client subscribes: the confirmation comes once it answers, and a
/// key written there right after the confirmation is notified.
#[test]
fn a_notification_pattern_is_confirmed_once_every_mirror_subscribed() {
    let cluster = Cluster::start(ClusterOptions::default());
    let proxy = Proxy::start(&cluster, ProxyOptions::default());
    let mut admin = proxy.client();
    let _: () =
        redis::cmd("CONFIG").arg("SET").arg("notify-keyspace-events").arg("KA").query(&mut admin).expect("CONFIG SET");
    let other = cluster.masters_in_slot_order()[1].clone();
    let key = cluster.key_per_master("mirror:wait")[1].clone();
    let mut listener = proxy.client();
    let mut events = listener.as_pubsub();
    // The home's connection is up: it confirms at once, the mirrors are opened for the pattern.
    events.subscribe("mirror:first").expect("SUBSCRIBE");
    let started = std::time::Instant::now();
    std::thread::scope(|scope| {
        cluster.pause(&other);
        scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(600));
            cluster.resume(&other);
        });
        events.psubscribe("__keyspace@0__:mirror:*").expect("PSUBSCRIBE");
    });
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(500), "confirmed before the frozen master's mirror subscribed: {waited:?}");
    let _: () = redis::cmd("SET").arg(&key).arg("v").query(&mut admin).expect("SET");
    events.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let message = events.get_message().expect("the notification of a key written right after the confirmation");
    assert_eq!(message.get_channel_name(), format!("__keyspace@0__:{key}"));
}
