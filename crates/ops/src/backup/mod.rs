//! `backup`, `backup list`, `backup verify` and `restore`: snapshots of every master of a Redis
//! Cluster in object storage, and their restore into a fresh cluster of the same shape.
//!
//! # Layout
//! [`run`] → `take::take` (masters from [`topology`], a snapshot per master in [`snapshot`], files
//! up through [`store`], the [`manifest`] last, `--keep` pruning in [`catalog`]); `backup list` and
//! `backup verify` are [`catalog`]; [`run_restore`] → [`restore`], which loads each master's files
//! into a temporary `redis-server` ([`loader`]) and copies its keys with DUMP/RESTORE.
//!
//! # Storage layout
//! `<prefix>/<id>/<node-id>/<file>` for every file, then `<prefix>/<id>/manifest.json`. The id is
//! the UTC start time `YYYYMMDDTHHMMSSZ`, so ids sort by age. A directory without `manifest.json`
//! is an incomplete backup: listed as such, never restored, pruned once older than kept backups.
//!
//! # Where the snapshots come from
//! By default over the network, as a replica gets them ([`replication`]): each master streams an
//! RDB that goes straight to the store, so one ops host backs up masters on any host. With
//! `--from-disk` the tool instead has each master BGSAVE (or rewrite its AOF) and reads the files
//! from its `dir` on the local filesystem ([`snapshot`]): for nodes on this host, or with their
//! data directories mounted at the same paths; the node's `nodes.conf` there must name the node
//! as `myself`, so a same-named directory of another node is never copied by mistake.

mod catalog;
mod loader;
mod manifest;
mod node;
mod replication;
mod reshape;
mod restore;
mod snapshot;
mod store;
mod take;
mod topology;

use std::path::PathBuf;
use std::time::Duration;

pub use crate::cluster::node::ConnArgs;

/// `redisforge-ops backup …`: take a backup (flags), or `list` / `verify` (subcommands).
#[derive(Debug, Clone, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct BackupCommand {
    /// `list` or `verify`; without one, a backup is taken.
    #[command(subcommand)]
    pub action: Option<BackupAction>,
    /// Flags of taking a backup.
    #[command(flatten)]
    pub take: TakeArgs,
}

/// `backup list` and `backup verify`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum BackupAction {
    /// Table of the backups under URL: id, masters, files, total size, complete or not.
    List {
        /// file:///dir, s3://bucket/prefix, gs://bucket/prefix or az://container/prefix.
        url: String,
    },
    /// Re-download every file of URL/ID and compare its size and sha256 with the manifest;
    /// exit 1 naming the bad files.
    Verify {
        /// The backup, e.g. s3://bucket/prefix/20250131T120000Z.
        backup: String,
    },
}

/// `backup --from SEED --to URL [--keep N] [--aof] [--user U --pass-env VAR]`.
#[derive(Debug, Clone, clap::Args)]
pub struct TakeArgs {
    /// Any node of the cluster (host:port); the masters are found from its CLUSTER NODES.
    #[arg(long, value_name = "SEED", required = true)]
    pub from: Option<String>,
    /// Where to store the backup: file:///dir, s3://bucket/prefix, gs://bucket/prefix,
    /// az://container/prefix. Credentials come from the environment, as for the clouds' own CLIs.
    #[arg(long, value_name = "URL", required = true)]
    pub to: Option<String>,
    /// After a successful backup, delete the oldest backups so that N complete ones remain.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep: Option<u32>,
    /// Read each master's files from its `dir` on this host instead of streaming a snapshot over
    /// the network: for nodes on this host or with their data directories mounted here.
    #[arg(long)]
    pub from_disk: bool,
    /// With --from-disk: rewrite and copy the append-only file instead of an RDB snapshot (the
    /// default there on masters with appendonly yes; needs appendonly yes).
    #[arg(long, requires = "from_disk")]
    pub aof: bool,
    /// Masters backed up at once.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub parallel: u32,
    /// Redis ACL login and TLS, as for the cluster verbs.
    #[command(flatten)]
    pub auth: ConnArgs,
    /// Longest wait for one master's BGSAVE or AOF rewrite ("90s", "30m", "2h").
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// `restore URL/ID --to NODE...`.
#[derive(Debug, Clone, clap::Args)]
pub struct RestoreArgs {
    /// The backup, e.g. file:///backups/20250131T120000Z.
    pub backup: String,
    /// Empty redis-servers with cluster-enabled yes, not in a cluster yet: one per backed-up master
    /// (in manifest order); any more become replicas, round-robin.
    #[arg(long, value_name = "NODE", num_args = 1.., required_unless_present = "into", conflicts_with = "into")]
    pub to: Vec<String>,
    /// A running cluster of any number of masters (one of its nodes): each key goes to the master
    /// owning its slot there. The cluster must be empty unless `--replace`.
    #[arg(long, value_name = "SEED")]
    pub into: Option<String>,
    /// With `--into`: overwrite keys of the same names instead of refusing a non-empty cluster.
    #[arg(long, requires = "into")]
    pub replace: bool,
    /// Redis ACL login for the target nodes.
    #[command(flatten)]
    pub auth: ConnArgs,
    /// redis-server binary for the temporary loaders (default: $REDIS_SERVER, else redis-server on
    /// PATH); it must read the backup's RDB/AOF version.
    #[arg(long, value_name = "PATH")]
    pub redis_server: Option<PathBuf>,
    /// Directory for the downloaded files (needs room for the whole backup); default: system temp.
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Keys per pipelined DUMP / RESTORE round trip.
    #[arg(long, value_name = "N", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch: u32,
    /// Longest wait for a temporary server to load one master's files.
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// Why a backup, list, verify or restore failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    // --- The user's request. ---
    /// A storage URL that cannot be used; the message never repeats credentials.
    #[error("bad storage URL: {0}")]
    BadUrl(String),
    /// `--pass-env` names a variable that is not set.
    #[error("environment variable {0} (from --pass-env) is not set")]
    PassEnvUnset(String),
    /// There is no complete backup with this id (no manifest).
    #[error("no complete backup {id} at {location} (no {})", manifest::MANIFEST)]
    NotFound {
        /// The backup id.
        id: String,
        /// Where it was looked for.
        location: String,
    },
    /// The restore targets are not a set of fresh, empty cluster nodes of the right number.
    #[error("restore targets refused, nothing was changed: {0}")]
    BadTargets(String),

    // --- The cluster. ---
    /// A Redis command failed.
    #[error("{node}: {what}: {source}")]
    Redis {
        /// `host:port` (or the temporary loader).
        node: String,
        /// The command or step.
        what: String,
        /// What the client or server said.
        source: redis::RedisError,
    },
    /// The cluster or a node is in a state this step cannot work with.
    #[error("{node}: {why}")]
    Node {
        /// `host:port`, or the seed for cluster-wide problems.
        node: String,
        /// What is wrong.
        why: String,
    },

    // --- Storage and integrity. ---
    /// Object storage refused or failed an operation.
    #[error("storage: {what}: {source}")]
    Store {
        /// Operation and object.
        what: String,
        /// What object_store said.
        source: object_store::Error,
    },
    /// A manifest that cannot be used.
    #[error("manifest of backup {id}: {why}")]
    BadManifest {
        /// The backup id.
        id: String,
        /// What is wrong with it.
        why: String,
    },
    /// Stored files whose size or sha256 differ from the manifest, or that are missing.
    #[error("backup {id}: {} of {total} files failed verification: {}", bad.len(), bad.join("; "))]
    Verify {
        /// The backup id.
        id: String,
        /// Files checked.
        total: usize,
        /// `path: reason` for each bad file.
        bad: Vec<String>,
    },
    /// After a restore, a master holds a different number of keys than the backup.
    #[error("{node}: restored {found} keys, the backup of {node_id} has {expected}{detail}")]
    KeyCount {
        /// Target node.
        node: String,
        /// Backed-up master.
        node_id: String,
        /// Keys in the temporary loader.
        expected: u64,
        /// Keys on the target.
        found: u64,
        /// Examples of missing keys, when found.
        detail: String,
    },

    // --- The machine. ---
    /// A local file or directory could not be read or written.
    #[error("{}: {source}{hint}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
        /// Extra advice, e.g. that node files are read locally.
        hint: &'static str,
    },
    /// The temporary redis-server of a restore failed.
    #[error("temporary redis-server: {0}")]
    Loader(String),
    /// The async runtime for storage I/O could not start.
    #[error("cannot start the I/O runtime: {0}")]
    Runtime(std::io::Error),
}

impl BackupError {
    fn io(path: impl Into<PathBuf>, source: std::io::Error) -> BackupError {
        BackupError::Io { path: path.into(), source, hint: "" }
    }
}

/// Runs `backup` (take, `list` or `verify`) and prints its report.
///
/// # Errors
/// See [`BackupError`]; `verify` fails with [`BackupError::Verify`] when any file is bad.
pub fn run(cmd: &BackupCommand) -> Result<(), BackupError> {
    match &cmd.action {
        Some(BackupAction::List { url }) => catalog::list(url),
        Some(BackupAction::Verify { backup }) => catalog::verify(backup),
        None => take::take(&cmd.take),
    }
}

/// Runs `restore URL/ID --to NODE...` and prints its report.
///
/// # Errors
/// See [`BackupError`]; nothing on the targets is changed when the backup fails verification or
/// the targets are refused.
pub fn run_restore(args: &RestoreArgs) -> Result<(), BackupError> {
    restore::restore(args)
}

/// `(id, complete)` of every backup at `url`, through the same code as `backup list`.
pub fn backups_at(url: &str) -> Result<Vec<(String, bool)>, BackupError> {
    let loc = store::open(url, false)?;
    Ok(catalog::scan(&loc)?.into_iter().map(|b| (b.id, b.problem.is_none())).collect())
}

/// One stored object at `url`, by path relative to it.
pub fn read_object(url: &str, rel: &str) -> Result<Vec<u8>, BackupError> {
    let loc = store::open(url, false)?;
    loc.get_bytes(rel)?.ok_or_else(|| BackupError::NotFound { id: rel.to_owned(), location: loc.shown().to_owned() })
}

/// Overwrites one stored object at `url` (to corrupt a backup behind the tool's back).
pub fn write_object(url: &str, rel: &str, bytes: &[u8]) -> Result<(), BackupError> {
    store::open(url, false)?.put_bytes(rel, bytes.to_vec())
}

/// Runs `f` with extra `AWS_*` variables for storage opened on this thread.
pub fn with_storage_env<T>(vars: &[(&str, &str)], f: impl FnOnce() -> T) -> T {
    store::with_env(vars, f)
}

/// Parses "250ms", "10s", "5m", "2h" or a plain number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a duration like 90s, 30m or 2h"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    if d.is_zero() { Err("a duration must be positive".to_owned()) } else { Ok(d) }
}

/// `1.5 MiB`-style size for reports.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// The two variants exactly as `main.rs` declares them.
    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    #[derive(clap::Subcommand, Debug)]
    enum Command {
        Backup(BackupCommand),
        Restore(RestoreArgs),
    }

    fn parse(args: &str) -> Result<Command, clap::Error> {
        Cli::try_parse_from(std::iter::once("redisforge-ops").chain(args.split_whitespace())).map(|c| c.command)
    }

    #[test]
    fn backup_flags_list_verify_and_restore_parse() {
        let Command::Backup(b) =
            parse("backup --from 127.0.0.1:7000 --to file:///b --keep 3 --from-disk --aof").unwrap()
        else {
            panic!("not backup")
        };
        assert!(b.action.is_none());
        assert_eq!(b.take.from.as_deref(), Some("127.0.0.1:7000"));
        assert_eq!((b.take.keep, b.take.aof, b.take.timeout), (Some(3), true, Duration::from_secs(1800)));
        assert_eq!((b.take.from_disk, b.take.parallel), (true, 4));
        // AOF files exist only on the node's disk.
        assert!(parse("backup --from h:1 --to file:///b --aof").is_err());
        assert!(parse("backup --from h:1 --to file:///b --parallel 0").is_err());

        let Command::Backup(b) = parse("backup list s3://bkt/p").unwrap() else { panic!("not backup") };
        assert!(matches!(b.action, Some(BackupAction::List { url }) if url == "s3://bkt/p"));
        let Command::Backup(b) = parse("backup verify file:///b/20250131T120000Z").unwrap() else { panic!() };
        assert!(matches!(b.action, Some(BackupAction::Verify { .. })));

        let Command::Restore(r) = parse("restore file:///b/20250131T120000Z --to h:1 h:2 h:3 --batch 10").unwrap()
        else {
            panic!("not restore")
        };
        assert_eq!(r.to, ["h:1", "h:2", "h:3"]);
        assert_eq!(r.batch, 10);
    }

    #[test]
    fn usage_errors_are_caught_by_clap() {
        for bad in [
            "backup",
            "backup --from h:1",
            "backup --to file:///b",
            "backup --from h:1 --to file:///b --keep 0",
            // TLS files without --tls.
            "backup --from h:1 --to file:///b --ca ca.crt",
            "backup --from h:1 list file:///b",
            "restore file:///b/20250131T120000Z",
            "backup --from h:1 --to file:///b --timeout 5x",
        ] {
            assert!(parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn durations_and_sizes_read_and_print_like_the_config_file() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("0s").is_err() && parse_duration("s").is_err() && parse_duration("1d").is_err());
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }
}
