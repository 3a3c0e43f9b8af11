//! Backups of nodes whose files this host cannot read: every node's `dir` is a tmpfs in a mount
//! namespace of its own (as on other hosts), so only the network path can back them up.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::testkit::{Nodes, can_hide_files, dump, fill, fill_big, note, query};
use crate::{LIBRARY, Tool, assert_same_keys, cluster_query, only_backup};

/// Keys of every type in the source (the figure).
const KEYS: usize = 20_000;
/// One value larger than 100 MB: streamed and uploaded in parts, never held whole by the tool.
const BIG: usize = 101 << 20;

/// Stream keys that get a consumer group with a pending entry, and HyperLogLogs.
fn add_groups_and_hyperloglogs(seed: &str) {
    for i in (5..600).step_by(6) {
        let key = format!("key:{i}");
        let _: () = cluster_query(seed, &["XGROUP", "CREATE", &key, "readers", "0"]);
        let _: redis::Value =
            cluster_query(seed, &["XREADGROUP", "GROUP", "readers", "alice", "COUNT", "1", "STREAMS", &key, ">"]);
    }
    for i in 0..50 {
        let key = format!("hll:{i}");
        let members: Vec<String> = (0..100 + i).map(|m| format!("m{m}")).collect();
        let mut args = vec!["PFADD", key.as_str()];
        args.extend(members.iter().map(String::as_str));
        let _: i64 = cluster_query(seed, &args);
    }
}

/// Every key of `masters` with its `DUMP` payload and `PTTL`.
fn dumps_and_ttls(masters: &[String]) -> BTreeMap<Vec<u8>, (Vec<u8>, i64)> {
    let mut all = BTreeMap::new();
    for addr in masters {
        let client = redis::Client::open(format!("redis://{addr}/")).expect("client");
        let mut con = client.get_connection().expect("connect");
        let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut con).expect("KEYS");
        for key in keys {
            let bytes: Vec<u8> = redis::cmd("DUMP").arg(&key).query(&mut con).expect("DUMP");
            let ttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut con).expect("PTTL");
            all.insert(key, (bytes, ttl));
        }
    }
    all
}

/// Writes `live:N` keys until stopped (at most a minute): a backup taken under writes.
fn spawn_writer(seed: String, stop: Arc<AtomicBool>, written: Arc<AtomicUsize>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let client = redis::cluster::ClusterClient::new(vec![format!("redis://{seed}/")]).expect("cluster client");
        let mut con = client.get_connection().expect("cluster connection");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            let n = written.load(Ordering::Relaxed);
            let _: () =
                redis::cmd("SET").arg(format!("live:{n}")).arg(n).query(&mut con).expect("SET during the backup");
            written.fetch_add(1, Ordering::Relaxed);
        }
    })
}

#[test]
fn backups_stream_over_the_network_from_nodes_whose_files_this_host_cannot_read() {
    if let Err(why) = can_hide_files() {
        note(&format!("SKIP: cannot start nodes in their own mount namespace here ({why})"));
        return;
    }
    let tool = Tool;
    let source = Nodes::hidden_cluster(3, 0, &[]);
    let seed = source.addrs()[0].clone();
    fill(&seed, KEYS);
    add_groups_and_hyperloglogs(&seed);
    fill_big(&seed, "big", BIG);
    for master in source.masters() {
        let loaded: String = query(&master, &["FUNCTION", "LOAD", LIBRARY]).unwrap();
        assert_eq!(loaded, "backed");
    }
    let expected = dump(&source.masters());
    // Expiries are compared with the time between the two reads: taken before this one starts.
    let read_at = Instant::now();
    let serialized = dumps_and_ttls(&source.masters());
    let store = tempfile::tempdir().unwrap();
    let url = format!("file://{}", store.path().display());
    let none = &[];

    // From the files: impossible here, and the error says what to do instead.
    let text = tool.fails(&["backup", "--from", &seed, "--to", &url, "--from-disk"], none);
    assert!(text.contains("leave out --from-disk"), "{text}");

    // Over the network, while a client keeps writing.
    let (stop, written) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let writer = spawn_writer(seed.clone(), Arc::clone(&stop), Arc::clone(&written));
    let text = tool.ok(&["backup", "--from", &seed, "--to", &url, "--parallel", "2"], none);
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    assert!(written.load(Ordering::Relaxed) > 0, "no write ran during the backup");
    let id = only_backup(&url, none);
    // Not a terminal: plain progress lines, a first and a last one.
    assert!(text.contains(&format!("backup {id}: started")), "{text}");
    assert!(text.contains(&format!("backup {id}: ")) && text.contains("MiB, ") && text.contains("done in"), "{text}");
    tool.ok(&["backup", "verify", &format!("{url}/{id}")], none);

    // Into running clusters of other shapes: every key (but those written during the backup) with
    // the same DUMP bytes, its expiry within a second, and the functions.
    for masters in [4, 2] {
        let target = Nodes::cluster(masters, 0, &[]);
        let into = target.addrs()[0].clone();
        tool.ok(&["restore", &format!("{url}/{id}"), "--into", &into], none);
        let mut restored = dump(&target.masters());
        let live = restored.keys().filter(|k| k.starts_with(b"live:")).count();
        restored.retain(|k, _| !k.starts_with(b"live:"));
        assert!(live <= written.load(Ordering::Relaxed), "{live} live keys restored");
        assert_same_keys(&expected, &restored);
        let mut copies = dumps_and_ttls(&target.masters());
        let elapsed = read_at.elapsed().as_millis() as i64;
        copies.retain(|k, _| !k.starts_with(b"live:"));
        assert_eq!(copies.len(), serialized.len(), "keys in {masters} masters");
        for (key, (bytes, ttl)) in &serialized {
            let (copy, copy_ttl) = &copies[key];
            // RDB types 2 and 4 (a set or hash in a hash table) list their members in the table's
            // order, which is seeded per process: their values are compared above instead.
            if copy != bytes && !matches!(bytes.first(), Some(2 | 4)) {
                let at = copy.iter().zip(bytes).position(|(a, b)| a != b).unwrap_or(copy.len().min(bytes.len()));
                panic!(
                    "{}: DUMP differs after the restore into {masters} masters: {} vs {} bytes, first at {at}: {:?} vs {:?}",
                    String::from_utf8_lossy(key),
                    bytes.len(),
                    copy.len(),
                    &bytes[at.saturating_sub(8)..(at + 16).min(bytes.len())],
                    &copy[at.saturating_sub(8)..(at + 16).min(copy.len())],
                );
            }
            let kept = match (*ttl, *copy_ttl) {
                (-1, -1) => true,
                (before, after) => before > 0 && after <= before && after >= before - elapsed - 1000,
            };
            assert!(kept, "{}: PTTL {ttl} before, {copy_ttl} after {elapsed} ms", String::from_utf8_lossy(key));
        }
        for master in target.masters() {
            let answer: String = query(&master, &["FCALL", "backed_answer", "0"]).unwrap();
            assert_eq!(answer, "42", "functions on {master}");
        }
    }

    // On a terminal (a pseudo-terminal from `script`): a bar redrawn in place with bytes and rate,
    // cleared at the end, then the closing line.
    let command = format!("{} backup --from {seed} --to {url}", crate::BIN);
    let out = std::process::Command::new("script").args(["-q", "-e", "-c", &command, "/dev/null"]).output();
    let Ok(out) = out else {
        note("SKIP the terminal check: no `script` here");
        return;
    };
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("\x1b[") && shown.contains("MiB/s"), "no bar drawn on the terminal:\n{shown:?}");
    assert!(!shown.contains(": started"), "plain lines on a terminal:\n{shown:?}");
    assert!(!shown.contains("so far") && shown.contains("done in"), "no closing line:\n{shown:?}");
}
