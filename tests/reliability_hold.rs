//! Requests held while a slot has no master (`upstream.failover_wait`, `[limits] held_*`): they
//! wait instead of failing, go to the master that takes the slot in the client's order, fail
//! once `failover_wait` passes, and past a bound fail at once; a client that leaves gives its
//! held requests back. The kill -9 failover under load is in `reliability_failover.rs`.
//!
//! A slot loses its owner by `CLUSTER DELSLOTS` on every master (nodes run with
//! `cluster-require-full-coverage no`, so the other slots keep working) and gets it back with
//! `CLUSTER ADDSLOTS`: the same state a failover passes through, made on demand, so every timing
//! here is the proxy's and none is an election's.

use std::thread;
use std::time::{Duration, Instant};

use redis::{Connection, Value};
use redisforge_proxy::slot::key_slot;
use redisforge_tests::resp::Conn;
use redisforge_tests::{Cluster, ClusterOptions, Proxy, ProxyOptions, query_args, wait_until};

/// `upstream.failover_wait` of the proxies under test.
const FAILOVER_WAIT: Duration = Duration::from_secs(2);

fn cluster() -> Cluster {
    Cluster::start(ClusterOptions {
        masters: 3,
        replicas_per_master: 0,
        extra_config: vec!["cluster-require-full-coverage no".to_owned()],
        ..ClusterOptions::default()
    })
}

fn proxy(cluster: &Cluster, wait: Duration, limits: &str) -> Proxy {
    let extra_toml =
        format!("[upstream]\nseeds = @SEEDS@\nfailover_wait = \"{}ms\"\n[limits]\n{limits}\n", wait.as_millis());
    Proxy::start(cluster, ProxyOptions { extra_toml, ..ProxyOptions::default() })
}

/// The master that owns `slot` now.
fn owner(cluster: &Cluster, slot: u16) -> String {
    let mut con = cluster.client(&cluster.masters()[0]);
    let slots: Value = redis::cmd("CLUSTER").arg("SLOTS").query(&mut con).expect("CLUSTER SLOTS");
    let Value::Array(ranges) = slots else { panic!("CLUSTER SLOTS: {slots:?}") };
    for range in ranges {
        let Value::Array(fields) = range else { continue };
        let (Some(Value::Int(first)), Some(Value::Int(last)), Some(Value::Array(master))) =
            (fields.first(), fields.get(1), fields.get(2))
        else {
            continue;
        };
        if (*first..=*last).contains(&i64::from(slot))
            && let (Some(Value::BulkString(host)), Some(Value::Int(port))) = (master.first(), master.get(1))
        {
            return format!("{}:{port}", String::from_utf8_lossy(host));
        }
    }
    panic!("slot {slot} has no owner")
}

/// Takes `slot` away from every master: no node serves it any more.
fn drop_slot(cluster: &Cluster, slot: u16) {
    for master in cluster.masters() {
        let _: Result<Value, _> = query_args(&mut cluster.client(&master), &["CLUSTER", "DELSLOTS", &slot.to_string()]);
    }
}

/// Gives `slot` to `master` again.
fn give_slot(cluster: &Cluster, master: &str, slot: u16) {
    let reply = query_args(&mut cluster.client(master), &["CLUSTER", "ADDSLOTS", &slot.to_string()]);
    assert_eq!(reply, Ok(Value::Okay), "ADDSLOTS {slot} on {master}");
}

fn set(con: &mut Connection, key: &str, value: &str) {
    assert_eq!(query_args(con, &["SET", key, value]), Ok(Value::Okay), "SET {key}");
}

fn args(words: &[&str]) -> Vec<Vec<u8>> {
    words.iter().map(|w| w.as_bytes().to_vec()).collect()
}

#[test]
fn a_request_for_a_slot_without_master_waits_and_goes_to_the_master_that_takes_it() {
    let cluster = cluster();
    let proxy = proxy(&cluster, FAILOVER_WAIT, "");
    let key = "hold:released";
    let slot = key_slot(key.as_bytes());
    let master = owner(&cluster, slot);
    set(&mut proxy.client(), key, "before");
    drop_slot(&cluster, slot);

    let started = Instant::now();
    let mut con = Conn::open(&proxy.addr());
    con.send(&args(&["SET", key, "during"])).expect("send SET");
    con.send(&args(&["GET", key])).expect("send GET");
    // Held, not failed: nothing comes back while the slot has no master.
    thread::sleep(Duration::from_millis(600));
    assert_eq!(proxy.metric("redisforge_held_requests"), Some(2.0), "both requests are held");
    give_slot(&cluster, &master, slot);
    let (set_reply, _) = con.read().expect("SET reply");
    let (get_reply, _) = con.read().expect("GET reply");
    let waited = started.elapsed();
    assert_eq!(set_reply, b"+OK\r\n", "the held SET ran on the master that took the slot");
    assert_eq!(get_reply, b"$6\r\nduring\r\n", "in the client's order: the GET sees the SET");
    assert!(waited >= Duration::from_millis(600) && waited < FAILOVER_WAIT + Duration::from_secs(1), "{waited:?}");
    assert_eq!(proxy.metric("redisforge_held_requests"), Some(0.0));
    assert!(proxy.metric("redisforge_held_requests_released_total") >= Some(2.0));
    assert_eq!(proxy.metric("redisforge_held_requests_expired_total"), Some(0.0));
    println!("RELIABILITY hold: two requests held {waited:?} while their slot had no master, then answered");
}

#[test]
fn a_blocking_pop_for_a_slot_without_master_waits_then_blocks_on_the_master_that_takes_it() {
    let cluster = cluster();
    let proxy = proxy(&cluster, FAILOVER_WAIT, "");
    let key = "hold:queue";
    let slot = key_slot(key.as_bytes());
    let master = owner(&cluster, slot);
    drop_slot(&cluster, slot);

    let mut popper = Conn::open(&proxy.addr());
    popper.send(&args(&["BLPOP", key, "10"])).expect("send BLPOP");
    thread::sleep(Duration::from_millis(600));
    assert_eq!(proxy.metric("redisforge_held_requests"), Some(1.0), "the BLPOP is held, not failed");
    give_slot(&cluster, &master, slot);
    // Once it blocks on the master, a push through the proxy wakes it.
    let blocked = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        proxy.metric("redisforge_held_requests") == Some(0.0)
    });
    assert!(blocked, "the BLPOP was not sent once the slot had a master");
    thread::sleep(Duration::from_millis(200));
    assert_eq!(query_args(&mut proxy.client(), &["RPUSH", key, "item"]), Ok(Value::Int(1)));
    let (reply, _) = popper.read().expect("BLPOP reply");
    assert_eq!(reply, b"*2\r\n$10\r\nhold:queue\r\n$4\r\nitem\r\n".to_vec(), "{}", String::from_utf8_lossy(&reply));
    assert_eq!(proxy.metric("redisforge_held_requests_expired_total"), Some(0.0));
}

#[test]
fn held_requests_fail_when_failover_wait_passes_and_past_the_bound_at_once() {
    let cluster = cluster();
    let proxy = proxy(&cluster, FAILOVER_WAIT, "held_requests_per_client = 3");
    let key = "hold:expired";
    let slot = key_slot(key.as_bytes());
    drop_slot(&cluster, slot);

    let started = Instant::now();
    let mut con = Conn::open(&proxy.addr());
    for _ in 0..5 {
        con.send(&args(&["GET", key])).expect("send GET");
    }
    let mut replies = Vec::new();
    for _ in 0..5 {
        replies.push(String::from_utf8_lossy(&con.read().expect("a reply").0).into_owned());
    }
    let waited = started.elapsed();
    // Replies come in request order: the three held ones after failover_wait, then the two the
    // bound refused at once.
    for reply in &replies[..3] {
        assert_eq!(reply, "-CLUSTERDOWN Hash slot not served\r\n", "{replies:?}");
    }
    for reply in &replies[3..] {
        assert!(reply.starts_with("-CLUSTERDOWN the cluster is failing over and this client's bound"), "{replies:?}");
    }
    assert!(waited >= FAILOVER_WAIT && waited < FAILOVER_WAIT * 3, "{waited:?}");
    assert_eq!(proxy.metric("redisforge_held_requests_expired_total"), Some(3.0));
    assert_eq!(proxy.metric("redisforge_held_requests_refused_total"), Some(2.0));
    assert_eq!(proxy.metric("redisforge_held_requests"), Some(0.0));
    // Other slots were served all along, and this connection goes on working.
    assert_eq!(con.call(&args(&["PING"])).expect("PING").0, b"+PONG\r\n");
}

#[test]
fn a_client_that_leaves_gives_its_held_requests_back() {
    let cluster = cluster();
    // Long enough that only the client's leaving can give the requests back within the test.
    let proxy = proxy(&cluster, Duration::from_secs(60), "held_requests = 4");
    let key = "hold:left";
    let slot = key_slot(key.as_bytes());
    drop_slot(&cluster, slot);

    let mut leaving = Conn::open(&proxy.addr());
    for _ in 0..4 {
        leaving.send(&args(&["GET", key])).expect("send GET");
    }
    assert!(wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        proxy.metric("redisforge_held_requests") == Some(4.0)
    }));
    // The proxy-wide bound is reached: another client's request fails at once.
    let mut other = Conn::open(&proxy.addr());
    let started = Instant::now();
    let (reply, _) = other.call(&args(&["GET", key])).expect("a reply");
    assert!(
        String::from_utf8_lossy(&reply).starts_with("-CLUSTERDOWN the cluster is failing over and the proxy's bound")
    );
    assert!(started.elapsed() < Duration::from_secs(1), "refused at once, not held");
    // Like Redis, which frees a client at EOF, the proxy drops a client that leaves while its
    // requests are held, and with it what it held.
    drop(leaving);
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
            proxy.metric("redisforge_held_requests") == Some(0.0)
        }),
        "the held requests of a client that left are given back"
    );
}

#[test]
fn reads_lost_in_flight_with_their_master_are_resent_and_writes_answered_with_the_loss() {
    let cluster = cluster();
    let proxy = proxy(&cluster, Duration::from_secs(10), "");
    let key = "hold:inflight";
    let master = owner(&cluster, key_slot(key.as_bytes()));
    let other = (0..10_000)
        .map(|i| format!("hold:elsewhere:{i}"))
        .find(|k| owner(&cluster, key_slot(k.as_bytes())) != master)
        .expect("a key on another master");
    set(&mut proxy.client(), &other, "there");
    set(&mut proxy.client(), key, "before");

    // Frozen, the master reads nothing: the pipelines sit unanswered on its connection, in flight.
    cluster.pause(&master);
    let send = |requests: &[&[&str]]| {
        let mut con = Conn::open(&proxy.addr());
        requests.iter().for_each(|request| con.send(&args(request)).expect("send"));
        con
    };
    let mut mixed = send(&[&["GET", key], &["SET", key, "during"], &["GET", key]]);
    let mut reader = send(&[&["GET", key], &["GET", &other]]);
    let mut merged = send(&[&["MGET", key, &other]]);
    let mut twice = send(&[&["GET", key], &["GET", key]]);
    let mut switching = send(&[&["HGETALL", key], &["HELLO", "3"]]);
    thread::sleep(Duration::from_millis(300));
    // SIGKILL (the restart's first step) resets the connection with the requests unanswered; the
    // node comes back empty (no persistence) on its port and takes its slots again.
    cluster.restart(&master);

    let reply = |con: &mut Conn| String::from_utf8_lossy(&con.read().expect("a reply").0).into_owned();
    let lost = format!("-ERR upstream connection to {master} lost\r\n");
    // A read is not resent past a later request of its slot: that one may have run (the SET), or
    // run first and seen newer data (the second GET).
    assert_eq!(reply(&mut mixed), lost, "the GET before the lost SET");
    assert_eq!(reply(&mut mixed), lost, "the SET may have run: its loss is the answer");
    assert_eq!(reply(&mut mixed), "$-1\r\n", "the GET after it, resent to the restarted master");
    assert_eq!(reply(&mut reader), "$-1\r\n", "a GET followed by one of another slot, resent");
    assert_eq!(reply(&mut reader), "$5\r\nthere\r\n");
    assert_eq!(reply(&mut merged), "*2\r\n$-1\r\n$5\r\nthere\r\n", "an MGET's lost part, resent");
    assert_eq!(reply(&mut twice), lost, "a GET followed by another of its slot");
    assert_eq!(reply(&mut twice), "$-1\r\n", "the last GET, resent");
    // HELLO waits for the requests before it: the resent read still goes out in RESP2.
    assert_eq!(reply(&mut switching), "*0\r\n", "an HGETALL resent as it was sent, in RESP2");
    assert!(reply(&mut switching).starts_with('%'), "then HELLO 3's map");
    println!(
        "RELIABILITY hold: reads lost in flight with their killed master resent; the write answered with the loss"
    );
}
