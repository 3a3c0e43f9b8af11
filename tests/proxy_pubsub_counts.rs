//! Pub/sub counts as on one node: PUBLISH answers how many clients received the message, counting
//! the subscribers of every RedisForge in front of the cluster (channels and matching patterns);
//! PUBSUB NUMSUB / NUMPAT / CHANNELS are exact; keyspace notifications reach a proxy subscriber
//! from every master; the counts stay exact after a failover of the pub/sub home, also for a
//! subscriber that sends nothing, and go back to a home that returns without a failover.

use std::time::Duration;

use redis::{Connection, Value};
use redisforge_tests::{Cluster, ClusterOptions, Proxy, ProxyOptions, query_args, wait_until};

/// PUBLISH through `con`, the count it answers.
fn publish(con: &mut Connection, channel: &str, message: &str) -> i64 {
    match query_args(con, &["PUBLISH", channel, message]) {
        Ok(Value::Int(n)) => n,
        other => panic!("PUBLISH {channel}: {other:?}"),
    }
}

fn next_message(pubsub: &mut redis::PubSub<'_>) -> (String, String) {
    pubsub.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let msg = pubsub.get_message().expect("a message within 10 s");
    (msg.get_channel_name().to_string(), msg.get_payload().expect("payload"))
}

/// PUBLISH inside MULTI counts the subscribers as outside it: a keyless transaction that
/// publishes runs on the pub/sub home, whichever master the client's own connection would
/// otherwise have reached (each new client's lands on another).
#[test]
fn publish_inside_multi_counts_the_subscribers_as_outside_it() {
    let proxy = Proxy::start(Cluster::shared(), ProxyOptions::default());
    let mut subscriber = proxy.client();
    let mut sub = subscriber.as_pubsub();
    sub.subscribe("count:tx").expect("SUBSCRIBE");
    for round in 0..6 {
        let mut publisher = proxy.client();
        let replies: Value = redis::pipe()
            .atomic()
            .cmd("PING")
            .cmd("PUBLISH")
            .arg("count:tx")
            .arg(round)
            .query(&mut publisher)
            .expect("MULTI PING PUBLISH EXEC");
        let expected = Value::Array(vec![Value::SimpleString("PONG".into()), Value::Int(1)]);
        assert_eq!(replies, expected, "round {round}");
        assert_eq!(next_message(&mut sub), ("count:tx".to_owned(), round.to_string()));
    }
}

#[test]
fn publish_counts_the_subscribers_of_every_proxy_on_every_channel() {
    let cluster = Cluster::shared();
    let (one, two) = (Proxy::start(cluster, ProxyOptions::default()), Proxy::start(cluster, ProxyOptions::default()));
    let (mut a, mut b, mut c, mut d) = (one.client(), two.client(), one.client(), two.client());
    // Channels in slots of every master: each client subscribes to all of them.
    let channels: Vec<String> = (0..12).map(|i| format!("count:{i}")).collect();
    let names: Vec<&str> = channels.iter().map(String::as_str).collect();
    let mut sub_a = a.as_pubsub();
    let mut sub_b = b.as_pubsub();
    let mut sub_c = c.as_pubsub();
    sub_a.subscribe(&names).expect("SUBSCRIBE through proxy one");
    sub_b.subscribe(&names).expect("SUBSCRIBE through proxy two");
    // Two clients on the same pattern: one unique pattern, two receivers.
    sub_c.psubscribe("count:*").expect("PSUBSCRIBE");
    let mut pattern_two = d.as_pubsub();
    pattern_two.psubscribe("count:*").expect("PSUBSCRIBE through proxy two");

    let mut publisher = one.client();
    for channel in &channels {
        assert_eq!(publish(&mut publisher, channel, "x"), 4, "PUBLISH {channel}: 2 channel + 2 pattern subscribers");
        assert_eq!(next_message(&mut sub_a), (channel.clone(), "x".to_owned()));
        assert_eq!(next_message(&mut sub_b), (channel.clone(), "x".to_owned()));
        assert_eq!(next_message(&mut sub_c).1, "x");
        assert_eq!(next_message(&mut pattern_two).1, "x");
    }
    assert_eq!(publish(&mut publisher, "nobody-listens", "x"), 0);

    let numsub = query_args(&mut publisher, &["PUBSUB", "NUMSUB", "count:0", "count:7", "other"]);
    let expected = ["count:0", "2", "count:7", "2", "other", "0"];
    match numsub {
        Ok(Value::Array(items)) => {
            let got: Vec<String> = items
                .iter()
                .map(|v| match v {
                    Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                    Value::Int(n) => n.to_string(),
                    other => format!("{other:?}"),
                })
                .collect();
            assert_eq!(got, expected);
        }
        other => panic!("NUMSUB: {other:?}"),
    }
    assert_eq!(query_args(&mut publisher, &["PUBSUB", "NUMPAT"]), Ok(Value::Int(1)), "unique patterns");
    match query_args(&mut publisher, &["PUBSUB", "CHANNELS", "count:*"]) {
        Ok(Value::Array(items)) => assert_eq!(items.len(), channels.len()),
        other => panic!("CHANNELS: {other:?}"),
    }
}

#[test]
fn keyspace_notifications_reach_a_proxy_subscriber_from_every_master() {
    let cluster = Cluster::shared();
    let proxy = Proxy::start(cluster, ProxyOptions::default());
    let mut admin = proxy.client();
    assert_eq!(query_args(&mut admin, &["CONFIG", "SET", "notify-keyspace-events", "KA"]), Ok(Value::Okay));
    let mut listener = proxy.client();
    let mut events = listener.as_pubsub();
    events.psubscribe("__keyspace@0__:notify:*").expect("PSUBSCRIBE");
    // One key on each master: each node publishes the notification for its own key only.
    for key in cluster.key_per_master("notify") {
        assert_eq!(query_args(&mut admin, &["SET", &key, "v"]), Ok(Value::Okay));
        assert_eq!(next_message(&mut events), (format!("__keyspace@0__:{key}"), "set".to_owned()), "{key}");
    }
    drop(events);

    // A catch-all pattern matches every master's notifications too, as on one node; and the
    // messages PUBLISH sends (which the cluster bus brings to every node) arrive once.
    let mut catch_all = proxy.client();
    let mut everything = catch_all.as_pubsub();
    // Subscribed already, so the home's connection is up and confirms the PSUBSCRIBE at once,
    // while the mirrors it needs are opened now.
    everything.subscribe("catch-all:first").expect("SUBSCRIBE");
    everything.psubscribe("*").expect("PSUBSCRIBE *");
    everything.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let next_of = |everything: &mut redis::PubSub<'_>, wanted: &str| -> Option<String> {
        // Other tests of this binary publish too: their messages are skipped.
        for _ in 0..10_000 {
            let message = everything.get_message().ok()?;
            if message.get_channel_name() == wanted {
                return message.get_payload().ok();
            }
        }
        None
    };
    // Written at once after the confirmation, which (as on one node) promises every notification
    // published after it: the other masters' mirrors must have subscribed before it came.
    let keys: Vec<String> = cluster.key_per_master("notify:all").into_iter().rev().collect();
    for key in &keys {
        assert_eq!(query_args(&mut admin, &["SET", key, "v"]), Ok(Value::Okay));
    }
    for key in &keys {
        let channel = format!("__keyspace@0__:{key}");
        assert_eq!(next_of(&mut everything, &channel).as_deref(), Some("set"), "{key}");
    }
    for round in 0..3 {
        assert_eq!(publish(&mut admin, "catch-all:once", &format!("m{round}")), 1);
        assert_eq!(next_of(&mut everything, "catch-all:once"), Some(format!("m{round}")), "round {round}");
    }
    everything.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
    assert_eq!(next_of(&mut everything, "catch-all:once"), None, "a PUBLISH delivered twice");
    drop(everything);
    assert_eq!(query_args(&mut admin, &["CONFIG", "SET", "notify-keyspace-events", ""]), Ok(Value::Okay));
}

#[test]
fn counts_stay_exact_after_the_pubsub_home_fails_over() {
    let cluster = Cluster::start(ClusterOptions::default());
    let proxy = Proxy::start(&cluster, ProxyOptions::default());
    let mut subscriber = proxy.client();
    let mut sub = subscriber.as_pubsub();
    sub.subscribe("failover:ch").expect("SUBSCRIBE");
    let mut publisher = proxy.client();
    assert_eq!(publish(&mut publisher, "failover:ch", "before"), 1);
    assert_eq!(next_message(&mut sub).1, "before");

    // The pub/sub home is the master of slot 0; its replica takes over.
    let home = cluster.node_for_slot(0);
    let replica = cluster.replicas_of(&home).into_iter().next().expect("a replica");
    cluster.failover(&replica);
    // The subscription follows the home (once the proxy's map names it); PUBLISH goes to the new
    // home and counts it again.
    let mut delivered = 0;
    let exact = wait_until(Duration::from_secs(15), Duration::from_millis(200), || {
        let _ = query_args(&mut publisher, &["PING"]);
        let n = publish(&mut publisher, "failover:ch", "after");
        if n == 1 {
            delivered += 1;
        }
        n == 1 && sub.get_message().is_ok()
    });
    assert!(exact, "PUBLISH never counted the subscriber after the failover ({delivered} counted)");
}

/// `PUBSUB NUMSUB channel` asked of `node` directly: its own subscribers.
fn numsub_on(cluster: &Cluster, node: &str, channel: &str) -> i64 {
    match query_args(&mut cluster.client(node), &["PUBSUB", "NUMSUB", channel]) {
        Ok(Value::Array(items)) => match items.get(1) {
            Some(Value::Int(n)) => *n,
            other => panic!("NUMSUB on {node}: {other:?}"),
        },
        other => panic!("NUMSUB on {node}: {other:?}"),
    }
}

#[test]
fn publish_counts_a_subscriber_that_sends_nothing_once_the_home_failed_over() {
    // The proxy refreshes its map every second; the subscriber neither sends nor receives anything
    // between the failover and the PUBLISH: its subscription must follow the home because the map
    // changed (it used to wait for a message or a command, and the first PUBLISH counted 0).
    let cluster = Cluster::start(ClusterOptions::default());
    let options =
        ProxyOptions { extra_toml: "[topology]\nrefresh_interval = \"1s\"\n".to_string(), ..Default::default() };
    let proxy = Proxy::start(&cluster, options);
    let mut subscriber = proxy.client();
    let mut sub = subscriber.as_pubsub();
    sub.subscribe("quiet:ch").expect("SUBSCRIBE");
    let mut publisher = proxy.client();
    assert_eq!(publish(&mut publisher, "quiet:ch", "before"), 1);
    assert_eq!(next_message(&mut sub).1, "before");

    let home = cluster.node_for_slot(0);
    let replica = cluster.replicas_of(&home).into_iter().next().expect("a replica");
    cluster.failover(&replica);
    let promoted = wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
        cluster.role(&replica).as_deref() == Some("master")
    });
    assert!(promoted, "{replica} was not promoted");
    // The subscription moved to the new home (its own count, asked directly): nothing but the
    // map change can have moved it, as the subscriber sent and received nothing.
    let moved = wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
        numsub_on(&cluster, &replica, "quiet:ch") == 1
    });
    assert!(moved, "the subscription did not follow the home\n{}", proxy.log_tail(30));
    assert_eq!(publish(&mut publisher, "quiet:ch", "after"), 1, "the first PUBLISH after the failover");
    assert_eq!(next_message(&mut sub).1, "after");
}

#[test]
fn subscriptions_go_back_to_a_home_that_returns_without_a_failover() {
    // No replicas and no full coverage required: the dead home's slots stay its own, another
    // master stands in for it, and when it comes back (restarted, same node) the subscriptions
    // return as soon as the proxy reaches it again — not 30 s after it failed.
    let options = ClusterOptions {
        replicas_per_master: 0,
        extra_config: vec!["cluster-require-full-coverage no".into()],
        ..ClusterOptions::default()
    };
    let cluster = Cluster::start(options);
    let proxy = Proxy::start(&cluster, ProxyOptions::default());
    let mut subscriber = proxy.client();
    let mut sub = subscriber.as_pubsub();
    sub.subscribe("return:ch").expect("SUBSCRIBE");
    let home = cluster.node_for_slot(0);
    assert_eq!(numsub_on(&cluster, &home, "return:ch"), 1, "subscribed on the home");

    cluster.kill(&home);
    let others: Vec<String> = cluster.masters().into_iter().filter(|m| *m != home).collect();
    let stand_in = wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
        others.iter().any(|m| numsub_on(&cluster, m, "return:ch") == 1)
    });
    assert!(stand_in, "no master stood in for the dead home\n{}", proxy.log_tail(20));

    cluster.restart(&home);
    let back = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        numsub_on(&cluster, &home, "return:ch") == 1
    });
    assert!(back, "the subscription did not go back to the home within 10 s\n{}", proxy.log_tail(20));
    let mut publisher = proxy.client();
    assert_eq!(publish(&mut publisher, "return:ch", "back"), 1, "PUBLISH on the home counts the subscriber");
    assert_eq!(next_message(&mut sub).1, "back");
}
