//! One master's snapshot: trigger `BGSAVE` (or `BGREWRITEAOF`), wait until *that* save has
//! finished well, and name the files to copy from the node's directory.
//!
//! "That save": a save already running when we ask is not ours (it may have started before the
//! last write we care about), so we wait it out and ask again; ours is done when the node reports
//! no child running, the last status `ok` and, where Redis counts them (7.0+), one more save than
//! before.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::BackupError;
use super::manifest::{AofLayout, FileKind, Persistence, is_safe_name};
use super::node::Node;
use redisforge_cluster::info::{info_field, info_num};

/// Pause between two `INFO persistence` polls.
const POLL: Duration = Duration::from_millis(100);

/// Hint added to errors about node files: they are read locally.
pub const LOCAL_HINT: &str = " (with --from-disk, backup reads each master's files from the local filesystem at \
     the node's `dir`: run it on the nodes' host, mount their data directories at the same paths, or leave out \
     --from-disk to stream the snapshots over the network)";

/// A finished snapshot and the local files that make it up.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The node's `redis_version`.
    pub redis_version: String,
    /// RDB or AOF.
    pub persistence: Persistence,
    /// The node's `dbfilename`.
    pub dbfilename: String,
    /// The node's AOF names, for AOF snapshots.
    pub aof: Option<AofLayout>,
    /// What to copy.
    pub files: Vec<LocalFile>,
}

/// One file of a snapshot.
#[derive(Debug, Clone)]
pub struct LocalFile {
    /// Where it is on this host.
    pub local: PathBuf,
    /// Its name in the backup, relative to the node's directory there.
    pub rel: String,
    /// What it is.
    pub kind: FileKind,
}

/// Takes a snapshot of the master `node` (whose cluster id is `node_id`).
///
/// # Errors
/// [`BackupError::Node`] when `--aof` meets `appendonly no`, the node's files are not this node's,
/// the save fails or does not finish within `timeout`; [`BackupError::Io`] when its files cannot be
/// read here; [`BackupError::Redis`] for failed commands.
pub fn take(node: &mut Node, node_id: &str, want_aof: bool, timeout: Duration) -> Result<Snapshot, BackupError> {
    let server = node.info("server")?;
    let redis_version = info_field(&server, "redis_version").unwrap_or("unknown").to_owned();
    let dir = PathBuf::from(required(node, "dir")?);
    let dbfilename = required(node, "dbfilename")?;
    let appendonly = node.config_get("appendonly")?.is_some_and(|v| v == "yes");
    let cluster_config = required(node, "cluster-config-file")?;
    let nodes_conf = dir.join(&cluster_config);
    check_nodes_conf(node.name(), node_id, &nodes_conf)?;

    if want_aof && !appendonly {
        return Err(BackupError::Node {
            node: node.name().to_owned(),
            why: "--aof needs appendonly yes on every master (this one has appendonly no); \
                  without --aof an RDB snapshot is taken"
                .to_owned(),
        });
    }
    let deadline = Instant::now() + timeout;
    let mut files = Vec::new();
    let (persistence, aof) = if appendonly {
        rewrite_aof(node, deadline)?;
        let filename = required(node, "appendfilename")?;
        // Redis 7 keeps a directory of parts and a manifest; older versions one file in `dir`.
        let dirname = node.config_get("appenddirname")?.filter(|d| !d.is_empty());
        aof_files(node.name(), &dir, &filename, dirname.as_deref(), &mut files)?;
        (Persistence::Aof, Some(AofLayout { filename, dirname }))
    } else {
        bgsave(node, deadline)?;
        let rel = safe(node.name(), &dbfilename)?.to_owned();
        files.push(LocalFile { local: dir.join(&dbfilename), rel, kind: FileKind::Rdb });
        (Persistence::Rdb, None)
    };
    files.push(LocalFile { local: nodes_conf, rel: "nodes.conf".to_owned(), kind: FileKind::NodesConf });
    Ok(Snapshot { redis_version, persistence, dbfilename, aof, files })
}

fn required(node: &mut Node, key: &str) -> Result<String, BackupError> {
    node.config_get(key)?.ok_or_else(|| BackupError::Node {
        node: node.name().to_owned(),
        why: format!("CONFIG GET {key} returned nothing"),
    })
}

fn safe<'a>(node: &str, name: &'a str) -> Result<&'a str, BackupError> {
    if is_safe_name(name) {
        Ok(name)
    } else {
        Err(BackupError::Node { node: node.to_owned(), why: format!("unexpected file name {name:?}") })
    }
}

/// Makes sure the directory we are about to copy belongs to this node: its `nodes.conf` has the
/// node's id on the `myself` line. Another host's node with the same `dir` would otherwise be
/// backed up in its place without a word.
fn check_nodes_conf(node: &str, node_id: &str, path: &Path) -> Result<(), BackupError> {
    let text = std::fs::read_to_string(path).map_err(|source| BackupError::Io {
        path: path.to_path_buf(),
        source,
        hint: LOCAL_HINT,
    })?;
    let mine = text.lines().any(|l| {
        let mut fields = l.split(' ');
        fields.next() == Some(node_id) && fields.nth(1).is_some_and(|flags| flags.split(',').any(|f| f == "myself"))
    });
    if mine {
        Ok(())
    } else {
        Err(BackupError::Node {
            node: node.to_owned(),
            why: format!("{} is not this node's (no myself line for {node_id}){LOCAL_HINT}", path.display()),
        })
    }
}

/// Whether a refusal only means "another save or rewrite is running; ask again later".
fn busy(err: &redis::RedisError) -> bool {
    err.to_string().contains("in progress")
}

fn bgsave(node: &mut Node, deadline: Instant) -> Result<(), BackupError> {
    loop {
        let info = node.info("persistence")?;
        let running = info_num(&info, "rdb_bgsave_in_progress") == Some(1)
            || info_num(&info, "aof_rewrite_in_progress") == Some(1);
        if !running {
            let before = info_num(&info, "rdb_saves");
            match node.try_query::<String>(&["BGSAVE"]) {
                Ok(_) => return wait_done(node, deadline, Kind::Rdb, before),
                Err(e) if busy(&e) => {}
                Err(e) => return Err(node.error(&["BGSAVE"], e)),
            }
        }
        pause(node, deadline, "BGSAVE could not start: another save kept running")?;
    }
}

fn rewrite_aof(node: &mut Node, deadline: Instant) -> Result<(), BackupError> {
    loop {
        let info = node.info("persistence")?;
        let running = info_num(&info, "aof_rewrite_in_progress") == Some(1)
            || info_num(&info, "aof_rewrite_scheduled") == Some(1);
        if !running {
            let before = info_num(&info, "aof_rewrites");
            match node.try_query::<String>(&["BGREWRITEAOF"]) {
                Ok(_) => return wait_done(node, deadline, Kind::Aof, before),
                Err(e) if busy(&e) => {}
                Err(e) => return Err(node.error(&["BGREWRITEAOF"], e)),
            }
        }
        pause(node, deadline, "BGREWRITEAOF could not start: another rewrite kept running")?;
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Rdb,
    Aof,
}

/// Polls `INFO persistence` until the save we started is over, then checks that it succeeded.
fn wait_done(node: &mut Node, deadline: Instant, kind: Kind, before: Option<i64>) -> Result<(), BackupError> {
    let (running, scheduled, status, counter, what) = match kind {
        Kind::Rdb => ("rdb_bgsave_in_progress", None, "rdb_last_bgsave_status", "rdb_saves", "BGSAVE"),
        Kind::Aof => (
            "aof_rewrite_in_progress",
            Some("aof_rewrite_scheduled"),
            "aof_last_bgrewrite_status",
            "aof_rewrites",
            "BGREWRITEAOF",
        ),
    };
    loop {
        let info = node.info("persistence")?;
        let busy = info_num(&info, running) == Some(1) || scheduled.is_some_and(|s| info_num(&info, s) == Some(1));
        if !busy {
            if info_field(&info, status) != Some("ok") {
                return Err(BackupError::Node {
                    node: node.name().to_owned(),
                    why: format!(
                        "{what} failed ({status}:{}); see the node's log",
                        info_field(&info, status).unwrap_or("?")
                    ),
                });
            }
            let advanced = match (before, info_num(&info, counter)) {
                (Some(b), Some(now)) => now > b,
                // Redis < 7.0 has no counter; the child we started is gone and the status is ok.
                _ => true,
            };
            if advanced {
                return Ok(());
            }
        }
        pause(node, deadline, &format!("{what} did not finish"))?;
    }
}

fn pause(node: &Node, deadline: Instant, why: &str) -> Result<(), BackupError> {
    if Instant::now() >= deadline {
        return Err(BackupError::Node { node: node.name().to_owned(), why: format!("{why} within --timeout") });
    }
    std::thread::sleep(POLL);
    Ok(())
}

/// The AOF's files: Redis 7's manifest and the base and incremental parts it names (history parts
/// are on their way out and not needed), or the single file of older versions.
fn aof_files(
    node: &str,
    dir: &Path,
    filename: &str,
    dirname: Option<&str>,
    files: &mut Vec<LocalFile>,
) -> Result<(), BackupError> {
    let filename = safe(node, filename)?;
    let Some(dirname) = dirname else {
        files.push(LocalFile { local: dir.join(filename), rel: filename.to_owned(), kind: FileKind::Aof });
        return Ok(());
    };
    let dirname = safe(node, dirname)?;
    let manifest_name = format!("{filename}.manifest");
    let manifest_path = dir.join(dirname).join(&manifest_name);
    let text = std::fs::read_to_string(&manifest_path).map_err(|source| BackupError::Io {
        path: manifest_path.clone(),
        source,
        hint: LOCAL_HINT,
    })?;
    let parts = aof_manifest_parts(&text).map_err(|why| BackupError::Node {
        node: node.to_owned(),
        why: format!("{}: {why}", manifest_path.display()),
    })?;
    files.push(LocalFile {
        local: manifest_path,
        rel: format!("{dirname}/{manifest_name}"),
        kind: FileKind::AofManifest,
    });
    for part in parts {
        let part = safe(node, &part)?;
        files.push(LocalFile {
            local: dir.join(dirname).join(part),
            rel: format!("{dirname}/{part}"),
            kind: FileKind::Aof,
        });
    }
    Ok(())
}

/// Base and incremental file names from a Redis 7 AOF manifest
/// (`file appendonly.aof.1.base.rdb seq 1 type b`).
fn aof_manifest_parts(text: &str) -> Result<Vec<String>, String> {
    let mut parts = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let value = |key: &str| words.chunks(2).find(|kv| kv.len() == 2 && kv[0] == key).map(|kv| kv[1]);
        let (Some(file), Some(kind)) = (value("file"), value("type")) else {
            return Err(format!("unexpected line {line:?}"));
        };
        if file.starts_with('"') {
            return Err(format!("quoted file names are not supported: {line:?}"));
        }
        if kind == "b" || kind == "i" {
            parts.push(file.to_owned());
        }
    }
    if parts.is_empty() { Err("names no base or incremental file".to_owned()) } else { Ok(parts) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aof_manifest_names_base_and_incremental_parts_not_history() {
        let text = "file appendonly.aof.2.base.rdb seq 2 type b\n\
                    file appendonly.aof.1.incr.aof seq 1 type h\n\
                    file appendonly.aof.2.incr.aof seq 2 type i\n";
        assert_eq!(aof_manifest_parts(text).unwrap(), ["appendonly.aof.2.base.rdb", "appendonly.aof.2.incr.aof"]);
        assert!(aof_manifest_parts("garbage\n").is_err());
        assert!(aof_manifest_parts("file \"a b\" seq 1 type b\n").is_err());
        assert!(aof_manifest_parts("").is_err());
    }

    #[test]
    fn nodes_conf_of_another_node_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nodes.conf");
        let me = "e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca";
        let other = "67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1";
        std::fs::write(&path, format!("{other} 127.0.0.1:1@2 myself,master - 0 0 1 connected 0-16383\n{me} 127.0.0.1:3@4 master - 0 0 2 connected\nvars currentEpoch 2\n")).unwrap();
        let err = check_nodes_conf("n", me, &path).unwrap_err().to_string();
        assert!(err.contains("is not this node's") && err.contains("local filesystem"), "{err}");
        check_nodes_conf("n", other, &path).unwrap();
        let err = check_nodes_conf("n", me, &dir.path().join("missing.conf")).unwrap_err().to_string();
        assert!(err.contains("missing.conf") && err.contains("local filesystem"), "{err}");
    }
}
