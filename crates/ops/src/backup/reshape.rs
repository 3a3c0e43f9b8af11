//! `restore URL/ID --into SEED`: a backup into a running cluster of any number of masters.
//!
//! The design of the fresh-nodes restore is kept — every file downloaded and verified first, a
//! temporary local `redis-server` loads each backed-up master's RDB or AOF — but each key goes to
//! the master that owns its slot in the *target* cluster, so three backed-up masters restore into
//! two, four or ten. Expiry is kept as an absolute time (`RESTORE … ABSTTL`), so time spent
//! restoring does not lengthen a key's life; keys that expired meanwhile are skipped. The target
//! must be empty unless `--replace` (then restored keys overwrite same-named ones). Functions go
//! to every target master (`FUNCTION RESTORE … REPLACE`).

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use redis::Value;
use redisforge_cluster::slot::key_slot;

use super::loader::Loader;
use super::node::{Login, Node};
use super::restore::WorkDir;
use super::take::discover;
use super::{BackupError, RestoreArgs, catalog, human_size, store};
use crate::progress::{Progress, Unit};

/// The target cluster: its masters, and which of them owns each slot.
struct TargetCluster {
    masters: Vec<Node>,
    owner: Vec<usize>,
}

/// Runs `restore URL/ID --into SEED`.
///
/// # Errors
/// See [`BackupError`]; a non-empty target without `--replace` and a failed verification come
/// before any key is written.
pub fn restore_into(args: &RestoreArgs, seed: &str) -> Result<(), BackupError> {
    let (url, id) = store::split_backup(&args.backup)?;
    let loc = store::open(&url, false)?;
    let manifest = catalog::read_manifest(&loc, &id)?;
    let login = Login::from_args(&args.auth)?;
    let mut target = TargetCluster::discover(seed, &login)?;
    target.check_empty(args.replace)?;
    let bin = super::restore::loader_bin(args);
    let work = WorkDir::create(args.work_dir.as_deref(), &id)?;
    let total = manifest.files().count();
    println!(
        "restore {id} into {seed}: downloading and verifying {total} files ({})",
        human_size(manifest.total_size())
    );
    let bad = catalog::check_files(&loc, &manifest, Some(work.path()))?;
    if !bad.is_empty() {
        eprintln!("redisforge-ops: restore refused, no target node was changed");
        return Err(BackupError::Verify { id, total, bad });
    }
    let mut restored = 0;
    for (i, master) in manifest.masters.iter().enumerate() {
        let mut loader = Loader::start(&bin, &work.path().join(format!("m{i}")), master, args.timeout)?;
        let keys = target.copy_from(&mut loader, args.batch, args.replace)?;
        for node in target.masters.iter_mut() {
            loader.copy_functions_to(node)?;
        }
        restored += keys;
        println!("  {} keys of {} spread over {} masters", keys, master.node_id, target.masters.len());
    }
    println!(
        "restore {id} complete: {restored} keys from {} backed-up masters into {} masters of {seed}",
        manifest.masters.len(),
        target.masters.len()
    );
    Ok(())
}

impl TargetCluster {
    fn discover(seed: &str, login: &Login) -> Result<TargetCluster, BackupError> {
        let shards = discover(seed, login)?;
        let mut owner = vec![usize::MAX; usize::from(redisforge_cluster::slot::SLOT_COUNT)];
        let mut masters = Vec::with_capacity(shards.len());
        for (i, shard) in shards.iter().enumerate() {
            for &(start, end) in &shard.master.slots {
                owner[usize::from(start)..=usize::from(end)].fill(i);
            }
            masters.push(Node::connect(&shard.master.addr(), login)?);
        }
        Ok(TargetCluster { masters, owner })
    }

    /// Refuses a target that holds keys, unless they are to be overwritten.
    fn check_empty(&mut self, replace: bool) -> Result<(), BackupError> {
        if replace {
            return Ok(());
        }
        let mut held = Vec::new();
        for node in self.masters.iter_mut() {
            let keys: u64 = node.query(&["DBSIZE"])?;
            if keys > 0 {
                held.push(format!("{} holds {keys} keys", node.name()));
            }
        }
        match held.is_empty() {
            true => Ok(()),
            false => Err(BackupError::BadTargets(format!(
                "{}; restore into an empty cluster, or pass --replace to overwrite keys of the same names",
                held.join(", ")
            ))),
        }
    }

    /// Copies every key of `loader` to the master owning its slot, one pipeline per master and
    /// batch; returns the keys written.
    fn copy_from(&mut self, loader: &mut Loader, batch: u32, replace: bool) -> Result<u64, BackupError> {
        let mut progress = Progress::new("restore", loader.dbsize()?, Unit::Keys);
        let mut written = 0;
        let mut cursor = 0u64;
        loop {
            let (next, keys) = loader.scan(cursor, batch)?;
            let dumped = loader.dump(&keys)?;
            let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
            let mut per_master: BTreeMap<usize, redis::Pipeline> = BTreeMap::new();
            for (key, ttl, payload) in dumped {
                // -1: no expiry (ABSTTL 0); 0 or -2: expiring now, not restored.
                let expires_at = match ttl {
                    -1 => 0,
                    t if t > 0 => now_ms + t as u64,
                    _ => continue,
                };
                let master = self.owner[usize::from(key_slot(&key))];
                let Some(pipe) = (master != usize::MAX).then(|| per_master.entry(master).or_default()) else {
                    return Err(BackupError::BadTargets(format!(
                        "slot {} has no master in the target",
                        key_slot(&key)
                    )));
                };
                pipe.cmd("RESTORE").arg(&key).arg(expires_at).arg(payload).arg("ABSTTL");
                if replace {
                    pipe.arg("REPLACE");
                }
                pipe.ignore();
                written += 1;
            }
            for (master, pipe) in per_master {
                let node = &mut self.masters[master];
                pipe.query::<()>(node.con()).map_err(|e| node.error(&["RESTORE"], e))?;
            }
            progress.add(keys.len() as u64, "");
            if next == 0 {
                progress.finish();
                return Ok(written);
            }
            cursor = next;
        }
    }
}

/// One key read from a loader: its name, its PTTL (-1: no expiry) and its DUMP payload.
pub type Dumped = (Vec<u8>, i64, Vec<u8>);

/// The [`Dumped`] keys of a pipelined PTTL + DUMP read, keys gone since SCAN left out.
pub(super) fn dumped(keys: &[Vec<u8>], replies: &[Value]) -> Vec<Dumped> {
    keys.iter()
        .zip(replies.chunks(2))
        .filter_map(|(key, pair)| match (&pair[0], &pair[1]) {
            (Value::Int(ttl), Value::BulkString(payload)) => Some((key.clone(), *ttl, payload.clone())),
            _ => None,
        })
        .collect()
}
