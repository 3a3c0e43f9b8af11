//! CLIENT LIST / INFO / KILL / PAUSE / UNPAUSE act on the proxy's own clients (a node's client list
//! would only show the proxy's pooled connections).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use redis::Connection;
use redisforge_tests::{Cluster, ClusterOptions, Proxy, ProxyOptions, resp_command};

fn named(proxy: &Proxy, name: &str) -> (Connection, i64) {
    let mut con = proxy.client();
    let _: () = redis::cmd("CLIENT").arg("SETNAME").arg(name).query(&mut con).expect("CLIENT SETNAME");
    let id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut con).expect("CLIENT ID");
    (con, id)
}

fn list(con: &mut Connection, args: &[&str]) -> Vec<String> {
    let text: String = redis::cmd("CLIENT").arg("LIST").arg(args).query(con).expect("CLIENT LIST");
    text.lines().map(str::to_owned).collect()
}

fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split(' ').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

#[test]
fn client_list_and_info_show_the_proxys_clients() {
    let proxy = Proxy::start(Cluster::shared(), ProxyOptions::default());
    let (mut a, a_id) = named(&proxy, "alpha");
    let (mut b, b_id) = named(&proxy, "beta");
    let _: () = redis::cmd("SET").arg("clients:list").arg("1").query(&mut b).expect("SET");

    let lines = list(&mut a, &[]);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let alpha = lines.iter().find(|l| field(l, "name") == Some("alpha")).expect("alpha listed");
    let beta = lines.iter().find(|l| field(l, "name") == Some("beta")).expect("beta listed");
    assert_eq!(field(alpha, "id"), Some(a_id.to_string().as_str()));
    assert_eq!(field(beta, "id"), Some(b_id.to_string().as_str()));
    assert_eq!(field(beta, "cmd"), Some("set"), "{beta}");
    assert_eq!(field(alpha, "flags"), Some("N"));
    assert!(field(alpha, "addr").is_some_and(|addr| addr.starts_with("127.0.0.1:")), "{alpha}");

    let info: String = redis::cmd("CLIENT").arg("INFO").query(&mut b).expect("CLIENT INFO");
    assert_eq!(field(info.trim_end(), "name"), Some("beta"));
    assert_eq!(field(info.trim_end(), "id"), Some(b_id.to_string().as_str()));
    // Redis' `lastcmd->fullname`: the subcommand too, and any command, not only the metrics' ones.
    assert_eq!(field(info.trim_end(), "cmd"), Some("client|info"), "{info}");
    let master = Cluster::shared().masters().into_iter().next().expect("a master");
    let on_node: String =
        redis::cmd("CLIENT").arg("INFO").query(&mut Cluster::shared().client(&master)).expect("CLIENT INFO on a node");
    assert_eq!(field(on_node.trim_end(), "cmd"), field(info.trim_end(), "cmd"), "as a node names it: {on_node}");
    let _: Option<String> = redis::cmd("LINDEX").arg("clients:list").arg(0).query(&mut b).unwrap_or(None);
    let beta = list(&mut a, &["ID", &b_id.to_string()]);
    assert_eq!(field(&beta[0], "cmd"), Some("lindex"), "{beta:?}");

    assert_eq!(list(&mut a, &["ID", &b_id.to_string()]).len(), 1);
    // As Redis: each id looked up in turn, repeats included; a negative one finds nobody.
    let (a_text, b_text) = (a_id.to_string(), b_id.to_string());
    let ids: Vec<String> = list(&mut a, &["ID", &b_text, "-5", &a_text, &b_text])
        .iter()
        .map(|l| field(l, "id").unwrap_or_default().to_owned())
        .collect();
    assert_eq!(ids, [b_text.clone(), a_text.clone(), b_text.clone()]);
    let bad = redis::cmd("CLIENT").arg("LIST").arg("ID").arg("x").query::<String>(&mut a).expect_err("bad id");
    assert!(bad.to_string().contains("Invalid client ID"), "{bad}");
    assert_eq!(list(&mut a, &["TYPE", "normal"]).len(), 2);
    assert_eq!(list(&mut a, &["TYPE", "pubsub"]).len(), 0);
    assert!(list(&mut a, &["TYPE", "master"]).is_empty());
    let bad = redis::cmd("CLIENT").arg("LIST").arg("TYPE").arg("nope").query::<String>(&mut a).expect_err("bad type");
    assert!(bad.to_string().contains("Unknown client type"), "{bad}");
}

#[test]
fn client_kill_closes_the_named_clients() {
    let proxy = Proxy::start(Cluster::shared(), ProxyOptions::default());
    let (mut killer, _) = named(&proxy, "killer");
    let (mut victim, victim_id) = named(&proxy, "victim");
    let (mut other, _) = named(&proxy, "other");

    let killed: i64 =
        redis::cmd("CLIENT").arg("KILL").arg("ID").arg(victim_id).query(&mut killer).expect("CLIENT KILL ID");
    assert_eq!(killed, 1);
    assert!(redis::cmd("PING").query::<String>(&mut victim).is_err(), "the killed client's connection is closed");
    let pong: String = redis::cmd("PING").query(&mut other).expect("the others stay");
    assert_eq!(pong, "PONG");

    // The old form: one address, +OK or an error.
    let addr = field(&list(&mut killer, &[]).into_iter().find(|l| l.contains("name=other")).expect("other"), "addr")
        .expect("addr")
        .to_owned();
    let ok: String = redis::cmd("CLIENT").arg("KILL").arg(&addr).query(&mut killer).expect("CLIENT KILL addr");
    assert_eq!(ok, "OK");
    let gone = redis::cmd("CLIENT").arg("KILL").arg(&addr).query::<String>(&mut killer).expect_err("already gone");
    assert!(gone.to_string().contains("No such client"), "{gone}");

    // SKIPME yes (the default) spares the caller.
    let killed: i64 = redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("normal").query(&mut killer).expect("KILL TYPE");
    assert_eq!(killed, 0, "only the caller is left, and it skips itself");
    let pong: String = redis::cmd("PING").query(&mut killer).expect("the caller stays");
    assert_eq!(pong, "PONG");
}

#[test]
fn client_pause_write_holds_an_exec_whose_queued_commands_write() {
    // Redis counts an EXEC as a write when a command it runs writes (`mstate.cmd_flags`).
    let proxy = Proxy::start(Cluster::shared(), ProxyOptions::default());
    let (mut admin, _) = named(&proxy, "admin");
    let (mut writer, _) = named(&proxy, "writer");
    let (mut reader, _) = named(&proxy, "reader");
    let _: () = redis::cmd("MULTI").query(&mut writer).expect("MULTI");
    let _: () = redis::cmd("SET").arg("clients:pause-exec").arg("1").query(&mut writer).expect("SET queued");
    let _: () = redis::cmd("MULTI").query(&mut reader).expect("MULTI");
    let _: () = redis::cmd("GET").arg("clients:pause-exec").query(&mut reader).expect("GET queued");
    let _: () = redis::cmd("CLIENT").arg("PAUSE").arg(600).arg("WRITE").query(&mut admin).expect("CLIENT PAUSE WRITE");
    // Timed from the pause: the writing EXEC ends no sooner than the pause does.
    let paused_at = Instant::now();
    let started = Instant::now();
    let _: redis::Value = redis::cmd("EXEC").query(&mut reader).expect("read-only EXEC");
    assert!(started.elapsed() < Duration::from_millis(400), "a read-only EXEC was held: {:?}", started.elapsed());
    let _: redis::Value = redis::cmd("EXEC").query(&mut writer).expect("writing EXEC");
    let held = paused_at.elapsed();
    assert!(held >= Duration::from_millis(550), "the writing EXEC was not held: {held:?}");
    assert!(held < Duration::from_secs(3), "the writing EXEC was held too long: {held:?}");
}

/// CLIENT PAUSE inside MULTI is queued as on a node: the transaction's writes after it run, and
/// the pause starts at its end (Redis' pause.tcl, "client pause starts at the end of a
/// transaction").
#[test]
fn client_pause_inside_multi_starts_at_the_end_of_the_transaction() {
    let proxy = Proxy::start(Cluster::shared(), ProxyOptions::default());
    let (mut admin, _) = named(&proxy, "admin");
    let (mut other, _) = named(&proxy, "other");
    let (first, second, held) = ("{clients:txpause}1", "{clients:txpause}2", "{clients:txpause}3");
    let replies: redis::Value = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg(first)
        .arg("BAR")
        .cmd("CLIENT")
        .arg("PAUSE")
        .arg(20_000)
        .arg("WRITE")
        .cmd("SET")
        .arg(second)
        .arg("BAR")
        .query(&mut admin)
        .expect("MULTI … EXEC");
    assert_eq!(replies, redis::Value::Array(vec![redis::Value::Okay; 3]));
    let writer = thread::spawn(move || {
        let _: () = redis::cmd("SET").arg(held).arg("BAR").query(&mut other).expect("SET held by the pause");
        other
    });
    thread::sleep(Duration::from_millis(300));
    assert!(!writer.is_finished(), "the write after the transaction was not held");
    for key in [first, second] {
        let value: Option<String> = redis::cmd("GET").arg(key).query(&mut admin).expect("GET");
        assert_eq!(value.as_deref(), Some("BAR"), "{key} written inside the transaction");
    }
    let value: Option<String> = redis::cmd("GET").arg(held).query(&mut admin).expect("GET");
    assert_eq!(value, None, "held");
    let _: () = redis::cmd("CLIENT").arg("UNPAUSE").query(&mut admin).expect("CLIENT UNPAUSE");
    let mut other = writer.join().expect("the held SET");
    let value: Option<String> = redis::cmd("GET").arg(held).query(&mut other).expect("GET");
    assert_eq!(value.as_deref(), Some("BAR"));
}

#[test]
fn client_pause_write_holds_writes_not_reads_and_unpause_releases() {
    let proxy = Proxy::start(Cluster::shared(), ProxyOptions::default());
    let (mut admin, _) = named(&proxy, "admin");
    let (mut worker, _) = named(&proxy, "worker");
    let _: () = redis::cmd("SET").arg("clients:pause").arg("before").query(&mut worker).expect("SET before");

    let _: () = redis::cmd("CLIENT").arg("PAUSE").arg(600).arg("WRITE").query(&mut admin).expect("CLIENT PAUSE WRITE");
    let started = Instant::now();
    let value: String = redis::cmd("GET").arg("clients:pause").query(&mut worker).expect("GET during the pause");
    assert_eq!(value, "before");
    assert!(started.elapsed() < Duration::from_millis(400), "reads are not held: {:?}", started.elapsed());
    let started = Instant::now();
    let _: () = redis::cmd("SET").arg("clients:pause").arg("after").query(&mut worker).expect("SET after the pause");
    let held = started.elapsed();
    assert!(held >= Duration::from_millis(400), "the write was not held: {held:?}");
    assert!(held < Duration::from_secs(3), "the write was held too long: {held:?}");

    // ALL holds everything until UNPAUSE, which releases at once.
    let _: () = redis::cmd("CLIENT").arg("PAUSE").arg(20_000).arg("ALL").query(&mut admin).expect("CLIENT PAUSE ALL");
    let waiter = thread::spawn(move || {
        let started = Instant::now();
        let value: String = redis::cmd("GET").arg("clients:pause").query(&mut worker).expect("GET held by ALL");
        (value, started.elapsed())
    });
    thread::sleep(Duration::from_millis(300));
    assert!(!waiter.is_finished(), "the GET was not held by PAUSE ALL");
    let _: () = redis::cmd("CLIENT").arg("UNPAUSE").query(&mut admin).expect("CLIENT UNPAUSE");
    let (value, took) = waiter.join().expect("waiter");
    assert_eq!(value, "after");
    assert!(took < Duration::from_secs(5), "UNPAUSE did not release the held client: {took:?}");

    let bad = redis::cmd("CLIENT").arg("PAUSE").arg("soon").query::<()>(&mut admin).expect_err("bad timeout");
    assert!(bad.to_string().contains("timeout is not an integer"), "{bad}");
}

/// A request held by CLIENT PAUSE blocks its client, as Redis blocks it (`BLOCKED_POSTPONE`, what
/// its own tests wait for with `wait_for_blocked_clients_count`): INFO counts it in
/// `blocked_clients` and CLIENT LIST flags it `b`, neither once it ran; CLIENT UNBLOCK does not
/// end the wait.
#[test]
fn a_client_held_by_client_pause_counts_as_blocked() {
    let proxy = Proxy::start(Cluster::shared(), ProxyOptions::default());
    let (mut admin, _) = named(&proxy, "admin");
    let (mut worker, worker_id) = named(&proxy, "held-worker");
    let blocked_clients = |con: &mut Connection| -> String {
        let text: String = redis::cmd("INFO").arg("clients").query(con).expect("INFO clients");
        text.lines().find_map(|l| l.strip_prefix("blocked_clients:")).unwrap_or_default().to_owned()
    };
    let flags = |con: &mut Connection| -> String {
        let line = list(con, &["ID", &worker_id.to_string()]).pop().expect("the worker's line");
        field(&line, "flags").unwrap_or_default().to_owned()
    };
    assert_eq!(blocked_clients(&mut admin), "0");

    let _: () = redis::cmd("CLIENT").arg("PAUSE").arg(20_000).arg("WRITE").query(&mut admin).expect("CLIENT PAUSE");
    let writer = thread::spawn(move || {
        let _: () = redis::cmd("SET").arg("clients:postponed").arg(1).query(&mut worker).expect("SET held");
        worker
    });
    let seen = redisforge_tests::wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        blocked_clients(&mut admin) == "1"
    });
    assert!(seen, "the held client is not counted: {}", blocked_clients(&mut admin));
    assert_eq!(flags(&mut admin), "b");
    let unblocked: i64 = redis::cmd("CLIENT").arg("UNBLOCK").arg(worker_id).query(&mut admin).expect("CLIENT UNBLOCK");
    assert_eq!(unblocked, 0, "CLIENT UNBLOCK leaves a paused client waiting");
    assert!(!writer.is_finished(), "the SET was not held");

    let _: () = redis::cmd("CLIENT").arg("UNPAUSE").query(&mut admin).expect("CLIENT UNPAUSE");
    let _worker = writer.join().expect("writer");
    assert_eq!(blocked_clients(&mut admin), "0");
    assert_eq!(flags(&mut admin), "N");
}

/// A RESP2 subscriber's command that subscribed mode refuses is refused during a CLIENT PAUSE at
/// once, as Redis' `processCommand` checks subscribed mode before the pause; the commands it
/// allows (PING here) are held like any other.
#[test]
fn a_subscriber_is_refused_at_once_during_a_pause_and_its_ping_is_held() {
    let proxy = Proxy::start(Cluster::shared(), ProxyOptions::default());
    let (mut admin, _) = named(&proxy, "admin");
    let mut sub = raw_client(&proxy);
    sub.write_all(&resp_command(&[b"SUBSCRIBE", b"clients:paused:chan"])).expect("SUBSCRIBE");
    expect_bytes(&mut sub, b"*3\r\n$9\r\nsubscribe\r\n$19\r\nclients:paused:chan\r\n:1\r\n", "subscribed");

    let _: () = redis::cmd("CLIENT").arg("PAUSE").arg(20_000).arg("ALL").query(&mut admin).expect("CLIENT PAUSE ALL");
    let started = Instant::now();
    sub.write_all(&resp_command(&[b"SET", b"clients:paused:key", b"1"])).expect("SET");
    let refusal: &[u8] = b"-ERR Can't execute 'set': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n";
    expect_bytes(&mut sub, refusal, "the refusal during the pause");
    assert!(started.elapsed() < Duration::from_secs(2), "the refusal waited for the pause: {:?}", started.elapsed());

    sub.write_all(&resp_command(&[b"PING"])).expect("PING");
    sub.set_read_timeout(Some(Duration::from_millis(500))).expect("read timeout");
    let mut byte = [0u8; 1];
    let early = sub.read(&mut byte);
    assert!(early.is_err(), "PING was answered during PAUSE ALL: {early:?} {byte:?}");
    sub.set_read_timeout(Some(Duration::from_secs(5))).expect("read timeout");
    let _: () = redis::cmd("CLIENT").arg("UNPAUSE").query(&mut admin).expect("CLIENT UNPAUSE");
    expect_bytes(&mut sub, b"*2\r\n$4\r\npong\r\n$0\r\n\r\n", "PING once unpaused");
}

fn raw_client(proxy: &Proxy) -> TcpStream {
    let stream = TcpStream::connect(proxy.addr()).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("read timeout");
    stream
}

/// Reads exactly as many bytes as `expected` has and compares them.
fn expect_bytes(stream: &mut TcpStream, expected: &[u8], what: &str) {
    let mut got = vec![0u8; expected.len()];
    stream.read_exact(&mut got).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(expected), "{what}");
}

/// A client that sends nothing for 2 s has its session give back its spare buffers (README,
/// "Memory"); whatever the client has in progress must come through that: half a request, a
/// transaction being queued, a BLPOP blocked on the node, a subscription, a pipeline's room.
#[test]
fn clients_idle_past_the_buffer_trim_keep_what_they_have_in_progress() {
    let proxy = Proxy::start(Cluster::shared(), ProxyOptions::default());
    let mut half = raw_client(&proxy);
    let set = resp_command(&[b"SET", b"clients:trim:half", b"value"]);
    half.write_all(&set[..set.len() / 2]).expect("first half");

    let mut tx = raw_client(&proxy);
    tx.write_all(&[resp_command(&[b"MULTI"]), resp_command(&[b"SET", b"clients:trim:tx", b"1"])].concat())
        .expect("MULTI");
    expect_bytes(&mut tx, b"+OK\r\n+QUEUED\r\n", "MULTI and a queued SET");

    let mut blocked = raw_client(&proxy);
    blocked.write_all(&resp_command(&[b"BLPOP", b"clients:trim:list", b"20"])).expect("BLPOP");

    let mut sub = raw_client(&proxy);
    sub.write_all(&resp_command(&[b"SUBSCRIBE", b"clients:trim:chan"])).expect("SUBSCRIBE");
    expect_bytes(&mut sub, b"*3\r\n$9\r\nsubscribe\r\n$17\r\nclients:trim:chan\r\n:1\r\n", "subscribed");

    let mut piped = raw_client(&proxy);
    let gets: Vec<u8> = (0..32).flat_map(|_| resp_command(&[b"GET", b"clients:trim:none"])).collect();
    piped.write_all(&gets).expect("pipeline");
    expect_bytes(&mut piped, &b"$-1\r\n".repeat(32), "a pipeline before the idle spell");

    // Idle past the trim (asked after 2 s without a request, looked at once a second).
    thread::sleep(Duration::from_millis(3500));

    half.write_all(&set[set.len() / 2..]).expect("second half");
    expect_bytes(&mut half, b"+OK\r\n", "a request half sent before the idle spell");
    tx.write_all(&resp_command(&[b"EXEC"])).expect("EXEC");
    expect_bytes(&mut tx, b"*1\r\n+OK\r\n", "the transaction queued before the idle spell");
    let mut other = proxy.client();
    let _: i64 = redis::cmd("RPUSH").arg("clients:trim:list").arg("x").query(&mut other).expect("RPUSH");
    expect_bytes(&mut blocked, b"*2\r\n$17\r\nclients:trim:list\r\n$1\r\nx\r\n", "the blocked BLPOP");
    let receivers: i64 = redis::cmd("PUBLISH").arg("clients:trim:chan").arg("hi").query(&mut other).expect("PUBLISH");
    assert_eq!(receivers, 1);
    expect_bytes(&mut sub, b"*3\r\n$7\r\nmessage\r\n$17\r\nclients:trim:chan\r\n$2\r\nhi\r\n", "a message");
    piped.write_all(&gets).expect("pipeline");
    expect_bytes(&mut piped, &b"$-1\r\n".repeat(32), "a pipeline after the idle spell");
    let value: String = redis::cmd("GET").arg("clients:trim:half").query(&mut other).expect("GET");
    assert_eq!(value, "value");
}

/// CLIENT PAUSE WRITE goes by a script's own flags, as Redis' `getCommandFlags` does: a script
/// declaring `no-writes` in its shebang (EVAL, or EVALSHA of a script the proxy has seen) runs
/// during the pause; one with a shebang without it, or with none (EVAL's `may-replicate`), waits,
/// as does PUBLISH (compared with a node by hand: Redis 7.0.15 holds EVAL without a shebang,
/// `#!lua` and PUBLISH, and lets `#!lua flags=no-writes` through).
#[test]
fn client_pause_write_lets_a_no_writes_script_through() {
    let proxy = Proxy::start(Cluster::shared(), ProxyOptions::default());
    let (mut admin, _) = named(&proxy, "admin");
    let (mut worker, _) = named(&proxy, "scripts");
    let key = "clients:pause-script";
    let read_only = "#!lua flags=no-writes\nreturn redis.call('GET', KEYS[1])";
    let sha: String = redis::cmd("SCRIPT").arg("LOAD").arg(read_only).query(&mut worker).expect("SCRIPT LOAD");
    let _: () = redis::cmd("SET").arg(key).arg("v").query(&mut worker).expect("SET");

    let _: () = redis::cmd("CLIENT").arg("PAUSE").arg(600).arg("WRITE").query(&mut admin).expect("CLIENT PAUSE WRITE");
    let paused_at = Instant::now();
    let value: String = redis::cmd("EVAL").arg(read_only).arg(1).arg(key).query(&mut worker).expect("EVAL no-writes");
    assert_eq!(value, "v");
    let value: String = redis::cmd("EVALSHA").arg(&sha).arg(1).arg(key).query(&mut worker).expect("EVALSHA no-writes");
    assert_eq!(value, "v");
    assert!(paused_at.elapsed() < Duration::from_millis(400), "a no-writes script was held: {:?}", paused_at.elapsed());

    let writing = "#!lua\nreturn redis.call('SET', KEYS[1], 'w')";
    let _: String = redis::cmd("EVAL").arg(writing).arg(1).arg(key).query(&mut worker).expect("EVAL writing");
    let held = paused_at.elapsed();
    assert!(held >= Duration::from_millis(550), "a script with a shebang and no no-writes was not held: {held:?}");

    let _: () = redis::cmd("CLIENT").arg("PAUSE").arg(600).arg("WRITE").query(&mut admin).expect("CLIENT PAUSE WRITE");
    let paused_at = Instant::now();
    let _: i64 = redis::cmd("EVAL").arg("return 1").arg(0).query(&mut worker).expect("EVAL without a shebang");
    let held = paused_at.elapsed();
    assert!(held >= Duration::from_millis(550), "a script without a shebang (may-replicate) was not held: {held:?}");

    // PUBLISH is `may-replicate` too, though `COMMAND` does not say so (Redis hides the flag).
    let _: () = redis::cmd("CLIENT").arg("PAUSE").arg(600).arg("WRITE").query(&mut admin).expect("CLIENT PAUSE WRITE");
    let paused_at = Instant::now();
    let _: i64 = redis::cmd("PUBLISH").arg("clients:pause-channel").arg("m").query(&mut worker).expect("PUBLISH");
    let held = paused_at.elapsed();
    assert!(held >= Duration::from_millis(550), "PUBLISH was not held: {held:?}");
}

/// The proxy remembers at most 10,000 scripts (their bodies and shebang flags); past that a new
/// one takes an older one's place. A script loaded after 10,000 others used to be forgotten, so
/// EVALSHA of it, though its shebang says `no-writes`, waited out a WRITE pause (Redis 7.4's
/// pause.tcl hung after its scripting.tcl had loaded 50,000 scripts). Its own cluster: the
/// masters keep the scripts.
#[test]
fn a_no_writes_script_loaded_after_ten_thousand_others_runs_during_a_write_pause() {
    let cluster = Cluster::start(ClusterOptions { replicas_per_master: 0, ..ClusterOptions::default() });
    let proxy = Proxy::start(&cluster, ProxyOptions::default());
    let (mut admin, _) = named(&proxy, "admin");
    let (mut worker, _) = named(&proxy, "scripts");
    let mut loads = redis::pipe();
    for i in 0..10_001 {
        loads.cmd("SCRIPT").arg("LOAD").arg(format!("return {i}")).ignore();
    }
    let _: () = loads.query(&mut worker).expect("10,001 SCRIPT LOADs");
    let read_only = "#!lua flags=no-writes\nreturn 'late'";
    let sha: String = redis::cmd("SCRIPT").arg("LOAD").arg(read_only).query(&mut worker).expect("SCRIPT LOAD");
    let _: () =
        redis::cmd("CLIENT").arg("PAUSE").arg(5_000).arg("WRITE").query(&mut admin).expect("CLIENT PAUSE WRITE");
    let paused_at = Instant::now();
    let value: String = redis::cmd("EVALSHA").arg(&sha).arg(0).query(&mut worker).expect("EVALSHA no-writes");
    assert_eq!(value, "late");
    assert!(paused_at.elapsed() < Duration::from_millis(2_000), "held: {:?}", paused_at.elapsed());
    let _: () = redis::cmd("CLIENT").arg("UNPAUSE").query(&mut admin).expect("CLIENT UNPAUSE");
}

/// CLIENT PAUSE WRITE goes by a function's own flags, as Redis' `fcallGetCommandFlags` does (and
/// Redis' pause.tcl checks): FCALL of a function that declares `no-writes` runs during the pause,
/// FCALL or FCALL_RO of one that does not waits. The proxy reads the flags from a master as the
/// pause starts.
#[test]
fn client_pause_write_lets_fcall_of_a_no_writes_function_through() {
    let proxy = Proxy::start(Cluster::shared(), ProxyOptions::default());
    let (mut admin, _) = named(&proxy, "admin");
    let (mut worker, _) = named(&proxy, "functions");
    let library = "#!lua name=pausefns\n\
        redis.register_function{function_name='pause_reader', callback=function(keys) return redis.call('GET', keys[1]) end, flags={'no-writes'}}\n\
        redis.register_function('pause_writer', function(keys) return redis.call('SET', keys[1], 'w') end)";
    let _: String =
        redis::cmd("FUNCTION").arg("LOAD").arg("REPLACE").arg(library).query(&mut worker).expect("FUNCTION LOAD");
    let key = "clients:pause-function";
    let _: () = redis::cmd("SET").arg(key).arg("v").query(&mut worker).expect("SET");

    let _: () = redis::cmd("CLIENT").arg("PAUSE").arg(1500).arg("WRITE").query(&mut admin).expect("CLIENT PAUSE WRITE");
    let paused_at = Instant::now();
    let value: String =
        redis::cmd("FCALL").arg("PAUSE_READER").arg(1).arg(key).query(&mut worker).expect("FCALL reader");
    assert_eq!(value, "v");
    let read_in = paused_at.elapsed();
    assert!(read_in < Duration::from_millis(1000), "FCALL of a no-writes function was held: {read_in:?}");
    // FCALL_RO of a function that may write is held too (and then refused by the node).
    let refused = redis::cmd("FCALL_RO").arg("pause_writer").arg(1).arg(key).query::<()>(&mut worker);
    let refused = refused.expect_err("FCALL_RO of a writing function").to_string();
    assert!(refused.contains("write flag"), "{refused}");
    let held = paused_at.elapsed();
    assert!(held >= Duration::from_millis(1400), "FCALL_RO of a writing function was not held: {held:?}");

    let _: () = redis::cmd("CLIENT").arg("PAUSE").arg(600).arg("WRITE").query(&mut admin).expect("CLIENT PAUSE WRITE");
    let paused_at = Instant::now();
    let _: () = redis::cmd("FCALL").arg("pause_writer").arg(1).arg(key).query(&mut worker).expect("FCALL writer");
    let held = paused_at.elapsed();
    assert!(held >= Duration::from_millis(550), "FCALL of a writing function was not held: {held:?}");

    let _: String = redis::cmd("FUNCTION").arg("DELETE").arg("pausefns").query(&mut worker).expect("FUNCTION DELETE");
}

/// CLIENT SETINFO as Redis 7.2 takes it (Redis 7.0 has no SETINFO; the texts are 7.2's
/// `clientSetinfoCommand`): a value with spaces, newlines or other bytes outside `!`..=`~` is
/// refused, naming the attribute as the client typed it; an empty value clears the attribute.
#[test]
fn client_setinfo_refuses_what_would_break_client_list_and_clears_on_empty() {
    let proxy = Proxy::start(Cluster::shared(), ProxyOptions::default());
    let mut con = proxy.client();
    let setinfo = |con: &mut Connection, attr: &str, value: &str| -> Result<(), String> {
        let reply: redis::RedisResult<()> = redis::cmd("CLIENT").arg("SETINFO").arg(attr).arg(value).query(con);
        reply.map_err(|e| e.to_string())
    };
    let info = |con: &mut Connection| -> String { redis::cmd("CLIENT").arg("INFO").query(con).expect("CLIENT INFO") };
    setinfo(&mut con, "lib-name", "redis-py").expect("a valid lib-name");
    setinfo(&mut con, "LIB-VER", "5.0.1").expect("a valid lib-ver");
    let spaced = setinfo(&mut con, "lib-name", "a b").expect_err("a lib-name with a space");
    assert!(spaced.contains("lib-name cannot contain spaces, newlines or special characters."), "{spaced}");
    let newline = setinfo(&mut con, "LIB-VER", "1\n2").expect_err("a lib-ver with a newline");
    assert!(newline.contains("LIB-VER cannot contain spaces, newlines or special characters."), "{newline}");
    let line = info(&mut con);
    assert_eq!(
        (field(&line, "lib-name"), field(line.trim_end(), "lib-ver")),
        (Some("redis-py"), Some("5.0.1")),
        "{line}"
    );
    setinfo(&mut con, "lib-name", "").expect("an empty lib-name");
    let line = info(&mut con);
    assert_eq!(field(&line, "lib-name"), Some(""), "cleared: {line}");
    assert_eq!(field(line.trim_end(), "lib-ver"), Some("5.0.1"), "{line}");
}

/// `CLIENT KILL ID a ID b` kills b only: Redis 7 keeps an option's last value (its parse
/// overwrites it; Valkey 8.1 kills every id given, and the proxy follows Redis).
#[test]
fn client_kill_keeps_the_last_value_of_an_option_given_twice() {
    let proxy = Proxy::start(Cluster::shared(), ProxyOptions::default());
    let (mut first, first_id) = named(&proxy, "kill-first");
    let (_second, second_id) = named(&proxy, "kill-second");
    let mut killer = proxy.client();
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(first_id)
        .arg("ID")
        .arg(second_id)
        .query(&mut killer)
        .expect("CLIENT KILL");
    assert_eq!(killed, 1, "only the last ID");
    let pong: String = redis::cmd("PING").query(&mut first).expect("the first client lives");
    assert_eq!(pong, "PONG");
    let names: Vec<String> =
        list(&mut killer, &[]).iter().filter_map(|l| field(l, "name").map(str::to_owned)).collect();
    assert!(!names.contains(&"kill-second".to_owned()), "{names:?}");
}
