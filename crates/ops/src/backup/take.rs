//! `backup --from SEED --to URL`: every master snapshotted and uploaded in parallel, the manifest
//! written only after all of them succeeded, then `--keep` pruning.

use std::time::Duration;

use super::manifest::{self, FileEntry, MANIFEST, Manifest, MasterEntry, Persistence};
use super::node::{Login, Node, split_addr};
use super::snapshot::{self, LOCAL_HINT};
use super::store::{self, Location};
use super::topology::{self, Shard};
use super::{BackupError, TakeArgs, catalog, human_size};

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

    let results: Vec<Result<MasterEntry, BackupError>> = std::thread::scope(|scope| {
        let workers: Vec<_> = shards
            .iter()
            .map(|shard| {
                let (loc, id, login) = (&loc, id.as_str(), &login);
                let worker = scope.spawn(move || back_up_master(loc, id, shard, login, args.aof, args.timeout));
                (shard, worker)
            })
            .collect();
        workers
            .into_iter()
            .map(|(shard, worker)| {
                worker.join().unwrap_or_else(|_| {
                    Err(BackupError::Node { node: shard.master.addr(), why: "backup worker panicked".to_owned() })
                })
            })
            .collect()
    });
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

/// Snapshot one master and upload its files under `<id>/<node-id>/`.
fn back_up_master(
    loc: &Location,
    id: &str,
    shard: &Shard,
    login: &Login,
    aof: bool,
    timeout: Duration,
) -> Result<MasterEntry, BackupError> {
    let master = &shard.master;
    let mut node = Node::connect(&master.addr(), login)?;
    let snap = snapshot::take(&mut node, &master.id, aof, timeout)?;
    let mut files = Vec::with_capacity(snap.files.len());
    for file in &snap.files {
        let path = format!("{}/{}", master.id, file.rel);
        let digest = loc.put_file(&format!("{id}/{path}"), &file.local).map_err(|e| match e {
            // A file named by the node but missing here: most likely another host's node.
            BackupError::Io { path, source, .. } => BackupError::Io { path, source, hint: LOCAL_HINT },
            other => other,
        })?;
        files.push(FileEntry { path, kind: file.kind, size: digest.size, sha256: digest.sha256 });
    }
    let size: u64 = files.iter().map(|f| f.size).sum();
    let kind = match snap.persistence {
        Persistence::Rdb => "RDB",
        Persistence::Aof => "AOF",
    };
    println!(
        "  {} {}: {kind} snapshot, {} files, {} uploaded",
        master.addr(),
        master.id,
        files.len(),
        human_size(size)
    );
    Ok(MasterEntry {
        node_id: master.id.clone(),
        address: master.addr(),
        slots: topology::slot_ranges(master),
        replicas: shard.replica_ids.clone(),
        redis_version: snap.redis_version,
        persistence: snap.persistence,
        dbfilename: snap.dbfilename,
        aof: snap.aof,
        files,
    })
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
