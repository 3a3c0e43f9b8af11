//! `restore URL/ID --to NODE...`: a fresh cluster of the backup's shape, filled key by key.
//!
//! Order, and why: the targets are checked first and every file is downloaded and verified before
//! any node is changed, so a bad backup or a wrong node list costs nothing. Then each target gets
//! its master's slots, they MEET, extras REPLICATE, and only once `cluster_state:ok` holds are keys
//! copied: a node refuses writes while its cluster is down. Keys are copied from a temporary
//! loader per master ([`Loader`]) straight into the master that owns their slots, so the cluster is
//! consistent at every step. This costs one DUMP and one RESTORE per key; for very large datasets
//! place the files on stopped nodes instead (the manual procedure in the README).

use std::net::{IpAddr, ToSocketAddrs};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::loader::{self, Loader};
use super::manifest::{Manifest, SLOTS, SlotRange};
use super::node::{Login, Node, split_addr};
use super::{BackupError, RestoreArgs, catalog, human_size, store};
use redisforge_cluster::info::{info_field, info_num};

/// Longest wait for the targets to meet, and again for `cluster_state:ok`.
const FORM_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for replicas to acknowledge the copied keys (`WAIT`), in milliseconds.
const REPLICA_WAIT_MS: u64 = 30_000;
/// Pause between polls.
const POLL: Duration = Duration::from_millis(100);

/// One target node.
struct Target {
    addr: String,
    id: String,
    /// `major.minor` of its `redis_version`.
    version: Option<(u32, u32)>,
    node: Node,
}

/// Runs `restore`.
///
/// # Errors
/// See [`BackupError`]; [`BackupError::BadTargets`] and [`BackupError::Verify`] come before any
/// target is changed.
pub fn restore(args: &RestoreArgs) -> Result<(), BackupError> {
    if let Some(seed) = &args.into {
        return super::reshape::restore_into(args, seed);
    }
    let (url, id) = store::split_backup(&args.backup)?;
    let loc = store::open(&url, false)?;
    let manifest = catalog::read_manifest(&loc, &id)?;
    let login = Login::from_args(&args.auth)?;
    let mut targets = check_targets(&args.to, manifest.masters.len(), &login)?;
    let bin = loader_bin(args);
    check_loader_version(&bin, &targets)?;

    let work = WorkDir::create(args.work_dir.as_deref(), &id)?;
    let total = manifest.files().count();
    println!("restore {id}: downloading and verifying {total} files ({})", human_size(manifest.total_size()));
    let bad = catalog::check_files(&loc, &manifest, Some(work.path()))?;
    if !bad.is_empty() {
        eprintln!("redisforge-ops: restore refused, no target node was changed");
        return Err(BackupError::Verify { id, total, bad });
    }

    // From here on the targets change: a failure leaves a partial restore behind.
    let filled =
        form_cluster(&mut targets, &manifest).and_then(|()| fill(args, &bin, &manifest, &mut targets, work.path()));
    if filled.is_err() {
        eprintln!(
            "redisforge-ops: the target nodes now hold a partial restore; run FLUSHALL and CLUSTER RESET HARD \
             on each (or start fresh nodes) before trying again"
        );
    }
    let restored = filled?;
    println!("restore {id} complete: {restored} keys into {} masters", manifest.masters.len());
    Ok(())
}

/// Copies every master's keys into its target, then waits for the replicas; returns the key count.
fn fill(
    args: &RestoreArgs,
    bin: &Path,
    manifest: &Manifest,
    targets: &mut [Target],
    work: &Path,
) -> Result<u64, BackupError> {
    let masters = manifest.masters.len();
    println!("cluster formed: {masters} masters, {} replica(s), cluster_state:ok", targets.len() - masters);
    let mut restored = 0;
    for (i, (master, target)) in manifest.masters.iter().zip(targets.iter_mut()).enumerate() {
        let mut loader = Loader::start(bin, &work.join(format!("m{i}")), master, args.timeout)?;
        loader.copy_to(&mut target.node, args.batch)?;
        let keys = loader.check_count(&mut target.node, &master.node_id, args.batch)?;
        // Every master holds the libraries (FUNCTION LOAD reaches each), so each gets its own back.
        let libraries = loader.copy_functions_to(&mut target.node)?;
        restored += keys;
        println!(
            "  {} <- {} (slots {}): {keys} keys, {libraries} function libraries",
            target.addr,
            master.node_id,
            slot_text(&master.slots)
        );
    }
    wait_replicas(targets, masters);
    Ok(restored)
}

/// The loader's DUMP payloads carry its RDB version, which older targets refuse to RESTORE: check
/// before anything changes rather than fail after the cluster was formed.
fn check_loader_version(bin: &Path, targets: &[Target]) -> Result<(), BackupError> {
    let loader = loader::version(bin)?;
    if let Some(t) = targets.iter().find(|t| t.version.is_some_and(|v| v < loader)) {
        return Err(BackupError::BadTargets(format!(
            "{} runs Redis {}, older than the loader {} ({}.{}), whose DUMP payloads it cannot read; \
             pass --redis-server of the targets' version",
            t.addr,
            t.version.map_or_else(String::new, |(a, b)| format!("{a}.{b}")),
            bin.display(),
            loader.0,
            loader.1
        )));
    }
    Ok(())
}

/// Connects to every target and refuses unless each is a fresh, empty, cluster-enabled node and
/// there is one per backed-up master at least.
fn check_targets(addrs: &[String], masters: usize, login: &Login) -> Result<Vec<Target>, BackupError> {
    if addrs.len() < masters {
        return Err(BackupError::BadTargets(format!(
            "the backup has {masters} masters but --to names {} nodes (one per master is needed; extras become replicas)",
            addrs.len()
        )));
    }
    let mut problems = Vec::new();
    let mut targets: Vec<Target> = Vec::new();
    for addr in addrs {
        match inspect(addr, login) {
            Ok(t) if targets.iter().any(|o| o.id == t.id) => problems.push(format!("{addr} is named twice")),
            Ok(t) => targets.push(t),
            Err(why) => problems.push(format!("{addr}: {why}")),
        }
    }
    if problems.is_empty() { Ok(targets) } else { Err(BackupError::BadTargets(problems.join("; "))) }
}

fn inspect(addr: &str, login: &Login) -> Result<Target, String> {
    let mut node = Node::connect(addr, login).map_err(|e| e.to_string())?;
    let text = |e: BackupError| e.to_string();
    let info = node.info("cluster").map_err(text)?;
    if info_num(&info, "cluster_enabled") != Some(1) {
        return Err("cluster-enabled is not yes".to_owned());
    }
    let cluster: String = node.query(&["CLUSTER", "INFO"]).map_err(text)?;
    let known = info_num(&cluster, "cluster_known_nodes").unwrap_or(0);
    if known != 1 {
        return Err(format!("already in a cluster (knows {known} nodes)"));
    }
    if info_num(&cluster, "cluster_slots_assigned") != Some(0) {
        return Err("already serves slots".to_owned());
    }
    let keys: u64 = node.query(&["DBSIZE"]).map_err(text)?;
    if keys != 0 {
        return Err(format!("holds {keys} keys"));
    }
    let id: String = node.query(&["CLUSTER", "MYID"]).map_err(text)?;
    let server = node.info("server").map_err(text)?;
    let version = info_field(&server, "redis_version").and_then(loader::major_minor);
    Ok(Target { addr: addr.to_owned(), id, version, node })
}

/// Slots to the masters, MEET, replicas, and a bounded wait for `cluster_state:ok` everywhere.
fn form_cluster(targets: &mut [Target], manifest: &Manifest) -> Result<(), BackupError> {
    let masters = manifest.masters.len();
    for (i, (t, epoch)) in targets.iter_mut().zip(1u64..).enumerate() {
        // Distinct config epochs up front spare the nodes the collision dance after MEET; a node
        // that already has one keeps it (the dance then settles it).
        let _ = t.node.try_query::<()>(&["CLUSTER", "SET-CONFIG-EPOCH", &epoch.to_string()]);
        if let Some(master) = manifest.masters.get(i) {
            add_slots(&mut t.node, &master.slots)?;
        }
    }
    let n = targets.len();
    if let Some((first, rest)) = targets.split_first_mut() {
        for t in rest {
            let (ip, port) = resolve(&t.addr)?;
            first.node.query::<()>(&["CLUSTER", "MEET", &ip, &port.to_string()])?;
        }
    }
    wait_all(targets, "the nodes did not all meet", |node| {
        let text: String = node.query(&["CLUSTER", "NODES"])?;
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        Ok(lines.len() == n && lines.iter().all(|l| !l.contains("handshake") && !l.contains("noaddr")))
    })?;
    let master_ids: Vec<String> = targets[..masters].iter().map(|t| t.id.clone()).collect();
    for (j, replica) in targets[masters..].iter_mut().enumerate() {
        let master_id = &master_ids[j % masters];
        let deadline = Instant::now() + FORM_TIMEOUT;
        // The replica may not have learned yet that this node is a master: retry for a while.
        while let Err(e) = replica.node.try_query::<()>(&["CLUSTER", "REPLICATE", master_id]) {
            if Instant::now() >= deadline {
                return Err(replica.node.error(&["CLUSTER", "REPLICATE"], e));
            }
            std::thread::sleep(POLL);
        }
    }
    wait_all(targets, "cluster_state did not become ok", |node| {
        let info: String = node.query(&["CLUSTER", "INFO"])?;
        Ok(info_field(&info, "cluster_state") == Some("ok")
            && info_num(&info, "cluster_slots_ok") == Some(i64::from(SLOTS))
            && info_num(&info, "cluster_known_nodes") == i64::try_from(n).ok())
    })
}

/// `CLUSTER ADDSLOTSRANGE` (Redis 7), or `ADDSLOTS` on servers without it.
fn add_slots(node: &mut Node, ranges: &[SlotRange]) -> Result<(), BackupError> {
    let mut args = vec!["CLUSTER".to_owned(), "ADDSLOTSRANGE".to_owned()];
    args.extend(ranges.iter().flat_map(|r| [r.start.to_string(), r.end.to_string()]));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    match node.try_query::<()>(&argv) {
        Ok(()) => return Ok(()),
        Err(e) if !e.to_string().to_ascii_lowercase().contains("unknown subcommand") => {
            return Err(node.error(&argv, e));
        }
        Err(_) => {}
    }
    let slots: Vec<String> = ranges.iter().flat_map(|r| r.start..=r.end).map(|s| s.to_string()).collect();
    for chunk in slots.chunks(1000) {
        let mut argv = vec!["CLUSTER", "ADDSLOTS"];
        argv.extend(chunk.iter().map(String::as_str));
        node.query::<()>(&argv)?;
    }
    Ok(())
}

/// `CLUSTER MEET` takes an IP address; names are resolved here.
fn resolve(addr: &str) -> Result<(String, u16), BackupError> {
    let bad = |why: String| BackupError::BadTargets(format!("{addr}: {why}"));
    let (host, port) = split_addr(addr).ok_or_else(|| bad("not host:port".to_owned()))?;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok((ip.to_string(), port));
    }
    let ip = (host, port)
        .to_socket_addrs()
        .map_err(|e| bad(format!("cannot resolve: {e}")))?
        .next()
        .ok_or_else(|| bad("resolves to no address".to_owned()))?
        .ip();
    Ok((ip.to_string(), port))
}

/// Polls `check` on every target until all pass, for at most [`FORM_TIMEOUT`].
fn wait_all(
    targets: &mut [Target],
    what: &str,
    mut check: impl FnMut(&mut Node) -> Result<bool, BackupError>,
) -> Result<(), BackupError> {
    let deadline = Instant::now() + FORM_TIMEOUT;
    loop {
        let mut pending = None;
        for t in targets.iter_mut() {
            if !check(&mut t.node)? {
                pending = Some(t.addr.clone());
                break;
            }
        }
        let Some(addr) = pending else { return Ok(()) };
        if Instant::now() >= deadline {
            return Err(BackupError::Node { node: addr, why: format!("{what} within {FORM_TIMEOUT:?}") });
        }
        std::thread::sleep(POLL);
    }
}

/// Waits (bounded) until each master's replicas acknowledged the copy; a shortfall is reported,
/// not fatal: the replicas keep syncing on their own.
fn wait_replicas(targets: &mut [Target], masters: usize) {
    let replicas = targets.len() - masters;
    for (i, master) in targets[..masters].iter_mut().enumerate() {
        let expected = (0..replicas).filter(|j| j % masters == i).count();
        if expected == 0 {
            continue;
        }
        let acked: Result<i64, _> = master.node.query(&["WAIT", &expected.to_string(), &REPLICA_WAIT_MS.to_string()]);
        match acked {
            Ok(n) if n >= expected as i64 => {}
            Ok(n) => {
                println!("  note: {} has {n} of {expected} replicas in sync so far; they keep syncing", master.addr)
            }
            Err(e) => println!("  note: could not wait for the replicas of {}: {e}", master.addr),
        }
    }
}

fn slot_text(ranges: &[SlotRange]) -> String {
    let parts: Vec<String> = ranges
        .iter()
        .map(|r| if r.start == r.end { r.start.to_string() } else { format!("{}-{}", r.start, r.end) })
        .collect();
    parts.join(",")
}

/// The restore's private download directory (mode 0700), removed when dropped.
/// The `redis-server` the temporary loaders run: `--redis-server`, else `$REDIS_SERVER`, else the
/// one on PATH.
pub(super) fn loader_bin(args: &RestoreArgs) -> PathBuf {
    args.redis_server
        .clone()
        .or_else(|| std::env::var_os("REDIS_SERVER").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("redis-server"))
}

/// The restore's private directory (mode 0700), removed when done.
pub(super) struct WorkDir(PathBuf);

impl WorkDir {
    pub(super) fn create(base: Option<&Path>, id: &str) -> Result<WorkDir, BackupError> {
        let base = base.map_or_else(std::env::temp_dir, Path::to_path_buf);
        let dir = base.join(format!("redisforge-restore-{id}-{}", std::process::id()));
        std::fs::DirBuilder::new().mode(0o700).create(&dir).map_err(|e| BackupError::io(&dir, e))?;
        Ok(WorkDir(dir))
    }

    pub(super) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_ranges_print_compactly() {
        let r = |start, end| SlotRange { start, end };
        assert_eq!(slot_text(&[r(0, 5460), r(5462, 5462)]), "0-5460,5462");
    }

    #[test]
    fn meet_addresses_resolve_to_ips() {
        assert_eq!(resolve("127.0.0.1:7000").unwrap(), ("127.0.0.1".to_owned(), 7000));
        assert_eq!(resolve("[::1]:7000").unwrap(), ("::1".to_owned(), 7000));
        assert_eq!(resolve("localhost:7000").unwrap().1, 7000);
        assert!(resolve("nohost").is_err());
    }
}
