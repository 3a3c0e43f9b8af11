//! A new client's first command for its own connection (a blocking command, WATCH) reaches the
//! node before the commands other clients send after it, as on one node: the proxy keeps own
//! connections open ahead of need (`upstream/spares.rs`), so the command does not wait for a
//! connect and a login, and an own connection writes what its client handed over at once, where
//! a pooled connection waits a turn to gather other clients' requests (`upstream/wire.rs`). Redis'
//! own tests rely on that order (Blocking XREAD and XREADGROUP, key deleted), and so do
//! applications that start a consumer and then produce. Without either of the two, both tests
//! failed, most runs in their first round.

use std::thread;
use std::time::Duration;

use redis::Value;
use redisforge_tests::resp::{Conn, encode};
use redisforge_tests::{Cluster, Proxy, ProxyOptions, query_args};

/// Time for the proxy to open and log in the spare behind the one a new client took (a burst of
/// new clients faster than that may find none ready: README, "Across clients"), with room for a
/// machine busy with other tests.
const SPARE_OPENED: Duration = Duration::from_millis(200);

/// Rounds per test: without spares or with own connections waiting a turn, nearly every run failed
/// in its first.
const ROUNDS: u64 = 10;

/// A new client that the proxy has accepted and served once (its first command is then not
/// behind its own connect to the proxy).
fn connected(proxy: &Proxy) -> Conn {
    let mut conn = Conn::open(&proxy.addr());
    let (reply, _) = conn.call(&args(&["PING"])).expect("PING");
    assert_eq!(reply, b"+PONG\r\n");
    conn
}

fn args(words: &[&str]) -> Vec<Vec<u8>> {
    words.iter().map(|w| w.as_bytes().to_vec()).collect()
}

/// The next reply of `conn` as text, or why none came within 3 s.
fn reply_within(conn: &mut Conn) -> Result<String, String> {
    match conn.read_within(Duration::from_secs(3))? {
        Some((bytes, _)) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        None => Err("no reply within 3 s: the command reached the node after the later ones".to_owned()),
    }
}

/// Redis' "Blocking XREAD: key deleted", round after round, each with a new client: `XREAD … $`
/// must see the entry another client adds right after it, not take that entry for its `$`.
#[test]
fn a_new_clients_blocking_xread_reaches_the_node_before_a_later_xadd() {
    let proxy = Proxy::start(Cluster::shared(), ProxyOptions::default());
    let mut admin = proxy.client();
    let mut producer = Conn::open(&proxy.addr());
    let stream = "{blockorder}stream";
    for round in 0..ROUNDS {
        assert!(query_args(&mut admin, &["DEL", stream]).is_ok());
        assert!(query_args(&mut admin, &["XADD", stream, "666-0", "f", "v"]).is_ok());
        // New clients come one by one, not faster than the proxy opens a spare behind each.
        thread::sleep(SPARE_OPENED);
        let mut consumer = connected(&proxy);
        consumer.send(&args(&["XREAD", "BLOCK", "0", "STREAMS", stream, "$"])).expect("send XREAD");
        // At once, on another client, in one batch: the XADD may reach the node before an XREAD
        // that came first only if that XREAD waited somewhere.
        let id = format!("{}-0", 667 + round);
        let mut batch = encode(&args(&["DEL", stream]));
        batch.extend(encode(&args(&["XADD", stream, &id, "f", "v"])));
        producer.send_raw(&batch).expect("send DEL and XADD");
        assert_eq!(producer.read().expect("DEL").0, b":1\r\n");
        assert!(producer.read().expect("XADD").0.starts_with(b"$"));
        let reply = reply_within(&mut consumer).unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert!(reply.contains(&id), "round {round}: the XREAD returns the entry added after it: {reply}");
    }
}

/// Redis' "Blocking XREADGROUP: key deleted": a new client's XREADGROUP blocks before another
/// client's DEL of the stream reaches the node, and is ended by it (a consumer group's reader is
/// unblocked when its stream goes), rather than finding no group.
#[test]
fn a_new_clients_blocking_xreadgroup_reaches_the_node_before_a_later_del() {
    let proxy = Proxy::start(Cluster::shared(), ProxyOptions::default());
    let mut admin = proxy.client();
    let stream = "{blockorder}group-stream";
    for round in 0..ROUNDS {
        assert!(query_args(&mut admin, &["DEL", stream]).is_ok());
        assert!(query_args(&mut admin, &["XADD", stream, "666-0", "f", "v"]).is_ok());
        assert_eq!(query_args(&mut admin, &["XGROUP", "CREATE", stream, "mygroup", "$"]), Ok(Value::Okay));
        thread::sleep(SPARE_OPENED);
        let mut reader = connected(&proxy);
        reader
            .send(&args(&["XREADGROUP", "GROUP", "mygroup", "Alice", "BLOCK", "0", "STREAMS", stream, ">"]))
            .expect("send");
        assert_eq!(query_args(&mut admin, &["DEL", stream]), Ok(Value::Int(1)));
        let reply = reply_within(&mut reader).unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert!(
            reply.contains("no longer exists"),
            "round {round}: unblocked by the DEL, not refused before it: {reply}"
        );
    }
}
