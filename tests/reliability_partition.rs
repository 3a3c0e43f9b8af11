//! A master frozen with SIGSTOP (a network partition as the proxy sees it: connections stay open,
//! nothing answers): its requests fail with `upstream timeout` within `command_timeout`, the other
//! masters' clients keep their speed, and everything recovers when the node wakes up.
//!
//! The cluster gets a 20 s `cluster-node-timeout` so that the few seconds of pause do not make it
//! fail the node over: this suite is about the proxy's timeouts, not the cluster's failover.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use redis::Connection;
use redisforge_proxy::slot::key_slot;
use redisforge_tests::{Cluster, ClusterOptions, Proxy, ProxyOptions, wait_until};

/// Clients doing round trips on keys of the masters that stay up.
const FAST_CLIENTS: usize = 4;
/// How long the throughput is measured before the pause, and during it.
const WINDOW: Duration = Duration::from_secs(3);
/// `upstream.command_timeout` of the proxy under test.
const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a request to the frozen master may take to fail: the timeout plus scheduling slack.
const STUCK_BOUND: Duration = Duration::from_millis(1500);

fn connect(addr: &str) -> Connection {
    redisforge_tests::connect(addr).expect("connect to the proxy")
}

/// Keys with `prefix` whose slot `wanted` accepts, `n` of them.
fn keys_where(prefix: &str, n: usize, wanted: impl Fn(u16) -> bool) -> Vec<String> {
    (0..1_000_000).map(|i| format!("{prefix}:{i}")).filter(|k| wanted(key_slot(k.as_bytes()))).take(n).collect()
}

/// Sequential SET/GET round trips on `keys` until `stop`, every reply checked; counts operations
/// and records errors and wrong replies.
fn spawn_fast_client(
    con: Connection,
    keys: Vec<String>,
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
    problems: Arc<Mutex<Vec<String>>>,
) -> JoinHandle<()> {
    let mut con = con;
    thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut round = 0u64;
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            let key = &keys[round as usize % keys.len()];
            let value = format!("{key}:{round}");
            let set = redis::cmd("SET").arg(key).arg(&value).query::<()>(&mut con);
            let get = redis::cmd("GET").arg(key).query::<Option<String>>(&mut con);
            match (set, get) {
                (Ok(()), Ok(Some(got))) if got == value => {}
                other => problems.lock().expect("problems lock").push(format!("{key}: {other:?} (wanted {value})")),
            }
            ops.fetch_add(2, Ordering::Relaxed);
            round += 1;
        }
    })
}

#[test]
fn frozen_master_times_out_only_its_own_requests_and_others_keep_their_speed() {
    let cluster = Cluster::start(ClusterOptions {
        extra_config: vec!["cluster-node-timeout 20000".to_owned()],
        ..ClusterOptions::default()
    });
    let proxy = Proxy::start(
        &cluster,
        ProxyOptions {
            extra_toml: format!(
                "[upstream]\nseeds = @SEEDS@\n@UPSTREAM_AUTH@\ncommand_timeout = \"{}ms\"\n",
                COMMAND_TIMEOUT.as_millis()
            ),
            ..ProxyOptions::default()
        },
    );
    let frozen = cluster.masters().into_iter().next().expect("a master");
    let mut frozen_slots = vec![false; 16384];
    for range in cluster.slot_ranges().into_iter().filter(|r| r.master == frozen) {
        frozen_slots[usize::from(range.start)..=usize::from(range.end)].iter_mut().for_each(|s| *s = true);
    }
    let stuck_keys = keys_where("part:stuck", 20, |s| frozen_slots[usize::from(s)]);
    let mut stuck = connect(&proxy.addr());
    for key in &stuck_keys {
        let _: () = redis::cmd("SET").arg(key).arg("before").query(&mut stuck).expect("SET before the pause");
    }

    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let problems = Arc::new(Mutex::new(Vec::new()));
    let fast: Vec<JoinHandle<()>> = (0..FAST_CLIENTS)
        .map(|c| {
            let keys = keys_where(&format!("part:fast{c}"), 50, |s| !frozen_slots[usize::from(s)]);
            spawn_fast_client(connect(&proxy.addr()), keys, stop.clone(), ops.clone(), problems.clone())
        })
        .collect();
    assert!(wait_until(Duration::from_secs(20), Duration::from_millis(20), || ops.load(Ordering::Relaxed) > 2000));

    let rate = |window: Duration| {
        let (start, at) = (ops.load(Ordering::Relaxed), Instant::now());
        thread::sleep(window);
        (ops.load(Ordering::Relaxed) - start) as f64 / at.elapsed().as_secs_f64()
    };
    let before = rate(WINDOW);

    cluster.pause(&frozen);
    let paused_at = Instant::now();
    // The frozen master's requests, one at a time from their own client, while the fast clients'
    // throughput is measured over the same window.
    let stuck_thread = {
        let keys = stuck_keys.clone();
        thread::spawn(move || {
            let mut outcomes = Vec::new();
            let until = Instant::now() + WINDOW;
            for key in keys.iter().cycle().take(100) {
                if Instant::now() >= until {
                    break;
                }
                let started = Instant::now();
                let result = redis::cmd("GET").arg(key).query::<Option<String>>(&mut stuck);
                outcomes.push((started.elapsed(), result.map_err(|e| e.to_string())));
            }
            (stuck, outcomes)
        })
    };
    // Transactions run on a connection the client owns; they are bounded by command_timeout too.
    let tx_thread = {
        let key = stuck_keys[1].clone();
        let mut con = connect(&proxy.addr());
        thread::spawn(move || {
            let started = Instant::now();
            let watch = redis::cmd("WATCH").arg(&key).query::<()>(&mut con).map_err(|e| e.to_string());
            let watch_took = started.elapsed();
            let _: () = redis::cmd("MULTI").query(&mut con).expect("MULTI is answered by the proxy");
            let _: () = redis::cmd("SET").arg(&key).arg("in-tx").query(&mut con).expect("SET is queued by the proxy");
            let started = Instant::now();
            let exec = redis::cmd("EXEC").query::<Vec<String>>(&mut con).map_err(|e| e.to_string());
            (con, key, vec![(watch_took, watch.map(|()| Vec::new())), (started.elapsed(), exec)])
        })
    };
    let during = rate(WINDOW);
    let (mut stuck, outcomes) = stuck_thread.join().expect("stuck client");
    let (mut tx_con, tx_key, tx_outcomes) = tx_thread.join().expect("transaction client");
    let pause_lasted = paused_at.elapsed();
    cluster.resume(&frozen);
    let resumed_at = Instant::now();

    // Recovery: the frozen master's keys are served again, and its connection was rebuilt, so no
    // late reply to a timed-out request can be taken for the answer to a new one.
    let recovered = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        redis::cmd("SET").arg(&stuck_keys[0]).arg("after").query::<()>(&mut stuck).is_ok()
    });
    let recovery = resumed_at.elapsed();
    assert!(recovered, "the frozen master's keys were not served again within 10 s of SIGCONT");
    let mut pipe = redis::pipe();
    for (i, key) in stuck_keys.iter().enumerate() {
        pipe.cmd("SET").arg(key).arg(format!("after:{i}")).ignore().cmd("GET").arg(key);
    }
    let values: Vec<String> = pipe.query(&mut stuck).expect("pipeline after the resume");
    let wanted: Vec<String> = (0..stuck_keys.len()).map(|i| format!("after:{i}")).collect();
    assert_eq!(values, wanted, "replies after the resume belong to their own requests");
    // The transaction's connection works again too.
    let replies: Vec<String> =
        redis::pipe().atomic().cmd("SET").arg(&tx_key).arg("tx-after").query(&mut tx_con).expect("MULTI/EXEC after");
    assert_eq!(replies, ["OK"]);
    // The machine's load from other tests may change over the seconds this takes: the speed during
    // the pause is compared with the slower of the windows before and after it.
    let after = rate(WINDOW);
    stop.store(true, Ordering::Relaxed);
    fast.into_iter().for_each(|t| t.join().expect("fast client"));

    let slowest = outcomes.iter().map(|(took, _)| *took).max().unwrap_or_default();
    let ratio = during / before.min(after);
    println!(
        "RELIABILITY partition: {:.0} ops/s on other masters before the pause, {:.0} during it ({:.0}%), {:.0} after; \
         {} requests to the frozen master in {pause_lasted:?}, slowest answer {slowest:?}; served again {recovery:?} after SIGCONT",
        before,
        during,
        ratio * 100.0,
        after,
        outcomes.len()
    );
    let problems = problems.lock().expect("problems lock");
    assert!(problems.is_empty(), "{} errors for keys of live masters, first: {:?}", problems.len(), problems.first());
    assert!(outcomes.len() >= 2, "too few requests to the frozen master: {outcomes:?}");
    for (took, result) in &outcomes {
        let error = result.as_ref().expect_err("a request to a frozen master cannot succeed");
        assert!(error.contains("upstream timeout"), "{error}");
        assert!(*took < STUCK_BOUND, "a request to the frozen master took {took:?} to fail");
    }
    for (took, result) in &tx_outcomes {
        let error = result.as_ref().expect_err("a transaction on a frozen master cannot succeed");
        assert!(error.contains("upstream timeout"), "{error}");
        assert!(*took < STUCK_BOUND, "a transaction step on the frozen master took {took:?} to fail");
    }
    assert!(ratio >= 0.5, "other masters slowed down to {:.0}% during the pause", ratio * 100.0);
}
