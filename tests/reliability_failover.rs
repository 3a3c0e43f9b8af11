//! Master failures under pipelined load, every reply checked: a SIGKILLed master (the cluster
//! fails it over, then the node comes back as a replica) and a manual `CLUSTER FAILOVER`. Beside
//! them, regressions found this way: a subscription moved off a dead node, SCAN across a topology
//! refresh answered by another node, live masters' requests while a failover is pending.
//!
//! Eight clients pipeline 20 SET/GET pairs at a time on their own keys, spread over every master.
//! Each SET writes a value unique to its client, key and sequence number, so a reply meant for
//! another request, another key or another client cannot pass for the right one: a GET must return
//! the value of the last acknowledged SET of its key or of a SET sent after it, never an older one.
//! The only exception is the one Redis itself makes: writes a killed master acknowledged but had
//! not yet replicated are lost with it (asynchronous replication); those are counted and printed.
//!
//! Each test starts its own cluster. They run one at a time (see [`SERIAL`]) because each drives
//! six nodes and eight busy clients, and the recovery time they measure is a timing figure.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use redis::{Connection, Value};
use redisforge_proxy::slot::key_slot;
use redisforge_tests::rng::Rng;
use redisforge_tests::{Cluster, ClusterOptions, Proxy, ProxyOptions, connect, read_until, wait_until};

/// Load clients, each on its own proxy connection.
const CLIENTS: usize = 8;
/// SET/GET pairs per pipeline.
const PAIRS: usize = 20;
/// Keys each client owns; spread by hashing, so every master holds about a third of them.
const KEYS_PER_CLIENT: usize = 64;
/// Upper bound on a load client's life, whatever the test does.
const LOAD_DEADLINE: Duration = Duration::from_secs(150);
/// Writes acknowledged this soon after the kill may still have come from the killed master (replies
/// in flight) and may be lost with it; anything acknowledged later came from the promoted replica.
const LOSS_MARGIN: Duration = Duration::from_secs(1);
/// How long after the first write through the proxy succeeds requests that were sent earlier may
/// still come back with an error (they were retrying, up to `command_timeout`, when it succeeded).
const ERROR_GRACE: Duration = Duration::from_secs(1);
/// Known proxy bug: while the replica waits to be promoted every node answers `-CLUSTERDOWN`, and
/// the proxy passes it on after 5 resends 50 ms apart, so live masters' keys get errors too; see
/// `live_masters_keys_get_no_errors_while_another_master_fails_over`. While true, CLUSTERDOWN on
/// live masters' keys inside the failover window is counted and printed instead of failing; set
/// it to false once that test passes.
const KNOWN_CLUSTERDOWN_PASSTHROUGH: bool = false;
/// Requests a client sent this soon after the kill may still have gone out on the dead master's
/// connection before the proxy saw it close: their fate is unknown, so they get an error. Every
/// request sent later is held until the failover and must succeed (issue 19).
const IN_FLIGHT_MARGIN: Duration = Duration::from_millis(200);
/// The bound the test asserts on promotion → first proxied write; the product target is 0.5 s.
const RECOVERY_BOUND: Duration = Duration::from_secs(2);

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A reply that was an error, with when its request was sent and whether its key lived on the
/// master that failed.
#[derive(Debug, Clone)]
struct Failure {
    sent: Instant,
    answered: Instant,
    on_victim: bool,
    text: String,
}

impl Failure {
    /// The error without addresses and keys, to group errors by kind.
    fn kind(&self) -> String {
        let reply = self.text.split_once(": ").map_or(self.text.as_str(), |(_, reply)| reply);
        reply.split(|c: char| c.is_ascii_digit()).next().unwrap_or(reply).trim().to_owned()
    }
}

/// What the load clients saw, shared with the test thread.
#[derive(Default)]
struct Observed {
    /// Requests answered, errors included.
    ops: AtomicU64,
    /// GETs that returned an older value than the last acknowledged SET because the killed master
    /// acknowledged it before replicating it.
    lost: AtomicU64,
    /// Replies that no single Redis node could have given: each a description.
    wrong: Mutex<Vec<String>>,
    failures: Mutex<Vec<Failure>>,
    /// The first acknowledged SET of a key on the failed slots after the kill.
    first_victim_ack: Mutex<Option<Instant>>,
    /// Set by the test once the killed master is reaped.
    killed_at: OnceLock<Instant>,
    /// Every pipeline's round trip, with when it was sent.
    round_trips: Mutex<Vec<(Instant, Duration)>>,
}

impl Observed {
    fn wrong(&self, what: String) {
        self.wrong.lock().expect("wrong lock").push(what);
    }

    fn failures(&self) -> Vec<Failure> {
        self.failures.lock().expect("failures lock").clone()
    }

    fn wrong_replies(&self) -> Vec<String> {
        self.wrong.lock().expect("wrong lock").clone()
    }

    /// The 99th percentile and the maximum of the round trips of pipelines sent in `window`.
    fn round_trip_p99(&self, window: std::ops::Range<Instant>) -> Option<(Duration, Duration)> {
        let all = self.round_trips.lock().expect("round trips lock");
        let mut inside: Vec<Duration> = all.iter().filter(|(sent, _)| window.contains(sent)).map(|r| r.1).collect();
        inside.sort();
        let p99 = *inside.get(inside.len().checked_sub(1)? * 99 / 100)?;
        Some((p99, *inside.last()?))
    }
}

/// One key as its client knows it.
#[derive(Clone, Copy)]
struct KeyModel {
    /// Sequence number of the last acknowledged SET, and when it was acknowledged.
    acked: u64,
    acked_at: Instant,
    /// Highest sequence number of a SET sent before the reply being checked (acknowledged or not).
    written: u64,
}

/// Eight clients running pipelines until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    observed: Arc<Observed>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts the clients; each first writes all its keys, then pipelines until [`Load::stop`].
    /// `victim` tells whether a slot belongs to the master the test will fail.
    fn start(proxy: &Proxy, victim: Arc<Vec<bool>>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let observed = Arc::new(Observed::default());
        let threads = (0..CLIENTS)
            .map(|id| {
                let client = LoadClient::new(id, proxy.addr(), &victim, Arc::clone(&observed));
                let stop = Arc::clone(&stop);
                thread::spawn(move || client.run(&stop))
            })
            .collect();
        Load { stop, observed, threads }
    }

    fn ops(&self) -> u64 {
        self.observed.ops.load(Ordering::Relaxed)
    }

    /// Waits until the clients have answered `n` more requests (at most `timeout`).
    fn wait_ops(&self, n: u64, timeout: Duration) -> bool {
        let start = self.ops();
        wait_until(timeout, Duration::from_millis(20), || self.ops() >= start + n)
    }

    fn stop(self) -> Arc<Observed> {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().expect("load client thread");
        }
        self.observed
    }
}

struct LoadClient {
    id: usize,
    addr: String,
    keys: Vec<String>,
    on_victim: Vec<bool>,
    models: Vec<KeyModel>,
    seq: u64,
    rng: Rng,
    observed: Arc<Observed>,
}

impl LoadClient {
    fn new(id: usize, addr: String, victim: &[bool], observed: Arc<Observed>) -> LoadClient {
        let keys: Vec<String> = (0..KEYS_PER_CLIENT).map(|k| format!("rel:{id}:{k}")).collect();
        let on_victim = keys.iter().map(|k| victim[usize::from(key_slot(k.as_bytes()))]).collect();
        let now = Instant::now();
        LoadClient {
            id,
            addr,
            keys,
            on_victim,
            models: vec![KeyModel { acked: 0, acked_at: now, written: 0 }; KEYS_PER_CLIENT],
            seq: 0,
            rng: Rng::new(0x9E37_79B9_7F4A_7C15 ^ (id as u64 + 1)),
            observed,
        }
    }

    fn next_key(&mut self) -> usize {
        // Deterministic per client.
        self.rng.below(KEYS_PER_CLIENT)
    }

    fn value(&self, key: usize, seq: u64) -> String {
        format!("{}:{key}:{seq}", self.id)
    }

    fn run(mut self, stop: &AtomicBool) {
        let deadline = Instant::now() + LOAD_DEADLINE;
        let mut con: Option<Connection> = None;
        // Every key gets a first value before the pipelines start, so a GET never has an excuse
        // to return nil.
        let mut preload: Vec<usize> = (0..KEYS_PER_CLIENT).collect();
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            if con.is_none() {
                match connect(&self.addr) {
                    Ok(new) => con = Some(new),
                    Err(e) => {
                        self.fail(Instant::now(), false, format!("connect to the proxy: {e}"));
                        thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                }
            }
            let keys: Vec<usize> = if preload.is_empty() {
                (0..PAIRS).map(|_| self.next_key()).collect()
            } else {
                preload.drain(..PAIRS.min(preload.len())).collect()
            };
            let Some(live) = con.as_mut() else { continue };
            if !self.pipeline(live, &keys) {
                // The connection broke or timed out (recorded): start over on a new one.
                con = None;
            }
        }
    }

    /// Sends one pipeline of SET/GET pairs on `keys` and checks every reply. Returns false when the
    /// connection failed (the failure is recorded).
    fn pipeline(&mut self, con: &mut Connection, keys: &[usize]) -> bool {
        let mut pipe = redis::pipe();
        let mut seqs = Vec::with_capacity(keys.len());
        for &k in keys {
            self.seq += 1;
            seqs.push(self.seq);
            pipe.cmd("SET").arg(&self.keys[k]).arg(self.value(k, self.seq));
            pipe.cmd("GET").arg(&self.keys[k]);
        }
        let sent = Instant::now();
        let replies: Vec<Value> = match pipe.ignore_errors().query(con) {
            Ok(replies) => replies,
            Err(e) => {
                self.fail(sent, false, format!("pipeline failed on the connection: {e}"));
                return false;
            }
        };
        let now = Instant::now();
        self.observed.round_trips.lock().expect("round trips lock").push((sent, now - sent));
        if replies.len() != keys.len() * 2 {
            self.observed.wrong(format!(
                "client {}: {} replies to {} requests",
                self.id,
                replies.len(),
                keys.len() * 2
            ));
            return false;
        }
        for (i, (&k, &seq)) in keys.iter().zip(&seqs).enumerate() {
            self.check_set(k, seq, &replies[2 * i], sent, now);
            self.check_get(k, &replies[2 * i + 1], sent, now);
        }
        self.observed.ops.fetch_add(replies.len() as u64, Ordering::Relaxed);
        true
    }

    fn check_set(&mut self, k: usize, seq: u64, reply: &Value, sent: Instant, now: Instant) {
        self.models[k].written = seq;
        match reply {
            Value::Okay => {
                self.models[k].acked = seq;
                self.models[k].acked_at = now;
                // Sent after the killed master was reaped: only its promoted replica can have answered.
                if self.on_victim[k] && self.observed.killed_at.get().is_some_and(|&killed| sent >= killed) {
                    let mut first = self.observed.first_victim_ack.lock().expect("first ack lock");
                    first.get_or_insert(now);
                }
            }
            Value::SimpleString(s) if s == "OK" => {
                self.models[k].acked = seq;
                self.models[k].acked_at = now;
            }
            Value::ServerError(e) => self.fail(
                sent,
                self.on_victim[k],
                format!("SET {}: {} {}", self.keys[k], e.code(), e.details().unwrap_or("")),
            ),
            other => self.observed.wrong(format!("SET {} answered {other:?}", self.keys[k])),
        }
    }

    fn check_get(&mut self, k: usize, reply: &Value, sent: Instant, now: Instant) {
        let key = &self.keys[k];
        let model = self.models[k];
        let got = match reply {
            Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            Value::ServerError(e) => {
                return self.fail(
                    sent,
                    self.on_victim[k],
                    format!("GET {key}: {} {}", e.code(), e.details().unwrap_or("")),
                );
            }
            other => return self.observed.wrong(format!("GET {key} answered {other:?} (acked {})", model.acked)),
        };
        let prefix = format!("{}:{k}:", self.id);
        let Some(seq) = got.strip_prefix(&prefix).and_then(|s| s.parse::<u64>().ok()) else {
            return self.observed.wrong(format!("GET {key} returned {got:?}: another key's or client's value"));
        };
        if seq > model.written {
            return self.observed.wrong(format!("GET {key} returned {got:?}, written only up to {}", model.written));
        }
        if seq >= model.acked {
            return;
        }
        let lost_with_master = self.on_victim[k]
            && self.observed.killed_at.get().is_some_and(|&killed| model.acked_at < killed + LOSS_MARGIN);
        if lost_with_master {
            self.observed.lost.fetch_add(1, Ordering::Relaxed);
            // The promoted replica's value is the key's value from now on.
            self.models[k].acked = seq;
            self.models[k].acked_at = now;
        } else {
            self.observed.wrong(format!(
                "GET {key} returned {got:?}, older than the acknowledged SET #{} (victim key: {})",
                model.acked, self.on_victim[k]
            ));
        }
    }

    fn fail(&self, sent: Instant, on_victim: bool, text: String) {
        let failure = Failure { sent, answered: Instant::now(), on_victim, text };
        self.observed.failures.lock().expect("failures lock").push(failure);
    }
}

/// Per slot: whether `master` serves it now.
/// The master a test fails over (the first one), its replica, and the slots it owns.
fn victim(cluster: &Cluster) -> (String, String, Arc<Vec<bool>>) {
    let victim = cluster.masters().into_iter().next().expect("a master");
    let replica = cluster.replicas_of(&victim).pop().expect("the victim has a replica");
    let slots = slots_of(cluster, &victim);
    (victim, replica, slots)
}

fn slots_of(cluster: &Cluster, master: &str) -> Arc<Vec<bool>> {
    let mut owned = vec![false; 16384];
    for range in cluster.slot_ranges().into_iter().filter(|r| r.master == master) {
        owned[usize::from(range.start)..=usize::from(range.end)].iter_mut().for_each(|s| *s = true);
    }
    Arc::new(owned)
}

/// A key of this test's probe that lives on one of `slots`.
fn key_on(slots: &[bool], prefix: &str) -> String {
    (0..100_000)
        .map(|i| format!("{prefix}:{i}"))
        .find(|k| slots[usize::from(key_slot(k.as_bytes()))])
        .expect("a key on the given slots")
}

/// The role a node reports in `ROLE` (`master`, `slave`), `None` when it does not answer.
fn role(con: &mut Connection) -> Option<String> {
    match redis::cmd("ROLE").query::<Value>(con).ok()? {
        Value::Array(items) => match items.first()? {
            Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
            Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// Polls `replica`'s `ROLE` every 10 ms on the node itself until it reports master.
fn spawn_promotion_watch(cluster: &Cluster, replica: &str) -> JoinHandle<Option<Instant>> {
    let mut con = cluster.client(replica);
    con.set_read_timeout(Some(Duration::from_secs(2))).expect("read timeout");
    thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if role(&mut con).as_deref() == Some("master") {
                return Some(Instant::now());
            }
            thread::sleep(Duration::from_millis(10));
        }
        None
    })
}

/// Writes `key` through the proxy every 10 ms until a write succeeds; returns when it did.
fn spawn_write_probe(proxy: &Proxy, key: String) -> JoinHandle<Option<Instant>> {
    let addr = proxy.addr();
    thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut con = None;
        let mut attempt = 0u64;
        while Instant::now() < deadline {
            attempt += 1;
            if con.is_none() {
                con = connect(&addr).ok();
            }
            if let Some(c) = con.as_mut() {
                match redis::cmd("SET").arg(&key).arg(attempt).query::<Value>(c) {
                    Ok(Value::Okay) => return Some(Instant::now()),
                    Ok(_) => {}
                    Err(e) if e.is_io_error() || e.is_timeout() => con = None,
                    Err(_) => {}
                }
            }
            thread::sleep(Duration::from_millis(10));
        }
        None
    })
}

/// Fails the test on any wrong reply; prints the figures either way.
fn assert_no_wrong_replies(observed: &Observed, what: &str) {
    let wrong = observed.wrong_replies();
    assert!(
        wrong.is_empty(),
        "{what}: {} wrong replies, first ones: {:#?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
}

#[test]
fn sigkilled_master_under_pipelined_load_fails_over_without_wrong_replies_then_rejoins_as_replica() {
    let _serial = serial();
    let cluster = Cluster::start(ClusterOptions::default());
    let proxy = Proxy::start(&cluster, ProxyOptions::default());
    let (victim, replica, victim_slots) = victim(&cluster);
    let probe_key = key_on(&victim_slots, "rel:probe");

    let load = Load::start(&proxy, Arc::clone(&victim_slots));
    // Every key written once, then a few seconds of steady load, and the writes replicated.
    assert!(
        load.wait_ops((CLIENTS * KEYS_PER_CLIENT * 2 + 20_000) as u64, Duration::from_secs(60)),
        "load did not start"
    );
    let before = load.observed.failures();
    assert!(before.is_empty(), "errors before the kill: {:?}", &before[..before.len().min(5)]);

    // (a) SIGKILL the master under load.
    let promotion = spawn_promotion_watch(&cluster, &replica);
    let kill_started = Instant::now();
    cluster.kill(&victim);
    let killed_at = Instant::now();
    load.observed.killed_at.set(killed_at).expect("killed once");
    let probe = spawn_write_probe(&proxy, probe_key);
    let promoted_at = promotion.join().expect("promotion watch").expect("the replica was not promoted within 30 s");
    let first_write = probe.join().expect("write probe").expect("no write through the proxy succeeded within 30 s");
    let recovery = first_write.saturating_duration_since(promoted_at);
    let recovered_at = first_write.max(promoted_at);
    assert!(load.wait_ops(20_000, Duration::from_secs(30)), "load did not resume after the failover");
    let first_ack = load
        .observed
        .first_victim_ack
        .lock()
        .expect("first ack lock")
        .map(|t| t.saturating_duration_since(promoted_at));
    println!(
        "RELIABILITY failover: kill -> promotion {:?}; promotion -> first proxied write on the failed slots {:?} \
         (target 0.5 s, asserted < {RECOVERY_BOUND:?}); first load-client ack on those slots {first_ack:?} after promotion",
        promoted_at - killed_at,
        recovery
    );

    // (b) The killed master comes back and rejoins as a replica of the promoted one.
    let rejoin_started = Instant::now();
    cluster.restart(&victim);
    let rejoined = wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        cluster.role(&victim).as_deref() == Some("slave")
    });
    assert!(rejoined, "the restarted master did not rejoin as a replica\n{}", cluster.log_tails(20));
    cluster.wait_state_ok();
    assert!(cluster.replicas_of(&replica).contains(&victim), "{victim} is not a replica of the promoted {replica}");
    assert!(load.wait_ops(20_000, Duration::from_secs(30)), "load stalled after the rejoin");
    let observed = load.stop();

    assert_no_wrong_replies(&observed, "kill -9 of a master");
    let failures = observed.failures();
    let lost = observed.lost.load(Ordering::Relaxed);
    let on_victim = failures.iter().filter(|f| f.on_victim).count();
    let elsewhere: Vec<&Failure> = failures.iter().filter(|f| !f.on_victim).collect();
    println!(
        "RELIABILITY failover: {} requests answered, {on_victim} errors on the failed slots, {} on live masters' keys \
         (CLUSTERDOWN passed on: known bug), \
         {lost} acknowledged writes lost with the killed master (Redis asynchronous replication)",
        observed.ops.load(Ordering::Relaxed),
        elsewhere.len()
    );
    let kinds: HashSet<String> = failures.iter().map(Failure::kind).collect();
    println!("RELIABILITY failover: error kinds {kinds:?}");
    // In the window: answered after the kill began, and sent before the proxy had caught up.
    let outside_window: Vec<&Failure> =
        failures.iter().filter(|f| f.answered < kill_started || f.sent > recovered_at + ERROR_GRACE).collect();
    assert!(
        outside_window.is_empty(),
        "{} errors outside the failover window (kill at +0, recovered at +{:?}), first: {:?}",
        outside_window.len(),
        recovered_at - killed_at,
        outside_window.first().map(|f| (f.sent.saturating_duration_since(kill_started), &f.text))
    );
    let unexplained: Vec<&&Failure> = elsewhere
        .iter()
        .filter(|f| !(KNOWN_CLUSTERDOWN_PASSTHROUGH && f.text.contains("CLUSTERDOWN The cluster is down")))
        .collect();
    assert!(
        unexplained.is_empty(),
        "{} errors on keys of live masters, first: {:?}",
        unexplained.len(),
        unexplained.first()
    );
    assert!(failures.iter().all(|f| f.sent < rejoin_started), "errors while the old master rejoined");
    assert!(recovery < RECOVERY_BOUND, "promotion -> first proxied write took {recovery:?}");
    let steady = observed.round_trip_p99(killed_at - Duration::from_secs(5)..kill_started);
    let during = observed.round_trip_p99(kill_started..recovered_at + ERROR_GRACE);
    println!(
        "RELIABILITY failover: pipeline (40 commands) round trip p99 / max: {steady:?} in the 5 s before the kill, \
         {during:?} from the kill until the failed slots were served again"
    );
    // Hold, don't fail: only requests in flight when the master died may fail; those sent after
    // the kill waited for the failover (upstream.failover_wait) and were answered.
    let held_but_failed: Vec<&Failure> = failures.iter().filter(|f| f.sent > killed_at + IN_FLIGHT_MARGIN).collect();
    println!(
        "RELIABILITY failover: {} client errors for this failover, all for requests sent before the kill \
         (in flight on the dead master's connections); held requests released: {:?}",
        failures.len(),
        proxy.metric("redisforge_held_requests_released_total")
    );
    assert!(
        held_but_failed.is_empty(),
        "{} requests sent after the kill failed instead of waiting for the failover, first: {:?}",
        held_but_failed.len(),
        held_but_failed.first().map(|f| (f.sent.saturating_duration_since(killed_at), &f.text))
    );
}

#[test]
fn manual_failover_under_pipelined_load_costs_no_errors() {
    let _serial = serial();
    let cluster = Cluster::start(ClusterOptions::default());
    let proxy = Proxy::start(&cluster, ProxyOptions::default());
    let master = cluster.masters().into_iter().next().expect("a master");
    let replica = cluster.replicas_of(&master).pop().expect("the master has a replica");
    let load = Load::start(&proxy, slots_of(&cluster, &master));
    assert!(
        load.wait_ops((CLIENTS * KEYS_PER_CLIENT * 2 + 20_000) as u64, Duration::from_secs(60)),
        "load did not start"
    );

    let started = Instant::now();
    cluster.failover(&replica);
    let took = started.elapsed();
    assert_eq!(cluster.role(&master).as_deref(), Some("slave"), "the old master did not become a replica");
    assert!(load.wait_ops(20_000, Duration::from_secs(30)), "load stalled after the failover");
    let observed = load.stop();

    println!(
        "RELIABILITY manual failover: {took:?} until settled, {} requests answered, {} errors, {} lost writes",
        observed.ops.load(Ordering::Relaxed),
        observed.failures().len(),
        observed.lost.load(Ordering::Relaxed)
    );
    assert_no_wrong_replies(&observed, "manual failover");
    let failures = observed.failures();
    assert!(failures.is_empty(), "{} errors during a manual failover, first: {:?}", failures.len(), failures.first());
    assert_eq!(observed.lost.load(Ordering::Relaxed), 0, "a manual failover must not lose acknowledged writes");
}

#[test]
fn subscriber_moved_off_a_killed_master_is_still_served_and_released_when_it_leaves() {
    use std::io::Write;
    let _serial = serial();
    let cluster = Cluster::start(ClusterOptions::default());
    let proxy = Proxy::start(&cluster, ProxyOptions::default());
    let mut subscriber = std::net::TcpStream::connect(proxy.addr()).expect("connect");
    subscriber.write_all(b"SUBSCRIBE rel:moved\r\n").expect("SUBSCRIBE");
    let confirmed = read_until(&mut subscriber, Duration::from_secs(5), |got| got.ends_with(b":1\r\n"));
    assert!(confirmed.starts_with(b"*3\r\n$9\r\nsubscribe\r\n"), "{}", String::from_utf8_lossy(&confirmed));
    let carrier = cluster.master_with_subscription();
    cluster.kill(&carrier);
    let survivor = cluster.masters().into_iter().find(|m| *m != carrier).expect("another master");
    let mut publisher = cluster.client(&survivor);
    // Publish until the moved subscription delivers (bounded).
    let delivered = wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        let _: redis::RedisResult<i64> = redis::cmd("PUBLISH").arg("rel:moved").arg("hello").query(&mut publisher);
        let got = read_until(&mut subscriber, Duration::from_millis(100), |got| got.ends_with(b"hello\r\n"));
        got.ends_with(b"hello\r\n")
    });
    assert!(delivered, "no message after the subscription's node died");
    // Drain what else arrived, then the client must still be served in subscribed mode.
    let _ = read_until(&mut subscriber, Duration::from_millis(300), |_| false);
    subscriber.write_all(b"PING\r\n").expect("PING");
    let pong = read_until(&mut subscriber, Duration::from_secs(5), |got| got.ends_with(b"$0\r\n\r\n"));
    assert!(
        pong.ends_with(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"),
        "PING in subscribed mode after the move: {:?}\n{}",
        String::from_utf8_lossy(&pong),
        proxy.log_tail(30)
    );
    // And its disconnect is seen: the proxy counts no client any more.
    drop(subscriber);
    let released = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        let (_, body) = redisforge_tests::http_get(&proxy.metrics_addr(), "/metrics", Duration::from_secs(5));
        body.lines().any(|l| l == "redisforge_client_connections 0")
    });
    assert!(released, "the subscriber's session outlived its client");
}

/// The first slot of each shard, in the order `addr`'s `CLUSTER SHARDS` lists the shards with slots.
fn shard_order(cluster: &Cluster, addr: &str) -> Vec<i64> {
    let reply: Value = redis::cmd("CLUSTER").arg("SHARDS").query(&mut cluster.client(addr)).expect("CLUSTER SHARDS");
    let Value::Array(shards) = reply else { panic!("CLUSTER SHARDS: {reply:?}") };
    shards
        .iter()
        .filter_map(|shard| match shard {
            // RESP2 map as a flat array: "slots", [start, end, …], "nodes", […].
            Value::Array(fields) => match fields.get(1) {
                Some(Value::Array(slots)) => match slots.first() {
                    Some(Value::Int(first)) => Some(*first),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// Which master (by the first slot it serves) a proxy SCAN cursor's master index `i` stands for:
/// the keys a full SCAN of that index alone returns tell.
fn proxy_master_at(con: &mut Connection, i: usize, first_slot_of: &dyn Fn(&str) -> i64) -> Option<i64> {
    let (_, keys): (String, Vec<String>) =
        redis::cmd("SCAN").arg(i).arg("MATCH").arg("rel:scan:*").arg("COUNT").arg(100_000).query(con).ok()?;
    keys.first().map(|k| first_slot_of(k))
}

/// One SCAN page of the `rel:scan:*` keys: the next cursor and the keys.
fn scan_page(con: &mut redis::Connection, cursor: &str) -> (String, Vec<String>) {
    redis::cmd("SCAN").arg(cursor).arg("MATCH").arg("rel:scan:*").arg("COUNT").arg(20).query(con).expect("SCAN")
}

#[test]
fn scan_returns_every_key_when_a_refresh_is_answered_by_a_node_listing_shards_in_another_order() {
    let _serial = serial();
    let cluster = Cluster::start(ClusterOptions::default());
    let proxy = Proxy::start(
        &cluster,
        ProxyOptions { extra_toml: "[topology]\nrefresh_interval = \"100ms\"\n".to_owned(), ..ProxyOptions::default() },
    );
    let mut con = proxy.client();
    let keys: Vec<String> = (0..3000).map(|i| format!("rel:scan:{i}")).collect();
    let mut pipe = redis::pipe();
    for key in &keys {
        pipe.set(key, 1).ignore();
    }
    let () = pipe.query(&mut con).expect("write the keys");
    let ranges = cluster.slot_ranges();
    let first_slot_of = |key: &str| {
        let slot = key_slot(key.as_bytes());
        let owner = ranges.iter().find(|r| (r.start..=r.end).contains(&slot)).expect("covered").master.clone();
        ranges.iter().filter(|r| r.master == owner).map(|r| i64::from(r.start)).min().expect("a range")
    };
    // Let a few refreshes pass, then read the order the proxy settled on.
    thread::sleep(Duration::from_millis(500));
    let before: Vec<Option<i64>> = (0..3).map(|i| proxy_master_at(&mut con, i, &first_slot_of)).collect();
    let Some(other) = cluster
        .nodes()
        .into_iter()
        .find(|n| shard_order(&cluster, n).into_iter().map(Some).collect::<Vec<_>>() != before)
    else {
        println!("every node lists the shards in the proxy's order {before:?}: nothing to show on this cluster");
        return;
    };

    // A SCAN in progress, on the second master of the proxy's order...
    let mut seen = std::collections::HashSet::new();
    let mut cursor = "0".to_owned();
    for _ in 0..10_000 {
        let (next, page) = scan_page(&mut con, &cursor);
        seen.extend(page);
        cursor = next;
        if cursor.parse::<u64>().is_ok_and(|c| c % 1024 == 1 && c >= 1024) || cursor == "0" {
            break;
        }
    }
    // ...when the next refresh is answered by a node that lists the shards in another order: every
    // other node refuses the topology commands.
    for node in cluster.nodes().into_iter().filter(|n| *n != other) {
        let _: () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg("default")
            .arg("-cluster|shards")
            .arg("-cluster|slots")
            .query(&mut cluster.client(&node))
            .expect("ACL SETUSER");
    }
    thread::sleep(Duration::from_millis(1000));
    for _ in 0..10_000 {
        if cursor == "0" {
            break;
        }
        let (next, page) = scan_page(&mut con, &cursor);
        seen.extend(page);
        cursor = next;
    }
    let after: Vec<Option<i64>> = (0..3).map(|i| proxy_master_at(&mut con, i, &first_slot_of)).collect();
    let missed = keys.iter().filter(|k| !seen.contains(*k)).count();
    println!(
        "proxy master order (by first slot) {before:?} -> {after:?} after {other} answered; SCAN missed {missed} keys"
    );
    assert_eq!(
        missed,
        0,
        "SCAN missed {missed} of {} keys when the master order changed {before:?} -> {after:?}",
        keys.len()
    );
}

#[test]
fn live_masters_keys_get_no_errors_while_another_master_fails_over() {
    let _serial = serial();
    let cluster = Cluster::start(ClusterOptions::default());
    let proxy = Proxy::start(&cluster, ProxyOptions::default());
    let (victim, replica, victim_slots) = victim(&cluster);
    let keys: Vec<String> = (0..1000)
        .map(|i| format!("rel:live:{i}"))
        .filter(|k| !victim_slots[usize::from(key_slot(k.as_bytes()))])
        .take(20)
        .collect();
    let mut con = proxy.client();
    let mut promotion = Some(spawn_promotion_watch(&cluster, &replica));
    cluster.kill(&victim);
    let killed_at = Instant::now();
    let mut errors = Vec::new();
    let mut ops = 0u64;
    let mut promoted_at = None;
    // Round trips on live masters only, until a second after the promotion (bounded by 30 s).
    while killed_at.elapsed() < Duration::from_secs(30)
        && promoted_at.is_none_or(|p: Instant| p.elapsed() < Duration::from_secs(1))
    {
        let key = &keys[ops as usize % keys.len()];
        let started = Instant::now();
        if let Err(e) = redis::cmd("SET").arg(key).arg(ops).query::<()>(&mut con) {
            errors.push(format!("+{:?} ({:?}): {e}", started - killed_at, started.elapsed()));
        }
        ops += 1;
        if let Some(watch) = promotion.take_if(|w| w.is_finished()) {
            promoted_at = Some(watch.join().expect("promotion watch").expect("the replica was promoted"));
        }
    }
    println!(
        "RELIABILITY live masters during a failover: {ops} SETs, {} errors, promotion {:?} after the kill",
        errors.len(),
        promoted_at.map(|p| p - killed_at)
    );
    assert!(
        errors.is_empty(),
        "{} errors for keys of live masters, first: {:?}",
        errors.len(),
        &errors[..errors.len().min(3)]
    );
}
