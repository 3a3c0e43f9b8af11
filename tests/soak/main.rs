//! The chaos soak: clients mixing every data type, MGET/MSET across slots, transactions, pub/sub,
//! pipelined reads and writes and blocking pops through the proxy for 60 s
//! (`REDISFORGE_SOAK_SECS` to change it), while every few seconds a random node is killed,
//! paused or cut off the network, or a slot migrates (`chaos.rs`).
//!
//! Every worker owns its keys, so its model of them is exact and every reply is checked against
//! it (`client.rs`, `pipeline.rs`, `blocking.rs`, `pubsub.rs`). The exceptions are the ones Redis
//! itself makes: after an error reply a write may or may not have been applied, and writes a
//! master acknowledged but had not replicated when it failed are lost with it — allowed only
//! around a fault of that key's master, counted and printed.
//!
//! Asserted: no wrong reply ever; errors only for requests that overlapped a fault; every
//! acknowledged write readable at the end (but for Redis' losses); no pub/sub message
//! duplicated, lost away from a fault or reordered away from an event; SCAN complete when no
//! event overlapped it; the proxy's memory bounded and its file descriptors back near their
//! start value once the clients are gone.
//!
//! The nodes run in network namespaces when the machine allows it (root); elsewhere the soak
//! runs without partitions and says so.

mod blocking;
mod chaos;
mod client;
mod ops;
mod pipeline;
mod pubsub;
mod shared;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use redisforge_tests::process::{fd_count, rss_bytes};
use redisforge_tests::{Cluster, ClusterOptions, Proxy, ProxyOptions, http_get, wait_until};

use client::Client;
use pipeline::Pipeliner;
use shared::{Failure, Soak};

/// Workers of each kind, each on its own proxy connection(s).
pub const CLIENTS: usize = 6;
const PIPELINERS: usize = 2;
const QUEUES: usize = 2;
/// Soak length without `REDISFORGE_SOAK_SECS`.
const DEFAULT_SECS: u64 = 60;
/// File descriptors the proxy may hold beyond its start once every client left: pools to nodes that
/// became masters or replicas during the soak.
const FD_SLACK: usize = 6;
/// The proxy's resident memory may not pass this, whatever the soak does.
const RSS_BOUND_MIB: u64 = 128;

fn soak_duration() -> Duration {
    let secs = std::env::var("REDISFORGE_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(DEFAULT_SECS);
    Duration::from_secs(secs.max(30))
}

/// The proxy's TCP sockets as `local -> remote` ports (from `/proc/net/tcp`), for failure messages.
fn sockets(pid: u32) -> Vec<String> {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|l| l.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let port = |addr: &str| addr.split(':').nth(1).and_then(|p| u16::from_str_radix(p, 16).ok()).unwrap_or(0);
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.len() > 9 && inodes.contains(f[9])).then(|| format!("{} -> {} (st {})", port(f[1]), port(f[2]), f[3]))
        })
        .collect()
}

fn client_connections(proxy: &Proxy) -> Option<f64> {
    let (_, body) = http_get(&proxy.metrics_addr(), "/metrics", Duration::from_secs(5));
    body.lines().find_map(|l| l.strip_prefix("redisforge_client_connections ")).and_then(|v| v.trim().parse().ok())
}

/// Every worker's thread, by kind.
struct Workers {
    clients: Vec<thread::JoinHandle<Client>>,
    published: Vec<pubsub::Published>,
    subscribers: Vec<thread::JoinHandle<Result<pubsub::Received, String>>>,
    pipeliners: Vec<thread::JoinHandle<u64>>,
    queues: Vec<thread::JoinHandle<blocking::Queue>>,
    sub_stop: Arc<AtomicBool>,
}

fn start_workers(proxy: &Proxy, soak: &Arc<Soak>, deadline: Instant) -> Workers {
    let sub_stop = Arc::new(AtomicBool::new(false));
    let mut workers = Workers {
        clients: Vec::new(),
        published: Vec::new(),
        subscribers: Vec::new(),
        pipeliners: Vec::new(),
        queues: Vec::new(),
        sub_stop: Arc::clone(&sub_stop),
    };
    for id in 0..CLIENTS {
        workers.subscribers.push(pubsub::spawn_subscriber(proxy.addr(), id, Arc::clone(&sub_stop), deadline));
        let client = Client::new(id, proxy.addr(), Arc::clone(soak));
        workers.published.push(Arc::clone(&client.published));
        workers.clients.push(thread::spawn(move || client.run(deadline)));
    }
    for id in 0..PIPELINERS {
        let pipeliner = Pipeliner::new(id, proxy.addr(), Arc::clone(soak));
        workers.pipeliners.push(thread::spawn(move || pipeliner.run(deadline)));
    }
    for id in 0..QUEUES {
        let (addr, soak) = (proxy.addr(), Arc::clone(soak));
        workers.queues.push(thread::spawn(move || blocking::run(id, &addr, &soak, deadline)));
    }
    workers
}

/// Samples the proxy's resident memory twice a second until the soak stops; the peak in MiB.
fn spawn_rss_sampler(pid: u32, soak: Arc<Soak>, deadline: Instant) -> thread::JoinHandle<u64> {
    thread::spawn(move || {
        let mut peak = 0;
        while !soak.stopped() && Instant::now() < deadline {
            peak = peak.max(rss_bytes(pid) / (1024 * 1024));
            thread::sleep(Duration::from_millis(500));
        }
        peak
    })
}

#[test]
fn chaos_soak_under_mixed_load_loses_nothing_the_proxy_acknowledged() {
    let duration = soak_duration();
    let seed = std::env::var("REDISFORGE_SOAK_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_secs())
    });
    println!("RELIABILITY soak: seed {seed} (REDISFORGE_SOAK_SEED={seed} replays its events)");
    let cluster = Cluster::start_partitionable(ClusterOptions::default()).unwrap_or_else(|why| {
        println!("NOTE soak: cannot create network namespaces here ({why}): the soak runs without partitions");
        Cluster::start(ClusterOptions::default())
    });
    let proxy = Proxy::start(&cluster, ProxyOptions::default());
    let pid = proxy.pid();
    let fds_start = fd_count(pid);
    let rss_start = rss_bytes(pid) / (1024 * 1024);
    let soak = Arc::new(Soak::default());
    let started = Instant::now();
    // The proxy's log is in wall-clock time; the soak's events are in seconds from its start.
    let soak_started_unix =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    soak.began.set(started).expect("set once");
    let deadline = started + duration + Duration::from_secs(60);
    let workers = start_workers(&proxy, &soak, deadline);
    let sampler = spawn_rss_sampler(pid, Arc::clone(&soak), deadline);

    chaos::run(&cluster, &proxy, &soak, started + duration, seed);
    thread::sleep((started + duration).saturating_duration_since(Instant::now()));
    let fds_loaded = fd_count(pid);
    soak.stop.store(true, Ordering::Relaxed);
    let mut clients: Vec<Client> = workers.clients.into_iter().map(|c| c.join().expect("soak client")).collect();
    let pipelines: u64 = workers.pipeliners.into_iter().map(|p| p.join().expect("pipeliner")).sum();
    let queues: Vec<blocking::Queue> = workers.queues.into_iter().map(|q| q.join().expect("queue")).collect();
    let rss_peak = sampler.join().expect("rss sampler");

    // Every acknowledged write readable: each client reads all its keys back.
    if let Err(why) = cluster.try_wait_state_ok(Duration::from_secs(30)) {
        let wrong = soak.wrong.lock().expect("wrong lock").clone();
        panic!(
            "the cluster did not settle after the soak: {why}\nwrong so far: {wrong:#?}\n{}\n{}",
            cluster.views(),
            cluster.log_tails(40)
        );
    }
    let unread: usize = clients.iter_mut().map(|c| c.verify(Duration::from_secs(20))).sum();
    drop(clients);
    // Let the last messages arrive before the subscribers stop.
    thread::sleep(Duration::from_millis(500));
    workers.sub_stop.store(true, Ordering::Relaxed);
    let received = workers.subscribers.into_iter().map(|s| s.join().expect("subscriber thread")).collect();
    let delivery = pubsub::check(&soak, received, &workers.published);
    let clients_gone = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        client_connections(&proxy) == Some(0.0) && fd_count(pid) <= fds_start + FD_SLACK
    });
    let (fds_end, rss_end) = (fd_count(pid), rss_bytes(pid) / (1024 * 1024));

    report(&soak, started, seed, pipelines, &queues, &delivery);
    println!(
        "RELIABILITY soak: proxy VmRSS {rss_start} MiB at start, peak {rss_peak} MiB, {rss_end} MiB at the end; fds \
         {fds_start} at start, {fds_loaded} under load, {fds_end} after the clients left"
    );
    let failures = soak.failures.lock().expect("failures lock").clone();
    let outside: Vec<&Failure> = failures.iter().filter(|f| !soak.in_fault_window(f)).collect();
    let wrong = soak.wrong.lock().expect("wrong lock").clone();
    assert!(wrong.is_empty(), "{} wrong replies, first ones: {:#?}", wrong.len(), &wrong[..wrong.len().min(10)]);
    assert!(
        outside.is_empty(),
        "{} errors away from any fault, first ones: {:#?}",
        outside.len(),
        outside.iter().take(10).map(|f| (soak.at(f.sent), soak.at(f.answered), &f.text)).collect::<Vec<_>>()
    );
    assert_eq!(unread, 0, "keys that could not be read back after the soak");
    assert!(
        delivery.problems.is_empty(),
        "pub/sub: {:#?}\nthe proxy's log on subscriptions (wall clock; the soak started {} s after the Unix epoch):\n{}",
        delivery.problems,
        soak_started_unix,
        proxy.log().lines().filter(|l| l.contains("subscri")).collect::<Vec<_>>().join("\n")
    );
    assert!(soak.scans_checked.load(Ordering::Relaxed) > 0, "no SCAN ran away from the events");
    assert!(rss_peak <= RSS_BOUND_MIB, "proxy VmRSS peaked at {rss_peak} MiB");
    assert!(
        clients_gone,
        "fds {fds_start} -> {fds_end} or client_connections did not come back after the clients left; proxy sockets \
         {:#?}",
        sockets(pid)
    );
}

/// Prints what the soak did and saw: the figures the README's Reliability section quotes.
fn report(
    soak: &Soak,
    started: Instant,
    seed: u64,
    pipelines: u64,
    queues: &[blocking::Queue],
    delivery: &pubsub::Delivery,
) {
    let events = soak.events.lock().expect("events lock").clone();
    let failures = soak.failures.lock().expect("failures lock").clone();
    let ops = soak.ops.load(Ordering::Relaxed);
    let sum = |f: fn(&blocking::Queue) -> u64| queues.iter().map(f).sum::<u64>();
    println!(
        "RELIABILITY soak: {:?}, seed {seed}, {} events; {ops} requests ({:.0}/s), {pipelines} pipelines of 24; \
         {} errors, {} wrong replies, {} acknowledged writes lost by Redis in failovers; queues: {} pushed, {} popped, \
         {} popped again and {} lost after failovers; pub/sub {} delivered, {} lost around faults, {} reordered near \
         events; SCAN {} checked, {} skipped (overlapped an event)",
        started.elapsed(),
        events.len(),
        ops as f64 / started.elapsed().as_secs_f64(),
        failures.len(),
        soak.wrong.lock().expect("wrong lock").len(),
        soak.lost.load(Ordering::Relaxed),
        sum(|q| q.pushed),
        sum(|q| q.popped),
        sum(|q| q.repeated),
        sum(|q| q.lost),
        delivery.delivered,
        delivery.lost,
        delivery.reordered,
        soak.scans_checked.load(Ordering::Relaxed),
        soak.scans_skipped.load(Ordering::Relaxed),
    );
    let kind = |f: &Failure| f.text.split(|c: char| c.is_ascii_digit()).take(2).collect::<Vec<_>>().join("#");
    for e in &events {
        let during: Vec<&Failure> =
            failures.iter().filter(|f| f.answered >= e.start && e.end.is_none_or(|end| f.sent <= end)).collect();
        println!(
            "RELIABILITY soak event at {}: {:?} {} {} — {} errors",
            soak.at(e.start),
            e.kind,
            e.node,
            e.note,
            during.len()
        );
        // The kinds behind an event with many errors, to tell in-flight losses from held
        // requests that ran out of time.
        if during.len() >= 100 {
            println!("RELIABILITY soak event kinds {:#?}", count_kinds(during.into_iter().map(kind)));
        }
    }
    println!("RELIABILITY soak: error kinds {:#?}", count_kinds(failures.iter().map(kind)));
}

/// How many failures of each kind (their text with the numbers folded).
fn count_kinds(kinds: impl Iterator<Item = String>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for k in kinds {
        *counts.entry(k).or_insert(0) += 1;
    }
    counts
}
