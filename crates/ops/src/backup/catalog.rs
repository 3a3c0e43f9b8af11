//! The backups at a location: `backup list`, `backup verify`, `--keep` pruning, and the file check
//! (and download) that restore runs before it touches any node.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::manifest::{FileEntry, MANIFEST, Manifest, is_backup_id};
use super::store::{self, Location};
use super::{BackupError, human_size};

/// One backup directory as found in storage.
#[derive(Debug)]
pub struct BackupInfo {
    /// Its id (directory name).
    pub id: String,
    /// Its manifest, when present and readable.
    pub manifest: Option<Manifest>,
    /// Every object under it, relative to the location.
    pub objects: Vec<String>,
    /// Sum of their sizes.
    pub size: u64,
    /// Why it is not complete; `None` for a complete backup.
    pub problem: Option<String>,
}

/// Reads every backup at `loc`, oldest first; objects outside `<id>/` directories are ignored.
///
/// # Errors
/// [`BackupError::Store`] when listing or reading a manifest fails.
pub fn scan(loc: &Location) -> Result<Vec<BackupInfo>, BackupError> {
    let mut by_id: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
    for (rel, size) in loc.list("")? {
        if let Some((id, _)) = rel.split_once('/')
            && is_backup_id(id)
        {
            by_id.entry(id.to_owned()).or_default().push((rel, size));
        }
    }
    let mut infos = Vec::new();
    for (id, objects) in by_id {
        let manifest_rel = format!("{id}/{MANIFEST}");
        let sizes: BTreeMap<&str, u64> = objects.iter().map(|(p, s)| (p.as_str(), *s)).collect();
        let (manifest, problem) = if sizes.contains_key(manifest_rel.as_str()) {
            match loc.get_bytes(&manifest_rel)?.map(|b| Manifest::from_json(&b, &id)) {
                Some(Ok(m)) => {
                    let missing = m.files().filter(|f| sizes.get(format!("{id}/{}", f.path).as_str()) != Some(&f.size));
                    let problem = match missing.count() {
                        0 => None,
                        n => Some(format!("{n} files missing or of the wrong size")),
                    };
                    (Some(m), problem)
                }
                Some(Err(why)) => (None, Some(format!("bad manifest: {why}"))),
                None => (None, Some(format!("no {MANIFEST}"))),
            }
        } else {
            (None, Some(format!("no {MANIFEST}")))
        };
        let size = objects.iter().map(|(_, s)| s).sum();
        infos.push(BackupInfo { id, manifest, objects: objects.into_iter().map(|(p, _)| p).collect(), size, problem });
    }
    Ok(infos)
}

/// `backup list URL`: prints a table of the backups, oldest first.
///
/// # Errors
/// As [`scan`], and [`BackupError::BadUrl`] for the URL.
pub fn list(url: &str) -> Result<(), BackupError> {
    let loc = store::open(url, false)?;
    let infos = scan(&loc)?;
    if infos.is_empty() {
        println!("no backups at {}", loc.shown());
        return Ok(());
    }
    println!("{:<18} {:>7} {:>6} {:>11}  COMPLETE", "ID", "MASTERS", "FILES", "SIZE");
    for b in &infos {
        let masters = b.manifest.as_ref().map_or_else(|| "-".to_owned(), |m| m.masters.len().to_string());
        let complete = match &b.problem {
            None => "yes".to_owned(),
            Some(why) => format!("no ({why})"),
        };
        println!("{:<18} {masters:>7} {:>6} {:>11}  {complete}", b.id, b.objects.len(), human_size(b.size));
    }
    Ok(())
}

/// Reads and checks the manifest of backup `id`.
///
/// # Errors
/// [`BackupError::NotFound`] without a manifest, [`BackupError::BadManifest`] for an unusable one.
pub fn read_manifest(loc: &Location, id: &str) -> Result<Manifest, BackupError> {
    let bytes = loc
        .get_bytes(&format!("{id}/{MANIFEST}"))?
        .ok_or_else(|| BackupError::NotFound { id: id.to_owned(), location: loc.shown().to_owned() })?;
    Manifest::from_json(&bytes, id).map_err(|why| BackupError::BadManifest { id: id.to_owned(), why })
}

/// Where restore puts a file of master number `index`: `<root>/m<index>/<path without node id>`.
/// Short names keep the loaders' unix socket paths well under the OS limit.
pub fn local_path(root: &Path, index: usize, file: &FileEntry) -> PathBuf {
    let rest = file.path.split_once('/').map_or(file.path.as_str(), |(_, rest)| rest);
    rest.split('/').fold(root.join(format!("m{index}")), |p, part| p.join(part))
}

/// Re-reads every file of the backup and compares size and sha256 with the manifest, downloading
/// them under `download` (see [`local_path`]) when given. Returns `path: reason` per bad file.
///
/// # Errors
/// [`BackupError::Store`] / [`BackupError::Io`] when reading or writing fails outright.
pub fn check_files(loc: &Location, manifest: &Manifest, download: Option<&Path>) -> Result<Vec<String>, BackupError> {
    let mut bad = Vec::new();
    for (index, master) in manifest.masters.iter().enumerate() {
        for file in &master.files {
            let dest = download.map(|root| local_path(root, index, file));
            if let Some(parent) = dest.as_deref().and_then(Path::parent) {
                std::fs::create_dir_all(parent).map_err(|e| BackupError::io(parent, e))?;
            }
            let rel = format!("{}/{}", manifest.id, file.path);
            match loc.fetch(&rel, dest.as_deref())? {
                None => bad.push(format!("{}: missing", file.path)),
                Some(d) if d.size != file.size => {
                    bad.push(format!("{}: {} bytes, manifest says {}", file.path, d.size, file.size));
                }
                Some(d) if d.sha256 != file.sha256 => {
                    bad.push(format!("{}: sha256 differs from the manifest", file.path))
                }
                Some(_) => {}
            }
        }
    }
    Ok(bad)
}

/// `backup verify URL/ID`.
///
/// # Errors
/// [`BackupError::Verify`] naming every bad file; the errors of [`read_manifest`] and [`check_files`].
pub fn verify(url_id: &str) -> Result<(), BackupError> {
    let (url, id) = store::split_backup(url_id)?;
    let loc = store::open(&url, false)?;
    let manifest = read_manifest(&loc, &id)?;
    let total = manifest.files().count();
    let bad = check_files(&loc, &manifest, None)?;
    if !bad.is_empty() {
        return Err(BackupError::Verify { id, total, bad });
    }
    println!(
        "backup {id} at {}: {total} files of {} masters, {} — sizes and sha256 match the manifest",
        loc.shown(),
        manifest.masters.len(),
        human_size(manifest.total_size())
    );
    Ok(())
}

/// Which backups `--keep N` deletes: all but the newest `keep` complete ones, plus incomplete ones
/// older than the oldest kept (leftovers of failed runs; a newer one may be a backup in progress).
pub fn to_prune(infos: &[BackupInfo], keep: usize) -> Vec<&BackupInfo> {
    let complete: Vec<&BackupInfo> = infos.iter().filter(|b| b.problem.is_none()).collect();
    // Fewer complete backups than asked for: keep everything, damaged ones may still be of use.
    if complete.len() < keep || keep == 0 {
        return Vec::new();
    }
    let oldest_kept = &complete[complete.len() - keep].id;
    infos.iter().filter(|b| &b.id < oldest_kept).collect()
}

/// Deletes what [`to_prune`] selects, manifest first so that a half-deleted backup reads as
/// incomplete rather than corrupt.
///
/// # Errors
/// [`BackupError::Store`].
pub fn prune(loc: &Location, keep: usize) -> Result<(), BackupError> {
    let infos = scan(loc)?;
    for b in to_prune(&infos, keep) {
        let manifest_rel = format!("{}/{MANIFEST}", b.id);
        loc.delete(&manifest_rel)?;
        for rel in b.objects.iter().filter(|r| **r != manifest_rel) {
            loc.delete(rel)?;
        }
        println!("--keep {keep}: deleted backup {} ({})", b.id, human_size(b.size));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str, complete: bool) -> BackupInfo {
        BackupInfo {
            id: id.to_owned(),
            manifest: None,
            objects: vec![],
            size: 0,
            problem: (!complete).then(|| "no manifest.json".to_owned()),
        }
    }

    fn ids(v: Vec<&BackupInfo>) -> Vec<&str> {
        v.into_iter().map(|b| b.id.as_str()).collect()
    }

    #[test]
    fn keep_deletes_the_oldest_complete_and_older_leftovers_only() {
        let infos = [
            info("20250101T000000Z", true),
            info("20250102T000000Z", false),
            info("20250103T000000Z", true),
            info("20250104T000000Z", true),
            info("20250105T000000Z", false),
        ];
        assert_eq!(ids(to_prune(&infos, 1)), ["20250101T000000Z", "20250102T000000Z", "20250103T000000Z"]);
        assert_eq!(ids(to_prune(&infos, 2)), ["20250101T000000Z", "20250102T000000Z"]);
        assert!(to_prune(&infos, 3).is_empty());
        assert!(to_prune(&infos, 10).is_empty());
        let damaged_then_good = [info("20250101T000000Z", false), info("20250102T000000Z", true)];
        assert_eq!(ids(to_prune(&damaged_then_good, 1)), ["20250101T000000Z"]);
        assert!(to_prune(&damaged_then_good, 2).is_empty());
    }

    #[test]
    fn restore_paths_drop_the_node_id_and_keep_the_aof_dir() {
        let file = |path: &str| FileEntry {
            path: path.to_owned(),
            kind: super::super::manifest::FileKind::Aof,
            size: 0,
            sha256: String::new(),
        };
        let root = Path::new("/w");
        assert_eq!(local_path(root, 2, &file("abc/dump.rdb")), Path::new("/w/m2/dump.rdb"));
        assert_eq!(
            local_path(root, 0, &file("abc/appendonlydir/a.1.base.rdb")),
            Path::new("/w/m0/appendonlydir/a.1.base.rdb")
        );
    }
}
