//! Long scripts and functions through the proxy, as on one Redis node: a busy master answers other
//! clients `-BUSY` promptly instead of queueing them behind the script, SCRIPT KILL and FUNCTION
//! KILL reach it and stop the script (`NOTBUSY` when nothing runs, `UNKILLABLE` after a write),
//! and the master serves normally afterwards.

use std::thread;
use std::time::{Duration, Instant};

use redis::Value;
use redisforge_tests::resp::{Conn, encode};
use redisforge_tests::{
    Cluster, ClusterOptions, Proxy, ProxyOptions, http_get, query_args, raw_roundtrip, resp_command, wait_until,
};

/// Keys of one slot, so every script and probe below is about the same master.
const KEY: &str = "{busy}k";
const PROBE: &str = "{busy}probe";

/// A cluster of its own: a busy master must not disturb other tests. No replicas, so a busy master
/// is never failed over; the nodes answer `-BUSY` (and the cluster bus) after 300 ms of a script.
fn cluster() -> Cluster {
    Cluster::start(ClusterOptions {
        masters: 3,
        replicas_per_master: 0,
        extra_config: vec!["busy-reply-threshold 300".to_owned()],
        ..ClusterOptions::default()
    })
}

/// A key on another master than [`KEY`]'s.
fn key_elsewhere(cluster: &Cluster) -> String {
    let busy = master_of(cluster, KEY);
    cluster.key_per_master("elsewhere").into_iter().find(|k| master_of(cluster, k) != busy).expect("three masters")
}

/// The `ip:port` of the master serving `key`.
fn master_of(cluster: &Cluster, key: &str) -> String {
    let slot = cluster.slot_for_key(key);
    let range = cluster.slot_ranges().into_iter().find(|r| (r.start..=r.end).contains(&slot));
    range.map(|r| r.master).expect("a master serves every slot")
}

/// Runs `args` on a new client in a thread; the thread returns the reply or error text.
fn in_background(proxy: &Proxy, args: &[&str]) -> thread::JoinHandle<Result<Value, String>> {
    let mut con = proxy.client();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    thread::spawn(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        query_args(&mut con, &args)
    })
}

fn args(words: &[&str]) -> Vec<Vec<u8>> {
    words.iter().map(|w| w.as_bytes().to_vec()).collect()
}

/// The first reply line of `args` on a new raw connection, exactly as the proxy sent it.
fn raw_line(proxy: &Proxy, args: &[&str]) -> String {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    let mut request = resp_command(&args);
    request.extend_from_slice(&resp_command(&[b"QUIT"]));
    let reply = raw_roundtrip(&proxy.addr(), &request, Duration::from_secs(5));
    String::from_utf8_lossy(&reply).lines().next().unwrap_or_default().to_owned()
}

/// The proxy's `node_busy` series with value 1.
fn busy_nodes(proxy: &Proxy) -> Vec<String> {
    let (_, body) = http_get(&proxy.metrics_addr(), "/metrics", Duration::from_secs(5));
    body.lines().filter(|l| l.starts_with("redisforge_node_busy{") && l.ends_with(" 1")).map(str::to_owned).collect()
}

/// Waits until a GET of [`PROBE`] is answered `-BUSY`, and returns that error line and how long
/// the GET itself took.
fn wait_busy(proxy: &Proxy) -> (String, Duration) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sent = Instant::now();
        match raw_line(proxy, &["GET", PROBE]) {
            line if line.starts_with("-BUSY ") => return (line, sent.elapsed()),
            other => assert!(Instant::now() < deadline, "the master never turned busy: last reply {other:?}"),
        }
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_busy_script_answers_busy_promptly_and_script_kill_stops_it() {
    let cluster = cluster();
    let proxy = Proxy::start(&cluster, ProxyOptions::default());
    // Asked of the nodes before any of them is busy.
    let elsewhere = key_elsewhere(&cluster);
    let mut admin = proxy.client();
    assert_eq!(query_args(&mut admin, &["SET", PROBE, "before"]), Ok(Value::Okay));
    assert_eq!(
        raw_line(&proxy, &["SCRIPT", "KILL"]),
        "-NOTBUSY No scripts in execution right now.",
        "SCRIPT KILL with no script running, as on a node"
    );

    // Pipelined behind a write to another master, as one batch: the write's reply comes while
    // the script runs, not held back for the rest of the batch (a script may run for long).
    let mut script = Conn::open(&proxy.addr());
    let mut batch = encode(&args(&["SET", &elsewhere, "before the script"]));
    batch.extend(encode(&args(&["EVAL", "while true do end", "1", KEY])));
    script.send_raw(&batch).expect("send the batch");
    let first = script.read_within(Duration::from_secs(2)).expect("the connection stays");
    assert_eq!(first.map(|(bytes, _)| bytes), Some(b"+OK\r\n".to_vec()), "the write's reply, while the script runs");
    let (error, took) = wait_busy(&proxy);
    // Redis' text; Valkey's says "Valkey is busy", and the proxy follows the server it serves.
    assert!(error.ends_with(" is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE."), "{error}");
    let (again_error, _) = wait_busy(&proxy);
    assert_eq!(again_error, error, "the proxy's own -BUSY has the node's wording");
    // Once busy, the answer is prompt: far below the command timeout (2 s), not queued.
    let (_, again) = wait_busy(&proxy);
    assert!(again < Duration::from_millis(500), "BUSY took {again:?} (first probe {took:?})");
    assert!(wait_until(Duration::from_secs(3), Duration::from_millis(50), || !busy_nodes(&proxy).is_empty()));
    assert!(proxy.log().contains("node busy running a script"), "a log line names the busy node");
    // Other masters serve as usual meanwhile.
    assert_eq!(query_args(&mut admin, &["SET", &elsewhere, "v"]), Ok(Value::Okay));

    let killed = Instant::now();
    assert_eq!(query_args(&mut admin, &["SCRIPT", "KILL"]), Ok(Value::Okay));
    let (outcome, _) = script.read().expect("the script's reply");
    let error = String::from_utf8_lossy(&outcome);
    assert!(error.contains("Script killed by user with SCRIPT KILL"), "{error}");
    assert!(killed.elapsed() < Duration::from_secs(2));

    // The master serves normally again, on every connection, with the right replies.
    for _ in 0..20 {
        assert_eq!(query_args(&mut admin, &["GET", PROBE]), Ok(Value::BulkString(b"before".to_vec())));
    }
    assert!(wait_until(Duration::from_secs(3), Duration::from_millis(50), || busy_nodes(&proxy).is_empty()));
    assert_eq!(
        query_args(&mut admin, &["EVAL", "return redis.call('GET', KEYS[1])", "1", PROBE]),
        Ok(Value::BulkString(b"before".to_vec()))
    );
}

#[test]
fn function_kill_stops_a_busy_function_and_a_writing_script_is_unkillable() {
    let cluster = cluster();
    let proxy = Proxy::start(&cluster, ProxyOptions::default());
    // Asked of the nodes before any of them is busy.
    let elsewhere = key_elsewhere(&cluster);
    let mut admin = proxy.client();
    let library = "#!lua name=busylib\nredis.register_function('spin', function(keys) while true do end end)";
    assert_eq!(
        query_args(&mut admin, &["FUNCTION", "LOAD", "REPLACE", library]),
        Ok(Value::BulkString(b"busylib".to_vec()))
    );
    assert_eq!(raw_line(&proxy, &["FUNCTION", "KILL"]), "-NOTBUSY No scripts in execution right now.");

    let function = in_background(&proxy, &["FCALL", "spin", "1", KEY]);
    let (error, _) = wait_busy(&proxy);
    assert!(
        error.ends_with(" is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE."),
        "{error}"
    );
    assert_eq!(query_args(&mut admin, &["FUNCTION", "KILL"]), Ok(Value::Okay));
    let error = function.join().expect("function thread").expect_err("a killed function fails");
    assert!(error.contains("killed"), "{error}");
    assert_eq!(query_args(&mut admin, &["GET", PROBE]), Ok(Value::Nil));

    // A script that wrote cannot be killed (the node says UNKILLABLE); nothing else is disturbed
    // but that master, which only SHUTDOWN NOSAVE on the node itself ends (the test cluster goes).
    let _writer = in_background(&proxy, &["EVAL", "redis.call('SET', KEYS[1], 'x') while true do end", "1", KEY]);
    wait_busy(&proxy);
    let error = raw_line(&proxy, &["SCRIPT", "KILL"]);
    assert!(error.starts_with("-UNKILLABLE Sorry the script already executed write commands"), "{error}");
    assert!(query_args(&mut admin, &["SHUTDOWN", "NOSAVE"]).expect_err("refused").contains("unsupported command"));
    assert_eq!(query_args(&mut admin, &["SET", &elsewhere, "v"]), Ok(Value::Okay));
}

/// Commands queued in a transaction while a script keeps their master busy, as Redis' multi.tcl
/// ("MULTI-EXEC body and script timeout", "just EXEC and script timeout", "MULTI and script
/// timeout"): MULTI passes, a queued command is refused `-BUSY` at once and EXEC then aborts the
/// whole transaction, an EXEC during the script aborts it too, and nothing of it runs. The proxy
/// counts the master busy from the node's first `-BUSY` (its threshold here, 300 ms, passes
/// before the proxy's own, half the command timeout).
#[test]
fn a_transaction_meeting_a_busy_master_runs_nothing_as_on_a_node() {
    let cluster = cluster();
    let proxy = Proxy::start(&cluster, ProxyOptions::default());
    let counter = "{busy}xx";
    let mut admin = proxy.client();
    let mut tx = Conn::open(&proxy.addr());
    let say = |conn: &mut Conn, words: &[&str]| -> String {
        conn.send_raw(&encode(&args(words))).expect("send");
        let (reply, _) = conn.read().expect("a reply");
        String::from_utf8_lossy(&reply).trim_end().to_owned()
    };
    let busy_tail = " is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.";

    // A command queued while the script runs is refused, and the transaction with it.
    assert_eq!(query_args(&mut admin, &["SET", counter, "1"]), Ok(Value::Okay));
    assert_eq!(say(&mut tx, &["MULTI"]), "+OK");
    assert_eq!(say(&mut tx, &["INCR", counter]), "+QUEUED");
    let script = in_background(&proxy, &["EVAL", "while true do end", "1", KEY]);
    wait_busy(&proxy);
    let refused = say(&mut tx, &["INCR", counter]);
    assert!(refused.starts_with("-BUSY ") && refused.ends_with(busy_tail), "{refused}");
    assert_eq!(query_args(&mut admin, &["SCRIPT", "KILL"]), Ok(Value::Okay));
    script.join().expect("script thread").expect_err("a killed script fails");
    assert_eq!(say(&mut tx, &["INCR", counter]), "+QUEUED", "queued again once the script is gone");
    assert_eq!(say(&mut tx, &["EXEC"]), "-EXECABORT Transaction discarded because of previous errors.");
    assert_eq!(query_args(&mut admin, &["GET", counter]), Ok(Value::BulkString(b"1".to_vec())));
    assert_eq!(say(&mut tx, &["PING", "asdf"]), "$4\r\nasdf", "no longer in the transaction");

    // MULTI itself passes while the script runs (it may); the queued command does not. The same
    // steps on the busy node itself, side by side, give the same replies.
    let script = in_background(&proxy, &["EVAL", "while true do end", "1", KEY]);
    wait_busy(&proxy);
    let mut node = Conn::open(&master_of(&cluster, KEY));
    assert_eq!(say(&mut tx, &["MULTI"]), "+OK");
    assert_eq!(say(&mut node, &["MULTI"]), "+OK");
    let refused = say(&mut tx, &["INCR", counter]);
    assert!(refused.starts_with("-BUSY "), "{refused}");
    assert_eq!(refused, say(&mut node, &["INCR", counter]), "the node's own refusal");
    assert_eq!(query_args(&mut admin, &["SCRIPT", "KILL"]), Ok(Value::Okay));
    script.join().expect("script thread").expect_err("a killed script fails");
    let aborted = say(&mut tx, &["EXEC"]);
    assert_eq!(aborted, "-EXECABORT Transaction discarded because of previous errors.");
    assert_eq!(aborted, say(&mut node, &["EXEC"]), "the node's own EXEC after a refused command");

    // An EXEC that comes while the script runs aborts the transaction queued before it.
    assert_eq!(say(&mut tx, &["MULTI"]), "+OK");
    assert_eq!(say(&mut tx, &["INCR", counter]), "+QUEUED");
    let script = in_background(&proxy, &["EVAL", "while true do end", "1", KEY]);
    wait_busy(&proxy);
    let aborted = say(&mut tx, &["EXEC"]);
    assert!(
        aborted.starts_with("-EXECABORT Transaction discarded because of: BUSY ") && aborted.ends_with(busy_tail),
        "{aborted}"
    );
    assert_eq!(query_args(&mut admin, &["SCRIPT", "KILL"]), Ok(Value::Okay));
    script.join().expect("script thread").expect_err("a killed script fails");
    assert_eq!(query_args(&mut admin, &["GET", counter]), Ok(Value::BulkString(b"1".to_vec())), "nothing ran");
    assert_eq!(say(&mut tx, &["PING", "asdf"]), "$4\r\nasdf", "no longer in the transaction");
}

/// FUNCTION STATS says which function runs wherever it runs, as one node's does: every master is
/// asked (it passes a busy node, as on Redis), and the one running a function answers; while
/// nothing runs `running_script` is null. Checked from several clients, which the proxy spreads
/// over the masters for keyless commands.
#[test]
fn function_stats_names_the_running_function_whichever_master_runs_it() {
    let cluster = cluster();
    let proxy = Proxy::start(&cluster, ProxyOptions::default());
    let mut admin = proxy.client();
    let library = "#!lua name=statslib\nredis.register_function('spin', function(keys) while true do end end)";
    assert_eq!(
        query_args(&mut admin, &["FUNCTION", "LOAD", "REPLACE", library]),
        Ok(Value::BulkString(b"statslib".to_vec()))
    );
    let idle = b"*4\r\n$14\r\nrunning_script\r\n$-1\r\n$7\r\nengines\r\n*2\r\n$3\r\nLUA\r\n*4\r\n$15\r\nlibraries_count\r\n:1\r\n$15\r\nfunctions_count\r\n:1\r\n";
    let stats = |conn: &mut Conn| {
        conn.send_raw(&encode(&args(&["FUNCTION", "STATS"]))).expect("send");
        conn.read().expect("FUNCTION STATS").0
    };
    let mut clients: Vec<Conn> = (0..6).map(|_| Conn::open(&proxy.addr())).collect();
    let mut node = Conn::open(&master_of(&cluster, KEY));
    assert_eq!(String::from_utf8_lossy(&stats(&mut node)), String::from_utf8_lossy(idle), "the node's own");
    for conn in &mut clients {
        assert_eq!(String::from_utf8_lossy(&stats(conn)), String::from_utf8_lossy(idle), "nothing runs");
    }

    let function = in_background(&proxy, &["FCALL", "spin", "1", KEY]);
    wait_busy(&proxy);
    let running = b"*4\r\n$14\r\nrunning_script\r\n*6\r\n$4\r\nname\r\n$4\r\nspin\r\n$7\r\ncommand\r\n*4\r\n$5\r\nFCALL\r\n$4\r\nspin\r\n$1\r\n1\r\n$7\r\n{busy}k\r\n$11\r\nduration_ms\r\n:";
    let on_node = stats(&mut node);
    assert!(on_node.starts_with(running), "the busy node's own: {}", String::from_utf8_lossy(&on_node));
    for conn in &mut clients {
        let reply = stats(conn);
        assert!(
            reply.starts_with(running),
            "every client sees the running function: {}",
            String::from_utf8_lossy(&reply)
        );
        assert!(reply.ends_with(&idle[idle.len() - 60..]), "{}", String::from_utf8_lossy(&reply));
    }
    assert_eq!(query_args(&mut admin, &["FUNCTION", "KILL"]), Ok(Value::Okay));
    function.join().expect("function thread").expect_err("a killed function fails");
    assert_eq!(String::from_utf8_lossy(&stats(&mut clients[0])), String::from_utf8_lossy(idle));
}
