//! Blocked clients are visible and can be unblocked, as on one node: `INFO clients` counts them
//! (`blocked_clients`, the timeout table, and the fields of the server version the proxy serves),
//! `CLIENT LIST` flags them `b`, and `CLIENT UNBLOCK id [TIMEOUT|ERROR]` ends their command with
//! the node's own reply.

use std::time::Duration;

use redis::Value;
use redisforge_tests::resp::Conn;
use redisforge_tests::{Cluster, ClusterOptions, Proxy, ProxyOptions, RedisServer, query_args, wait_until};

fn proxy() -> Proxy {
    Proxy::start(Cluster::shared(), ProxyOptions::default())
}

/// One field of `INFO clients` through `con`, if the section has it.
fn clients_field(con: &mut redis::Connection, field: &str) -> Option<String> {
    let info: String = redis::cmd("INFO").arg("clients").query(con).expect("INFO clients");
    field_of(&info, field)
}

/// A raw client that sends `CLIENT ID` and then `command`, which blocks; returns the socket and
/// the proxy's id of that client.
fn blocked_client(proxy: &Proxy, command: &[&str]) -> (Conn, u64) {
    let mut conn = Conn::open(&proxy.addr());
    let (_, id) = conn.call(&args(&["CLIENT", "ID"])).expect("CLIENT ID");
    let id = id.integer().and_then(|id| u64::try_from(id).ok()).expect("an id");
    conn.send(&args(command)).expect("send the blocking command");
    (conn, id)
}

fn args(words: &[&str]) -> Vec<Vec<u8>> {
    words.iter().map(|w| w.as_bytes().to_vec()).collect()
}

/// The next reply's exact bytes.
fn read_reply(conn: &mut Conn) -> String {
    let (bytes, _) = conn.read().expect("the blocked command's reply");
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn blocked_clients_are_counted_listed_and_unblocked_with_the_nodes_replies() {
    let proxy = proxy();
    let mut admin = proxy.client();
    assert_eq!(clients_field(&mut admin, "blocked_clients").as_deref(), Some("0"));
    assert!(clients_field(&mut admin, "maxclients").is_some());

    let (mut waiting, id) = blocked_client(&proxy, &["BLPOP", "{blocked}a", "{blocked}b", "0"]);
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
            clients_field(&mut admin, "blocked_clients").as_deref() == Some("1")
        }),
        "monitoring tools poll blocked_clients to know a client is blocked"
    );
    // No timeout: not in the timeout table. Redis 7.2+ also counts the keys blocked on.
    assert_eq!(clients_field(&mut admin, "clients_in_timeout_table").as_deref(), Some("0"));
    if let Some(keys) = clients_field(&mut admin, "total_blocking_keys") {
        assert_eq!(keys, "2");
    }
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut admin).expect("CLIENT LIST");
    let line = list.lines().find(|l| l.starts_with(&format!("id={id} "))).expect("the blocked client is listed");
    assert!(line.contains(" flags=b "), "{line}");

    // TIMEOUT (the default): the command ends as if it had timed out, with the node's null.
    assert_eq!(query_args(&mut admin, &["CLIENT", "UNBLOCK", &id.to_string()]), Ok(Value::Int(1)));
    assert_eq!(read_reply(&mut waiting), "*-1\r\n");
    assert!(wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        clients_field(&mut admin, "blocked_clients").as_deref() == Some("0")
    }));
    assert_eq!(query_args(&mut admin, &["CLIENT", "UNBLOCK", &id.to_string()]), Ok(Value::Int(0)), "not blocked now");

    // ERROR, on a block with a timeout (which puts it in the timeout table).
    waiting.send(&args(&["BLPOP", "{blocked}a", "30"])).expect("block again");
    assert!(wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        clients_field(&mut admin, "clients_in_timeout_table").as_deref() == Some("1")
    }));
    assert_eq!(query_args(&mut admin, &["CLIENT", "UNBLOCK", &id.to_string(), "ERROR"]), Ok(Value::Int(1)));
    assert_eq!(read_reply(&mut waiting), "-UNBLOCKED client unblocked via CLIENT UNBLOCK\r\n");

    // The connection goes on serving its client.
    waiting.send(&args(&["PING"])).expect("ping");
    assert_eq!(read_reply(&mut waiting), "+PONG\r\n");
    let error = query_args(&mut admin, &["CLIENT", "UNBLOCK", &id.to_string(), "LATER"]).expect_err("bad reason");
    assert!(error.contains("CLIENT UNBLOCK reason should be TIMEOUT or ERROR"), "{error}");
    assert_eq!(query_args(&mut admin, &["CLIENT", "UNBLOCK", "999999"]), Ok(Value::Int(0)));
}

#[test]
fn info_takes_several_sections_and_everything() {
    let proxy = proxy();
    let mut con = proxy.client();
    let two: String = redis::cmd("INFO").arg("server").arg("clients").query(&mut con).expect("INFO server clients");
    let sections: Vec<&str> = two.lines().filter(|l| l.starts_with("# ")).collect();
    assert_eq!(sections, ["# Server", "# Clients"], "{two}");
    let everything: String = redis::cmd("INFO").arg("everything").query(&mut con).expect("INFO everything");
    for section in ["# Server", "# Clients", "# Replication", "# Keyspace"] {
        assert!(everything.contains(section), "{section} missing from INFO everything");
    }
    for field in ["master_repl_offset:", "connected_slaves:", "master_replid:"] {
        assert!(everything.contains(field), "{field} missing");
    }
}

#[test]
fn watching_clients_are_counted_where_the_version_reports_them() {
    let proxy = proxy();
    let mut admin = proxy.client();
    let mut watcher = proxy.client();
    assert_eq!(query_args(&mut watcher, &["WATCH", "{watch}a", "{watch}b"]), Ok(Value::Okay));
    // Redis 7.4 and later report these; 7.0 has neither field. The proxy reports its oldest
    // node's version (learned by its health poll) and that version's fields.
    let version = || {
        let info: String = redis::cmd("INFO").arg("server").query(&mut proxy.client()).expect("INFO server");
        info.lines().find_map(|l| l.strip_prefix("redis_version:")).map(str::to_owned).unwrap_or_default()
    };
    let node_version: String = {
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query(&mut Cluster::shared().client(&Cluster::shared().masters()[0]))
            .expect("node INFO");
        info.lines().find_map(|l| l.strip_prefix("redis_version:")).map(str::to_owned).unwrap_or_default()
    };
    assert!(wait_until(Duration::from_secs(10), Duration::from_millis(100), || version() == node_version));
    // Redis 7.4 and Valkey 8 (which reports 7.2.4) have them: as the node's own section says.
    let newer = field_of(&info_section(&Cluster::shared().masters()[0], "clients"), "watching_clients").is_some();
    assert_eq!(clients_field(&mut admin, "watching_clients").is_some(), newer, "fields of {node_version}");
    if let Some(watching) = clients_field(&mut admin, "watching_clients") {
        assert_eq!(watching, "1");
        assert_eq!(clients_field(&mut admin, "total_watched_keys").as_deref(), Some("2"));
        assert_eq!(query_args(&mut watcher, &["UNWATCH"]), Ok(Value::Okay));
        assert_eq!(clients_field(&mut admin, "watching_clients").as_deref(), Some("0"));
    } else {
        assert_eq!(clients_field(&mut admin, "total_watched_keys"), None, "7.0's field set");
    }
}

/// `INFO <section>` of the server at `addr`, as `field:value` lines.
fn info_section(addr: &str, section: &str) -> String {
    let mut conn = Conn::open(addr);
    let (bytes, _) = conn.call(&args(&["INFO", section])).expect("INFO");
    String::from_utf8_lossy(&bytes).into_owned()
}

/// One field of an INFO text, if it has it.
fn field_of(section: &str, field: &str) -> Option<String> {
    section.lines().find_map(|l| l.strip_prefix(&format!("{field}:"))).map(str::to_owned)
}

/// Clients that block on and watch overlapping keys at `addr`: two BLPOPs sharing a key, a
/// consumer group's reader (which a deletion of its stream unblocks), a BLMOVE (which waits on its
/// source only), two WATCHes sharing a key. Returned once `blocked_clients` counts the four
/// blocked.
fn hold_overlapping_keys(addr: &str) -> Vec<Conn> {
    let mut setup = Conn::open(addr);
    let (created, _) =
        setup.call(&args(&["XGROUP", "CREATE", "{distinct}s", "g", "$", "MKSTREAM"])).expect("XGROUP CREATE");
    assert_eq!(created, b"+OK\r\n", "{}", String::from_utf8_lossy(&created));
    let mut held = vec![setup];
    for blocking in [
        &["BLPOP", "{distinct}a", "{distinct}b", "0"][..],
        &["BLPOP", "{distinct}a", "0"],
        &["XREADGROUP", "GROUP", "g", "c", "BLOCK", "0", "STREAMS", "{distinct}s", ">"],
        &["BLMOVE", "{distinct}m", "{distinct}d", "LEFT", "RIGHT", "0"],
    ] {
        let mut conn = Conn::open(addr);
        conn.send(&args(blocking)).expect("send the blocking command");
        held.push(conn);
    }
    for watched in [&["WATCH", "{distinct}a", "{distinct}w"][..], &["WATCH", "{distinct}w"]] {
        let mut conn = Conn::open(addr);
        let (ok, _) = conn.call(&args(watched)).expect("WATCH");
        assert_eq!(ok, b"+OK\r\n");
        held.push(conn);
    }
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
            field_of(&info_section(addr, "clients"), "blocked_clients").as_deref() == Some("4")
        }),
        "four clients blocked at {addr}"
    );
    held
}

#[test]
fn keys_blocked_on_or_watched_by_several_clients_count_once_as_on_a_node() {
    let proxy = proxy();
    let dir = tempfile::tempdir().expect("tempdir");
    let node = RedisServer::start(dir.path(), |port| vec![format!("port {port}")]).expect("reference node");
    // The proxy shows the fields of its oldest node's version (learned by its health poll), the
    // reference node's too: the harness starts both from the same redis-server.
    let version = |addr: &str| field_of(&info_section(addr, "server"), "redis_version");
    let node_version = version(&node.addr());
    assert!(wait_until(Duration::from_secs(10), Duration::from_millis(100), || version(&proxy.addr()) == node_version));

    let through_proxy = hold_overlapping_keys(&proxy.addr());
    let on_node = hold_overlapping_keys(&node.addr());
    // Every field the proxy reports of these, as the node reports it: Redis 7.2 and later count
    // {a, b, s, m} blocked on (s also on deletion), 7.4 and later {a, w} watched by two clients.
    let held = [
        ("blocked_clients", "4"),
        ("total_blocking_keys", "4"),
        ("total_blocking_keys_on_nokey", "1"),
        ("watching_clients", "2"),
        ("total_watched_keys", "2"),
    ];
    let same_as_node = |expected: &[(&str, &str)]| {
        let (proxy_section, node_section) =
            (info_section(&proxy.addr(), "clients"), info_section(&node.addr(), "clients"));
        for (field, value) in expected {
            let Some(shown) = field_of(&proxy_section, field) else { continue };
            assert_eq!(
                Some(&shown),
                field_of(&node_section, field).as_ref(),
                "{field}: proxy vs node {node_version:?}"
            );
            assert_eq!(shown, *value, "{field}");
        }
    };
    same_as_node(&held);
    // Once the clients are gone, nothing is held any more.
    drop((through_proxy, on_node));
    for addr in [proxy.addr(), node.addr()] {
        assert!(wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
            let section = info_section(&addr, "clients");
            field_of(&section, "blocked_clients").as_deref() == Some("0")
                && field_of(&section, "watching_clients").is_none_or(|w| w == "0")
        }));
    }
    same_as_node(&held.map(|(field, _)| (field, "0")));
}

#[test]
fn replies_before_a_blocking_command_in_a_batch_are_not_held_back_for_it() {
    // Both wait 3 s, longer than the default command timeout.
    let cluster = Cluster::shared();
    let proxy = Proxy::start(cluster, ProxyOptions::default());
    // The node the batch's keys live on answers it too, as the reference.
    let slot = cluster.slot_for_key("{batch}written");
    let node =
        cluster.slot_ranges().into_iter().find(|r| (r.start..=r.end).contains(&slot)).expect("slot served").master;
    // One batch, one write: a write, then a command that waits up to 3 s — a pop on an empty list;
    // WAIT for more replicas than there are. As on the node, the write's reply is sent at once,
    // not with the waiting command's.
    let waiting: [(&[&str], &str); 2] =
        [(&["BLPOP", "{batch}empty", "3"], "*-1\r\n"), (&["WAIT", "5", "3000"], ":1\r\n")];
    for (command, reply) in waiting {
        for (target, addr) in [("node", node.as_str()), ("proxy", proxy.addr().as_str())] {
            let mut conn = Conn::open(addr);
            let mut batch = redisforge_tests::resp::encode(&args(&["SET", "{batch}written", "v"]));
            batch.extend(redisforge_tests::resp::encode(&args(command)));
            conn.send_raw(&batch).expect("send the batch");
            let first = conn.read_within(Duration::from_secs(2)).expect("the connection stays");
            let first = first.map(|(bytes, _)| bytes);
            assert_eq!(first, Some(b"+OK\r\n".to_vec()), "{target}: the write's reply, before {command:?}'s");
            assert_eq!(read_reply(&mut conn), reply, "{target}: {command:?} waits out its timeout");
        }
    }
}

#[test]
fn a_wait_longer_than_the_command_timeout_gets_the_nodes_count_and_holds_up_no_other_client() {
    // command_timeout 1 s: a WAIT of 2.5 s used to fail with `upstream timeout` after 1 s, and the
    // shared connection it ran on took other clients' requests down with it.
    let upstream = "[upstream]\nseeds = @SEEDS@\n@UPSTREAM_AUTH@\n@UPSTREAM_TLS@\ncommand_timeout = \"1s\"\n";
    let cluster = Cluster::shared();
    let proxy = Proxy::start(cluster, ProxyOptions { extra_toml: upstream.to_owned(), ..ProxyOptions::default() });
    let slot = cluster.slot_for_key("{longwait}k");
    let node =
        cluster.slot_ranges().into_iter().find(|r| (r.start..=r.end).contains(&slot)).expect("slot served").master;
    // More replicas than there are: the node waits out the timeout and counts its one replica.
    for (target, addr) in [("node", node.as_str()), ("proxy", proxy.addr().as_str())] {
        let mut waiter = Conn::open(addr);
        assert_eq!(waiter.call(&args(&["SET", "{longwait}k", "v"])).map(|(b, _)| b).ok(), Some(b"+OK\r\n".to_vec()));
        let started = std::time::Instant::now();
        waiter.send(&args(&["WAIT", "5", "2500"])).expect("send WAIT");
        // Meanwhile another client reads a key of the same node, through the same connection.
        let mut other = Conn::open(addr);
        let asked = std::time::Instant::now();
        let got = other.call(&args(&["GET", "{longwait}k"])).map(|(b, _)| b).ok();
        assert_eq!(got, Some(b"$1\r\nv\r\n".to_vec()), "{target}: the other client's read");
        assert!(asked.elapsed() < Duration::from_millis(700), "{target}: the read waited {:?}", asked.elapsed());
        assert_eq!(read_reply(&mut waiter), ":1\r\n", "{target}: WAIT's count after its timeout");
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(2400) && waited < Duration::from_secs(4), "{target}: {waited:?}");
        // A write pipelined after a WAIT runs once it returns, not between its short waits.
        let mut batch = redisforge_tests::resp::encode(&args(&["WAIT", "5", "1200"]));
        batch.extend(redisforge_tests::resp::encode(&args(&["SET", "{longwait}k", "after"])));
        waiter.send_raw(&batch).expect("send the batch");
        std::thread::sleep(Duration::from_millis(600));
        let seen = other.call(&args(&["GET", "{longwait}k"])).map(|(b, _)| b).ok();
        assert_eq!(seen, Some(b"$1\r\nv\r\n".to_vec()), "{target}: the write ran while WAIT waited");
        assert_eq!(read_reply(&mut waiter), ":1\r\n", "{target}: WAIT's count");
        assert_eq!(read_reply(&mut waiter), "+OK\r\n", "{target}: then the write's reply");
        // CLIENT UNBLOCK ends a WAIT with no timeout: with its count, or with Redis' error. The
        // replica acknowledges the write first, so that the count is normally 1; under the full
        // suite's load the node itself was seen to answer 0 all the same (not explained: its
        // replica had acknowledged the write just before), so either count passes.
        let acked = waiter.call(&args(&["WAIT", "1", "5000"])).map(|(b, _)| b).ok();
        assert_eq!(acked, Some(b":1\r\n".to_vec()), "{target}: the replica acknowledged");
        let id = waiter.call(&args(&["CLIENT", "ID"])).ok().and_then(|(_, v)| v.integer()).expect("an id");
        for (how, reply) in [("TIMEOUT", ":1\r\n"), ("ERROR", "-UNBLOCKED client unblocked via CLIENT UNBLOCK\r\n")] {
            waiter.send(&args(&["WAIT", "5", "0"])).expect("send WAIT");
            let blocked = wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
                let list = other.call(&args(&["CLIENT", "LIST", "ID", &id.to_string()])).map(|(b, _)| b);
                list.is_ok_and(|l| String::from_utf8_lossy(&l).contains("flags=b"))
            });
            assert!(blocked, "{target}: the waiting client is flagged blocked");
            let unblocked = other.call(&args(&["CLIENT", "UNBLOCK", &id.to_string(), how])).map(|(b, _)| b).ok();
            assert_eq!(unblocked, Some(b":1\r\n".to_vec()), "{target}: CLIENT UNBLOCK {how}");
            // The first unblock decides: the client is no longer blocked.
            let again = other.call(&args(&["CLIENT", "UNBLOCK", &id.to_string(), "TIMEOUT"])).map(|(b, _)| b).ok();
            assert_eq!(again, Some(b":0\r\n".to_vec()), "{target}: a second CLIENT UNBLOCK after {how}");
            let got = read_reply(&mut waiter);
            let count = how == "TIMEOUT" && got == ":0\r\n";
            assert!(got == reply || count, "{target}: WAIT unblocked with {how}: {got:?}");
        }
        // Enough replicas: the reply comes as soon as they acknowledged, also with no timeout.
        assert_eq!(waiter.call(&args(&["SET", "{longwait}k", "w"])).map(|(b, _)| b).ok(), Some(b"+OK\r\n".to_vec()));
        let quick = std::time::Instant::now();
        assert_eq!(waiter.call(&args(&["WAIT", "1", "0"])).map(|(b, _)| b).ok(), Some(b":1\r\n".to_vec()));
        assert!(quick.elapsed() < Duration::from_secs(1), "{target}: WAIT 1 0 took {:?}", quick.elapsed());
    }
}

/// The proxy names the nodes' server as a node does: `INFO server` and `INFO clients` have a
/// node's fields in its order (for Valkey nodes Valkey's: `server_name`, `valkey_version`,
/// `server_mode`, 8.1's pause fields …) and HELLO's `server` and `version` are a node's (`valkey`
/// and its own version for Valkey). A Valkey cluster with `extended-redis-compatibility yes` calls
/// itself Redis 7.2.4 with `redis_mode`, and so does the proxy in front of it.
#[test]
fn info_and_hello_name_the_server_and_version_of_the_nodes() {
    let node = Cluster::shared().masters()[0].clone();
    assert_named_as(&proxy(), &node);
    if field_of(&info_section(&node, "server"), "valkey_version").is_some() {
        let options = ClusterOptions {
            extra_config: vec!["extended-redis-compatibility yes".to_owned()],
            ..ClusterOptions::default()
        };
        let cluster = Cluster::start(options);
        let proxy = Proxy::start(&cluster, ProxyOptions::default());
        let node = cluster.masters()[0].clone();
        assert!(info_section(&node, "server").contains("\r\nredis_mode:"), "the node's compatibility mode");
        assert_named_as(&proxy, &node);
        // Turned off through the proxy: HELLO names Valkey again at once, as the node does
        // (Valkey's own suite asks HELLO right after its CONFIG SET).
        let (set, _) = Conn::open(&proxy.addr())
            .call(&args(&["CONFIG", "SET", "extended-redis-compatibility", "no"]))
            .expect("CONFIG SET");
        assert_eq!(set, b"+OK\r\n", "{}", String::from_utf8_lossy(&set));
        let (hello, _) = Conn::open(&proxy.addr()).call(&args(&["HELLO", "2"])).expect("HELLO");
        assert!(String::from_utf8_lossy(&hello).contains("$6\r\nvalkey\r\n"), "{}", String::from_utf8_lossy(&hello));
        assert_named_as(&proxy, &node);
    }
}

/// `proxy` answers INFO server and clients with the fields of `node`'s, and HELLO with its server
/// name and version.
fn assert_named_as(proxy: &Proxy, node: &str) {
    let names = |text: &str| -> Vec<String> {
        let fields = text.lines().filter_map(|line| line.split_once(':')).map(|(name, _)| name.to_owned());
        fields.filter(|name| name != "redisforge_version").collect()
    };
    // HELLO's reply from `server` up to `proto`: the server's name and version.
    let identity = |addr: &str| {
        let (bytes, _) = Conn::open(addr).call(&args(&["HELLO", "2"])).expect("HELLO");
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let (start, end) = (text.find("server").unwrap_or(0), text.find("proto").unwrap_or(text.len()));
        text[start..end].to_owned()
    };
    let on_node = names(&info_section(node, "server"));
    // The proxy learns the nodes' version from its first health poll.
    let learned = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        names(&info_section(&proxy.addr(), "server")) == on_node
    });
    assert!(learned, "proxy: {:?}\nnode:  {on_node:?}", names(&info_section(&proxy.addr(), "server")));
    assert_eq!(names(&info_section(&proxy.addr(), "clients")), names(&info_section(node, "clients")));
    assert_eq!(identity(&proxy.addr()), identity(node));
}
