//! `redisforge-ops backup`, `backup list`, `backup verify` and `restore` end to end: real
//! `redis-server` clusters on loopback, backups over the network (the default) and from the nodes'
//! files (`--from-disk`) to a local directory and to a moto S3 server, from nodes whose files this
//! host cannot read (`network.rs`), restores into fresh nodes and into running clusters of another
//! shape compared key by key (type, value, TTL present or not).
//!
//! The scenarios drive the binary; checks of what is stored call the library's backup module
//! (`redisforge_ops::backup`) through the same code the verbs use.

mod azure;
mod network;
#[allow(dead_code)]
mod testkit;
mod tls;

use redisforge_ops::backup;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value as Json;
use testkit::{KeyState, Nodes, S3Server, dump, fill, fill_big, query};

const BIN: &str = env!("CARGO_BIN_EXE_redisforge-ops");
const KEYS: usize = 1000;

/// Runs the `redisforge-ops` binary.
#[derive(Clone, Copy, Debug)]
struct Tool;

/// Exit status and what the user would read (stdout + stderr).
struct Outcome {
    code: i32,
    text: String,
}

impl Tool {
    fn run(self, args: &[&str], env: &[(&str, String)]) -> Outcome {
        let out = Command::new(BIN).args(args).envs(env.iter().map(|(k, v)| (k, v))).output().expect("run");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        println!("$ redisforge-ops {}\n{text}", args.join(" "));
        Outcome { code: out.status.code().unwrap_or(-1), text }
    }

    fn ok(self, args: &[&str], env: &[(&str, String)]) -> String {
        let out = self.run(args, env);
        assert_eq!(out.code, 0, "redisforge-ops {} failed:\n{}", args.join(" "), out.text);
        out.text
    }

    fn fails(self, args: &[&str], env: &[(&str, String)]) -> String {
        let out = self.run(args, env);
        assert_eq!(out.code, 1, "redisforge-ops {} should exit 1:\n{}", args.join(" "), out.text);
        out.text
    }
}

/// Backups at `url` as `(id, complete)`, read through the tool's own listing code.
fn backups(url: &str, env: &[(&str, String)]) -> Vec<(String, bool)> {
    let vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    backup::with_storage_env(&vars, || backup::backups_at(url)).expect("list backups")
}

fn only_backup(url: &str, env: &[(&str, String)]) -> String {
    let all = backups(url, env);
    assert_eq!(all.len(), 1, "expected exactly one backup at {url}: {all:?}");
    assert!(all[0].1, "backup {} is incomplete", all[0].0);
    all[0].0.clone()
}

fn manifest(store: &Path, id: &str) -> Json {
    let text = std::fs::read(store.join(id).join("manifest.json")).expect("read manifest.json");
    serde_json::from_slice(&text).expect("manifest is JSON")
}

/// Stored path of the first file of `kind` of the first master.
fn first_file(manifest: &Json, kind: &str) -> String {
    manifest["masters"][0]["files"]
        .as_array()
        .and_then(|files| files.iter().find(|f| f["kind"] == kind))
        .and_then(|f| f["path"].as_str())
        .unwrap_or_else(|| panic!("no {kind} file in {manifest}"))
        .to_owned()
}

fn assert_same_keys(expected: &BTreeMap<Vec<u8>, KeyState>, got: &BTreeMap<Vec<u8>, KeyState>) {
    assert_eq!(got.len(), expected.len(), "key count after restore");
    for (key, want) in expected {
        let name = String::from_utf8_lossy(key);
        let have = got.get(key).unwrap_or_else(|| panic!("{name} missing after restore"));
        assert_eq!(have, want, "{name} differs after restore");
    }
}

fn assert_untouched(nodes: &Nodes) {
    for addr in nodes.addrs() {
        let info: String = query(&addr, &["CLUSTER", "INFO"]).expect("cluster info");
        assert!(
            info.contains("cluster_known_nodes:1\r\n") && info.contains("cluster_slots_assigned:0"),
            "{addr}: {info}"
        );
        assert_eq!(query::<u64>(&addr, &["DBSIZE"]).expect("dbsize"), 0, "{addr} got keys");
    }
}

/// A cluster of 3 masters (`replicas` each) with `KEYS` keys of every type and a function library
/// on every master (as FUNCTION LOAD through the proxy leaves it): the nodes, a seed, the keys.
fn source_cluster(replicas: usize) -> (Nodes, String, BTreeMap<Vec<u8>, KeyState>) {
    let source = Nodes::cluster(3, replicas, &[]);
    let seed = source.addrs()[0].clone();
    fill(&seed, KEYS);
    let expected = dump(&source.masters());
    assert_eq!(expected.len(), KEYS);
    for master in source.masters() {
        let loaded: String = query(&master, &["FUNCTION", "LOAD", LIBRARY]).unwrap();
        assert_eq!(loaded, "backed");
    }
    (source, seed, expected)
}

/// 3 masters with `KEYS` keys of every type and one 12 MiB value, so that the RDB holding it goes
/// over the 8 MiB single-PUT limit and up to the store in parts: the nodes, a seed, the keys.
fn source_with_a_big_value() -> (Nodes, String, BTreeMap<Vec<u8>, KeyState>) {
    let source = Nodes::cluster(3, 0, &[]);
    let seed = source.addrs()[0].clone();
    fill(&seed, KEYS);
    fill_big(&seed, "big", 12 << 20);
    let expected = dump(&source.masters());
    (source, seed, expected)
}

fn args<'a>(head: &[&'a str], nodes: &'a [String]) -> Vec<&'a str> {
    head.iter().copied().chain(nodes.iter().map(String::as_str)).collect()
}

#[test]
fn file_backups_are_listed_verified_pruned_and_restored_key_for_key() {
    let tool = Tool;
    let (source, seed, expected) = source_cluster(1);
    let store = tempfile::tempdir().unwrap();
    let url = format!("file://{}", store.path().display());
    let none = &[];

    let text = tool.fails(&["backup", "--from", &seed, "--to", &url, "--from-disk", "--aof"], none);
    assert!(text.contains("appendonly yes"), "{text}");
    assert_eq!(
        tool.run(&["backup", "--from", &seed, "--to", &url, "--aof"], none).code,
        2,
        "--aof without --from-disk"
    );
    assert!(backups(&url, none).is_empty(), "a failed backup left files behind");

    tool.ok(&["backup", "--from", &seed, "--to", &url], none);
    let first = only_backup(&url, none);
    let m = manifest(store.path(), &first);
    let masters = m["masters"].as_array().unwrap();
    assert_eq!(masters.len(), 3);
    let mut slots = 0;
    for master in masters {
        assert_eq!(master["replicas"].as_array().unwrap().len(), 1, "{master}");
        assert_eq!(master["persistence"], "rdb");
        // Streamed over the network: the RDB alone (no nodes.conf, which only --from-disk reads).
        assert_eq!(master["files"].as_array().unwrap().len(), 1, "{master}");
        // The functions, as FUNCTION DUMP gives them: the library's name is in the payload.
        let functions = hex::decode(master["functions"].as_str().unwrap_or_default()).unwrap();
        assert!(functions.windows(6).any(|w| w == b"backed"), "{master}");
        for r in master["slots"].as_array().unwrap() {
            slots += r["end"].as_u64().unwrap() - r["start"].as_u64().unwrap() + 1;
        }
        for f in master["files"].as_array().unwrap() {
            let len = std::fs::metadata(store.path().join(&first).join(f["path"].as_str().unwrap())).unwrap().len();
            assert_eq!(f["size"].as_u64(), Some(len), "{f}");
            assert_eq!(f["sha256"].as_str().unwrap().len(), 64);
        }
    }
    assert_eq!(slots, 16384);

    let listed = tool.ok(&["backup", "list", &url], none);
    assert!(listed.lines().any(|l| l.starts_with(&first) && l.contains(" 3 ") && l.ends_with("yes")), "{listed}");
    tool.ok(&["backup", "verify", &format!("{url}/{first}")], none);

    // One flipped byte in one stored RDB.
    let rdb = first_file(&m, "rdb");
    let stored = store.path().join(&first).join(&rdb);
    let mut bytes = std::fs::read(&stored).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&stored, &bytes).unwrap();
    let text = tool.fails(&["backup", "verify", &format!("{url}/{first}")], none);
    assert!(text.contains(&rdb) && text.contains("sha256"), "{text}");

    let targets = Nodes::fresh(4, &[]);
    let target_addrs = targets.addrs();
    let text = tool.fails(&args(&["restore", &format!("{url}/{first}"), "--to"], &target_addrs), none);
    assert!(text.contains(&rdb), "{text}");
    assert_untouched(&targets);
    let text = tool.fails(&args(&["restore", &format!("{url}/{first}"), "--to"], &target_addrs[..2]), none);
    assert!(text.contains("3 masters but --to names 2 nodes"), "{text}");
    let text = tool.fails(&args(&["restore", &format!("{url}/{first}"), "--to"], &source.addrs()[..3]), none);
    assert!(text.contains("already in a cluster"), "{text}");
    assert_untouched(&targets);

    tool.ok(&["backup", "--from", &seed, "--to", &url, "--keep", "1", "--from-disk", "--parallel", "1"], none);
    let second = only_backup(&url, none);
    let kinds = manifest(store.path(), &second)["masters"][0]["files"].to_string();
    assert!(
        kinds.contains("nodes-conf") && kinds.contains("\"rdb\""),
        "--from-disk copies the RDB and nodes.conf: {kinds}"
    );
    assert_ne!(second, first, "--keep 1 kept the older backup");
    tool.ok(&args(&["restore", &format!("{url}/{second}"), "--to"], &target_addrs), none);
    targets.wait_settled(3);
    assert_eq!(targets.replicas().len(), 1, "the fourth node becomes a replica");
    assert_same_keys(&expected, &dump(&targets.masters()));
    // The functions came back with the keys, on every master.
    for master in targets.masters() {
        let answer: String = query(&master, &["FCALL", "backed_answer", "0"]).unwrap();
        assert_eq!(answer, "42", "FCALL on {master}");
    }
}

/// The ACL rules of a user that can take backups over the network (the README's).
const BACKUP_RULES: &str = "+cluster|nodes +cluster|myid +info +config|get +function|dump +replconf +sync";

/// A Redis function library (`#!lua name=backed`) the backups must carry.
const LIBRARY: &str = "#!lua name=backed\nredis.register_function('backed_answer', function() return '42' end)";

#[test]
fn s3_backups_are_listed_verified_pruned_and_restored_key_for_key() {
    let Some(s3) = S3Server::start() else { return };
    let tool = Tool;
    let env = s3.env();
    s3.put("/backups", b"");
    let url = "s3://backups/clusters/a";
    let (_source, seed, expected) = source_with_a_big_value();

    tool.ok(&["backup", "--from", &seed, "--to", url], &env);
    let first = only_backup(url, &env);
    let listed = tool.ok(&["backup", "list", url], &env);
    assert!(listed.contains(&first) && listed.contains("yes"), "{listed}");
    tool.ok(&["backup", "verify", &format!("{url}/{first}")], &env);
    let m = fetch_manifest(url, &first, &env);
    let sizes = m["masters"].as_array().unwrap().iter().flat_map(|m| m["files"].as_array().unwrap().clone());
    assert!(sizes.filter_map(|f| f["size"].as_u64()).any(|s| s > 12 << 20), "no multipart-sized file: {m}");

    let missing = tool.fails(&["backup", "verify", &format!("{url}/20000101T000000Z")], &env);
    assert!(missing.contains("no complete backup 20000101T000000Z"), "{missing}");

    // Overwrite one stored object behind the tool's back.
    let rdb = first_file(&m, "rdb");
    let vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    backup::with_storage_env(&vars, || backup::write_object(url, &format!("{first}/{rdb}"), b"not an rdb"))
        .expect("overwrite a stored file");
    let text = tool.fails(&["backup", "verify", &format!("{url}/{first}")], &env);
    assert!(text.contains(&rdb), "{text}");

    tool.ok(&["backup", "--from", &seed, "--to", url, "--keep", "1"], &env);
    let second = only_backup(url, &env);
    assert_ne!(second, first);
    let targets = Nodes::fresh(3, &[]);
    tool.ok(&args(&["restore", &format!("{url}/{second}"), "--to"], &targets.addrs()), &env);
    targets.wait_settled(3);
    assert_same_keys(&expected, &dump(&targets.masters()));
}

/// The manifest of an S3 backup, read (signed) through the tool's own storage code.
fn fetch_manifest(url: &str, id: &str, env: &[(&str, String)]) -> Json {
    let vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let bytes = backup::with_storage_env(&vars, || backup::read_object(url, &format!("{id}/manifest.json")))
        .expect("read the manifest from S3");
    serde_json::from_slice(&bytes).expect("manifest is JSON")
}

#[test]
fn aof_backups_copy_the_aof_directory_and_restore_key_for_key() {
    let tool = Tool;
    let source = Nodes::cluster(3, 0, &["appendonly yes"]);
    let seed = source.addrs()[0].clone();
    fill(&seed, KEYS);
    let expected = dump(&source.masters());
    let store = tempfile::tempdir().unwrap();
    let url = format!("file://{}", store.path().display());

    tool.ok(&["backup", "--from", &seed, "--to", &url, "--from-disk", "--aof"], &[]);
    let id = only_backup(&url, &[]);
    let m = manifest(store.path(), &id);
    for master in m["masters"].as_array().unwrap() {
        assert_eq!(master["persistence"], "aof", "{master}");
        let kinds: Vec<&str> = master["files"].as_array().unwrap().iter().filter_map(|f| f["kind"].as_str()).collect();
        for kind in ["aof-manifest", "aof", "nodes-conf"] {
            assert!(kinds.contains(&kind), "{kind} missing: {kinds:?}");
        }
    }
    tool.ok(&["backup", "verify", &format!("{url}/{id}")], &[]);
    let targets = Nodes::fresh(3, &[]);
    tool.ok(&args(&["restore", &format!("{url}/{id}"), "--to"], &targets.addrs()), &[]);
    targets.wait_settled(3);
    assert_same_keys(&expected, &dump(&targets.masters()));
}

#[test]
fn cli_usage_errors_exit_2_and_failures_exit_1_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let d = Tool;
    assert_eq!(d.run(&["backup"], &[]).code, 2);
    assert_eq!(d.run(&["backup", "--from", "127.0.0.1:1", "--to", &url, "--keep", "0"], &[]).code, 2);
    assert_eq!(d.run(&["restore", &format!("{url}/20250101T000000Z")], &[]).code, 2);
    assert!(d.ok(&["backup", "list", &url], &[]).contains("no backups"));
    assert!(d.fails(&["backup", "verify", &format!("{url}/latest")], &[]).contains("backup id"));
    let text = d.fails(&["restore", &format!("{url}/20250101T000000Z"), "--to", "127.0.0.1:1"], &[]);
    assert!(text.contains("no complete backup 20250101T000000Z"), "{text}");
    let text =
        d.fails(&["backup", "--from", "127.0.0.1:1", "--to", &url, "--user", "u", "--pass-env", "RF_UNSET_VAR"], &[]);
    assert!(text.contains("RF_UNSET_VAR") && text.contains("not set"), "{text}");
    let text = d.fails(&["backup", "list", "s3://AKIAEXAMPLE:sekrit@bucket/p"], &[]);
    assert!(text.contains("credentials") && !text.contains("sekrit"), "{text}");
}

#[test]
fn acl_login_reads_the_password_from_pass_env_and_never_prints_it() {
    const PASS: &str = "Pa55-w0rd-for-backup";
    let acl = format!("user ops on >{PASS} ~* &* +@all");
    // Exactly the rules the README gives a backup user.
    let backup_acl = format!("user backup on >{PASS} {BACKUP_RULES}");
    let source = Nodes::cluster(1, 0, &[&acl, &backup_acl]);
    let seed = source.addrs()[0].clone();
    fill(&seed, 100);
    let expected = dump(&source.masters());
    let store = tempfile::tempdir().unwrap();
    let url = format!("file://{}", store.path().display());
    let d = Tool;
    let login = ["--user", "ops", "--pass-env", "RF_BACKUP_TEST_PASS"];
    let backup_login = ["--user", "backup", "--pass-env", "RF_BACKUP_TEST_PASS"];

    let wrong = [("RF_BACKUP_TEST_PASS", "not-the-password".to_owned())];
    let text = d.fails(&[&["backup", "--from", &seed, "--to", &url][..], &backup_login].concat(), &wrong);
    assert!(text.contains(&seed) && !text.contains("not-the-password"), "{text}");

    let right = [("RF_BACKUP_TEST_PASS", PASS.to_owned())];
    let out = d.ok(&[&["backup", "--from", &seed, "--to", &url][..], &backup_login].concat(), &right);
    assert!(!out.contains(PASS), "{out}");
    let id = only_backup(&url, &[]);
    let targets = Nodes::fresh(1, &[&acl]);
    let restore = format!("{url}/{id}");
    let out = d.ok(&[&["restore", &restore, "--to", &targets.addrs()[0]][..], &login].concat(), &right);
    assert!(!out.contains(PASS), "{out}");
    targets.wait_settled(1);
    assert_same_keys(&expected, &dump(&targets.masters()));
}

#[test]
fn a_backup_restores_into_a_running_cluster_of_another_shape() {
    let tool = Tool;
    let (_source, seed, expected) = source_cluster(0);
    let store = tempfile::tempdir().unwrap();
    let url = format!("file://{}", store.path().display());
    let none = &[];
    tool.ok(&["backup", "--from", &seed, "--to", &url], none);
    let id = only_backup(&url, none);
    let backup = format!("{url}/{id}");
    // An expiry a minute out, compared after the restore: kept as an absolute time.
    let ttl_key = expected.iter().find(|(_, state)| state.has_ttl).map(|(key, _)| key.clone()).unwrap();
    let ttl_key = String::from_utf8(ttl_key).unwrap();
    let source_ttl: i64 = cluster_query(&seed, &["PTTL", &ttl_key]);

    for masters in [2, 4] {
        let target = Nodes::cluster(masters, 0, &[]);
        let into = target.addrs()[0].clone();
        let text = tool.ok(&["restore", &backup, "--into", &into], none);
        assert!(text.contains(&format!("into {masters} masters")), "{text}");
        assert_same_keys(&expected, &dump(&target.masters()));
        let restored_ttl: i64 = cluster_query(&into, &["PTTL", &ttl_key]);
        assert!(
            restored_ttl > 0 && restored_ttl <= source_ttl,
            "{ttl_key}: {source_ttl} ms before, {restored_ttl} after"
        );
        for master in target.masters() {
            let answer: String = query(&master, &["FCALL", "backed_answer", "0"]).unwrap();
            assert_eq!(answer, "42", "functions on {master}");
        }
        // Not empty any more: refused without --replace, overwritten with it.
        let refused = tool.fails(&["restore", &backup, "--into", &into], none);
        assert!(refused.contains("--replace"), "{refused}");
        tool.ok(&["restore", &backup, "--into", &into, "--replace"], none);
        assert_same_keys(&expected, &dump(&target.masters()));
    }
}

/// `args` on the node of a cluster that owns the key (the first argument after the command).
fn cluster_query<T: redis::FromRedisValue>(seed: &str, args: &[&str]) -> T {
    let client = redis::cluster::ClusterClient::new(vec![format!("redis://{seed}/")]).unwrap();
    let mut con = client.get_connection().unwrap();
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query(&mut con).unwrap()
}
