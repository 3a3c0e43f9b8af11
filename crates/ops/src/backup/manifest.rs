//! `manifest.json`: what one backup holds, written last so that its presence marks the backup
//! complete.
//!
//! Pure data: serde types, the backup id format and the checks a manifest read back from storage
//! must pass before any of its paths is used on the local filesystem (restore downloads there).

use serde::{Deserialize, Serialize};

/// Version of the manifest layout this tool writes; manifests with a higher one are refused.
pub const FORMAT: u32 = 1;
/// Name of the manifest object inside a backup's directory.
pub const MANIFEST: &str = "manifest.json";
/// Number of hash slots of a Redis Cluster.
pub const SLOTS: u32 = 16384;

/// One backup: every master with its slots and files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`] at the time of writing.
    pub format: u32,
    /// Backup id, `YYYYMMDDTHHMMSSZ` (UTC start time); also the backup's directory name.
    pub id: String,
    /// When the backup started, RFC 3339 UTC (`2025-01-31T12:00:00Z`).
    pub created: String,
    /// The tool and version that wrote it, e.g. `redisforge-ops 0.1.0`.
    pub tool: String,
    /// `redis_version` of the first master (each master records its own too).
    pub redis_version: String,
    /// One entry per master that owned slots, in slot order.
    pub masters: Vec<MasterEntry>,
}

/// One master of the backed-up cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterEntry {
    /// Cluster node id (40 hex characters); also the directory of its files.
    pub node_id: String,
    /// `host:port` it had at backup time.
    pub address: String,
    /// Slot ranges it owned.
    pub slots: Vec<SlotRange>,
    /// Node ids of its replicas at backup time (informational).
    pub replicas: Vec<String>,
    /// Its `redis_version`.
    pub redis_version: String,
    /// Whether `files` hold an RDB snapshot or an append-only file.
    pub persistence: Persistence,
    /// Its `dbfilename` (the RDB's name, relative to the node directory).
    pub dbfilename: String,
    /// Its AOF names, for [`Persistence::Aof`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aof: Option<AofLayout>,
    /// Every file copied from the node.
    pub files: Vec<FileEntry>,
    /// Its Redis functions as `FUNCTION DUMP` gave them (hex) when the backup started; the RDB or
    /// AOF carries them too, and restore loads them from there. `None` before Redis 7.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub functions: Option<String>,
}

/// What kind of snapshot a master's files are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Persistence {
    /// `BGSAVE`: one RDB file.
    Rdb,
    /// `BGREWRITEAOF`: the append-only file (Redis 7: its directory with the manifest).
    Aof,
}

/// Names the node used for its append-only file, needed to load it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AofLayout {
    /// `appendfilename`.
    pub filename: String,
    /// `appenddirname` (Redis 7 multi-part AOF); `None` for a single-file AOF (Redis < 7).
    pub dirname: Option<String>,
}

/// An inclusive range of hash slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SlotRange {
    /// First slot.
    pub start: u16,
    /// Last slot (inclusive).
    pub end: u16,
}

/// One stored file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path relative to the backup's directory: `<node-id>/<name>` or `<node-id>/<aof-dir>/<name>`.
    pub path: String,
    /// What the file is.
    pub kind: FileKind,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the content, lowercase hex.
    pub sha256: String,
}

/// The role of a stored file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileKind {
    /// The RDB snapshot.
    Rdb,
    /// A part of the append-only file (base or incremental, or the whole single-file AOF).
    Aof,
    /// Redis 7's AOF manifest naming the parts.
    AofManifest,
    /// The node's cluster config (`nodes.conf`), kept for manual restores.
    NodesConf,
}

impl Manifest {
    /// Sum of all file sizes.
    pub fn total_size(&self) -> u64 {
        self.masters.iter().flat_map(|m| &m.files).map(|f| f.size).sum()
    }

    /// Every file of every master.
    pub fn files(&self) -> impl Iterator<Item = &FileEntry> {
        self.masters.iter().flat_map(|m| &m.files)
    }

    /// Parses and checks a manifest read from storage.
    ///
    /// # Errors
    /// A message naming the problem: bad JSON, a newer format, an id that does not match the
    /// directory, or an unsafe file path.
    pub fn from_json(bytes: &[u8], expected_id: &str) -> Result<Manifest, String> {
        let manifest: Manifest = serde_json::from_slice(bytes).map_err(|e| format!("not a backup manifest: {e}"))?;
        manifest.validate(expected_id)?;
        Ok(manifest)
    }

    /// The manifest as pretty JSON.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain structs of strings and integers cannot fail.
        serde_json::to_vec_pretty(self).expect("a manifest always serializes")
    }

    /// Checks what later code relies on: paths stay inside the backup and the node's directory.
    fn validate(&self, expected_id: &str) -> Result<(), String> {
        if self.format > FORMAT {
            return Err(format!("manifest format {} is newer than this tool understands ({FORMAT})", self.format));
        }
        if self.id != expected_id {
            return Err(format!("manifest id {} does not match its directory {expected_id}", self.id));
        }
        if self.masters.is_empty() {
            return Err("manifest lists no master".to_owned());
        }
        for master in &self.masters {
            if !is_node_id(&master.node_id) {
                return Err(format!("bad node id {:?}", master.node_id));
            }
            if master.slots.iter().any(|r| r.start > r.end || u32::from(r.end) >= SLOTS) {
                return Err(format!("bad slot range for node {}", master.node_id));
            }
            let loadable = master.files.iter().any(|f| match master.persistence {
                Persistence::Rdb => f.kind == FileKind::Rdb,
                Persistence::Aof => f.kind == FileKind::Aof,
            });
            if !loadable {
                return Err(format!("node {} has no data file", master.node_id));
            }
            for file in &master.files {
                let mut parts = file.path.split('/');
                let owner = parts.next().unwrap_or_default();
                let rest: Vec<&str> = parts.collect();
                let safe = owner == master.node_id
                    && !rest.is_empty()
                    && rest.len() <= 2
                    && rest.iter().all(|p| is_safe_name(p));
                if !safe || !is_sha256(&file.sha256) {
                    return Err(format!("bad file entry {:?} for node {}", file.path, master.node_id));
                }
            }
        }
        Ok(())
    }
}

/// A file or directory name that cannot escape its parent.
pub fn is_safe_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

fn is_node_id(id: &str) -> bool {
    id.len() == 40 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_sha256(hex: &str) -> bool {
    hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether `s` has the backup id form `YYYYMMDDTHHMMSSZ`.
pub fn is_backup_id(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 16 && b[8] == b'T' && b[15] == b'Z' && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
}

/// The backup id (`YYYYMMDDTHHMMSSZ`) and RFC 3339 creation time for a UTC instant.
pub fn id_and_created(now: time::OffsetDateTime) -> (String, String) {
    let now = now.to_offset(time::UtcOffset::UTC);
    let (y, mo, d) = (now.year(), u8::from(now.month()), now.day());
    let (h, mi, s) = (now.hour(), now.minute(), now.second());
    (format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z"), format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "20250131T120000Z";
    const NODE: &str = "0123456789abcdef0123456789abcdef01234567";

    fn sample() -> Manifest {
        Manifest {
            format: FORMAT,
            id: ID.to_owned(),
            created: "2025-01-31T12:00:00Z".to_owned(),
            tool: "redisforge-ops 0.1.0".to_owned(),
            redis_version: "7.0.15".to_owned(),
            masters: vec![MasterEntry {
                node_id: NODE.to_owned(),
                address: "127.0.0.1:7000".to_owned(),
                slots: vec![SlotRange { start: 0, end: 5460 }, SlotRange { start: 5461, end: 5461 }],
                replicas: vec![],
                redis_version: "7.0.15".to_owned(),
                persistence: Persistence::Rdb,
                dbfilename: "dump.rdb".to_owned(),
                aof: None,
                files: vec![FileEntry {
                    path: format!("{NODE}/dump.rdb"),
                    kind: FileKind::Rdb,
                    size: 10,
                    sha256: "a".repeat(64),
                }],
                functions: Some("f5c3".to_owned()),
            }],
        }
    }

    #[test]
    fn manifest_round_trips_through_json() {
        let m = sample();
        let back = Manifest::from_json(&m.to_json(), ID).unwrap();
        assert_eq!(back, m);
        let text = String::from_utf8(m.to_json()).unwrap();
        assert!(text.contains("\"persistence\": \"rdb\""), "{text}");
        assert!(text.contains("\"kind\": \"rdb\""), "{text}");
        assert_eq!(m.total_size(), 10);
    }

    #[test]
    fn manifest_with_escaping_path_is_refused() {
        for bad in ["../etc/passwd", "other/dump.rdb", "NODE/../x", "NODE/a/b/c", "NODE/", "NODE"] {
            let mut m = sample();
            m.masters[0].files[0].path = bad.replace("NODE", NODE);
            let err = Manifest::from_json(&m.to_json(), ID).unwrap_err();
            assert!(err.contains("bad file entry"), "{bad}: {err}");
        }
    }

    #[test]
    fn manifest_of_another_id_newer_format_or_without_data_is_refused() {
        assert!(Manifest::from_json(&sample().to_json(), "20250131T120001Z").unwrap_err().contains("does not match"));
        let mut m = sample();
        m.format = FORMAT + 1;
        assert!(Manifest::from_json(&m.to_json(), ID).unwrap_err().contains("newer"));
        let mut m = sample();
        m.masters[0].files[0].kind = FileKind::NodesConf;
        assert!(Manifest::from_json(&m.to_json(), ID).unwrap_err().contains("no data file"));
        assert!(Manifest::from_json(b"{}", ID).unwrap_err().contains("not a backup manifest"));
    }

    #[test]
    fn backup_ids_are_utc_timestamps() {
        let t = time::OffsetDateTime::from_unix_timestamp(1_738_324_805).unwrap();
        let (id, created) = id_and_created(t);
        assert_eq!(id, "20250131T120005Z");
        assert_eq!(created, "2025-01-31T12:00:05Z");
        assert!(is_backup_id(&id));
        for bad in ["2025013T120005Z", "20250131 120005Z", "20250131T120005", "x0250131T120005Z", ""] {
            assert!(!is_backup_id(bad), "{bad}");
        }
    }
}
