//! The ops tool reshaping a live cluster while applications use it through the proxy: a master
//! added and slots rebalanced onto it, then removed again, with zero client errors and every key
//! readable afterwards.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use redisforge_tests::{Cluster, ClusterOptions, Proxy, ProxyOptions, reserve_port, wait_until};

/// An empty cluster-enabled node, killed by PID when dropped.
struct SpareNode {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for SpareNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spare_node() -> SpareNode {
    for _ in 0..10 {
        let guard = reserve_port();
        let port = guard.port();
        let dir = tempfile::tempdir().expect("tempdir");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--cluster-enabled", "yes"])
            .args(["--cluster-node-timeout", "2000", "--save", "", "--appendonly", "no"])
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let mut node = SpareNode { child, addr: format!("127.0.0.1:{port}"), _dir: dir };
        let up = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
            std::net::TcpStream::connect(&node.addr).is_ok()
        });
        if up && node.child.try_wait().ok().flatten().is_none() {
            return node;
        }
        drop(node);
    }
    panic!("no spare node could start");
}

fn ops(args: &[&str]) -> std::process::Output {
    let bin = redisforge_tests::proxy::proxy_bin().with_file_name("redisforge-ops");
    Command::new(bin).args(args).output().expect("run redisforge-ops")
}

#[test]
fn add_rebalance_and_remove_a_master_under_proxy_traffic() {
    let cluster = Cluster::start(ClusterOptions::default());
    let proxy = Proxy::start(&cluster, ProxyOptions::default());
    let spare = spare_node();
    let seed = cluster.seeds()[0].clone();

    let stop = Arc::new(AtomicBool::new(false));
    let ops_done = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let mut con = proxy.client();
            let (stop, ops_done, errors) = (stop.clone(), ops_done.clone(), errors.clone());
            thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(120);
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && i < 1_000_000 {
                    let key = format!("ops:{w}:{}", i % 500);
                    let value = format!("{w}-{i}");
                    match redis::cmd("SET").arg(&key).arg(&value).query::<()>(&mut con) {
                        Ok(()) => match redis::cmd("GET").arg(&key).query::<Option<String>>(&mut con) {
                            Ok(Some(got)) if got == value => {}
                            other => errors.lock().expect("lock").push(format!("GET {key}: {other:?}")),
                        },
                        Err(e) => errors.lock().expect("lock").push(format!("SET {key}: {e}")),
                    }
                    ops_done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    assert!(wait_until(Duration::from_secs(10), Duration::from_millis(20), || ops_done.load(Ordering::Relaxed) > 500));

    let added = ops(&["cluster", "add", &spare.addr, "--to", &seed]);
    assert!(added.status.success(), "cluster add: {}", String::from_utf8_lossy(&added.stderr));
    let owned = cluster.slot_ranges().iter().filter(|r| r.master == spare.addr).count();
    assert!(owned > 0, "the new master got slots");
    let before_remove = ops_done.load(Ordering::Relaxed);
    assert!(wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        ops_done.load(Ordering::Relaxed) > before_remove + 500
    }));

    let mut spare_con = redis::Client::open(format!("redis://{}", spare.addr))
        .and_then(|c| c.get_connection())
        .expect("connect to the spare node");
    let id: String = redis::cmd("CLUSTER").arg("MYID").query(&mut spare_con).expect("CLUSTER MYID");
    let removed = ops(&["cluster", "remove", &id, "--from", &seed]);
    assert!(removed.status.success(), "cluster remove: {}", String::from_utf8_lossy(&removed.stderr));
    let after_remove = ops_done.load(Ordering::Relaxed);
    let resumed = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        ops_done.load(Ordering::Relaxed) > after_remove + 500
    });
    assert!(
        resumed,
        "writers stalled after the removal: {} ops, held requests {:?}, errors {:?}\n{}",
        ops_done.load(Ordering::Relaxed) - after_remove,
        proxy.metric("redisforge_held_requests"),
        errors.lock().expect("lock").first(),
        proxy.log_tail(30)
    );
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().expect("writer");
    }
    let errors = errors.lock().expect("lock");
    assert!(errors.is_empty(), "{} client errors, first: {:?}", errors.len(), errors.first());
    // Every key is still readable through the proxy.
    let mut con = proxy.client();
    for w in 0..4 {
        for k in 0..500 {
            let got: Option<String> = redis::cmd("GET").arg(format!("ops:{w}:{k}")).query(&mut con).expect("GET");
            assert!(got.is_some_and(|v| v.starts_with(&format!("{w}-"))), "ops:{w}:{k}");
        }
    }
    let check = ops(&["cluster", "check", &seed]);
    assert!(check.status.success(), "cluster check: {}", String::from_utf8_lossy(&check.stdout));
}
