//! A temporary standalone `redis-server` that loads one master's backed-up RDB or AOF, and the key
//! copy out of it: `SCAN` + `PTTL` + `DUMP` there, `RESTORE … REPLACE` on the target master, one
//! pipelined round trip per batch on each side.
//!
//! The loader listens only on a unix socket inside the restore's private work directory (mode
//! 0700), so it needs no TCP port and no other process can reach it. It is killed on drop.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::Value;

use super::BackupError;
use super::manifest::{MasterEntry, Persistence};
use super::node::Node;
use crate::progress::{Progress, Unit};

/// Pause between readiness probes while the loader starts and loads.
const POLL: Duration = Duration::from_millis(50);
/// Longest unix socket path the OS takes (sun_path is 108 bytes on Linux, 104 on BSDs).
const MAX_SOCKET_PATH: usize = 100;
/// Missing keys named in a key-count error.
const EXAMPLES: usize = 5;

/// A running loader.
pub struct Loader {
    child: Child,
    node: Node,
}

impl Drop for Loader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Loader {
    /// Starts `bin` on the files of `master` in `dir` and waits until the data is loaded.
    ///
    /// # Errors
    /// [`BackupError::Loader`] when the server cannot start, exits (a damaged or too new file; the
    /// message carries its log) or does not finish loading within `timeout`.
    pub fn start(bin: &Path, dir: &Path, master: &MasterEntry, timeout: Duration) -> Result<Loader, BackupError> {
        let socket = dir.join("loader.sock");
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(BackupError::Loader(format!(
                "socket path {} is too long for a unix socket; pass a shorter --work-dir",
                socket.display()
            )));
        }
        let log = dir.join("loader.log");
        let mut cmd = Command::new(bin);
        cmd.arg("--port").arg("0").arg("--unixsocket").arg(&socket).arg("--unixsocketperm").arg("700");
        cmd.arg("--dir").arg(dir).arg("--dbfilename").arg(&master.dbfilename).arg("--logfile").arg(&log);
        // No snapshots of its own, no cluster, no daemon: it only serves the copy.
        cmd.args(["--save", "", "--daemonize", "no", "--cluster-enabled", "no"]);
        match (&master.persistence, &master.aof) {
            (Persistence::Aof, Some(aof)) => {
                cmd.args(["--appendonly", "yes", "--appendfilename", &aof.filename]);
                if let Some(dirname) = &aof.dirname {
                    cmd.args(["--appenddirname", dirname]);
                }
            }
            _ => {
                cmd.args(["--appendonly", "no"]);
            }
        }
        let child = cmd
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| BackupError::Loader(format!("cannot run {}: {e} (see --redis-server)", bin.display())))?;
        let mut child = Some(child);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(c) = child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                return Err(BackupError::Loader(format!("exited ({status}) while loading:\n{}", tail(&log))));
            }
            if socket.exists()
                && let Ok(mut node) = Node::connect_unix(&socket, "temporary loader")
            {
                // PING answers -LOADING until the whole file is in memory.
                if node.try_query::<String>(&["PING"]).is_ok() {
                    let child = child.take().expect("the child is only taken here, once");
                    return Ok(Loader { child, node });
                }
            }
            if Instant::now() >= deadline {
                if let Some(mut c) = child.take() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                return Err(BackupError::Loader(format!("not loaded within --timeout:\n{}", tail(&log))));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Number of keys loaded (live ones: expired keys are dropped at load time).
    ///
    /// # Errors
    /// [`BackupError::Redis`].
    pub fn dbsize(&mut self) -> Result<u64, BackupError> {
        self.node.query(&["DBSIZE"])
    }

    /// Copies every key with its remaining TTL to `target`; returns the number of keys sent.
    ///
    /// # Errors
    /// [`BackupError::Redis`] when a DUMP or a RESTORE fails (for example a target older than the
    /// loader, which cannot read its DUMP format, or a key whose slot the target does not own).
    pub fn copy_to(&mut self, target: &mut Node, batch: u32) -> Result<u64, BackupError> {
        let total = self.dbsize()?;
        let mut progress = Progress::new(&format!("restore into {}", target.name()), total, Unit::Keys);
        let sent = self.copy_keys(target, batch, &mut progress)?;
        progress.finish();
        Ok(sent)
    }

    fn copy_keys(&mut self, target: &mut Node, batch: u32, progress: &mut Progress) -> Result<u64, BackupError> {
        let mut sent = 0u64;
        let mut cursor = 0u64;
        loop {
            let (next, keys) = self.scan(cursor, batch)?;
            let mut write = redis::pipe();
            for (key, ttl, payload) in self.dump(&keys)? {
                // -1: no expiry (RESTORE's 0); 0 or -2: expiring right now, so not restored.
                let ttl = match ttl {
                    -1 => 0,
                    t if t > 0 => t,
                    _ => continue,
                };
                write.cmd("RESTORE").arg(key).arg(ttl).arg(payload).arg("REPLACE").ignore();
                sent += 1;
            }
            if !keys.is_empty() {
                write.query::<()>(target.con()).map_err(|e| target.error(&["RESTORE"], e))?;
                progress.add(keys.len() as u64, "");
            }
            if next == 0 {
                return Ok(sent);
            }
            cursor = next;
        }
    }

    /// `(key, PTTL, DUMP payload)` of `keys`, in one pipelined round trip; keys gone since they
    /// were scanned are left out.
    ///
    /// # Errors
    /// [`BackupError::Redis`].
    pub fn dump(&mut self, keys: &[Vec<u8>]) -> Result<Vec<super::reshape::Dumped>, BackupError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut read = redis::pipe();
        for key in keys {
            read.cmd("PTTL").arg(key).cmd("DUMP").arg(key);
        }
        let replies: Vec<Value> = read.query(self.node.con()).map_err(|e| self.node.error(&["PTTL+DUMP"], e))?;
        Ok(super::reshape::dumped(keys, &replies))
    }

    /// Copies the Redis functions the snapshot holds (an RDB or AOF carries the node's function
    /// libraries) to `target` with `FUNCTION DUMP` / `FUNCTION RESTORE … REPLACE`; returns how many
    /// libraries were copied (0 when there are none, or the loader predates functions).
    ///
    /// # Errors
    /// [`BackupError::Redis`] when the target refuses the payload.
    pub fn copy_functions_to(&mut self, target: &mut Node) -> Result<usize, BackupError> {
        let Ok(libraries) = self.node.try_query::<Vec<Value>>(&["FUNCTION", "LIST"]) else {
            return Ok(0); // Redis before 7.0: no functions to copy
        };
        if libraries.is_empty() {
            return Ok(0);
        }
        let payload: Vec<u8> = self.node.query(&["FUNCTION", "DUMP"])?;
        redis::cmd("FUNCTION")
            .arg("RESTORE")
            .arg(payload)
            .arg("REPLACE")
            .query::<()>(target.con())
            .map_err(|e| target.error(&["FUNCTION", "RESTORE"], e))?;
        Ok(libraries.len())
    }

    /// Checks that `target` holds every key the loader still has; when the counts differ, finds
    /// the missing keys (keys that expired in between are not missing).
    ///
    /// # Errors
    /// [`BackupError::KeyCount`] naming a few missing keys.
    pub fn check_count(&mut self, target: &mut Node, node_id: &str, batch: u32) -> Result<u64, BackupError> {
        let expected = self.dbsize()?;
        let found: u64 = target.query(&["DBSIZE"])?;
        if found == expected {
            return Ok(found);
        }
        let mut missing = Vec::new();
        let mut missing_count = 0u64;
        let mut cursor = 0u64;
        loop {
            let (next, keys) = self.scan(cursor, batch)?;
            let mut exists = redis::pipe();
            keys.iter().for_each(|k| {
                exists.cmd("EXISTS").arg(k);
            });
            let present: Vec<i64> = exists.query(target.con()).map_err(|e| target.error(&["EXISTS"], e))?;
            let mut ttls = redis::pipe();
            keys.iter().for_each(|k| {
                ttls.cmd("PTTL").arg(k);
            });
            let ttls: Vec<i64> = ttls.query(self.node.con()).map_err(|e| self.node.error(&["PTTL"], e))?;
            for ((key, here), ttl) in keys.iter().zip(present).zip(ttls) {
                // A key about to expire may be gone on the target already.
                if here == 0 && (ttl == -1 || ttl > 1000) {
                    missing_count += 1;
                    if missing.len() < EXAMPLES {
                        missing.push(String::from_utf8_lossy(key).into_owned());
                    }
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        if missing_count == 0 {
            return Ok(found);
        }
        Err(BackupError::KeyCount {
            node: target.name().to_owned(),
            node_id: node_id.to_owned(),
            expected,
            found,
            detail: format!("; {missing_count} keys missing, e.g. {}", missing.join(", ")),
        })
    }

    /// One `SCAN` step: the next cursor (0: done) and up to about `batch` keys.
    ///
    /// # Errors
    /// [`BackupError::Redis`].
    pub fn scan(&mut self, cursor: u64, batch: u32) -> Result<(u64, Vec<Vec<u8>>), BackupError> {
        redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(batch)
            .query(self.node.con())
            .map_err(|e| self.node.error(&["SCAN"], e))
    }
}

/// The `major.minor` version of a `redis-server` binary (`redis-server --version`).
///
/// # Errors
/// [`BackupError::Loader`] when the binary does not run or prints no version.
pub fn version(bin: &Path) -> Result<(u32, u32), BackupError> {
    let out = Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| BackupError::Loader(format!("cannot run {}: {e} (see --redis-server)", bin.display())))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("v="))
        .and_then(major_minor)
        .ok_or_else(|| BackupError::Loader(format!("{} --version printed no version: {text}", bin.display())))
}

/// `(7, 2)` from `7.2.4`.
pub fn major_minor(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.trim().split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Last lines of the loader's log, for error messages.
fn tail(log: &Path) -> String {
    match std::fs::read_to_string(log) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(15)..].join("\n")
        }
        Err(e) => format!("(no log at {}: {e})", log.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_by_major_and_minor() {
        assert_eq!(major_minor("7.0.15"), Some((7, 0)));
        assert_eq!(major_minor("6.2"), Some((6, 2)));
        assert_eq!(major_minor("x"), None);
        assert!(major_minor("7.2.4") > major_minor("7.0.15"));
    }

    #[test]
    fn the_installed_redis_server_reports_its_version() {
        let bin = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned());
        assert!(version(Path::new(&bin)).is_ok_and(|(major, _)| major >= 5));
        let err = version(Path::new("/nonexistent/redis-server")).unwrap_err().to_string();
        assert!(err.contains("--redis-server"), "{err}");
    }
}
