//! `backup --from SEED --to URL`: every master's snapshot streamed to the store over the network
//! (or, with `--from-disk`, snapshotted and read from its files), `--parallel` masters at a time,
//! the manifest written only after all of them succeeded, then `--keep` pruning.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use redisforge_cluster::info::info_field;

use super::manifest::{
    self, AofLayout, FileEntry, FileKind, MANIFEST, Manifest, MasterEntry, Persistence, is_safe_name,
};
use super::node::{Login, Node, split_addr};
use super::replication;
use super::snapshot::{self, LOCAL_HINT};
use super::store::{self, Location};
use super::topology::{self, Shard};
use super::{BackupError, TakeArgs, catalog, human_size};
use crate::progress::{Progress, Unit};

/// Longest silence accepted from a master streaming its snapshot (it sends a newline every second
/// while it forks).
const STREAM_STALL: Duration = Duration::from_secs(60);

/// How many times a fresh id is tried when one from the same second exists already.
const ID_ATTEMPTS: usize = 3;

/// Runs `backup --from SEED --to URL …`.
///
/// # Errors
/// See [`BackupError`]. On failure the files uploaded so far are deleted (best effort); a backup
/// without manifest is ignored by `list` (shown incomplete), `verify` and `restore` anyway.
pub fn take(args: &TakeArgs) -> Result<(), BackupError> {
    let (Some(seed), Some(to)) = (args.from.as_deref(), args.to.as_deref()) else {
        return Err(BackupError::BadUrl("backup needs --from SEED and --to URL".to_owned()));
    };
    let login = Login::from_args(&args.auth)?;
    let loc = store::open(to, true)?;
    let shards = discover(seed, &login)?;
    let (id, created) = fresh_id(&loc)?;
    println!("backup {id}: {} masters from {seed} to {}", shards.len(), loc.shown());

    // The total is not known before the masters answer: the progress counts bytes and their rate.
    let progress = Mutex::new(Progress::open_ended(&format!("backup {id}"), Unit::Bytes));
    let results =
        in_parallel(&shards, args.parallel as usize, |shard| back_up_master(&loc, &id, shard, &login, args, &progress));
    let progress = progress.into_inner().unwrap_or_else(PoisonError::into_inner);
    match results.iter().all(Result::is_ok) {
        true => progress.finish(),
        false => progress.abandon(),
    }
    let mut masters = Vec::new();
    let mut errors = Vec::new();
    for result in results {
        match result {
            Ok(m) => masters.push(m),
            Err(e) => errors.push(e),
        }
    }
    if let Some(first) = errors.into_iter().reduce(|first, other| {
        eprintln!("redisforge-ops: also: {other}");
        first
    }) {
        discard(&loc, &id);
        return Err(first);
    }

    let manifest = Manifest {
        format: manifest::FORMAT,
        id: id.clone(),
        created,
        tool: format!("redisforge-ops {}", env!("CARGO_PKG_VERSION")),
        redis_version: masters.first().map(|m| m.redis_version.clone()).unwrap_or_default(),
        masters,
    };
    // Last: its presence is what makes the backup complete.
    loc.put_bytes(&format!("{id}/{MANIFEST}"), manifest.to_json())?;
    println!(
        "backup {id} complete: {} masters, {} files, {} at {}/{id}",
        manifest.masters.len(),
        manifest.files().count(),
        human_size(manifest.total_size()),
        loc.shown()
    );
    if let Some(keep) = args.keep {
        catalog::prune(&loc, keep as usize)?;
    }
    Ok(())
}

/// The masters to back up (or to restore into), from the seed's `CLUSTER NODES`.
pub(super) fn discover(seed: &str, login: &Login) -> Result<Vec<Shard>, BackupError> {
    let mut node = Node::connect(seed, login)?;
    let text: String = node.query(&["CLUSTER", "NODES"])?;
    let seed_host = split_addr(seed).map_or("127.0.0.1", |(h, _)| h);
    let cluster_problem = |why| BackupError::Node { node: seed.to_owned(), why };
    let nodes = topology::parse_cluster_nodes(&text, seed_host).map_err(cluster_problem)?;
    topology::shards(&nodes).map_err(cluster_problem)
}

/// A backup id not used at `loc` yet: ids have one-second resolution, so a second backup within
/// the same second waits for the next one.
fn fresh_id(loc: &Location) -> Result<(String, String), BackupError> {
    for _ in 0..ID_ATTEMPTS {
        let (id, created) = manifest::id_and_created(time::OffsetDateTime::now_utc());
        if loc.list(&id)?.is_empty() {
            return Ok((id, created));
        }
        std::thread::sleep(Duration::from_millis(1000));
    }
    Err(BackupError::Node { node: loc.shown().to_owned(), why: "another backup is being written right now".to_owned() })
}

/// Runs `work` for every shard, at most `n` at once; the results in shard order.
fn in_parallel<T: Send>(
    shards: &[Shard],
    n: usize,
    work: impl Fn(&Shard) -> Result<T, BackupError> + Sync,
) -> Vec<Result<T, BackupError>> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<T, BackupError>>>> = Mutex::new(shards.iter().map(|_| None).collect());
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..n.clamp(1, shards.len().max(1)))
            .map(|_| {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(shard) = shards.get(i) else { break };
                        let result = work(shard);
                        results.lock().unwrap_or_else(PoisonError::into_inner)[i] = Some(result);
                    }
                })
            })
            .collect();
        // Joined here so that a panicking worker becomes an error below, not a panic of the scope.
        workers.into_iter().for_each(|w| drop(w.join()));
    });
    let results = results.into_inner().unwrap_or_else(PoisonError::into_inner);
    results
        .into_iter()
        .zip(shards)
        .map(|(result, shard)| {
            result.unwrap_or_else(|| {
                Err(BackupError::Node { node: shard.master.addr(), why: "backup worker panicked".to_owned() })
            })
        })
        .collect()
}

/// Backs up one master under `<id>/<node-id>/`.
fn back_up_master(
    loc: &Location,
    id: &str,
    shard: &Shard,
    login: &Login,
    args: &TakeArgs,
    progress: &Mutex<Progress>,
) -> Result<MasterEntry, BackupError> {
    let master = &shard.master;
    let mut node = Node::connect(&master.addr(), login)?;
    let mut sent = |n: u64| progress.lock().unwrap_or_else(PoisonError::into_inner).add(n, "");
    let functions = function_dump(&mut node)?;
    let mut entry = if args.from_disk {
        from_disk(loc, id, shard, &mut node, args.aof, args.timeout, &mut sent)?
    } else {
        over_network(loc, id, shard, &mut node, login, args.timeout, &mut sent)?
    };
    entry.functions = functions;
    let size: u64 = entry.files.iter().map(|f| f.size).sum();
    let kind = match entry.persistence {
        Persistence::Rdb => "RDB",
        Persistence::Aof => "AOF",
    };
    println!(
        "  {} {}: {kind} snapshot, {} files, {} uploaded",
        master.addr(),
        master.id,
        entry.files.len(),
        human_size(size)
    );
    Ok(entry)
}

/// The master streams an RDB as it would to a new replica; it goes to the store as it arrives.
fn over_network(
    loc: &Location,
    id: &str,
    shard: &Shard,
    node: &mut Node,
    login: &Login,
    timeout: Duration,
    sent: &mut dyn FnMut(u64),
) -> Result<MasterEntry, BackupError> {
    let master = &shard.master;
    // The address may have changed hands since discovery (a failover, a restart elsewhere).
    let myid: String = node.query(&["CLUSTER", "MYID"])?;
    if myid != master.id {
        return Err(BackupError::Node {
            node: master.addr(),
            why: format!("is node {myid} now, not {} (a failover during the backup?): run it again", master.id),
        });
    }
    let redis_version = info_field(&node.info("server")?, "redis_version").unwrap_or("unknown").to_owned();
    // The RDB's name on the node, for restores by hand; users without CONFIG get Redis' default.
    let dbfilename = node
        .config_get("dbfilename")
        .ok()
        .flatten()
        .filter(|name| is_safe_name(name))
        .unwrap_or_else(|| "dump.rdb".to_owned());
    let mut rdb = replication::open(&master.addr(), login, timeout.min(STREAM_STALL))?;
    let path = format!("{}/{dbfilename}", master.id);
    let io = |e: std::io::Error| BackupError::Node { node: master.addr(), why: format!("snapshot stream: {e}") };
    let digest = loc.put_reader(&format!("{id}/{path}"), &mut rdb, &io, sent)?;
    let file = FileEntry { path, kind: FileKind::Rdb, size: digest.size, sha256: digest.sha256 };
    Ok(master_entry(shard, redis_version, Persistence::Rdb, dbfilename, None, vec![file]))
}

/// The master saves (BGSAVE or an AOF rewrite) and its files are read from its `dir` here.
fn from_disk(
    loc: &Location,
    id: &str,
    shard: &Shard,
    node: &mut Node,
    aof: bool,
    timeout: Duration,
    sent: &mut dyn FnMut(u64),
) -> Result<MasterEntry, BackupError> {
    let master = &shard.master;
    let snap = snapshot::take(node, &master.id, aof, timeout)?;
    let mut files = Vec::with_capacity(snap.files.len());
    for file in &snap.files {
        let path = format!("{}/{}", master.id, file.rel);
        let digest = loc.put_file(&format!("{id}/{path}"), &file.local).map_err(|e| match e {
            // A file named by the node but missing here: most likely another host's node.
            BackupError::Io { path, source, .. } => BackupError::Io { path, source, hint: LOCAL_HINT },
            other => other,
        })?;
        sent(digest.size);
        files.push(FileEntry { path, kind: file.kind, size: digest.size, sha256: digest.sha256 });
    }
    Ok(master_entry(shard, snap.redis_version, snap.persistence, snap.dbfilename, snap.aof, files))
}

fn master_entry(
    shard: &Shard,
    redis_version: String,
    persistence: Persistence,
    dbfilename: String,
    aof: Option<AofLayout>,
    files: Vec<FileEntry>,
) -> MasterEntry {
    MasterEntry {
        node_id: shard.master.id.clone(),
        address: shard.master.addr(),
        slots: topology::slot_ranges(&shard.master),
        replicas: shard.replica_ids.clone(),
        redis_version,
        persistence,
        dbfilename,
        aof,
        files,
        functions: None,
    }
}

/// The master's Redis functions as `FUNCTION DUMP` gives them (hex), for the manifest; `None` on
/// servers without functions (before 7.0).
fn function_dump(node: &mut Node) -> Result<Option<String>, BackupError> {
    match node.try_query::<Vec<u8>>(&["FUNCTION", "DUMP"]) {
        Ok(payload) => Ok(Some(hex::encode(payload))),
        Err(e) if e.to_string().to_ascii_lowercase().contains("unknown command") => Ok(None),
        Err(e) => Err(node.error(&["FUNCTION", "DUMP"], e)),
    }
}

/// Best-effort removal of a failed backup's files.
fn discard(loc: &Location, id: &str) {
    let objects = loc.list(id).unwrap_or_default();
    let removed = objects.iter().filter(|(rel, _)| loc.delete(rel).is_ok()).count();
    if objects.is_empty() {
        eprintln!("redisforge-ops: backup {id} failed before any file was uploaded");
    } else if removed < objects.len() {
        eprintln!("redisforge-ops: backup {id} failed; {} of its files could not be deleted", objects.len() - removed);
    } else {
        eprintln!("redisforge-ops: backup {id} failed; its {removed} uploaded files were deleted");
    }
}
