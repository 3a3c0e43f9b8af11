//! Transactions and blocking commands through the proxy, as against a single Redis node.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use redis::{Connection, Value};
use redisforge_tests::{Cluster, ClusterOptions, Proxy, ProxyOptions, raw_roundtrip, wait_until};

fn proxy() -> Proxy {
    Proxy::start(Cluster::shared(), ProxyOptions::default())
}

fn raw(con: &mut Connection, args: &[&str]) -> Result<Value, String> {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query(con).map_err(|e| e.to_string())
}

#[test]
fn multi_exec_runs_queued_commands_atomically() {
    let proxy = proxy();
    let mut con = proxy.client();
    let (a, b): (i64, String) = redis::pipe()
        .atomic()
        .incr("{tx}counter", 5)
        .set("{tx}name", "x")
        .ignore()
        .get("{tx}name")
        .query(&mut con)
        .expect("transaction");
    assert!(a >= 5);
    assert_eq!(b, "x");
    // Raw form: replies are +OK, +QUEUED…, then EXEC's array.
    let reply = raw_roundtrip(
        &proxy.addr(),
        b"MULTI\r\nSET {tx}a 1\r\nPING\r\nGET {tx}a\r\nEXEC\r\nQUIT\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(
        String::from_utf8_lossy(&reply),
        "+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*3\r\n+OK\r\n+PONG\r\n$1\r\n1\r\n+OK\r\n"
    );
}

#[test]
fn queued_command_errors_abort_exec_like_redis() {
    let proxy = proxy();
    let reply = raw_roundtrip(
        &proxy.addr(),
        b"MULTI\r\nSET {tx2}a 1\r\nSET other 2\r\nNOSUCH\r\nGET\r\nEXEC\r\nGET {tx2}a\r\nQUIT\r\n",
        Duration::from_secs(5),
    );
    let text = String::from_utf8_lossy(&reply);
    let lines: Vec<&str> = text.split("\r\n").collect();
    assert_eq!(lines[0], "+OK");
    assert_eq!(lines[1], "+QUEUED");
    assert_eq!(lines[2], "-CROSSSLOT Keys in request don't hash to the same slot");
    assert!(lines[3].starts_with("-ERR unknown command 'NOSUCH'"), "{text}");
    assert_eq!(lines[4], "-ERR wrong number of arguments for 'get' command");
    assert_eq!(lines[5], "-EXECABORT Transaction discarded because of previous errors.");
    assert_eq!(lines[6], "$-1", "nothing of an aborted transaction ran: {text}");
}

#[test]
fn transaction_control_errors_match_redis() {
    let proxy = proxy();
    let mut con = proxy.client();
    assert!(raw(&mut con, &["EXEC"]).expect_err("EXEC without MULTI").contains("EXEC without MULTI"));
    assert!(raw(&mut con, &["DISCARD"]).expect_err("DISCARD without MULTI").contains("DISCARD without MULTI"));
    assert_eq!(raw(&mut con, &["MULTI"]), Ok(Value::Okay));
    // Nested MULTI and WATCH inside MULTI: Redis 7.0 refuses them in the commands themselves;
    // Valkey 8 flags them `no_multi` and refuses them as any such command. The proxy answers as
    // the server it serves: compared with a node's own answers.
    let mut node = Cluster::shared().client(&Cluster::shared().node_for_key("x"));
    assert_eq!(raw(&mut node, &["MULTI"]), Ok(Value::Okay));
    let first_words = |e: String| e.split_whitespace().skip(1).take(4).collect::<Vec<_>>().join(" ");
    for args in [&["MULTI"][..], &["WATCH", "x"]] {
        let through_proxy = first_words(raw(&mut con, args).expect_err("refused inside MULTI"));
        let on_node = first_words(raw(&mut node, args).expect_err("refused inside MULTI on a node"));
        assert_eq!(through_proxy, on_node, "{args:?}");
    }
    let _ = raw(&mut node, &["DISCARD"]);
    assert_eq!(raw(&mut con, &["SET", "{tx3}k", "v"]), Ok(Value::SimpleString("QUEUED".into())));
    assert_eq!(raw(&mut con, &["DISCARD"]), Ok(Value::Okay));
    assert_eq!(raw(&mut con, &["GET", "{tx3}k"]), Ok(Value::Nil), "discarded commands never ran");
    assert_eq!(raw(&mut con, &["MULTI"]), Ok(Value::Okay));
    assert!(raw(&mut con, &["DBSIZE"]).expect_err("fan-out in multi").contains("inside a transaction"));
    assert!(raw(&mut con, &["EXEC"]).expect_err("aborted").contains("Transaction discarded"));
}

#[test]
fn watch_conflict_makes_exec_return_nil() {
    let proxy = proxy();
    let mut a = proxy.client();
    let mut b = proxy.client();
    assert_eq!(raw(&mut a, &["SET", "{w}balance", "10"]), Ok(Value::Okay));
    assert_eq!(raw(&mut a, &["WATCH", "{w}balance"]), Ok(Value::Okay));
    assert_eq!(raw(&mut a, &["GET", "{w}balance"]), Ok(Value::BulkString(b"10".to_vec())));
    assert_eq!(raw(&mut b, &["SET", "{w}balance", "99"]), Ok(Value::Okay));
    assert_eq!(raw(&mut a, &["MULTI"]), Ok(Value::Okay));
    assert_eq!(raw(&mut a, &["SET", "{w}balance", "20"]), Ok(Value::SimpleString("QUEUED".into())));
    assert_eq!(raw(&mut a, &["EXEC"]), Ok(Value::Nil), "a watched key changed: EXEC aborts");
    assert_eq!(raw(&mut a, &["GET", "{w}balance"]), Ok(Value::BulkString(b"99".to_vec())));
    // Without a conflict the same sequence commits.
    assert_eq!(raw(&mut a, &["WATCH", "{w}balance"]), Ok(Value::Okay));
    assert_eq!(raw(&mut a, &["MULTI"]), Ok(Value::Okay));
    assert_eq!(raw(&mut a, &["SET", "{w}balance", "20"]), Ok(Value::SimpleString("QUEUED".into())));
    assert_eq!(raw(&mut a, &["EXEC"]), Ok(Value::Array(vec![Value::Okay])));
    // WATCH across slots cannot be honoured by one node.
    assert_eq!(raw(&mut a, &["WATCH", "{w}x"]), Ok(Value::Okay));
    assert!(raw(&mut a, &["WATCH", "{other}y"]).expect_err("cross-slot watch").contains("hash to the same slot"));
    assert_eq!(raw(&mut a, &["UNWATCH"]), Ok(Value::Okay));
}

#[test]
fn blocking_pops_wait_on_their_own_connections_without_stalling_others() {
    let proxy = proxy();
    let stop = Arc::new(AtomicBool::new(false));
    let waiters: Vec<_> = (0..50)
        .map(|i| {
            let mut con = proxy.client();
            thread::spawn(move || {
                let got: Option<(String, String)> =
                    redis::cmd("BLPOP").arg(format!("blk:list:{i}")).arg(20).query(&mut con).expect("BLPOP");
                got
            })
        })
        .collect();
    // Give the 50 clients time to block.
    thread::sleep(Duration::from_millis(500));
    let mut busy = proxy.client();
    let started = Instant::now();
    let mut pipe = redis::pipe();
    for i in 0..5_000 {
        pipe.set(format!("blk:k:{i}"), i).ignore().get(format!("blk:k:{i}"));
    }
    let values: Vec<i64> = pipe.query(&mut busy).expect("pipelined traffic while 50 clients are blocked");
    assert_eq!(values.len(), 5_000);
    assert!(started.elapsed() < Duration::from_secs(5), "traffic stalled: {:?}", started.elapsed());
    for i in 0..50 {
        let _: i64 =
            redis::cmd("RPUSH").arg(format!("blk:list:{i}")).arg(format!("v{i}")).query(&mut busy).expect("RPUSH");
    }
    for (i, waiter) in waiters.into_iter().enumerate() {
        let got = waiter.join().expect("waiter thread");
        assert_eq!(got, Some((format!("blk:list:{i}"), format!("v{i}"))));
    }
    stop.store(true, Ordering::Relaxed);
}

#[test]
fn blocking_timeouts_are_respected_and_later_commands_wait_like_redis() {
    let proxy = proxy();
    let started = Instant::now();
    // BLPOP with a 1 s timeout, then PING pipelined behind it: the PING is answered after it.
    let reply = raw_roundtrip(&proxy.addr(), b"BLPOP blk:empty 1\r\nPING\r\nQUIT\r\n", Duration::from_secs(10));
    let waited = started.elapsed();
    assert_eq!(String::from_utf8_lossy(&reply), "*-1\r\n+PONG\r\n+OK\r\n");
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(5), "{waited:?}");
}

#[test]
fn client_disconnecting_while_blocked_releases_its_upstream_connection() {
    // Its own cluster: other tests' blocked clients would move the node's count.
    let cluster = &Cluster::start(ClusterOptions::default());
    let proxy = Proxy::start(cluster, ProxyOptions::default());
    let key = "blk:gone";
    let node = cluster.node_for_key(key);
    let blocked = |cluster: &Cluster| -> i64 {
        let info: String = redis::cmd("INFO").arg("clients").query(&mut cluster.client(&node)).expect("INFO");
        info.lines().find_map(|l| l.strip_prefix("blocked_clients:")).and_then(|v| v.trim().parse().ok()).unwrap_or(-1)
    };
    let before = blocked(cluster);
    {
        let mut stream = std::net::TcpStream::connect(proxy.addr()).expect("connect");
        std::io::Write::write_all(&mut stream, b"BLPOP blk:gone 0\r\n").expect("write");
        assert!(wait_until(Duration::from_secs(5), Duration::from_millis(50), || blocked(cluster) > before));
    }
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(50), || blocked(cluster) <= before),
        "the node still has a client blocked for a client that left"
    );
}

#[test]
fn moved_during_a_transaction_aborts_it_cleanly() {
    let cluster = Cluster::start(ClusterOptions::default());
    let proxy = Proxy::start(&cluster, ProxyOptions::default());
    let mut con = proxy.client();
    let key = "{moving}k";
    assert_eq!(raw(&mut con, &["SET", key, "before"]), Ok(Value::Okay));
    assert_eq!(raw(&mut con, &["MULTI"]), Ok(Value::Okay));
    assert_eq!(raw(&mut con, &["SET", key, "inside"]), Ok(Value::SimpleString("QUEUED".into())));
    let slot = cluster.slot_for_key(key);
    let from = cluster.node_for_slot(slot);
    let to = cluster.masters().into_iter().find(|m| *m != from).expect("another master");
    cluster.migrate_slot(slot, &from, &to);
    let exec = raw(&mut con, &["EXEC"]);
    assert!(exec.as_ref().is_err_and(|e| e.contains("Transaction discarded")), "{exec:?}");
    // The proxy follows the new owner afterwards, and nothing of the transaction ran.
    let got = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        raw(&mut con, &["GET", key]) == Ok(Value::BulkString(b"before".to_vec()))
    });
    assert!(got);
    // Once the proxy's map has caught up (it refreshes at once on the MOVED), transactions for
    // the slot run on its new owner.
    let committed = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        redis::pipe().atomic().incr(format!("{key}:n"), 1).query::<(i64,)>(&mut con).is_ok()
    });
    assert!(committed, "transactions must work again after the slot moved");
}

#[test]
fn noscript_after_a_failover_is_answered_by_loading_the_script_again() {
    let cluster = Cluster::start(ClusterOptions::default());
    let proxy = Proxy::start(&cluster, ProxyOptions::default());
    let mut con = proxy.client();
    let key = "{script}k";
    assert_eq!(raw(&mut con, &["SET", key, "v"]), Ok(Value::Okay));
    let sha: String =
        redis::cmd("SCRIPT").arg("LOAD").arg("return redis.call('GET', KEYS[1])").query(&mut con).expect("SCRIPT LOAD");
    assert_eq!(raw(&mut con, &["EVALSHA", &sha, "1", key]), Ok(Value::BulkString(b"v".to_vec())));
    // A manual failover: the promoted replica never had the master's script cache.
    let master = cluster.node_for_key(key);
    let replica = cluster.replicas_of(&master).pop().expect("a replica");
    cluster.failover(&replica);
    let exists: Vec<i64> =
        redis::cmd("SCRIPT").arg("EXISTS").arg(&sha).query(&mut cluster.client(&replica)).expect("EXISTS");
    assert_eq!(exists, [0], "the new master lacks the script");
    let recovered = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        raw(&mut con, &["EVALSHA", &sha, "1", key]) == Ok(Value::BulkString(b"v".to_vec()))
    });
    assert!(recovered, "EVALSHA must succeed after the failover");
    // A script never seen by the proxy still gets Redis' own NOSCRIPT.
    let unknown = raw(&mut con, &["EVALSHA", "ffffffffffffffffffffffffffffffffffffffff", "0"]);
    assert!(unknown.is_err_and(|e| e.contains("NOSCRIPT") || e.contains("No matching script")));
}

/// The master whose CLIENT LIST shows a connection that last ran `cmd`, and that connection's id.
fn node_connection_that_ran(cmd: &str) -> Option<(String, String)> {
    for master in Cluster::shared().masters() {
        let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut Cluster::shared().client(&master)).ok()?;
        let line = list.lines().find(|line| line.split(' ').any(|field| field == format!("cmd={cmd}")));
        if let Some(id) = line.and_then(|l| l.split(' ').find_map(|f| f.strip_prefix("id="))) {
            return Some((master, id.to_string()));
        }
    }
    None
}

#[test]
fn a_watch_lost_with_its_connection_fails_the_next_exec_and_applies_nothing() {
    let proxy = proxy();
    let mut a = proxy.client();
    let mut b = proxy.client();
    assert_eq!(raw(&mut a, &["SET", "{lostwatch}k", "1"]), Ok(Value::Okay));
    assert_eq!(raw(&mut a, &["WATCH", "{lostwatch}k"]), Ok(Value::Okay));
    // A blocking command inside WATCH runs where the WATCH is: one no other test of this binary
    // sends marks that connection on the node.
    assert_eq!(raw(&mut a, &["BZMPOP", "0.01", "1", "{lostwatch}z", "MIN"]), Ok(Value::Nil));
    // The node connection holding the WATCH goes away (a node restart or a network cut would do
    // the same); then another client writes the key, which that WATCH was there to notice.
    let (master, id) = node_connection_that_ran("bzmpop").expect("the connection holding the WATCH");
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(&id)
        .query(&mut Cluster::shared().client(&master))
        .expect("KILL");
    assert_eq!(killed, 1);
    assert_eq!(raw(&mut b, &["SET", "{lostwatch}k", "2"]), Ok(Value::Okay));
    assert_eq!(raw(&mut a, &["MULTI"]), Ok(Value::Okay));
    assert_eq!(raw(&mut a, &["SET", "{lostwatch}k", "3"]), Ok(Value::SimpleString("QUEUED".into())));
    // As a client of the node itself would see its connection fail: EXEC is an error, and the
    // transaction does not run without the WATCH (no lost update).
    let error = raw(&mut a, &["EXEC"]).expect_err("the WATCH is gone with its connection");
    assert!(error.contains("upstream connection to") && error.contains("lost"), "{error}");
    assert_eq!(raw(&mut a, &["GET", "{lostwatch}k"]), Ok(Value::BulkString(b"2".to_vec())));
    // The WATCH ended with its connection: the next transaction commits on a new one.
    assert_eq!(raw(&mut a, &["MULTI"]), Ok(Value::Okay));
    assert_eq!(raw(&mut a, &["SET", "{lostwatch}k", "4"]), Ok(Value::SimpleString("QUEUED".into())));
    assert_eq!(raw(&mut a, &["EXEC"]), Ok(Value::Array(vec![Value::Okay])));
}

/// A client pipelining transactions (and a WATCH, a blocking command) whose keys live on
/// different masters gets every reply in order: the own connection moves to the next master
/// only once what it carried is answered (it hung: the move closed the connection with the
/// first transaction's replies still owed), and a transaction of no keys stays where the own
/// connection is.
#[test]
fn pipelined_transactions_on_different_masters_each_get_their_reply() {
    let proxy = proxy();
    let tags = Cluster::shared().key_per_master("pipetx");
    assert_eq!(tags.len(), 3, "a tag on each of the shared cluster's masters: {tags:?}");
    let [a, b, c] = [&tags[0], &tags[1], &tags[2]];
    let pipeline = format!(
        "MULTI\r\nSET {{{a}}}k 1\r\nEXEC\r\n\
         MULTI\r\nSET {{{b}}}k 2\r\nEXEC\r\n\
         MULTI\r\nEXEC\r\n\
         WATCH {{{c}}}k\r\nMULTI\r\nGET {{{c}}}k\r\nEXEC\r\n\
         BLPOP {{{a}}}list 0.01\r\n\
         MULTI\r\nGET {{{a}}}k\r\nEXEC\r\n\
         GET {{{b}}}k\r\nQUIT\r\n"
    );
    let reply = raw_roundtrip(&proxy.addr(), pipeline.as_bytes(), Duration::from_secs(10));
    let expected = "+OK\r\n+QUEUED\r\n*1\r\n+OK\r\n\
                    +OK\r\n+QUEUED\r\n*1\r\n+OK\r\n\
                    +OK\r\n*0\r\n\
                    +OK\r\n+OK\r\n+QUEUED\r\n*1\r\n$-1\r\n\
                    *-1\r\n\
                    +OK\r\n+QUEUED\r\n*1\r\n$1\r\n1\r\n\
                    $1\r\n2\r\n+OK\r\n";
    assert_eq!(String::from_utf8_lossy(&reply), expected);
}

/// A client that watches a key and then runs a blocking command for a key of another master
/// keeps its WATCH, as on one node: a change of the watched key meanwhile aborts its EXEC (`nil`),
/// no change lets it commit. (The own connection moved to the blocking command's master, losing
/// the WATCH; the transaction then went there and failed with EXECABORT.)
#[test]
fn a_watch_stays_across_a_blocking_command_for_another_master() {
    let proxy = proxy();
    let tags = Cluster::shared().key_per_master("watchblock");
    let (watched, elsewhere) = (format!("{{{}}}k", tags[0]), format!("{{{}}}list", tags[1]));
    let mut a = proxy.client();
    let mut b = proxy.client();
    for changed in [true, false] {
        assert_eq!(raw(&mut a, &["SET", &watched, "1"]), Ok(Value::Okay));
        assert_eq!(raw(&mut a, &["WATCH", &watched]), Ok(Value::Okay));
        assert_eq!(raw(&mut a, &["BLPOP", &elsewhere, "0.01"]), Ok(Value::Nil));
        if changed {
            assert_eq!(raw(&mut b, &["SET", &watched, "2"]), Ok(Value::Okay));
        }
        assert_eq!(raw(&mut a, &["MULTI"]), Ok(Value::Okay));
        assert_eq!(raw(&mut a, &["SET", &watched, "3"]), Ok(Value::SimpleString("QUEUED".into())));
        let exec = raw(&mut a, &["EXEC"]);
        let expected = if changed { Value::Nil } else { Value::Array(vec![Value::Okay]) };
        assert_eq!(exec, Ok(expected), "EXEC after the watched key {}", if changed { "changed" } else { "stayed" });
        let value = if changed { b"2".to_vec() } else { b"3".to_vec() };
        assert_eq!(raw(&mut a, &["GET", &watched]), Ok(Value::BulkString(value)));
    }
}
