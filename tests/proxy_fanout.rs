//! Commands the proxy sends to every master and answers for the whole cluster: scripts and
//! functions (loaded everywhere so EVALSHA and FCALL work on any key), KEYS, RANDOMKEY and pub/sub
//! introspection. Against real clusters: the shared 3+3 one for tests that only touch their own
//! keys (prefix `fanout:`), an own cluster for tests that flush.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use redis::{Connection, Value};
use redisforge_proxy::resp::FrameScanner;
use redisforge_tests::{Cluster, ClusterOptions, Proxy, ProxyOptions, raw_roundtrip_until, resp_command};

/// Runs a raw command and returns the reply value, or the error's text.
fn raw(con: &mut Connection, args: &[&str]) -> Result<Value, String> {
    redisforge_tests::query_args(con, args)
}

fn bulk(s: &str) -> Value {
    Value::BulkString(s.as_bytes().to_vec())
}

#[test]
fn script_load_reaches_every_master_so_evalsha_works_on_any_key() {
    let cluster = Cluster::shared();
    let proxy = Proxy::start(cluster, ProxyOptions::default());
    let mut con = proxy.client();
    let keys = cluster.key_per_master("fanout:evalsha");
    assert_eq!(keys.len(), 3);

    let script = "redis.call('SET', KEYS[1], ARGV[1]) return 'fanout-evalsha'";
    let sha = match raw(&mut con, &["SCRIPT", "LOAD", script]) {
        Ok(Value::BulkString(sha)) => String::from_utf8(sha).expect("hex SHA1"),
        other => panic!("SCRIPT LOAD: {other:?}"),
    };
    assert_eq!(sha.len(), 40);
    for key in &keys {
        assert_eq!(raw(&mut con, &["EVALSHA", &sha, "1", key, "v"]), Ok(bulk("fanout-evalsha")), "{key}");
        assert_eq!(raw(&mut con, &["GET", key]), Ok(bulk("v")));
    }
    for master in cluster.masters_in_slot_order() {
        let exists = raw(&mut cluster.client(&master), &["SCRIPT", "EXISTS", &sha]);
        assert_eq!(exists, Ok(Value::Array(vec![Value::Int(1)])), "{master} has the script");
    }
}

/// SCRIPT EXISTS says whether EVALSHA of a script works through the proxy on any key.
#[test]
fn script_exists_is_true_when_every_master_has_the_script_or_the_proxy_can_load_it() {
    let cluster = Cluster::shared();
    let proxy = Proxy::start(cluster, ProxyOptions::default());
    let mut con = proxy.client();
    let script = "return 'fanout-exists'";
    // Loaded on one master only: not usable through the proxy for every key yet.
    let first = cluster.masters_in_slot_order().remove(0);
    let sha: String = redis::cmd("SCRIPT").arg("LOAD").arg(script).query(&mut cluster.client(&first)).expect("LOAD");
    let missing = "0123456789012345678901234567890123456789";
    let exists = |con: &mut Connection| raw(con, &["SCRIPT", "EXISTS", &sha, missing]);
    assert_eq!(exists(&mut con), Ok(Value::Array(vec![Value::Int(0), Value::Int(0)])));

    assert_eq!(raw(&mut con, &["SCRIPT", "LOAD", script]), Ok(bulk(&sha)));
    assert_eq!(exists(&mut con), Ok(Value::Array(vec![Value::Int(1), Value::Int(0)])));

    // EVAL caches a script on the master that ran it only; the proxy remembers its body and loads
    // it where an EVALSHA meets -NOSCRIPT, so it exists (Redis' scripting.tcl asks just this).
    let evaluated = "return 'fanout-exists-eval'";
    let key = "fanout:exists-eval";
    assert_eq!(raw(&mut con, &["EVAL", evaluated, "1", key]), Ok(bulk("fanout-exists-eval")));
    let sha = sha1_hex(evaluated);
    let holders = cluster
        .masters()
        .into_iter()
        .filter(|m| raw(&mut cluster.client(m), &["SCRIPT", "EXISTS", &sha]) == Ok(Value::Array(vec![Value::Int(1)])));
    assert_eq!(holders.count(), 1, "EVAL caches on one master");
    assert_eq!(raw(&mut con, &["SCRIPT", "EXISTS", &sha.to_uppercase()]), Ok(Value::Array(vec![Value::Int(1)])));
    for key in cluster.key_per_master("fanout:exists-evalsha") {
        assert_eq!(raw(&mut con, &["EVALSHA", &sha, "1", &key]), Ok(bulk("fanout-exists-eval")), "{key}");
    }

    // A script that did not compile is cached nowhere: remembered by the proxy, it still does not
    // exist.
    let broken = "return 'fanout-exists-broken";
    let error = raw(&mut con, &["EVAL", broken, "1", key]).expect_err("a compile error");
    assert!(error.contains("compiling script"), "{error}");
    assert_eq!(raw(&mut con, &["SCRIPT", "EXISTS", &sha1_hex(broken)]), Ok(Value::Array(vec![Value::Int(0)])));
}

/// The hex SHA1 of `script`, as Redis names scripts: computed by a node's `redis.sha1hex`, so
/// that nothing caches `script` itself (SCRIPT LOAD would).
fn sha1_hex(script: &str) -> String {
    let mut node = Cluster::shared().client(&Cluster::shared().masters()[0]);
    match raw(&mut node, &["EVAL", "return redis.sha1hex(ARGV[1])", "0", script]) {
        Ok(Value::BulkString(sha)) => String::from_utf8(sha).expect("hex"),
        other => panic!("redis.sha1hex: {other:?}"),
    }
}

#[test]
fn script_kill_without_a_running_script_is_notbusy() {
    let proxy = Proxy::start(Cluster::shared(), ProxyOptions::default());
    let mut con = proxy.client();
    // redis-rs spells the code NotBusy.
    let error = raw(&mut con, &["SCRIPT", "KILL"]).expect_err("nothing to kill");
    assert!(error.to_ascii_uppercase().contains("NOTBUSY"), "{error}");
    let error = raw(&mut con, &["FUNCTION", "KILL"]).expect_err("nothing to kill");
    assert!(error.to_ascii_uppercase().contains("NOTBUSY"), "{error}");
}

#[test]
fn script_kill_stops_a_script_running_on_any_master() {
    // Nodes take SCRIPT KILL once a script has run past busy-reply-threshold.
    let options = ClusterOptions {
        replicas_per_master: 0,
        extra_config: vec!["busy-reply-threshold 100".into()],
        ..ClusterOptions::default()
    };
    let cluster = Cluster::start(options);
    // Enough connections per node that consecutive clients never share one: the busy script holds
    // its connection until it is killed.
    let extra_toml = "[upstream]\nseeds = @SEEDS@\nconnections_per_node = 16\n".to_string();
    let proxy = Proxy::start(&cluster, ProxyOptions { extra_toml, ..ProxyOptions::default() });
    let mut runner = proxy.client();
    let mut killer = proxy.client();
    let running = std::thread::spawn(move || raw(&mut runner, &["EVAL", "while true do end", "0"]));
    let started = Instant::now();
    // The masters not running it answer NOTBUSY; the one running it kills it: OK.
    loop {
        match raw(&mut killer, &["SCRIPT", "KILL"]) {
            Ok(reply) => break assert_eq!(reply, Value::Okay),
            Err(error) if started.elapsed() < Duration::from_secs(5) => {
                assert!(error.to_ascii_uppercase().contains("NOTBUSY"), "{error}");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(error) => panic!("the script was never killed: {error}"),
        }
    }
    let killed = running.join().expect("EVAL thread").expect_err("the script was killed");
    assert!(killed.contains("killed"), "{killed}");
}

#[test]
fn function_load_reaches_every_master_and_delete_removes_it_everywhere() {
    let cluster = Cluster::shared();
    let proxy = Proxy::start(cluster, ProxyOptions::default());
    let mut con = proxy.client();
    let keys = cluster.key_per_master("fanout:fcall");
    let library = "#!lua name=fanoutlib\n\
        redis.register_function('fanout_set', function(keys, args) \
            redis.call('SET', keys[1], args[1]) return 'fanout-fcall' end)";

    assert_eq!(raw(&mut con, &["FUNCTION", "LOAD", library]), Ok(bulk("fanoutlib")));
    for key in &keys {
        assert_eq!(raw(&mut con, &["FCALL", "fanout_set", "1", key, "f"]), Ok(bulk("fanout-fcall")), "{key}");
        assert_eq!(raw(&mut con, &["GET", key]), Ok(bulk("f")));
    }
    // Loading it again fails on every master alike: the nodes' own error comes back.
    let again = raw(&mut con, &["FUNCTION", "LOAD", library]).expect_err("already loaded");
    assert!(again.contains("already exists"), "{again}");

    assert_eq!(raw(&mut con, &["FUNCTION", "DELETE", "fanoutlib"]), Ok(Value::Okay));
    for key in &keys {
        let gone = raw(&mut con, &["FCALL", "fanout_set", "1", key, "f"]).expect_err("deleted");
        assert!(gone.contains("Function not found"), "{key}: {gone}");
    }
    let error = raw(&mut con, &["FUNCTION", "DELETE", "fanoutlib"]).expect_err("nothing to delete");
    assert!(error.contains("Library not found"), "{error}");
}

#[test]
fn keys_returns_the_matching_keys_of_every_master() {
    let cluster = Cluster::shared();
    let proxy = Proxy::start(cluster, ProxyOptions::default());
    let mut con = proxy.client();
    let mut expected: Vec<String> = (0..40).map(|i| format!("fanout:keys:{i}")).collect();
    expected.extend(cluster.key_per_master("fanout:keys:m"));
    for key in &expected {
        assert_eq!(raw(&mut con, &["SET", key, "1"]), Ok(Value::Okay));
    }
    let mut found: Vec<String> = redis::cmd("KEYS").arg("fanout:keys:*").query(&mut con).expect("KEYS");
    found.sort();
    expected.sort();
    assert_eq!(found, expected);
    let none: Vec<String> = redis::cmd("KEYS").arg("fanout:nothing:*").query(&mut con).expect("KEYS");
    assert!(none.is_empty());
}

#[test]
fn randomkey_finds_the_one_key_on_whichever_master_holds_it() {
    let cluster = Cluster::start(ClusterOptions { replicas_per_master: 0, ..ClusterOptions::default() });
    let proxy = Proxy::start(&cluster, ProxyOptions::default());
    let mut con = proxy.client();
    assert_eq!(raw(&mut con, &["RANDOMKEY"]), Ok(Value::Nil), "empty cluster");
    for key in cluster.key_per_master("fanout:random") {
        assert_eq!(raw(&mut con, &["SET", &key, "1"]), Ok(Value::Okay));
        assert_eq!(raw(&mut con, &["RANDOMKEY"]), Ok(bulk(&key)));
        assert_eq!(raw(&mut con, &["DBSIZE"]), Ok(Value::Int(1)));
        assert_eq!(raw(&mut con, &["FLUSHALL"]), Ok(Value::Okay));
    }
    assert_eq!(raw(&mut con, &["RANDOMKEY"]), Ok(Value::Nil), "flushed");
}

/// FLUSHDB, FLUSHALL and SCRIPT FLUSH inside MULTI are queued as on a node: they run in the
/// transaction on its node, with their reply in EXEC's array, and once EXEC ran on every other
/// master too, as outside a transaction.
#[test]
fn flushes_inside_multi_run_in_the_transaction_and_then_on_every_master() {
    let cluster = Cluster::start(ClusterOptions { replicas_per_master: 0, ..ClusterOptions::default() });
    let proxy = Proxy::start(&cluster, ProxyOptions::default());
    let mut con = proxy.client();
    let keys = cluster.key_per_master("fanout:txflush");
    for key in &keys {
        assert_eq!(raw(&mut con, &["SET", key, "1"]), Ok(Value::Okay));
    }
    let sha = match raw(&mut con, &["SCRIPT", "LOAD", "return 'txflush'"]) {
        Ok(Value::BulkString(sha)) => String::from_utf8(sha).expect("hex"),
        other => panic!("SCRIPT LOAD: {other:?}"),
    };
    let key = &keys[0];
    let tx: [&[&str]; 6] =
        [&["MULTI"], &["SET", key, "2"], &["FLUSHDB"], &["GET", key], &["SCRIPT", "FLUSH"], &["EXEC"]];
    let replies: Vec<Result<Value, String>> = tx.iter().map(|command| raw(&mut con, command)).collect();
    let queued = Ok(Value::SimpleString("QUEUED".into()));
    assert_eq!(replies[1..5], [queued.clone(), queued.clone(), queued.clone(), queued]);
    assert_eq!(replies[5], Ok(Value::Array(vec![Value::Okay, Value::Okay, Value::Nil, Value::Okay])));
    for master in cluster.masters() {
        assert_eq!(raw(&mut cluster.client(&master), &["DBSIZE"]), Ok(Value::Int(0)), "{master} flushed");
        let exists = raw(&mut cluster.client(&master), &["SCRIPT", "EXISTS", &sha]);
        assert_eq!(exists, Ok(Value::Array(vec![Value::Int(0)])), "{master} has no scripts");
    }
    let error = raw(&mut con, &["EVALSHA", &sha, "0"]).expect_err("flushed script");
    assert!(error.to_ascii_uppercase().contains("NOSCRIPT"), "{error}");
    // FLUSHALL alone in a transaction: keyless, on whichever master, then on the others.
    assert_eq!(raw(&mut con, &["SET", &keys[2], "1"]), Ok(Value::Okay));
    let flushall: Vec<Result<Value, String>> =
        [&["MULTI"][..], &["FLUSHALL"], &["EXEC"]].iter().map(|command| raw(&mut con, command)).collect();
    assert_eq!(flushall[2], Ok(Value::Array(vec![Value::Okay])));
    assert_eq!(raw(&mut con, &["DBSIZE"]), Ok(Value::Int(0)));
}

/// A raw connection to a node that subscribed (or pattern-subscribed) to `channel`.
fn subscriber(addr: &str, command: &str, channel: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.write_all(&resp_command(&[command.as_bytes(), channel.as_bytes()])).expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut received = Vec::new();
    let mut buf = [0u8; 512];
    // The confirmation ends with the subscription count.
    while !received.ends_with(b":1\r\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{addr}: no {command} confirmation: {}", String::from_utf8_lossy(&received));
        stream.set_read_timeout(Some(left)).expect("read timeout");
        match stream.read(&mut buf) {
            Ok(0) => panic!("{addr} closed the subscriber"),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(e) => panic!("{addr}: {e}"),
        }
    }
    stream
}

#[test]
fn pubsub_introspection_answers_for_the_pubsub_home() {
    let cluster = Cluster::shared();
    let proxy = Proxy::start(cluster, ProxyOptions::default());
    let mut con = proxy.client();
    // Subscribers straight on the nodes: the home (the master of slot 0), where every proxy's
    // classic subscriptions live, and another master, whose direct subscribers the proxy does not
    // count (README: pub/sub).
    let home = cluster.node_for_slot(0);
    let other = cluster.masters().into_iter().find(|m| *m != home).expect("another master");
    let _subscribers = [
        subscriber(&home, "SUBSCRIBE", "fanout:news"),
        subscriber(&other, "SUBSCRIBE", "fanout:news"),
        subscriber(&other, "SUBSCRIBE", "fanout:elsewhere"),
        subscriber(&home, "PSUBSCRIBE", "fanout:pattern:*"),
    ];

    let numsub = raw(&mut con, &["PUBSUB", "NUMSUB", "fanout:news", "fanout:nobody"]);
    let expected = vec![bulk("fanout:news"), Value::Int(1), bulk("fanout:nobody"), Value::Int(0)];
    assert_eq!(numsub, Ok(Value::Array(expected)));
    assert_eq!(raw(&mut con, &["PUBSUB", "CHANNELS", "fanout:*"]), Ok(Value::Array(vec![bulk("fanout:news")])));
    match raw(&mut con, &["PUBSUB", "NUMPAT"]) {
        Ok(Value::Int(n)) => assert!(n >= 1, "{n}"),
        other => panic!("PUBSUB NUMPAT: {other:?}"),
    }

    assert_eq!(raw(&mut con, &["PUBSUB", "SHARDCHANNELS", "fanout:*"]), Ok(Value::Array(Vec::new())));
    let shardnumsub = raw(&mut con, &["PUBSUB", "SHARDNUMSUB", "fanout:shard"]);
    assert_eq!(shardnumsub, Ok(Value::Array(vec![bulk("fanout:shard"), Value::Int(0)])));
    assert_eq!(raw(&mut con, &["PUBSUB", "NUMSUB"]), Ok(Value::Array(Vec::new())));
}

/// The RESP frames of a reply stream, split with the proxy's own scanner.
fn frames(mut bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Ok(Some(len)) = FrameScanner::new().scan(bytes) {
        out.push(&bytes[..len]);
        bytes = &bytes[len..];
    }
    assert!(bytes.is_empty(), "incomplete frame: {}", String::from_utf8_lossy(bytes));
    out
}

#[test]
fn resp3_clients_get_merged_replies_in_the_form_a_node_gives() {
    let cluster = Cluster::shared();
    let proxy = Proxy::start(cluster, ProxyOptions::default());
    let keys = cluster.key_per_master("fanout:r3");
    let numsub = resp_command(&[b"PUBSUB", b"NUMSUB", b"fanout:r3:ch"]);
    let exists = resp_command(&[b"SCRIPT", b"EXISTS", b"0123456789012345678901234567890123456789"]);
    let mut input = b"HELLO 3\r\n".to_vec();
    for key in &keys {
        input.extend_from_slice(&resp_command(&[b"SET", key.as_bytes(), b"1"]));
    }
    input.extend_from_slice(&resp_command(&[b"KEYS", b"fanout:r3:*"]));
    input.extend_from_slice(&numsub);
    input.extend_from_slice(&exists);
    input.extend_from_slice(b"QUIT\r\n");
    let timeout = Duration::from_secs(5);
    let reply = raw_roundtrip_until(&proxy.addr(), &input, timeout, |got| got.ends_with(b":0\r\n+OK\r\n"));
    let replies = frames(&reply);
    assert_eq!(replies.len(), 8, "{}", String::from_utf8_lossy(&reply));
    let text = |frame: &[u8]| String::from_utf8_lossy(frame).into_owned();

    // KEYS: one array with every master's key.
    let keys_reply = text(replies[4]);
    assert!(keys_reply.starts_with("*3\r\n"), "{keys_reply}");
    for key in &keys {
        assert!(keys_reply.contains(&format!("${}\r\n{key}\r\n", key.len())), "{key}: {keys_reply}");
    }
    // With no subscribers and no such script anywhere, the merged replies are exactly a node's own
    // RESP3 replies (NUMSUB is an array in Redis 7.0, a map in versions that answer with one).
    let mut node_input = b"HELLO 3\r\n".to_vec();
    node_input.extend_from_slice(&numsub);
    node_input.extend_from_slice(&exists);
    node_input.extend_from_slice(b"QUIT\r\n");
    let master = cluster.masters_in_slot_order().remove(0);
    let node_reply = raw_roundtrip_until(&master, &node_input, timeout, |got| got.ends_with(b":0\r\n+OK\r\n"));
    let node_replies = frames(&node_reply);
    assert_eq!(node_replies.len(), 4, "{}", text(&node_reply));
    assert_eq!(text(replies[5]), text(node_replies[1]), "PUBSUB NUMSUB");
    assert_eq!(text(replies[6]), text(node_replies[2]), "SCRIPT EXISTS");
    assert_eq!(text(replies[6]), "*1\r\n:0\r\n");
}
