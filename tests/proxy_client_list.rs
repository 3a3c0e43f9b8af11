//! CLIENT LIST / CLIENT INFO lines carry a node's fields in a node's order (Redis 7.0's, 7.4's
//! `watch`, Valkey 8's `watch` and traffic counters and 8.1's `capa` by the nodes' version; always
//! 7.2's `lib-name`/`lib-ver`, as the proxy takes `CLIENT SETINFO` on every version), and their
//! values describe the
//! proxy's client: its subscriptions, its transaction, the output waiting for it, the proxy's
//! address it came in on. Also: RESET discards a transaction being queued, as on a node. Runs
//! against every server version of the version suites (`scripts/test.sh`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use redis::Connection;
use redisforge_tests::{Cluster, Proxy, ProxyOptions, resp_command, wait_until};

fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split(' ').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

fn names(line: &str) -> Vec<&str> {
    line.trim_end().split(' ').filter_map(|kv| kv.split_once('=').map(|(name, _)| name)).collect()
}

fn client_info(con: &mut Connection) -> String {
    let info: String = redis::cmd("CLIENT").arg("INFO").query(con).expect("CLIENT INFO");
    info.trim_end().to_string()
}

/// The line of client `id` in `CLIENT LIST ID id`, asked by `con`.
fn line_of(con: &mut Connection, id: i64) -> String {
    let text: String = redis::cmd("CLIENT").arg("LIST").arg("ID").arg(id).query(con).expect("CLIENT LIST ID");
    text.trim_end().to_string()
}

/// Client `id`'s line once `done` holds for it (sessions publish what it shows when they wait),
/// or its last line after `within`.
fn line_when(lister: &mut Connection, id: i64, within: Duration, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + within;
    loop {
        let line = line_of(lister, id);
        if done(&line) || Instant::now() > deadline {
            return line;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A byte count of the line (0 when absent).
fn bytes(line: &str, name: &str) -> u64 {
    field(line, name).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn client_id(con: &mut Connection) -> i64 {
    redis::cmd("CLIENT").arg("ID").query(con).expect("CLIENT ID")
}

fn a_master_address() -> String {
    Cluster::shared().masters().into_iter().next().expect("a master")
}

fn a_master_client() -> Connection {
    Cluster::shared().client(&a_master_address())
}

/// A connection to the master that owns `key`'s slot (another answers `-MOVED`).
fn node_owning(key: &str) -> Connection {
    for master in Cluster::shared().masters() {
        let mut con = Cluster::shared().client(&master);
        if redis::cmd("EXISTS").arg(key).query::<i64>(&mut con).is_ok() {
            return con;
        }
    }
    panic!("no master owns {key}'s slot");
}

fn is_valkey(node: &mut Connection) -> bool {
    let info: String = redis::cmd("INFO").arg("server").query(node).expect("INFO server");
    info.contains("valkey_version:")
}

#[test]
fn client_info_has_the_fields_of_a_node_in_its_order() {
    let proxy = Proxy::start(Cluster::shared(), ProxyOptions::default());
    let mut con = proxy.client();
    let mut node = a_master_client();
    let on_node = client_info(&mut node);
    let mut expected: Vec<&str> = names(&on_node);
    if !expected.contains(&"lib-name") {
        expected.extend(["lib-name", "lib-ver"]);
    }
    // The proxy learns the nodes' version from its first health poll, which may still be
    // running right after start (until then it shows Redis 7.0's line).
    let deadline = Instant::now() + Duration::from_secs(10);
    let on_proxy = loop {
        let line = client_info(&mut con);
        if names(&line) == expected || Instant::now() > deadline {
            break line;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(names(&on_proxy), expected, "proxy: {on_proxy}\nnode:  {on_node}");

    // The values a node gives its asking client: the request in its query buffer, its arguments.
    // Redis: the 26 bytes of CLIENT INFO. Valkey 8's threads share a query buffer, and a client
    // gets one of its own once a read left part of a request (redis-rs' connection set-up does):
    // 26 with one, 0 without (a client that sends whole requests in one write, below).
    assert_eq!(field(&on_proxy, "qbuf"), field(&on_node, "qbuf"), "{on_proxy}\n{on_node}");
    let free_is_zero = |line: &str| field(line, "qbuf-free") == Some("0");
    if is_valkey(&mut node) {
        assert_eq!(free_is_zero(&on_proxy), free_is_zero(&on_node), "{on_proxy}\n{on_node}");
    }
    let whole = |addr: &str| {
        let reply = exchange(addr, &[&[b"CLIENT", b"INFO"]], Duration::from_millis(300));
        String::from_utf8_lossy(&reply).trim_end().to_string()
    };
    let (proxied, direct) = (whole(&proxy.addr()), whole(&a_master_address()));
    for name in ["qbuf", "argv-mem"] {
        assert_eq!(field(&proxied, name), field(&direct, name), "{name}: {proxied}\n{direct}");
    }
    if is_valkey(&mut node) {
        // (Redis' room is its own buffer's: 20 KiB on a node, what the proxy's read took here.)
        assert_eq!(free_is_zero(&proxied), free_is_zero(&direct), "{proxied}\n{direct}");
    }
    assert_eq!(field(&on_proxy, "argv-mem"), field(&on_node, "argv-mem"), "{on_proxy}");
    for (name, value) in [("multi", "-1"), ("sub", "0"), ("psub", "0"), ("ssub", "0"), ("events", "r"), ("db", "0")] {
        assert_eq!(field(&on_proxy, name), Some(value), "{name}: {on_proxy}");
    }
    assert_eq!(field(&on_proxy, "laddr"), Some(proxy.addr().as_str()), "the proxy's address: {on_proxy}");
    let fd: i64 = field(&on_proxy, "fd").and_then(|fd| fd.parse().ok()).expect("fd");
    assert!(fd > 2, "a socket's descriptor: {on_proxy}");
    let tot_mem: u64 = field(&on_proxy, "tot-mem").and_then(|m| m.parse().ok()).expect("tot-mem");
    assert!(tot_mem > 0, "{on_proxy}");
}

/// Another client's line counts its subscriptions and its transaction as a node counts them
/// (`sub`/`psub`/`ssub`, `multi`, `multi-mem`): the same commands on a node give the same values.
#[test]
fn client_list_counts_other_clients_subscriptions_and_transaction() {
    let proxy = Proxy::start(Cluster::shared(), ProxyOptions::default());
    let mut lister = proxy.client();
    let (mut node, mut node_lister) = (node_owning("list:fields:{tx}"), node_owning("list:fields:{tx}"));

    // The same transaction queued through the proxy and on a node: the node decides the values.
    let queued: [&[&str]; 2] = [&["SET", "list:fields:{tx}", "value"], &["INCRBY", "list:fields:{tx}:n", "12"]];
    let after_refusal: &[&str] = &["SET", "list:fields:{tx}:late", "kept?"];
    let mut tx = proxy.client();
    let tx_id = client_id(&mut tx);
    let node_tx_id = client_id(&mut node);
    // A key watched twice counts once (`watch`, Redis 7.4 and later; on 7.0 neither line has it).
    for con in [&mut tx, &mut node] {
        let keys = ["list:fields:{tx}", "list:fields:{tx}:n", "list:fields:{tx}"];
        let _: () = redis::cmd("WATCH").arg(&keys).query(con).expect("WATCH");
    }
    let proxied = line_of(&mut lister, tx_id);
    let direct = line_of(&mut node_lister, node_tx_id);
    assert_eq!(field(&proxied, "watch"), field(&direct, "watch"), "{proxied}\n{direct}");
    for con in [&mut tx, &mut node] {
        let _: () = redis::cmd("MULTI").query(con).expect("MULTI");
        for command in queued {
            let _: String = redis::cmd(command[0]).arg(&command[1..]).query(con).expect("queued");
        }
    }
    let proxied = line_of(&mut lister, tx_id);
    let direct = line_of(&mut node_lister, node_tx_id);
    assert_eq!(field(&proxied, "multi"), Some("2"), "{proxied}");
    assert_eq!(field(&proxied, "multi"), field(&direct, "multi"), "{proxied}\n{direct}");
    assert_eq!(field(&proxied, "multi-mem"), field(&direct, "multi-mem"), "{proxied}\n{direct}");
    assert_eq!(field(&proxied, "flags"), Some("x"), "{proxied}");
    assert_eq!(field(&proxied, "flags"), field(&direct, "flags"), "{proxied}\n{direct}");
    // A refused command fails the transaction: what is queued after it is answered and not kept.
    for con in [&mut tx, &mut node] {
        let _ = redis::cmd("NOSUCHCOMMAND").query::<()>(con).expect_err("refused");
        let _: String = redis::cmd(after_refusal[0]).arg(&after_refusal[1..]).query(con).expect("QUEUED");
    }
    let proxied = line_of(&mut lister, tx_id);
    let direct = line_of(&mut node_lister, node_tx_id);
    // Redis keeps what was queued before the refusal (2); Valkey 8.1 frees it (`multi=0`).
    let kept = if is_valkey(&mut node_lister) { "0" } else { "2" };
    assert_eq!(field(&proxied, "multi"), Some(kept), "after the refusal: {proxied}");
    assert_eq!(field(&proxied, "multi"), field(&direct, "multi"), "{proxied}\n{direct}");
    assert_eq!(field(&proxied, "multi-mem"), field(&direct, "multi-mem"), "{proxied}\n{direct}");
    for con in [&mut tx, &mut node] {
        let _: () = redis::cmd("DISCARD").query(con).expect("DISCARD");
    }
    // Outside a transaction: -1 on Redis; on Valkey 8.1, 0 once the client entered MULTI.
    let (proxied, direct) = (line_of(&mut lister, tx_id), line_of(&mut node_lister, node_tx_id));
    assert_eq!(field(&proxied, "multi"), field(&direct, "multi"), "after DISCARD: {proxied}\n{direct}");

    // Two channels, one pattern, one shard channel.
    let mut subscriber = TcpStream::connect(proxy.addr()).expect("connect");
    subscriber.set_read_timeout(Some(Duration::from_secs(5))).expect("read timeout");
    subscriber.write_all(&resp_command(&[b"CLIENT", b"ID"])).expect("CLIENT ID");
    let id = read_integer(&mut subscriber);
    let commands = [
        resp_command(&[b"SUBSCRIBE", b"list:fields:a", b"list:fields:b"]),
        resp_command(&[b"PSUBSCRIBE", b"list:fields:*"]),
        resp_command(&[b"SSUBSCRIBE", b"list:fields:s"]),
    ]
    .concat();
    subscriber.write_all(&commands).expect("subscribe");
    let counted = line_when(&mut lister, id, Duration::from_secs(5), |line| {
        (field(line, "sub"), field(line, "psub"), field(line, "ssub")) == (Some("2"), Some("1"), Some("1"))
    });
    assert_eq!(field(&counted, "sub"), Some("2"), "{counted}");
    assert_eq!(field(&counted, "psub"), Some("1"), "{counted}");
    assert_eq!(field(&counted, "ssub"), Some("1"), "{counted}");
    assert_eq!(field(&counted, "flags"), Some("P"), "{counted}");

    subscriber.write_all(&resp_command(&[b"UNSUBSCRIBE", b"list:fields:a"])).expect("UNSUBSCRIBE");
    let line = line_when(&mut lister, id, Duration::from_secs(5), |line| field(line, "sub") == Some("1"));
    assert_eq!((field(&line, "sub"), field(&line, "psub")), (Some("1"), Some("1")), "{line}");
    subscriber.write_all(&resp_command(&[b"RESET"])).expect("RESET");
    let line = line_when(&mut lister, id, Duration::from_secs(5), |line| field(line, "flags") == Some("N"));
    let counts = (field(&line, "sub"), field(&line, "psub"), field(&line, "ssub"));
    assert_eq!(counts, (Some("0"), Some("0"), Some("0")), "after RESET: {line}");
}

/// Reads one `:N\r\n` reply.
fn read_integer(stream: &mut TcpStream) -> i64 {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        stream.read_exact(&mut byte).expect("an integer reply");
        line.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&line);
    text.trim_start_matches(':').trim_end().parse().unwrap_or_else(|_| panic!("an integer: {text:?}"))
}

/// A client that does not read its replies shows them waiting (`obl`/`omem`, `events=rw`), and
/// nothing once it has read them.
#[test]
fn a_client_that_does_not_read_shows_its_replies_waiting() {
    let proxy = Proxy::start(Cluster::shared(), ProxyOptions::default());
    let mut lister = proxy.client();
    let value = vec![b'v'; 1 << 20];
    let _: () = redis::cmd("SET").arg("list:fields:big").arg(&value).query(&mut lister).expect("SET");

    let mut slow = TcpStream::connect(proxy.addr()).expect("connect");
    slow.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
    slow.write_all(&resp_command(&[b"CLIENT", b"ID"])).expect("CLIENT ID");
    let id = read_integer(&mut slow);
    let gets = 16;
    let pipeline: Vec<u8> = (0..gets).flat_map(|_| resp_command(&[b"GET", b"list:fields:big"])).collect();
    slow.write_all(&pipeline).expect("GETs");

    let waiting =
        line_when(&mut lister, id, Duration::from_secs(10), |line| bytes(line, "obl") + bytes(line, "omem") > 1 << 20);
    assert!(bytes(&waiting, "obl") + bytes(&waiting, "omem") > 1 << 20, "replies wait for the client: {waiting}");
    assert_eq!(field(&waiting, "events"), Some("rw"), "{waiting}");
    assert!(bytes(&waiting, "oll") > 0, "in 16 KiB blocks past the kept buffer: {waiting}");
    assert!(bytes(&waiting, "tot-mem") > bytes(&waiting, "omem"), "{waiting}");

    let reply_len = "$1048576\r\n".len() + (1 << 20) + 2;
    let mut left = gets * reply_len;
    let mut buffer = vec![0u8; 256 * 1024];
    while left > 0 {
        let read = slow.read(&mut buffer).expect("the replies");
        assert!(read > 0, "the proxy closed the connection with {left} bytes to go");
        left = left.saturating_sub(read);
    }
    let drained = line_when(&mut lister, id, Duration::from_secs(5), |line| field(line, "events") == Some("r"));
    for (name, value) in [("obl", "0"), ("oll", "0"), ("omem", "0"), ("events", "r")] {
        assert_eq!(field(&drained, name), Some(value), "{name} once everything was read: {drained}");
    }
}

/// `CLIENT KILL LADDR` closes the clients that came in on that proxy address, as on a node.
#[test]
fn client_kill_laddr_closes_the_clients_of_that_address() {
    let proxy = Proxy::start(Cluster::shared(), ProxyOptions::default());
    let mut admin = proxy.client();
    let mut victim = TcpStream::connect(proxy.addr()).expect("connect");
    victim.set_read_timeout(Some(Duration::from_secs(5))).expect("read timeout");
    victim.write_all(&resp_command(&[b"PING"])).expect("PING");
    let mut pong = [0u8; 7];
    victim.read_exact(&mut pong).expect("PONG");
    victim.write_all(&resp_command(&[b"CLIENT", b"ID"])).expect("CLIENT ID");
    let victim_id = read_integer(&mut victim).to_string();

    // With the victim's ID too, so that no other client of the proxy (the harness' readiness
    // probe) is counted.
    let kill = |laddr: &str, admin: &mut Connection| -> i64 {
        let command = redis::cmd("CLIENT").arg("KILL").arg("LADDR").arg(laddr).arg("ID").arg(&victim_id).clone();
        command.query(admin).expect("KILL LADDR")
    };
    assert_eq!(kill("127.0.0.1:1", &mut admin), 0, "the client came in on another address");
    let mine: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("LADDR")
        .arg(proxy.addr())
        .arg("ID")
        .arg(client_id(&mut admin))
        .query(&mut admin)
        .expect("KILL LADDR");
    assert_eq!(mine, 0, "the client asking is skipped (SKIPME yes)");
    assert_eq!(kill(&proxy.addr(), &mut admin), 1, "the client that came in on the proxy's address");
    let mut rest = [0u8; 1];
    assert_eq!(victim.read(&mut rest).expect("closed"), 0, "the killed client's connection is closed");
}

/// RESET discards a transaction being queued, as a node's `clearClientConnectionState` does: the
/// queued commands never run and EXEC has no MULTI to end.
#[test]
fn reset_discards_a_transaction_being_queued() {
    let proxy = Proxy::start(Cluster::shared(), ProxyOptions::default());
    let mut con = proxy.client();
    let key = "list:fields:reset";
    let _: () = redis::cmd("DEL").arg(key).query(&mut con).expect("DEL");
    let _: () = redis::cmd("MULTI").query(&mut con).expect("MULTI");
    let _: String = redis::cmd("SET").arg(key).arg("queued").query(&mut con).expect("queued");
    let reset: String = redis::cmd("RESET").query(&mut con).expect("RESET");
    assert_eq!(reset, "RESET");
    let exec = redis::cmd("EXEC").query::<()>(&mut con).expect_err("EXEC after RESET");
    assert!(exec.to_string().contains("EXEC without MULTI"), "{exec}");
    let value: Option<String> = redis::cmd("GET").arg(key).query(&mut con).expect("GET");
    assert_eq!(value, None, "the queued SET never ran");
    // No transaction: -1 on Redis; Valkey 8.1 shows 0 once the client has entered MULTI.
    let outside = if is_valkey(&mut a_master_client()) { "0" } else { "-1" };
    assert_eq!(field(&client_info(&mut con), "multi"), Some(outside));
}

/// RESET clears the client's name but not the library behind the connection (CLIENT SETINFO's
/// lib-name and lib-ver), as a node's `clearClientConnectionState` leaves them (Redis 7.4's
/// introspection.tcl, "RESET does NOT clean library name").
#[test]
fn reset_keeps_the_library_name_and_version() {
    let proxy = Proxy::start(Cluster::shared(), ProxyOptions::default());
    let mut con = proxy.client();
    for (attr, value) in [("lib-name", "redis.py"), ("lib-ver", "5.0.1")] {
        let _: () = redis::cmd("CLIENT").arg("SETINFO").arg(attr).arg(value).query(&mut con).expect("SETINFO");
    }
    let _: () = redis::cmd("CLIENT").arg("SETNAME").arg("before-reset").query(&mut con).expect("SETNAME");
    let reset: String = redis::cmd("RESET").query(&mut con).expect("RESET");
    assert_eq!(reset, "RESET");
    let info = client_info(&mut con);
    assert_eq!((field(&info, "lib-name"), field(&info, "lib-ver")), (Some("redis.py"), Some("5.0.1")), "{info}");
    assert_eq!(field(&info, "name"), Some(""), "{info}");
}

/// RESET ends WATCH, as on a node: a watched key changed afterwards no longer aborts a
/// transaction.
#[test]
fn reset_ends_watch() {
    let proxy = Proxy::start(Cluster::shared(), ProxyOptions::default());
    let mut con = proxy.client();
    let mut other = proxy.client();
    let key = "list:fields:{reset-watch}";
    let _: () = redis::cmd("WATCH").arg(key).query(&mut con).expect("WATCH");
    let reset: String = redis::cmd("RESET").query(&mut con).expect("RESET");
    assert_eq!(reset, "RESET");
    let _: () = redis::cmd("SET").arg(key).arg("changed").query(&mut other).expect("SET by another client");
    let _: () = redis::cmd("MULTI").query(&mut con).expect("MULTI");
    let _: String = redis::cmd("SET").arg(format!("{key}:tx")).arg("ran").query(&mut con).expect("QUEUED");
    let exec: Option<Vec<String>> = redis::cmd("EXEC").query(&mut con).expect("EXEC");
    assert_eq!(exec, Some(vec!["OK".to_string()]), "the watch ended with RESET: EXEC runs");
}

/// Sends `commands` on a new connection to `addr` and returns everything that comes back within
/// `wait` (enough for every reply on loopback).
fn exchange(addr: &str, commands: &[&[&[u8]]], wait: Duration) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    let bytes: Vec<u8> = commands.iter().flat_map(|args| resp_command(args)).collect();
    write_and_read(&mut stream, &bytes, wait)
}

/// A transaction's replies come in the protocol the client speaks when it runs, as on a node,
/// though its own connection was opened in another: RESET after `HELLO 3` (back to RESP2), and
/// `HELLO 3` between WATCH and EXEC (the WATCH stays).
#[test]
fn a_transaction_answers_in_the_protocol_the_client_speaks_now() {
    let proxy = Proxy::start(Cluster::shared(), ProxyOptions::default());
    let hash = "list:fields:{proto}";
    let mut con = proxy.client();
    let _: () = redis::cmd("HSET").arg(hash).arg("a").arg("1").query(&mut con).expect("HSET");
    let node = Cluster::shared()
        .masters()
        .into_iter()
        .find(|addr| redis::cmd("EXISTS").arg(hash).query::<i64>(&mut Cluster::shared().client(addr)).is_ok())
        .expect("the hash's master");
    let (key, hello3): (&[u8], &[&[u8]]) = (hash.as_bytes(), &[b"HELLO", b"3"]);
    let (watch, reset): (&[&[u8]], &[&[u8]]) = (&[b"WATCH", key], &[b"RESET"]);
    let transaction: [&[&[u8]]; 3] = [&[b"MULTI"], &[b"HGETALL", key], &[b"EXEC"]];
    let after_reset: Vec<&[&[u8]]> = [hello3, watch, reset, watch].into_iter().chain(transaction).collect();
    let switched: Vec<&[&[u8]]> = [watch, hello3].into_iter().chain(transaction).collect();
    for (name, commands, exec_reply) in [
        ("RESET after HELLO 3", &after_reset, &b"*1\r\n*2\r\n$1\r\na\r\n$1\r\n1\r\n"[..]),
        ("HELLO 3 after WATCH", &switched, &b"*1\r\n%1\r\n$1\r\na\r\n$1\r\n1\r\n"[..]),
    ] {
        let wait = Duration::from_millis(700);
        let through_proxy = exchange(&proxy.addr(), commands, wait);
        let on_node = exchange(&node, commands, wait);
        assert!(on_node.ends_with(exec_reply), "{name}, node: {}", String::from_utf8_lossy(&on_node));
        assert!(through_proxy.ends_with(exec_reply), "{name}, proxy: {}", String::from_utf8_lossy(&through_proxy));
    }
}

/// `redis_version` from INFO server.
fn redis_version(con: &mut Connection) -> String {
    let info: String = redis::cmd("INFO").arg("server").query(con).expect("INFO server");
    info.lines().find_map(|l| l.strip_prefix("redis_version:")).unwrap_or_default().trim().to_string()
}

/// READONLY, CLIENT NO-EVICT and CLIENT NO-TOUCH show in `flags` as a node shows them (`r`, `e`,
/// `T`), and RESET ends them as the nodes' version does (7.0 keeps NO-EVICT, 7.2 ends it too).
#[test]
fn connection_modes_show_in_flags_as_on_a_node() {
    let proxy = Proxy::start(Cluster::shared(), ProxyOptions::default());
    let mut con = proxy.client();
    let mut node = a_master_client();
    // What RESET ends follows the version the proxy learns from its first health poll.
    let version = redis_version(&mut node);
    let reported =
        wait_until(Duration::from_secs(10), Duration::from_millis(50), || redis_version(&mut con) == version);
    assert!(reported, "the proxy reports the nodes' version {version}");
    let no_touch = redis::cmd("CLIENT").arg("NO-TOUCH").arg("OFF").query::<()>(&mut node).is_ok();
    let mut steps: Vec<(&[&str], &str)> = vec![(&["READONLY"], "r"), (&["CLIENT", "NO-EVICT", "ON"], "re")];
    if no_touch {
        steps.push((&["CLIENT", "NO-TOUCH", "ON"], "reT"));
    }
    steps.push((&["READWRITE"], if no_touch { "eT" } else { "e" }));
    for (command, flags) in steps {
        for side in [&mut con, &mut node] {
            let _: () = redis::cmd(command[0]).arg(&command[1..]).query(side).expect("the command");
        }
        let (proxied, direct) = (client_info(&mut con), client_info(&mut node));
        assert_eq!(field(&direct, "flags"), Some(flags), "node after {command:?}: {direct}");
        assert_eq!(field(&proxied, "flags"), field(&direct, "flags"), "after {command:?}\n{proxied}\n{direct}");
    }
    for side in [&mut con, &mut node] {
        let reset: String = redis::cmd("RESET").query(side).expect("RESET");
        assert_eq!(reset, "RESET");
    }
    let (proxied, direct) = (client_info(&mut con), client_info(&mut node));
    assert_eq!(field(&proxied, "flags"), field(&direct, "flags"), "after RESET\n{proxied}\n{direct}");
}

/// The bytes of a RESP2 bulk string reply holding `text`.
fn bulk_len(text: &str) -> u64 {
    (format!("${}\r\n", text.len()).len() + text.len() + 2) as u64
}

/// A counter of the line (Valkey 8's `tot-net-in`, `tot-net-out`, `tot-cmds`).
fn counter(line: &str, name: &str) -> u64 {
    field(line.trim_end(), name).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no {name}: {line}"))
}

/// Valkey 8's traffic counters and 8.1's `capa`: the same commands, sent to a node and through
/// the proxy, move `tot-cmds`, `tot-net-in` and `tot-net-out` alike (commands refused before they
/// run are not counted, a transaction counts MULTI, EXEC and what EXEC ran); `CLIENT CAPA
/// redirect` shows as `capa=r`. On Redis neither line has the fields.
#[test]
fn traffic_counters_and_capa_move_as_on_a_node() {
    let proxy = Proxy::start(Cluster::shared(), ProxyOptions::default());
    let key = "list:fields:{traffic}";
    let mut node = node_owning(key);
    let mut con = proxy.client();
    let valkey = is_valkey(&mut node);
    // The proxy learns the nodes' version from its first health poll.
    let id = client_id(&mut con);
    let proxied = line_when(&mut con, id, Duration::from_secs(10), |line| !valkey || field(line, "tot-cmds").is_some());
    if !valkey {
        for line in [proxied, client_info(&mut node)] {
            assert!(field(&line, "tot-cmds").is_none() && field(&line, "capa").is_none(), "{line}");
        }
        return;
    }
    let counter_key = format!("{key}:n");
    let steps: [&[&str]; 10] = [
        &["CLIENT", "CAPA", "redirect"],
        &["SET", key, "v"],
        &["GET", key],
        &["SET", key],
        &["NOSUCHCOMMAND", key],
        &["MULTI"],
        &["INCR", &counter_key],
        &["SET", key, "w"],
        &["EXEC"],
        &["PING"],
    ];
    let mut moved = Vec::new();
    for con in [&mut con, &mut node] {
        let before: String = redis::cmd("CLIENT").arg("INFO").query(con).expect("CLIENT INFO");
        for step in steps {
            let _ = redis::cmd(step[0]).arg(&step[1..]).query::<redis::Value>(con);
        }
        let after: String = redis::cmd("CLIENT").arg("INFO").query(con).expect("CLIENT INFO");
        assert_eq!(field(&after, "capa"), Some("r"), "{after}");
        moved.push((
            counter(&after, "tot-cmds") - counter(&before, "tot-cmds"),
            counter(&after, "tot-net-in") - counter(&before, "tot-net-in"),
            // The first CLIENT INFO's own reply differs (addresses, buffers): left out.
            counter(&after, "tot-net-out") - counter(&before, "tot-net-out") - bulk_len(&before),
        ));
    }
    assert_eq!(moved[0], moved[1], "(tot-cmds, tot-net-in, tot-net-out) moved through the proxy and on the node");
    assert_eq!(moved[0].0, 9, "CLIENT INFO, CAPA, SET, GET, MULTI, INCR, SET, EXEC, PING; refusals not counted");

    // A blocked command counts once it returns; its request is read at once.
    let mut lister = proxy.client();
    let mut blocked = TcpStream::connect(proxy.addr()).expect("connect");
    blocked.set_read_timeout(Some(Duration::from_secs(5))).expect("read timeout");
    blocked.write_all(&resp_command(&[b"CLIENT", b"ID"])).expect("CLIENT ID");
    let id = read_integer(&mut blocked);
    let list = format!("{key}:list");
    let start = line_when(&mut lister, id, Duration::from_secs(5), |line| counter(line, "tot-cmds") == 1);
    let blpop = resp_command(&[b"BLPOP", list.as_bytes(), b"5"]);
    blocked.write_all(&blpop).expect("BLPOP");
    let in_after = counter(&start, "tot-net-in") + blpop.len() as u64;
    let waiting = line_when(&mut lister, id, Duration::from_secs(5), |line| counter(line, "tot-net-in") == in_after);
    assert_eq!(counter(&waiting, "tot-net-in"), in_after, "{waiting}");
    assert_eq!(counter(&waiting, "tot-cmds"), 1, "not counted while blocked: {waiting}");
    assert_eq!(counter(&waiting, "tot-net-out"), counter(&start, "tot-net-out"), "{waiting}");
    let _: i64 = redis::cmd("LPUSH").arg(&list).arg("a").query(&mut lister).expect("LPUSH");
    let reply = format!("*2\r\n${}\r\n{list}\r\n$1\r\na\r\n", list.len());
    let mut got = vec![0u8; reply.len()];
    blocked.read_exact(&mut got).expect("BLPOP's reply");
    assert_eq!(String::from_utf8_lossy(&got), reply);
    let done = line_when(&mut lister, id, Duration::from_secs(5), |line| counter(line, "tot-cmds") == 2);
    assert_eq!(counter(&done, "tot-cmds"), 2, "counted once it returned: {done}");
    assert_eq!(counter(&done, "tot-net-out"), counter(&start, "tot-net-out") + reply.len() as u64, "{done}");
}

/// Writes `bytes` on `stream` and returns what comes back within `wait`.
fn write_and_read(stream: &mut TcpStream, bytes: &[u8], wait: Duration) -> Vec<u8> {
    stream.write_all(bytes).expect("write");
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    let mut buffer = [0u8; 4096];
    while let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
        stream.set_read_timeout(Some(left)).expect("read timeout");
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => got.extend_from_slice(&buffer[..read]),
        }
    }
    got
}

/// The asking client's `qbuf` (and, for Valkey, `qbuf-free` 0 with it) as a node shows them,
/// after the same reads: a node keeps what one read brought until all of it ran (a pipelined
/// CLIENT INFO counts the requests read with it), and Valkey 8 keeps a query buffer of a client's
/// own only after a read that brought more than one request or part of one, until the client
/// was idle for 2 s (0 otherwise).
#[test]
fn the_asking_clients_query_buffer_is_a_nodes_after_the_same_reads() {
    let proxy = Proxy::start(Cluster::shared(), ProxyOptions::default());
    let node = a_master_address();
    let valkey = is_valkey(&mut a_master_client());
    let (info, ping) = (resp_command(&[b"CLIENT", b"INFO"]), resp_command(&[b"PING"]));
    let cases: [(&str, Vec<Vec<u8>>); 5] = [
        ("CLIENT INFO alone", vec![info.clone()]),
        ("CLIENT INFO with a PING after it", vec![[&info[..], &ping].concat(), info.clone()]),
        ("CLIENT INFO after a PING in one read", vec![[&ping[..], &info].concat()]),
        ("a PING in two reads", vec![ping[..5].to_vec(), ping[5..].to_vec(), info.clone()]),
        ("two PINGs in one read, then 4 s idle", vec![[&ping[..], &ping].concat(), Vec::new(), info.clone()]),
    ];
    for (name, writes) in cases {
        let shown = |addr: &str| -> Vec<(Option<String>, bool)> {
            let mut stream = TcpStream::connect(addr).expect("connect");
            let mut lines = Vec::new();
            for write in &writes {
                if write.is_empty() {
                    std::thread::sleep(Duration::from_secs(4));
                    continue;
                }
                let reply = write_and_read(&mut stream, write, Duration::from_millis(300));
                let reply = String::from_utf8_lossy(&reply);
                if let Some(line) = reply.lines().find(|l| l.starts_with("id=")) {
                    // An empty buffer has no room either (Valkey's shared one is no one's); the
                    // room of a buffer of the client's own is its size, the proxy's or the node's.
                    let empty = field(line, "qbuf") == Some("0");
                    let room_with_empty = !valkey || !empty || field(line, "qbuf-free") == Some("0");
                    lines.push((field(line, "qbuf").map(str::to_owned), room_with_empty));
                }
            }
            lines
        };
        let (proxied, direct) = (shown(&proxy.addr()), shown(&node));
        assert!(!direct.is_empty(), "{name}: no CLIENT INFO line");
        assert_eq!(proxied, direct, "{name}: (qbuf, no room without a buffer) through the proxy and on the node");
    }
}
