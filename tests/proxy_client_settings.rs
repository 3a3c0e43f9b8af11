//! Settings about clients set through the proxy (`maxclients`, `timeout`, the `normal` and `pubsub`
//! classes of `client-output-buffer-limit`): the proxy's alone, as on the one node a client
//! believes it talks to, never the nodes' (where they would bound the proxy's own connections);
//! refused with the nodes' own refusal where Redis refuses the value; in a transaction taken in
//! order once EXEC ran. Each test has a cluster of its own: the nodes' settings are read.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use redis::Connection;
use redisforge_tests::raw::{drain_until_closed, raw_connect, read_some};
use redisforge_tests::{Cluster, ProxyOptions, proxy_on_own_cluster, read_until, resp_command, wait_until};

/// PING on a raw connection; the reply as text.
fn ping(stream: &mut TcpStream) -> String {
    if stream.write_all(b"PING\r\n").is_err() {
        return String::new();
    }
    String::from_utf8_lossy(&read_some(stream, 7)).into_owned()
}

/// The value `CONFIG GET name` answers on `conn`.
fn config_get(conn: &mut Connection, name: &str) -> String {
    let pair: Vec<String> = redis::cmd("CONFIG").arg("GET").arg(name).query(conn).expect("CONFIG GET");
    assert_eq!(pair.len(), 2, "CONFIG GET {name}: {pair:?}");
    pair[1].clone()
}

/// The value of `name` on every master of `cluster`, which must agree.
fn on_nodes(cluster: &Cluster, name: &str) -> String {
    let values: Vec<String> = cluster.masters().iter().map(|m| config_get(&mut cluster.client(m), name)).collect();
    assert!(values.windows(2).all(|w| w[0] == w[1]), "{name} differs between the masters: {values:?}");
    values[0].clone()
}

/// `args` sent on a new raw connection to `addr`, and the single-line reply, byte for byte.
fn raw_reply(addr: &str, args: &[&str]) -> String {
    let mut stream = raw_connect(addr);
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    stream.write_all(&resp_command(&args)).expect("send");
    let reply = read_until(&mut stream, Duration::from_secs(10), |got| got.ends_with(b"\r\n"));
    String::from_utf8_lossy(&reply).into_owned()
}

/// `CONFIG SET maxclients` through the proxy bounds the proxy's clients (not the nodes'): clients
/// beyond a smaller bound are refused, those connected stay.
#[test]
fn config_set_maxclients_through_the_proxy_bounds_its_clients() {
    let (cluster, proxy, mut admin) = proxy_on_own_cluster(ProxyOptions::default());
    let nodes_before = on_nodes(&cluster, "maxclients");
    let mut others: Vec<TcpStream> = (0..20).map(|_| raw_connect(&proxy.addr())).collect();
    for stream in &mut others {
        assert_eq!(ping(stream), "+PONG\r\n");
    }
    // 21 clients are connected (once the start-up probe's connection is gone); the new bound admits
    // none more.
    let counted = wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        proxy.metric("redisforge_client_connections") == Some(21.0)
    });
    assert!(counted, "{:?} clients counted", proxy.metric("redisforge_client_connections"));
    // Pipelined, the CONFIG GET sees the CONFIG SET before it, as on one node.
    let ((), shown): ((), Vec<String>) = redis::pipe()
        .cmd("CONFIG")
        .arg("SET")
        .arg("maxclients")
        .arg("21")
        .cmd("CONFIG")
        .arg("GET")
        .arg("maxclients")
        .query(&mut admin)
        .expect("CONFIG SET, CONFIG GET");
    assert_eq!(shown, ["maxclients", "21"]);
    let mut refused = raw_connect(&proxy.addr());
    assert_eq!(String::from_utf8_lossy(&read_some(&mut refused, 64)), "-ERR max number of clients reached\r\n");
    for stream in &mut others {
        assert_eq!(ping(stream), "+PONG\r\n", "a client connected before the bound is still served");
    }
    assert_eq!(on_nodes(&cluster, "maxclients"), nodes_before, "the nodes keep their own bound");
    // A value Redis refuses gets a node's refusal, byte for byte, and changes nothing.
    let node = cluster.masters()[0].clone();
    let refusal = raw_reply(&node, &["CONFIG", "SET", "maxclients", "0"]);
    assert!(refusal.starts_with("-ERR CONFIG SET failed (possibly related to argument 'maxclients')"), "{refusal}");
    drop(others.pop());
    let mut through = None;
    let freed = wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        through = Some(raw_reply(&proxy.addr(), &["CONFIG", "SET", "maxclients", "0"]));
        through.as_deref() != Some("-ERR max number of clients reached\r\n")
    });
    assert!(freed, "no client admitted after one left");
    assert_eq!(through.as_deref(), Some(refusal.as_str()));
    assert_eq!(config_get(&mut admin, "maxclients"), "21");
}

/// `CONFIG SET timeout` through the proxy closes the proxy's idle clients, at once for those
/// already connected; 0 turns it off again. The nodes keep theirs (they would close the proxy's
/// idle connections).
#[test]
fn config_set_timeout_through_the_proxy_closes_its_idle_clients() {
    let (cluster, proxy, mut admin) = proxy_on_own_cluster(ProxyOptions::default());
    let mut idle = raw_connect(&proxy.addr());
    assert_eq!(ping(&mut idle), "+PONG\r\n");
    let mut busy = raw_connect(&proxy.addr());
    let ((), shown): ((), Vec<String>) = redis::pipe()
        .cmd("CONFIG")
        .arg("SET")
        .arg("timeout")
        .arg("2")
        .cmd("CONFIG")
        .arg("GET")
        .arg("timeout")
        .query(&mut admin)
        .expect("CONFIG SET, CONFIG GET");
    assert_eq!(shown, ["timeout", "2"]);
    assert_eq!(on_nodes(&cluster, "timeout"), "0", "the nodes keep their own timeout");
    // The busy client sends a PING every 200 ms for 4.4 s; the idle one sends nothing.
    for _ in 0..22 {
        assert_eq!(ping(&mut busy), "+PONG\r\n", "a client that sends is not timed out");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(drain_until_closed(&mut idle, Duration::from_secs(3)), Some(0), "the idle client is closed");
    // On a new connection: the test's first one has been idle for longer than the timeout.
    let off: redis::RedisResult<()> =
        redis::cmd("CONFIG").arg("SET").arg("timeout").arg("0").query(&mut proxy.client());
    off.expect("CONFIG SET timeout 0");
    let mut quiet = raw_connect(&proxy.addr());
    assert_eq!(ping(&mut quiet), "+PONG\r\n");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(ping(&mut quiet), "+PONG\r\n", "no new client is timed out any more");
    assert_eq!(ping(&mut busy), "+PONG\r\n", "nor one connected while it was on");
}

/// A CONFIG SET naming settings of the proxy and of the nodes: the nodes get theirs alone, the
/// proxy takes its own once they took the rest; refused for any value (the proxy's or theirs),
/// the client gets a node's refusal and nothing changes on either side. `client-output-buffer-limit`
/// is split by class: `normal` and `pubsub` the proxy's, `replica` the nodes'.
#[test]
fn a_config_set_of_the_proxys_settings_and_the_nodes_is_split_between_them() {
    let (cluster, proxy, mut admin) = proxy_on_own_cluster(ProxyOptions::default());
    let node = cluster.masters()[0].clone();
    let set = |args: &[&str]| raw_reply(&proxy.addr(), &[&["CONFIG", "SET"], args].concat());
    assert_eq!(set(&["maxclients", "500", "slowlog-max-len", "321"]), "+OK\r\n");
    assert_eq!(config_get(&mut admin, "maxclients"), "500");
    assert_eq!(on_nodes(&cluster, "maxclients"), "10000");
    assert_eq!(on_nodes(&cluster, "slowlog-max-len"), "321");

    // Refused for the nodes' value, or for the proxy's: a node's own refusal of the same command.
    for args in [["maxclients", "600", "slowlog-max-len", "abc"], ["slowlog-max-len", "400", "timeout", "-1"]] {
        let refusal = raw_reply(&node, &[&["CONFIG", "SET"], &args[..]].concat());
        assert!(refusal.starts_with("-ERR CONFIG SET failed"), "{args:?} on a node: {refusal}");
        assert_eq!(set(&args), refusal, "{args:?}");
    }
    assert_eq!(config_get(&mut admin, "maxclients"), "500");
    assert_eq!(config_get(&mut admin, "timeout"), "0");
    assert_eq!(on_nodes(&cluster, "slowlog-max-len"), "321");

    let classes = "normal 5mb 1mb 10 replica 300mb 70mb 70 pubsub 40mb 10mb 30";
    assert_eq!(set(&["client-output-buffer-limit", classes]), "+OK\r\n");
    assert_eq!(
        config_get(&mut admin, "client-output-buffer-limit"),
        "normal 5242880 1048576 10 slave 314572800 73400320 70 pubsub 41943040 10485760 30"
    );
    assert_eq!(
        on_nodes(&cluster, "client-output-buffer-limit"),
        "normal 0 0 0 slave 314572800 73400320 70 pubsub 33554432 8388608 60",
        "the nodes took the replica class alone"
    );
}

/// Inside MULTI the proxy's settings are queued like any command and taken once EXEC ran, in
/// the transaction's order (a later CONFIG SET wins, whether the proxy answers it alone or the
/// nodes take part of it); a transaction a WATCH aborted takes none.
#[test]
fn client_settings_in_a_transaction_are_taken_in_order_once_exec_ran() {
    let (cluster, proxy, mut admin) = proxy_on_own_cluster(ProxyOptions::default());
    let mut client = raw_connect(&proxy.addr());
    let commands: [&[&[u8]]; 7] = [
        &[b"MULTI"],
        &[b"CONFIG", b"SET", b"timeout", b"100"],
        &[b"SET", b"{cs}:k", b"v"],
        &[b"CONFIG", b"SET", b"maxclients", b"50", b"slowlog-max-len", b"300"],
        &[b"CONFIG", b"SET", b"maxclients", b"60"],
        &[b"EXEC"],
        &[b"CONFIG", b"GET", b"maxclients"],
    ];
    client.write_all(&commands.iter().flat_map(|c| resp_command(c)).collect::<Vec<u8>>()).expect("send");
    let expected = "+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*4\r\n+OK\r\n+OK\r\n+OK\r\n+OK\r\n\
                    *2\r\n$10\r\nmaxclients\r\n$2\r\n60\r\n";
    let got = read_until(&mut client, Duration::from_secs(10), |got| got.len() >= expected.len());
    assert_eq!(String::from_utf8_lossy(&got), expected);
    assert_eq!(config_get(&mut admin, "timeout"), "100");
    assert_eq!(on_nodes(&cluster, "maxclients"), "10000");
    assert_eq!(on_nodes(&cluster, "timeout"), "0");
    assert_eq!(on_nodes(&cluster, "slowlog-max-len"), "300");

    // Aborted by a WATCH: nothing is taken.
    let watch: [&[&[u8]]; 1] = [&[b"WATCH", b"{cs}:k"]];
    client.write_all(&resp_command(watch[0])).expect("send WATCH");
    assert_eq!(read_until(&mut client, Duration::from_secs(10), |got| got.ends_with(b"\r\n")), b"+OK\r\n");
    let _: () = redis::cmd("SET").arg("{cs}:k").arg("w").query(&mut admin).expect("SET from another client");
    let aborted: [&[&[u8]]; 3] = [&[b"MULTI"], &[b"CONFIG", b"SET", b"maxclients", b"70"], &[b"EXEC"]];
    client.write_all(&aborted.iter().flat_map(|c| resp_command(c)).collect::<Vec<u8>>()).expect("send");
    let expected = "+OK\r\n+QUEUED\r\n*-1\r\n";
    let got = read_until(&mut client, Duration::from_secs(10), |got| got.len() >= expected.len());
    assert_eq!(String::from_utf8_lossy(&got), expected);
    assert_eq!(config_get(&mut admin, "maxclients"), "60");
}

/// The clients the idle-timeout scenarios open on one side: each sent its commands, its replies
/// read and dropped.
fn idle_scenarios(addr: &str) -> Vec<(&'static str, TcpStream)> {
    let scenarios: [(&str, &[&[&[u8]]]); 8] = [
        ("idle after a PING", &[&[b"PING"]]),
        ("inside MULTI", &[&[b"MULTI"], &[b"SET", b"{cst}:k", b"v"]]),
        ("a RESP2 channel subscriber", &[&[b"SUBSCRIBE", b"{cst}:ch"]]),
        ("a RESP3 pattern subscriber", &[&[b"HELLO", b"3"], &[b"PSUBSCRIBE", b"{cst}:p*"]]),
        ("a shard channel subscriber", &[&[b"SSUBSCRIBE", b"{cst}:sh"]]),
        ("subscribed, then unsubscribed", &[&[b"SUBSCRIBE", b"{cst}:ch"], &[b"UNSUBSCRIBE"]]),
        ("blocked without a timeout", &[&[b"BLPOP", b"{cst}:list", b"0"]]),
        ("blocked longer than the idle timeout", &[&[b"BLPOP", b"{cst}:list2", b"30"]]),
    ];
    let opened: Vec<(&str, TcpStream)> = scenarios
        .iter()
        .map(|(name, commands)| {
            let mut stream = raw_connect(addr);
            stream.write_all(&commands.iter().flat_map(|c| resp_command(c)).collect::<Vec<u8>>()).expect("send");
            (*name, stream)
        })
        .collect();
    // The replies (a blocked client has none): read and dropped once they came.
    std::thread::sleep(Duration::from_millis(300));
    opened
        .into_iter()
        .map(|(name, mut stream)| {
            stream.set_read_timeout(Some(Duration::from_millis(50))).expect("read timeout");
            let _ = std::io::Read::read(&mut stream, &mut [0u8; 4096]);
            (name, stream)
        })
        .collect()
}

/// Which clients an idle timeout of 1 s closes, through the proxy (`listen.idle_timeout`) and on
/// a standalone node of the version under test (`timeout 1`), after 4 s without a request: the
/// same ones (Redis' `clientsCronHandleTimeout` spares subscribers of every kind and blocked
/// clients, not one inside MULTI), each side checked against that list too.
#[test]
fn an_idle_timeout_closes_the_clients_a_node_closes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node =
        redisforge_tests::RedisServer::start(dir.path(), |port| vec![format!("port {port}"), "timeout 1".into()])
            .expect("a standalone node");
    let extra_toml = "[listen]\nplain = \"@PLAIN@\"\nidle_timeout = \"1s\"\n".to_owned();
    let proxy =
        redisforge_tests::Proxy::start(Cluster::shared(), ProxyOptions { extra_toml, ..ProxyOptions::default() });
    let mut sides = [idle_scenarios(&proxy.addr()), idle_scenarios(&node.addr())];
    std::thread::sleep(Duration::from_secs(4));
    let [through, direct] = sides.each_mut().map(|clients| {
        let closed = |stream: &mut TcpStream| drain_until_closed(stream, Duration::from_millis(300)).is_some();
        clients.iter_mut().map(|(name, stream)| (*name, closed(stream))).collect::<Vec<_>>()
    });
    let expected = [
        ("idle after a PING", true),
        ("inside MULTI", true),
        ("a RESP2 channel subscriber", false),
        ("a RESP3 pattern subscriber", false),
        ("a shard channel subscriber", false),
        ("subscribed, then unsubscribed", true),
        ("blocked without a timeout", false),
        ("blocked longer than the idle timeout", false),
    ];
    assert_eq!(direct, expected, "closed on the node");
    assert_eq!(through, direct, "closed through the proxy, against the node");
}

/// The soft limit of open files this test process has (and hands down to the processes it
/// starts), from `/proc/self/limits`.
fn open_files_soft_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("/proc/self/limits");
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("the open files line");
    line.split_whitespace().nth(3).and_then(|soft| soft.parse().ok()).expect("a soft limit")
}

/// A `maxclients` the open-file limit cannot serve: a node refuses it ("try with N", Redis'
/// `updateMaxclients`) unless it may raise its limit that far; the proxy, under the same limits,
/// answers the same, alone and inside MULTI, and CONFIG GET then shows the same on both sides.
/// Both start with as many clients as the limit serves, so that neither raised it at start (a
/// node that did set its hard limit too).
#[test]
fn a_maxclients_beyond_the_open_file_limit_is_answered_as_a_node_answers_it() {
    // At most 65,536: a node sizes its event loop by its maxclients (a soft limit of "infinity",
    // ~10^9, would not start it).
    let clients = open_files_soft_limit().saturating_sub(32).clamp(1, 65_536);
    let dir = tempfile::tempdir().expect("tempdir");
    let node = redisforge_tests::RedisServer::start(dir.path(), |port| {
        vec![format!("port {port}"), format!("maxclients {clients}")]
    })
    .expect("a standalone node");
    let extra_toml = format!("[listen]\nplain = \"@PLAIN@\"\nmax_clients = {clients}\n");
    let proxy =
        redisforge_tests::Proxy::start(Cluster::shared(), ProxyOptions { extra_toml, ..ProxyOptions::default() });
    // Above Linux' default `fs.nr_open` (1,048,576), which bounds even a privileged process; a
    // node walks down to its limit in steps of 16, so not far above it.
    let set: [&[u8]; 4] = [b"CONFIG", b"SET", b"maxclients", b"2000000"];
    let get: [&[u8]; 3] = [b"CONFIG", b"GET", b"maxclients"];
    let sequence: Vec<u8> =
        [&set[..], &[b"MULTI"], &set, &[b"EXEC"], &get].iter().flat_map(|c| resp_command(c)).collect();
    let [through, direct] = [proxy.addr(), node.addr()].map(|addr| {
        let mut stream = raw_connect(&addr);
        stream.write_all(&sequence).expect("send");
        // The last reply, CONFIG GET's: its array, the name, then the value and its CRLF.
        let last = b"*2\r\n$10\r\nmaxclients\r\n$";
        let reply = read_until(&mut stream, Duration::from_secs(20), |got| {
            let at = got.windows(last.len()).position(|w| w == last);
            at.is_some_and(|at| got[at + last.len()..].split(|&b| b == b'\n').count() == 3)
        });
        String::from_utf8_lossy(&reply).into_owned()
    });
    assert!(direct.contains("maxclients"), "the node's replies: {direct}");
    assert_eq!(through, direct);
}
