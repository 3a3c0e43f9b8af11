//! Protocol details where the proxy answers for one Redis node, each checked against a real node
//! with the same bytes: PING's arity, request headers that count no arguments, CLIENT REPLY
//! OFF/ON/SKIP (also ahead of a subscription that waits for the skipped reply, for a command
//! CLIENT PAUSE holds, for a reply large enough to stream, for RESET, and for requests read before
//! the client half-closes, for a subscribed client's PING and pushes), replies and the close after
//! a half-close, a RESP3 subscriber switching to RESP2, nothing run after QUIT, a `no_multi`
//! command inside MULTI; and RANDOMKEY drawing from every master, and sharded subscription counts
//! over several masters.

use std::collections::HashSet;
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use redisforge_tests::resp::Conn;
use redisforge_tests::{
    Cluster, ClusterOptions, Proxy, ProxyOptions, RedisServer, query_args, raw_roundtrip, read_until, resp_command,
    slow_script_command,
};

const WAIT: Duration = Duration::from_secs(5);

/// Runs `exchange` against the proxy and against a standalone node; the two outcomes must be
/// identical. Returns the outcome.
fn same_on_both(what: &str, exchange: impl Fn(&str) -> String) -> String {
    let proxy = Proxy::start(Cluster::shared(), ProxyOptions::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let node = RedisServer::start(dir.path(), |port| vec![format!("port {port}")]).expect("reference node");
    let (through_proxy, on_node) = (exchange(&proxy.addr()), exchange(&node.addr()));
    assert_eq!(through_proxy, on_node, "proxy vs node for {what}");
    through_proxy
}

/// Sends the same raw bytes (which end with QUIT) through the proxy and to a standalone node;
/// the two answers must be identical. Returns the answer.
fn same_as_a_node(bytes: &[u8]) -> String {
    let what = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
    same_on_both(&what, |addr| String::from_utf8_lossy(&raw_roundtrip(addr, bytes, WAIT)).into_owned())
}

#[test]
fn ping_arity_and_empty_headers_match_a_node() {
    let answer = same_as_a_node(b"PING a b c\r\nPING\r\n*-10\r\n*0\r\nPING x\r\n*-1\r\nQUIT\r\n");
    assert_eq!(answer, "-ERR wrong number of arguments for 'ping' command\r\n+PONG\r\n$1\r\nx\r\n+OK\r\n");
}

#[test]
fn client_reply_off_on_and_skip_match_a_node() {
    // The commands run while their replies are dropped: the SETs take effect.
    let answer = same_as_a_node(
        b"CLIENT REPLY OFF\r\nSET {reply}a 1\r\nGET {reply}a\r\nNOSUCH\r\nCLIENT REPLY ON\r\nGET {reply}a\r\n\
          CLIENT REPLY SKIP\r\nSET {reply}b 2\r\nGET {reply}b\r\nCLIENT REPLY SKIP\r\nCLIENT REPLY SKIP\r\n\
          PING\r\nCLIENT REPLY OFF\r\nCLIENT REPLY SKIP\r\nPING\r\nCLIENT REPLY ON\r\nCLIENT REPLY MAYBE\r\nQUIT\r\n",
    );
    assert_eq!(answer, "+OK\r\n$1\r\n1\r\n$1\r\n2\r\n+OK\r\n-ERR syntax error\r\n+OK\r\n");
}

#[test]
fn a_malformed_client_reply_is_refused_under_the_mode_in_force() {
    // Only a valid CLIENT REPLY ON|OFF|SKIP decides its own reply; a malformed one is an error
    // like any command's, which the SKIP (or OFF) in force drops.
    let answer = same_as_a_node(
        b"CLIENT REPLY SKIP\r\nCLIENT REPLY FOO\r\nPING\r\nCLIENT REPLY OFF\r\nCLIENT REPLY\r\nCLIENT REPLY ON\r\nPING\r\nQUIT\r\n",
    );
    assert_eq!(answer, "+PONG\r\n+OK\r\n+PONG\r\n+OK\r\n");
}

#[test]
fn a_subscription_behind_a_skipped_reply_still_goes_out() {
    // SUBSCRIBE waits for the GET before it, whose reply CLIENT REPLY SKIP drops: when that reply
    // comes, nothing is written, and the subscription must go out all the same.
    let answer = same_as_a_node(b"CLIENT REPLY SKIP\r\nGET {skipsub}a\r\nSUBSCRIBE {skipsub}ch\r\nQUIT\r\n");
    assert_eq!(answer, "*3\r\n$9\r\nsubscribe\r\n$11\r\n{skipsub}ch\r\n:1\r\n+OK\r\n");
}

/// PUBLISHes `message` on `channel` through `addr` until one subscriber gets it (bounded).
fn publish_until_heard(addr: &str, channel: &str, message: &str) {
    let mut publisher = TcpStream::connect(addr).expect("connect");
    let publish = resp_command(&[b"PUBLISH", channel.as_bytes(), message.as_bytes()]);
    for _ in 0..100 {
        publisher.write_all(&publish).expect("PUBLISH");
        if read_until(&mut publisher, WAIT, |r| r.ends_with(b"\r\n")) == b":1\r\n" {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no subscriber heard {message} on {channel}");
}

#[test]
fn a_skipped_subscribe_still_confirms_and_messages_still_come() {
    // Confirmations and messages are pushes, which CLIENT REPLY SKIP does not silence.
    let answer = same_on_both("CLIENT REPLY SKIP before SUBSCRIBE", |addr| {
        let mut sub = TcpStream::connect(addr).expect("connect");
        sub.write_all(b"CLIENT REPLY SKIP\r\nSUBSCRIBE {skipconf}ch\r\nPING\r\n").expect("write");
        let mut seen = read_until(&mut sub, WAIT, |r| r.ends_with(b"pong\r\n$0\r\n\r\n"));
        publish_until_heard(addr, "{skipconf}ch", "m");
        // The message and the publisher's reply travel different connections behind a proxy:
        // QUIT goes once the message is in, so that its +OK cannot overtake it.
        seen.extend(read_until(&mut sub, WAIT, |r| r.ends_with(b"$1\r\nm\r\n")));
        sub.write_all(b"QUIT\r\n").expect("QUIT");
        seen.extend(read_until(&mut sub, WAIT, |_| false));
        String::from_utf8_lossy(&seen).into_owned()
    });
    let confirmation = "*3\r\n$9\r\nsubscribe\r\n$12\r\n{skipconf}ch\r\n:1\r\n";
    let message = "*3\r\n$7\r\nmessage\r\n$12\r\n{skipconf}ch\r\n$1\r\nm\r\n";
    assert_eq!(answer, format!("{confirmation}*2\r\n$4\r\npong\r\n$0\r\n\r\n{message}+OK\r\n"));
}

#[test]
fn a_subscribed_ping_and_error_are_silenced_while_replies_are_off_but_pushes_are_not() {
    // The PING goes to the subscription's connection; its answer comes back from there, after
    // the reply mode was decided. The GET is refused in subscribed mode by the proxy itself.
    let answer = same_on_both("CLIENT REPLY OFF while subscribed", |addr| {
        let mut sub = TcpStream::connect(addr).expect("connect");
        sub.write_all(b"CLIENT REPLY OFF\r\nSUBSCRIBE {silent}ch\r\nPING\r\nGET {silent}k\r\n").expect("write");
        let mut seen = read_until(&mut sub, WAIT, |r| r.ends_with(b":1\r\n"));
        publish_until_heard(addr, "{silent}ch", "m");
        seen.extend(read_until(&mut sub, WAIT, |r| r.ends_with(b"$1\r\nm\r\n")));
        sub.write_all(b"UNSUBSCRIBE\r\nCLIENT REPLY ON\r\nPING\r\nQUIT\r\n").expect("ON");
        seen.extend(read_until(&mut sub, WAIT, |_| false));
        String::from_utf8_lossy(&seen).into_owned()
    });
    let subscribed = "*3\r\n$9\r\nsubscribe\r\n$10\r\n{silent}ch\r\n:1\r\n";
    let message = "*3\r\n$7\r\nmessage\r\n$10\r\n{silent}ch\r\n$1\r\nm\r\n";
    let unsubscribed = "*3\r\n$11\r\nunsubscribe\r\n$10\r\n{silent}ch\r\n:0\r\n";
    assert_eq!(answer, format!("{subscribed}{message}{unsubscribed}+OK\r\n+PONG\r\n+OK\r\n"));
}

/// A RESP2 subscriber's other commands are refused with Redis' text, which names a subcommand
/// as Redis' table does (`client|id`); an unknown command or a wrong arity is refused as such
/// first, as `processCommand` checks those before the subscribed context.
#[test]
fn commands_refused_while_subscribed_are_named_as_a_node_names_them() {
    let answer = same_on_both("commands while subscribed", |addr| {
        let mut sub = TcpStream::connect(addr).expect("connect");
        sub.write_all(b"SUBSCRIBE {subnames}ch\r\n").expect("write");
        let mut seen = read_until(&mut sub, WAIT, |r| r.ends_with(b":1\r\n"));
        sub.write_all(
            b"CLIENT ID\r\nCONFIG GET maxmemory\r\nGET {subnames}k\r\nNOSUCH\r\nGET\r\nUNSUBSCRIBE\r\nQUIT\r\n",
        )
        .expect("write");
        seen.extend(read_until(&mut sub, WAIT, |_| false));
        String::from_utf8_lossy(&seen).into_owned()
    });
    assert!(answer.contains("-ERR Can't execute 'client|id': only"), "{answer}");
    assert!(answer.contains("-ERR Can't execute 'config|get': only"), "{answer}");
    assert!(answer.contains("-ERR Can't execute 'get': only"), "{answer}");
    assert!(answer.contains("-ERR unknown command 'NOSUCH'"), "{answer}");
    assert!(answer.contains("-ERR wrong number of arguments for 'get' command"), "{answer}");
}

/// A RESP2 subscriber with only a shard channel left gets PING in subscribed mode's form, also
/// after an UNSUBSCRIBE of a channel it never subscribed (which reaches a node on a connection
/// subscribed to nothing).
#[test]
fn a_shard_only_subscribers_ping_is_answered_in_subscribed_form_as_on_a_node() {
    let answer = same_as_a_node(b"SSUBSCRIBE {subping}sch\r\nUNSUBSCRIBE {subping}ch\r\nPING\r\nPING x\r\nQUIT\r\n");
    assert!(answer.ends_with("*2\r\n$4\r\npong\r\n$0\r\n\r\n*2\r\n$4\r\npong\r\n$1\r\nx\r\n+OK\r\n"), "{answer}");
}

/// A RESP2 subscriber's EXEC is refused as Redis' `rejectCommand` refuses it: with EXECABORT,
/// and the WATCH before it ends — a later transaction commits although the watched key changed.
#[test]
fn an_exec_refused_while_subscribed_aborts_and_ends_the_watch_as_on_a_node() {
    let answer = same_on_both("EXEC while subscribed", |addr| {
        let mut client = TcpStream::connect(addr).expect("connect");
        client.write_all(b"WATCH {subexec}k\r\nSUBSCRIBE {subexec}ch\r\n").expect("write");
        let mut seen = read_until(&mut client, WAIT, |r| r.ends_with(b"ch\r\n:1\r\n"));
        client.write_all(b"EXEC\r\nUNSUBSCRIBE {subexec}ch\r\n").expect("write");
        seen.extend(read_until(&mut client, WAIT, |r| r.ends_with(b"ch\r\n:0\r\n")));
        let mut other = Conn::open(addr);
        let changed = other.call(&[b"SET".to_vec(), b"{subexec}k".to_vec(), b"other".to_vec()]);
        assert!(matches!(&changed, Ok((r, _)) if r == b"+OK\r\n"), "{changed:?}");
        client.write_all(b"MULTI\r\nSET {subexec}k mine\r\nEXEC\r\nQUIT\r\n").expect("write");
        seen.extend(read_until(&mut client, WAIT, |_| false));
        String::from_utf8_lossy(&seen).into_owned()
    });
    assert!(answer.contains("-EXECABORT Transaction discarded because of: Can't execute 'exec': only"), "{answer}");
    // Not `*-1`: the WATCH ended with the refused EXEC.
    assert!(answer.ends_with("+OK\r\n+QUEUED\r\n*1\r\n+OK\r\n+OK\r\n"), "{answer}");
}

#[test]
fn a_resp3_subscriber_that_switches_to_resp2_gets_what_a_resp2_subscriber_gets() {
    // HELLO's replies, which differ between the two, are skipped.
    let answer = same_on_both("HELLO 2 while subscribed in RESP3", |addr| {
        let mut sub = TcpStream::connect(addr).expect("connect");
        sub.write_all(b"CLIENT REPLY SKIP\r\nHELLO 3\r\nSUBSCRIBE {hello2}ch\r\n").expect("write");
        let mut seen = read_until(&mut sub, WAIT, |r| r.ends_with(b":1\r\n"));
        sub.write_all(b"CLIENT REPLY SKIP\r\nHELLO 2\r\nPING\r\nPING hi\r\n").expect("HELLO 2");
        seen.extend(read_until(&mut sub, WAIT, |r| r.ends_with(b"$2\r\nhi\r\n")));
        publish_until_heard(addr, "{hello2}ch", "m");
        seen.extend(read_until(&mut sub, WAIT, |r| r.ends_with(b"$1\r\nm\r\n")));
        sub.write_all(b"GET {hello2}k\r\nUNSUBSCRIBE\r\nUNSUBSCRIBE\r\nQUIT\r\n").expect("UNSUBSCRIBE");
        seen.extend(read_until(&mut sub, WAIT, |_| false));
        String::from_utf8_lossy(&seen).into_owned()
    });
    let pongs = "*2\r\n$4\r\npong\r\n$0\r\n\r\n*2\r\n$4\r\npong\r\n$2\r\nhi\r\n";
    let message = "*3\r\n$7\r\nmessage\r\n$10\r\n{hello2}ch\r\n$1\r\nm\r\n";
    assert!(answer.starts_with(">3\r\n$9\r\nsubscribe\r\n$10\r\n{hello2}ch\r\n:1\r\n"), "{answer}");
    assert!(answer.contains(&format!("{pongs}{message}-ERR Can't execute 'get'")), "{answer}");
    assert!(answer.ends_with("*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n+OK\r\n"), "{answer}");
}

#[test]
fn a_skipped_reply_stays_skipped_for_a_command_client_pause_held() {
    let answer = same_on_both("CLIENT REPLY SKIP before a SET that CLIENT PAUSE WRITE holds", |addr| {
        let mut pauser = TcpStream::connect(addr).expect("connect");
        pauser.write_all(b"CLIENT PAUSE 300 WRITE\r\n").expect("write");
        assert_eq!(read_until(&mut pauser, WAIT, |r| r.ends_with(b"\r\n")), b"+OK\r\n");
        let reply = raw_roundtrip(addr, b"CLIENT REPLY SKIP\r\nSET {held}k v\r\nGET {held}k\r\nQUIT\r\n", WAIT);
        String::from_utf8_lossy(&reply).into_owned()
    });
    assert_eq!(answer, "$1\r\nv\r\n+OK\r\n");
}

#[test]
fn a_large_reply_under_client_reply_off_is_not_streamed_out() {
    // 1 MiB: well past the size from which the proxy passes a reply on in pieces.
    let value = vec![b'x'; 1 << 20];
    let mut bytes = b"CLIENT REPLY OFF\r\n".to_vec();
    bytes.extend_from_slice(&resp_command(&[b"SET", b"{bigoff}k", &value]));
    bytes.extend_from_slice(b"GET {bigoff}k\r\nCLIENT REPLY ON\r\nPING\r\nDEL {bigoff}k\r\nQUIT\r\n");
    assert_eq!(same_as_a_node(&bytes), "+OK\r\n+PONG\r\n:1\r\n+OK\r\n");
}

#[test]
fn reset_answers_when_replies_are_off_and_is_skipped_like_any_command() {
    // RESET turns CLIENT REPLY OFF back on before it answers; a SKIP skips RESET's own reply.
    let answer = same_as_a_node(b"CLIENT REPLY OFF\r\nRESET\r\nPING\r\nCLIENT REPLY SKIP\r\nRESET\r\nPING\r\nQUIT\r\n");
    assert_eq!(answer, "+RESET\r\n+PONG\r\n+PONG\r\n+OK\r\n");
}

#[test]
fn requests_read_before_a_half_close_all_run_when_replies_are_off() {
    // HELLO 3 waits for SET a, still out, and SET b behind it; then the client
    // half-closes. Every request it sent runs, as on a node.
    let outcome = same_on_both("requests before a half-close, replies off, HELLO 3 in between", |addr| {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.write_all(b"CLIENT REPLY OFF\r\nSET {eof}a 1\r\nHELLO 3\r\nSET {eof}b 2\r\n").expect("write");
        stream.shutdown(Shutdown::Write).expect("half-close");
        let before_close = read_until(&mut stream, WAIT, |_| false);
        let after = raw_roundtrip(addr, b"MGET {eof}a {eof}b\r\nDEL {eof}a {eof}b\r\nQUIT\r\n", WAIT);
        format!("{:?} then {}", String::from_utf8_lossy(&before_close), String::from_utf8_lossy(&after))
    });
    assert_eq!(outcome, "\"\" then *2\r\n$1\r\n1\r\n$1\r\n2\r\n:2\r\n+OK\r\n");
}

#[test]
fn a_client_that_half_closes_gets_every_reply_and_then_the_close() {
    // The last reply (a slow script's) comes after the client's end of the connection is read: it
    // is written by whoever handles it, and the connection then closes, as a node closes it.
    let outcome = same_on_both("replies after a half-close, then the close", |addr| {
        let _ = raw_roundtrip(addr, b"DEL {hc}a\r\nQUIT\r\n", WAIT);
        let mut stream = TcpStream::connect(addr).expect("connect");
        let mut requests = b"GET {hc}a\r\nSET {hc}a 1\r\nGET {hc}a\r\n".to_vec();
        requests.extend(slow_script_command());
        stream.write_all(&requests).expect("write");
        stream.shutdown(Shutdown::Write).expect("half-close");
        let started = std::time::Instant::now();
        let replies = read_until(&mut stream, WAIT, |_| false);
        // At once, not when something else (the idle trimmer, 2 s on) happens to look.
        let closed = started.elapsed() < Duration::from_millis(1800);
        let _ = raw_roundtrip(addr, b"DEL {hc}a\r\nQUIT\r\n", WAIT);
        format!("{:?}, closed: {closed}", String::from_utf8_lossy(&replies))
    });
    assert_eq!(outcome, "\"$-1\\r\\n+OK\\r\\n$1\\r\\n1\\r\\n$4\\r\\nslow\\r\\n\", closed: true");
}

#[test]
fn nothing_sent_after_quit_runs() {
    // QUIT waits behind a script that takes a while; meanwhile the client sends a SET, which a
    // node never runs once QUIT was read.
    let outcome = same_on_both("a SET sent after QUIT, before QUIT's reply", |addr| {
        let mut first = slow_script_command();
        first.extend_from_slice(b"QUIT\r\n");
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.write_all(&first).expect("write");
        std::thread::sleep(Duration::from_millis(30));
        // Ignored by the peer once QUIT was read (it may already have closed: no error expected).
        let _ = stream.write_all(b"SET {afterquit}k v\r\n");
        let answers = read_until(&mut stream, WAIT, |_| false);
        let after = raw_roundtrip(addr, b"EXISTS {afterquit}k\r\nQUIT\r\n", WAIT);
        format!("{} then {}", String::from_utf8_lossy(&answers), String::from_utf8_lossy(&after))
    });
    assert_eq!(outcome, "$4\r\nslow\r\n+OK\r\n then :0\r\n+OK\r\n");
}

#[test]
fn a_no_multi_command_inside_multi_gets_redis_error_and_aborts_exec() {
    let answer = same_as_a_node(b"MULTI\r\nSET {nomulti}a 1\r\nSAVE\r\nEXEC\r\nGET {nomulti}a\r\nQUIT\r\n");
    assert!(answer.contains("-ERR Command not allowed inside a transaction\r\n-EXECABORT"), "{answer}");
}

#[test]
fn randomkey_draws_from_every_master() {
    // A cluster of its own: the three keys below are all it holds, so RANDOMKEY can only answer
    // one of them, each a third of the time.
    let cluster = Cluster::start(ClusterOptions { replicas_per_master: 0, ..ClusterOptions::default() });
    let proxy = Proxy::start(&cluster, ProxyOptions::default());
    let mut con = proxy.client();
    let keys = cluster.key_per_master("randomkey");
    for key in &keys {
        assert_eq!(query_args(&mut con, &["SET", key, "v"]), Ok(redis::Value::Okay));
    }
    let mut seen = HashSet::new();
    for _ in 0..300 {
        if let Ok(redis::Value::BulkString(key)) = query_args(&mut con, &["RANDOMKEY"]) {
            seen.insert(String::from_utf8_lossy(&key).into_owned());
        }
        if keys.iter().all(|k| seen.contains(k)) {
            break;
        }
    }
    assert!(keys.iter().all(|k| seen.contains(k)), "RANDOMKEY drew only {seen:?} of {keys:?}");
}

/// Valkey 8's SCRIPT SHOW: a script cached by EVAL is known only to the master that ran it, yet a
/// client of one node finds it whatever key it used; the proxy asks every master.
#[test]
fn script_show_finds_a_script_that_eval_cached_on_any_master() {
    let cluster = Cluster::shared();
    let proxy = Proxy::start(cluster, ProxyOptions::default());
    let mut con = proxy.client();
    if query_args(&mut con, &["COMMAND", "INFO", "script|show"]) == Ok(redis::Value::Array(vec![redis::Value::Nil])) {
        println!("skipped: this server version has no SCRIPT SHOW");
        return;
    }
    // A standalone node computes the script's SHA1 without caching it in the cluster.
    let dir = tempfile::tempdir().expect("tempdir");
    let node = RedisServer::start(dir.path(), |port| vec![format!("port {port}")]).expect("reference node");
    let mut reference = redis::Client::open(format!("redis://{}/", node.addr())).and_then(|c| c.get_connection());
    let reference = reference.as_mut().expect("connect to the reference node");
    for key in cluster.key_per_master("script-show") {
        let body = format!("return 'shown {key}'");
        let Ok(redis::Value::BulkString(sha)) = query_args(reference, &["SCRIPT", "LOAD", &body]) else {
            panic!("SCRIPT LOAD on the reference node")
        };
        let sha = String::from_utf8_lossy(&sha).into_owned();
        assert!(query_args(&mut con, &["EVAL", &body, "1", &key]).is_ok(), "EVAL with {key}");
        let shown = query_args(&mut con, &["SCRIPT", "SHOW", &sha]);
        assert_eq!(shown, Ok(redis::Value::BulkString(body.into_bytes())), "SCRIPT SHOW after EVAL with {key}");
    }
    let unknown = query_args(&mut con, &["SCRIPT", "SHOW", "ffffffffffffffffffffffffffffffffffffffff"]);
    assert!(matches!(&unknown, Err(e) if e.contains("No matching script")), "{unknown:?}");
}

/// CONFIG SET inside MULTI is queued and answered inside EXEC's reply as on a node, and the setting
/// reaches every node of the cluster (as CONFIG SET outside a transaction does) once EXEC ran it;
/// a transaction a WATCH aborted changes no node.
#[test]
fn config_set_inside_multi_is_queued_and_reaches_every_node() {
    let answer = same_as_a_node(
        b"MULTI\r\nCONFIG SET maxmemory-samples 7\r\nCONFIG SET nosuch-parameter 1\r\nSET {cfgmulti}a 1\r\nEXEC\r\n\
          CONFIG GET maxmemory-samples\r\nCONFIG SET maxmemory-samples 5\r\nQUIT\r\n",
    );
    assert!(answer.starts_with("+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*3\r\n+OK\r\n-ERR"), "{answer}");
    // Every node, replicas included, ran it; then WATCH aborts a second one.
    let cluster = Cluster::shared();
    let proxy = Proxy::start(cluster, ProxyOptions::default());
    let mut con = proxy.client();
    let mut other = proxy.client();
    let samples = |value: &str| {
        cluster.nodes().into_iter().all(|addr| {
            let mut node = redis::Client::open(format!("redis://{addr}/")).and_then(|c| c.get_connection());
            let got = node.as_mut().map(|n| query_args(n, &["CONFIG", "GET", "maxmemory-samples"]));
            matches!(got, Ok(Ok(redis::Value::Array(items))) if items.get(1) == Some(&redis::Value::BulkString(value.into())))
        })
    };
    for command in [&["MULTI"][..], &["CONFIG", "SET", "maxmemory-samples", "9"], &["EXEC"]] {
        assert!(query_args(&mut con, command).is_ok(), "{command:?}");
    }
    assert!(samples("9"), "every node has maxmemory-samples 9");
    assert!(query_args(&mut con, &["WATCH", "{cfgmulti}w"]).is_ok());
    assert!(query_args(&mut other, &["SET", "{cfgmulti}w", "changed"]).is_ok());
    for command in [&["MULTI"][..], &["CONFIG", "SET", "maxmemory-samples", "3"]] {
        assert!(query_args(&mut con, command).is_ok(), "{command:?}");
    }
    assert_eq!(query_args(&mut con, &["EXEC"]), Ok(redis::Value::Nil), "the WATCH aborted the transaction");
    assert!(samples("9"), "no node took the aborted setting");
    assert!(query_args(&mut con, &["CONFIG", "SET", "maxmemory-samples", "5"]).is_ok());
}

/// `commands`, each as a RESP array, one after the other.
fn resp_commands(commands: &[&[&[u8]]]) -> Vec<u8> {
    commands.iter().flat_map(|command| resp_command(command)).collect()
}

/// A pipeline mixing the kinds of node connection a client's requests travel — the pooled one,
/// script lanes, the client's own (transactions, WATCH) — runs in the order sent, as on one
/// node: a script sees the SET before it, a GET the script's write, a transaction the write
/// before it and a GET the transaction's, two scripts run in turn, and the client's own write
/// after its WATCH aborts its EXEC. Without the order (each connection runs its own requests in
/// order, not the client's) nearly every round of this came back wrong.
#[test]
fn a_pipeline_across_pool_script_lanes_and_own_connection_runs_in_order_as_on_a_node() {
    const KEY: &[u8] = b"{chanorder}k";
    let script = |body: &'static [u8]| -> [&[u8]; 4] { [b"EVAL", body, b"1", KEY] };
    let (get, incr, set5) = (
        script(b"return redis.call('GET', KEYS[1])"),
        script(b"return redis.call('INCR', KEYS[1])"),
        script(b"return redis.call('SET', KEYS[1], '5')"),
    );
    let round: Vec<&[&[u8]]> = vec![
        &[b"SET", KEY, b"0"],
        &get,
        &set5,
        &[b"GET", KEY],
        &incr,
        &incr,
        &[b"MULTI"],
        &[b"SET", KEY, b"2"],
        &[b"EXEC"],
        &[b"GET", KEY],
        &[b"SET", KEY, b"1"],
        &[b"MULTI"],
        &[b"GET", KEY],
        &[b"EXEC"],
        &[b"WATCH", KEY],
        &[b"SET", KEY, b"3"],
        &[b"MULTI"],
        &[b"INCR", KEY],
        &[b"EXEC"],
        &[b"GET", KEY],
    ];
    let mut commands: Vec<&[&[u8]]> = (0..5).flat_map(|_| round.iter().copied()).collect();
    commands.push(&[b"DEL", KEY]);
    commands.push(&[b"QUIT"]);
    let answer = same_as_a_node(&resp_commands(&commands));
    let one = "+OK\r\n$1\r\n0\r\n+OK\r\n$1\r\n5\r\n:6\r\n:7\r\n+OK\r\n+QUEUED\r\n*1\r\n+OK\r\n$1\r\n2\r\n\
               +OK\r\n+OK\r\n+QUEUED\r\n*1\r\n$1\r\n1\r\n+OK\r\n+OK\r\n+OK\r\n+QUEUED\r\n*-1\r\n$1\r\n3\r\n";
    assert_eq!(answer, format!("{}:1\r\n+OK\r\n", one.repeat(5)));
}

/// A client that pipelines a write and a blocking pop and closes at once: the pop, which waits
/// for the write's reply before it goes out on the client's own connection, must not block for a
/// client that is gone — as Redis frees it at EOF — so a later push stays in the list.
#[test]
fn a_blocking_pop_sent_after_the_client_left_pops_nothing_as_on_a_node() {
    let answer = same_on_both("blocking pop after EOF", |addr| {
        let mut leaving = TcpStream::connect(addr).expect("connect");
        leaving
            .write_all(&resp_commands(&[&[&b"SET"[..], b"{eofpop}k", b"v"][..], &[b"BLPOP", b"{eofpop}q", b"0"]]))
            .expect("write");
        drop(leaving);
        std::thread::sleep(Duration::from_millis(300));
        let mut other = Conn::open(addr);
        let mut seen = other.call(&[b"RPUSH".to_vec(), b"{eofpop}q".to_vec(), b"x".to_vec()]).expect("RPUSH").0;
        std::thread::sleep(Duration::from_millis(200));
        seen.extend(other.call(&[b"LLEN".to_vec(), b"{eofpop}q".to_vec()]).expect("LLEN").0);
        let _ = other.call(&[b"DEL".to_vec(), b"{eofpop}q".to_vec(), b"{eofpop}k".to_vec()]);
        String::from_utf8_lossy(&seen).into_owned()
    });
    assert_eq!(answer, ":1\r\n:1\r\n", "the element stays: no one popped it");
}

/// Inside MULTI, PUBLISH does not tie the transaction to the pub/sub home's slot (any master
/// publishes to the whole cluster), and a command whose numkeys a node cannot read is queued, its
/// own error coming in EXEC's array, as on a node (the transaction was refused with EXECABORT).
#[test]
fn publish_and_a_bad_numkeys_inside_multi_are_queued_as_on_a_node() {
    let bytes = resp_commands(&[
        &[&b"MULTI"[..]][..],
        &[b"SET", b"{pubtx}k", b"1"],
        &[b"PUBLISH", b"pubtx:nobody", b"hi"],
        &[b"EVAL", b"return 1", b"5", b"a"],
        &[b"GET", b"{pubtx}k"],
        &[b"EXEC"],
        &[b"DEL", b"{pubtx}k"],
        &[b"QUIT"],
    ]);
    let answer = same_as_a_node(&bytes);
    assert_eq!(
        answer,
        "+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n\
         *4\r\n+OK\r\n:0\r\n-ERR Number of keys can't be greater than number of args\r\n$1\r\n1\r\n:1\r\n+OK\r\n"
    );
}

/// CLIENT KILL as on a node: a client killed already is not killed (or counted) again; a client
/// that kills itself gets the replies before and of the kill and is closed, and what it sent
/// after the kill does not run. CLIENT TRACKING's REDIRECT id is read as Redis reads integers.
/// (An option given twice: `proxy_clients::client_kill_keeps_the_last_value_of_an_option_given_twice`.)
#[test]
fn client_kill_repeats_self_kills_and_redirect_ids_as_on_a_node() {
    let answer = same_on_both("CLIENT KILL", |addr| {
        let id = |con: &mut Conn| match con.call(&[b"CLIENT".to_vec(), b"ID".to_vec()]) {
            Ok((_, frame)) => frame.integer().expect("an id"),
            Err(e) => panic!("CLIENT ID: {e}"),
        };
        let (mut first, mut second) = (Conn::open(addr), Conn::open(addr));
        let (first_id, second_id) = (id(&mut first), id(&mut second));
        let mut killer = TcpStream::connect(addr).expect("connect");
        let own: Vec<u8> = resp_command(&[b"CLIENT", b"INFO"]);
        killer.write_all(&own).expect("CLIENT INFO");
        let info = String::from_utf8_lossy(&read_until(&mut killer, WAIT, |r| r.ends_with(b"\n\r\n"))).into_owned();
        let own_addr = info.split(' ').find_map(|f| f.strip_prefix("addr=")).expect("addr=").to_owned();
        let (first_id, second_id) = (first_id.to_string(), second_id.to_string());
        let plus_id = format!("+{first_id}");
        let pipeline = [
            &[&b"CLIENT"[..], b"TRACKING", b"ON", b"REDIRECT", plus_id.as_bytes()][..],
            &[b"CLIENT", b"KILL", b"ID", second_id.as_bytes()],
            &[b"CLIENT", b"KILL", b"ID", second_id.as_bytes()],
            &[b"SET", b"{selfkill}k", b"before"],
            &[b"CLIENT", b"KILL", own_addr.as_bytes()],
            &[b"SET", b"{selfkill}k", b"after"],
        ];
        killer.write_all(&resp_commands(&pipeline)).expect("pipeline");
        let mut seen = read_until(&mut killer, WAIT, |_| false);
        let mut check = Conn::open(addr);
        seen.extend(check.call(&[b"GET".to_vec(), b"{selfkill}k".to_vec()]).expect("GET").0);
        seen.extend(first.call(&[b"PING".to_vec()]).expect("the first client lives").0);
        let _ = check.call(&[b"DEL".to_vec(), b"{selfkill}k".to_vec()]);
        String::from_utf8_lossy(&seen).into_owned()
    });
    assert_eq!(
        answer,
        "-ERR value is not an integer or out of range\r\n:1\r\n:0\r\n+OK\r\n+OK\r\n$6\r\nbefore\r\n+PONG\r\n"
    );
}

/// HELLO's protocol version and SELECT's index are read as Redis reads integers (no `+`, no
/// leading zeros, no `-0`), so what is not one gets Redis' integer error, not the version's or
/// the index's.
#[test]
fn hello_and_select_parse_their_numbers_as_a_node_does() {
    let bytes = resp_commands(&[
        &[&b"HELLO"[..], b"+3"][..],
        &[b"HELLO", b"03"],
        &[b"HELLO", b"-0"],
        &[b"HELLO", b"4"],
        &[b"SELECT", b"abc"],
        &[b"SELECT", b"00"],
        &[b"SELECT", b"99999999999"],
        &[b"SELECT", b"0"],
        &[b"QUIT"],
    ]);
    let answer = same_as_a_node(&bytes);
    let not_integer = "-ERR Protocol version is not an integer or out of range\r\n";
    let expected = format!(
        "{not_integer}{not_integer}{not_integer}-NOPROTO unsupported protocol version\r\n\
         -ERR value is not an integer or out of range\r\n-ERR value is not an integer or out of range\r\n\
         -ERR value is out of range, value must between -2147483648 and 2147483647\r\n+OK\r\n+OK\r\n"
    );
    assert_eq!(answer, expected);
}

/// HELLO's SETNAME is checked as CLIENT SETNAME is, where Redis checks it (before the options
/// after it and before the protocol changes), and an empty name clears the name. A HELLO that
/// works answers with this connection's id, so its reply is skipped (`CLIENT REPLY SKIP`).
#[test]
fn hello_setname_is_checked_and_an_empty_name_clears_it_as_on_a_node() {
    let bytes = resp_commands(&[
        &[&b"CLIENT"[..], b"SETNAME", b"first"][..],
        &[b"HELLO", b"3", b"SETNAME", b"a b"],
        &[b"HELLO", b"3", b"SETNAME", b"new\nline", b"BOGUS"],
        &[b"HELLO", b"3", b"BOGUS", b"SETNAME", b"a b"],
        &[b"CLIENT", b"GETNAME"],
        &[b"CLIENT", b"REPLY", b"SKIP"],
        &[b"HELLO", b"2", b"SETNAME", b""],
        &[b"CLIENT", b"GETNAME"],
        &[b"QUIT"],
    ]);
    let answer = same_as_a_node(&bytes);
    let bad_name = "-ERR Client names cannot contain spaces, newlines or special characters.\r\n";
    let expected = format!(
        "+OK\r\n{bad_name}{bad_name}-ERR Syntax error in HELLO option 'BOGUS'\r\n$5\r\nfirst\r\n$-1\r\n+OK\r\n"
    );
    assert_eq!(answer, expected, "RESP2 throughout; the empty name cleared the name");
}

/// HELLO applies its options in the order of the nodes' version: Redis 7.0 sets the name as it
/// reads SETNAME, so a bad option after it leaves the name set; 7.2 and later (Valkey 8 too) read
/// every option first and set nothing.
#[test]
fn hello_applies_its_options_in_the_order_of_the_nodes_version() {
    let bytes = resp_commands(&[
        &[&b"HELLO"[..], b"2", b"SETNAME", b"early", b"BOGUS"][..],
        &[b"CLIENT", b"GETNAME"],
        &[b"HELLO", b"2", b"SETNAME", b"later", b"SETNAME", b"a b"],
        &[b"CLIENT", b"GETNAME"],
        &[b"QUIT"],
    ]);
    let answer = same_as_a_node(&bytes);
    assert!(answer.starts_with("-ERR Syntax error in HELLO option 'BOGUS'\r\n"), "{answer}");
    let version: String = redis::cmd("INFO")
        .arg("server")
        .query(&mut Cluster::shared().client(&Cluster::shared().masters()[0]))
        .expect("INFO");
    let redis_7_0 = version.contains("redis_version:7.0.");
    let names = if redis_7_0 { "$5\r\nearly\r\n" } else { "$-1\r\n" };
    assert!(
        answer.contains(names),
        "the name after the bad option ({}): {answer}",
        if redis_7_0 { "7.0" } else { "7.2 on" }
    );
}

/// An unknown command's error quotes the command and its first arguments as Redis does, byte for
/// byte: the raw bytes (not UTF-8 with replacement characters), each cut at a NUL, the arguments
/// together at about 128 bytes, `\r` and `\n` as spaces; an unknown subcommand, a bad HELLO
/// option, CLIENT LIST's unknown type and CLIENT KILL's unknown user likewise.
#[test]
fn unknown_command_errors_quote_arguments_as_a_node_does() {
    let long = vec![b'a'; 200];
    let bytes = resp_commands(&[
        &[&b"NOSUCH"[..], &long, b"second"][..],
        &[b"NOSUCH", b"x", b"y", b"z"],
        &[b"NOSUCH", &long[..100], b"second-argument", b"third"],
        &[b"NO\xffSUCH", b"caf\xc3\xa9", b"bin\xfe\xff"],
        &[b"NOSUCH", b"be\0fore", b"a\r\nb"],
        &[b"CONFIG", b"NOSUCHSUB\xff"],
        &[b"HELLO", b"2", b"BAD\xffOPTION"],
        &[b"CLIENT", b"LIST", b"TYPE", b"bad\xfftype"],
        &[b"CLIENT", b"KILL", b"USER", b"no\xffuser"],
        &[b"QUIT"],
    ]);
    let escaped = |addr: &str| raw_roundtrip(addr, &bytes, WAIT).escape_ascii().to_string();
    let answer = same_on_both("unknown commands with long, binary and NUL arguments", escaped);
    assert!(answer.starts_with("-ERR unknown command \\'NOSUCH\\', with args beginning with: \\'aaaa"), "{answer}");
    assert!(answer.contains("\\'NO\\xffSUCH\\'"), "the raw byte: {answer}");
}

/// The connection commands the proxy answers itself are queued inside MULTI and run at EXEC, their
/// replies at their places in EXEC's array, errors included, as on a node; beside a setting
/// (which also goes to the other nodes, as its own part), and in a transaction of nothing else.
#[test]
fn connection_commands_inside_multi_run_at_exec_as_on_a_node() {
    let bytes = resp_commands(&[
        &[&b"MULTI"[..]][..],
        &[b"CONFIG", b"SET", b"lfu-log-factor", b"10"],
        &[b"CLIENT", b"SETNAME", b"tx-name"],
        &[b"SET", b"{connmulti}k", b"v"],
        &[b"CLIENT", b"GETNAME"],
        &[b"GET", b"{connmulti}k"],
        &[b"CLIENT", b"SETNAME", b"a b"],
        &[b"SELECT", b"0"],
        &[b"ACL", b"WHOAMI"],
        &[b"CLIENT", b"NO-EVICT", b"maybe"],
        &[b"EXEC"],
        &[b"CLIENT", b"GETNAME"],
        &[b"MULTI"],
        &[b"CLIENT", b"SETNAME", b"only"],
        &[b"CLIENT", b"GETNAME"],
        &[b"EXEC"],
        &[b"QUIT"],
    ]);
    let answer = same_as_a_node(&bytes);
    assert!(answer.contains("*9\r\n+OK\r\n+OK\r\n+OK\r\n$7\r\ntx-name\r\n$1\r\nv\r\n-ERR"), "{answer}");
    assert!(answer.ends_with("*2\r\n+OK\r\n$4\r\nonly\r\n+OK\r\n"), "{answer}");
}

/// A client that half-closes right after such a transaction still gets EXEC's reply and those of
/// what it sent after it, then the close, as from a node (the proxy used to take the end of its
/// input, read while EXEC waited, for a blocked client's and drop it).
#[test]
fn a_half_close_after_a_transaction_with_connection_commands_loses_no_reply() {
    let outcome = same_on_both("half-close after EXEC with CLIENT SETNAME", |addr| {
        let mut stream = TcpStream::connect(addr).expect("connect");
        let requests = resp_commands(&[
            &[b"MULTI"],
            &[b"CLIENT", b"SETNAME", b"closing"],
            &[b"SET", b"{connmulti}hc", b"1"],
            &[b"EXEC"],
            &[b"CLIENT", b"GETNAME"],
        ]);
        stream.write_all(&requests).expect("write");
        stream.shutdown(Shutdown::Write).expect("half-close");
        String::from_utf8_lossy(&read_until(&mut stream, WAIT, |_| false)).into_owned()
    });
    assert_eq!(outcome, "+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+OK\r\n+OK\r\n$7\r\nclosing\r\n");
}

/// A transaction a WATCH aborted runs none of its connection commands, as on a node; one that ran
/// answers CLIENT ID with the client's id.
#[test]
fn connection_commands_of_an_aborted_transaction_do_not_run() {
    let answer = same_on_both("WATCH abort with CLIENT SETNAME", |addr| {
        let (mut client, mut other) = (Conn::open(addr), Conn::open(addr));
        let mut transcript = String::new();
        let mut say = |conn: &mut Conn, words: &[&str]| {
            let args: Vec<Vec<u8>> = words.iter().map(|w| w.as_bytes().to_vec()).collect();
            let (bytes, frame) = conn.call(&args).expect("a reply");
            transcript.push_str(&String::from_utf8_lossy(&bytes));
            frame
        };
        say(&mut client, &["WATCH", "{connmulti}w"]);
        say(&mut other, &["SET", "{connmulti}w", "changed"]);
        say(&mut client, &["MULTI"]);
        say(&mut client, &["CLIENT", "SETNAME", "aborted"]);
        say(&mut client, &["EXEC"]);
        say(&mut client, &["CLIENT", "GETNAME"]);
        let outside = say(&mut client, &["CLIENT", "ID"]).integer();
        say(&mut client, &["MULTI"]);
        say(&mut client, &["CLIENT", "ID"]);
        let exec = say(&mut client, &["EXEC"]);
        let inside = exec.items().and_then(|items| items.first()).and_then(|id| id.integer());
        // The ids differ between the two servers; that they agree within each is what compares.
        let transcript = transcript.replace(&format!(":{}\r\n", outside.unwrap_or(-1)), ":ID\r\n");
        format!("{transcript}; inside EXEC: {}", if inside == outside { "same id" } else { "another id" })
    });
    assert!(answer.contains("*-1\r\n$-1\r\n"), "{answer}");
    assert!(answer.ends_with("same id"), "{answer}");
}

/// A client's sharded channels live on as many masters as their slots: `{a}` (slot 15495) and
/// `{b}` (slot 3300) are on different masters of three, each with a subscription connection of
/// its own behind the proxy. The counts in the confirmations are the client's, over all of them,
/// as one node counts them, also for a channel it never subscribed and for an unsubscribe from
/// everything.
#[test]
fn shard_subscription_counts_over_several_masters_match_a_node() {
    let answer = same_as_a_node(
        b"SSUBSCRIBE {a}x\r\nSSUBSCRIBE {b}y\r\nSSUBSCRIBE {a}z\r\nSUNSUBSCRIBE {b}y\r\nSUNSUBSCRIBE {b}none\r\n\
          SUNSUBSCRIBE {a}x {a}z\r\nPING\r\nQUIT\r\n",
    );
    let confirmation = |kind: &str, channel: &str, count: u8| {
        format!("*3\r\n${}\r\n{kind}\r\n${}\r\n{channel}\r\n:{count}\r\n", kind.len(), channel.len())
    };
    let expected = [
        confirmation("ssubscribe", "{a}x", 1),
        confirmation("ssubscribe", "{b}y", 2),
        confirmation("ssubscribe", "{a}z", 3),
        confirmation("sunsubscribe", "{b}y", 2),
        confirmation("sunsubscribe", "{b}none", 2),
        confirmation("sunsubscribe", "{a}x", 1),
        confirmation("sunsubscribe", "{a}z", 0),
    ]
    .concat();
    assert_eq!(answer, format!("{expected}+PONG\r\n+OK\r\n"));
    // An unsubscribe from everything: the node's order of channels is its own; the counts go
    // down to zero across both masters, and the client is back in normal mode.
    let counts = same_on_both("SUNSUBSCRIBE from everything", |addr| {
        let bytes = b"SSUBSCRIBE {a}x\r\nSSUBSCRIBE {b}y\r\nSUNSUBSCRIBE\r\nPING\r\nQUIT\r\n";
        let answer = String::from_utf8_lossy(&raw_roundtrip(addr, bytes, WAIT)).into_owned();
        answer.lines().filter(|line| line.starts_with(':') || line.starts_with('+')).collect::<Vec<_>>().join(" ")
    });
    assert_eq!(counts, ":1 :2 :1 :0 +PONG +OK");
}

/// From Redis 7.2 on, a message a RESP3 subscriber's own command publishes to it comes after
/// that command's reply (inside MULTI and a script too); 7.0 writes it at once, before. Through
/// the proxy the message travels on the subscription's connection and the reply on another, so
/// the proxy puts messages behind the replies in flight. Compared with a node of the version under
/// test (the versions step runs this against Redis 7.4 and Valkey 8), once the proxy reports the
/// nodes' version; against 7.0 the same frames must arrive, in either order.
#[test]
fn a_resp3_subscribers_own_messages_follow_the_reply_that_published_them_as_on_a_node() {
    let cluster = Cluster::shared();
    let proxy = Proxy::start(cluster, ProxyOptions::default());
    let version = |addr: &str| -> String {
        let mut conn = Conn::open(addr);
        let (bytes, _) = conn.call(&[b"INFO".to_vec(), b"server".to_vec()]).expect("INFO server");
        let text = String::from_utf8_lossy(&bytes).into_owned();
        text.lines().find_map(|l| l.strip_prefix("redis_version:")).map(str::to_owned).expect("redis_version")
    };
    let node_version = version(&cluster.masters()[0]);
    let reported = redisforge_tests::wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
        version(&proxy.addr()) == node_version
    });
    assert!(reported, "the proxy does not report the nodes' version {node_version}");
    // Each command that publishes is sent once the frames before it are in: a message is held
    // behind every reply in flight, so one published by a command pipelined before others comes
    // after their replies too (README, "Pub/sub").
    let steps: [(&[u8], usize); 3] = [
        (b"SUBSCRIBE selfpub\r\nMULTI\r\nPING abc\r\nPUBLISH selfpub bar\r\nPUBLISH selfpub vaz\r\nPING def\r\nEXEC\r\n", 9),
        (b"EVAL \"redis.call('publish', 'selfpub', 'in-script') return 'bla'\" 0\r\n", 2),
        (b"PUBLISH selfpub last\r\n", 2),
    ];
    let exchange = |addr: &str| -> Vec<String> {
        let mut conn = Conn::open(addr);
        let (_, hello) = conn.call(&[b"HELLO".to_vec(), b"3".to_vec()]).expect("HELLO 3");
        assert!(!hello.is_error(), "HELLO 3");
        let mut frames = Vec::new();
        for (bytes, count) in steps {
            conn.send_raw(bytes).expect("send");
            for _ in 0..count {
                let (frame, _) = conn.read().expect("frame");
                frames.push(String::from_utf8_lossy(&frame).into_owned());
            }
        }
        frames
    };
    let message =
        |payload: &str| format!(">3\r\n$7\r\nmessage\r\n$7\r\nselfpub\r\n${}\r\n{payload}\r\n", payload.len());
    let queued = "+QUEUED\r\n".to_owned();
    let mut expected = vec![">3\r\n$9\r\nsubscribe\r\n$7\r\nselfpub\r\n:1\r\n".to_owned(), "+OK\r\n".to_owned()];
    expected.extend([queued.clone(), queued.clone(), queued.clone(), queued]);
    expected.extend(["*4\r\n$3\r\nabc\r\n:1\r\n:1\r\n$3\r\ndef\r\n".to_owned(), message("bar"), message("vaz")]);
    expected.extend(["$3\r\nbla\r\n".to_owned(), message("in-script"), ":1\r\n".to_owned(), message("last")]);
    let mut through_proxy = exchange(&proxy.addr());
    let major_minor: Vec<u32> = node_version.split('.').take(2).filter_map(|p| p.parse().ok()).collect();
    if major_minor >= vec![7, 2] {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = RedisServer::start(dir.path(), |port| vec![format!("port {port}")]).expect("reference node");
        assert_eq!(exchange(&node.addr()), expected, "a {node_version} node");
    } else {
        // 7.0 writes the messages inside EXEC's array (fixed in 7.2), which no client can read:
        // the proxy's frames are checked whole, in either order.
        through_proxy.sort();
        expected.sort();
    }
    assert_eq!(through_proxy, expected, "through the proxy, nodes of {node_version}");
}
