//! Storage URLs → an [`ObjectStore`] and a prefix, behind a small synchronous API that streams
//! files and hashes them on the way (sha256 + size).
//!
//! `file:///dir` (or a plain path) is a local directory; `s3://bucket/prefix`, `gs://bucket/prefix`
//! and `az://container/prefix` take their credentials and endpoints from the environment through
//! object_store's `from_env()` builders, the variables of the clouds' own tools: `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`/`AWS_DEFAULT_REGION`,
//! `AWS_ENDPOINT_URL` (+ `AWS_ALLOW_HTTP=true` for a plain-http endpoint); `GOOGLE_APPLICATION_CREDENTIALS`
//! or `GOOGLE_SERVICE_ACCOUNT`; `AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`, ….
//! Credentials in the URL itself are refused, so no message can ever echo them.

use std::io::Read;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use super::BackupError;
use super::manifest::is_backup_id;

/// Files up to this size go up in one PUT; larger ones as a multipart upload of such chunks.
const CHUNK: usize = 8 << 20;
/// Parts of one multipart upload in flight at once.
const PARTS_IN_FLIGHT: usize = 4;

/// Size and SHA-256 of an object or file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    /// Bytes.
    pub size: u64,
    /// Lowercase hex SHA-256.
    pub sha256: String,
}

/// A storage location: a store, the prefix inside it, and a runtime to drive its I/O.
pub struct Location {
    rt: tokio::runtime::Runtime,
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    shown: String,
}

/// Opens the location a storage URL names; `create` makes a missing local directory.
///
/// # Errors
/// [`BackupError::BadUrl`] for unknown schemes, credentials in the URL or a missing local
/// directory; [`BackupError::Store`] when the cloud builder rejects its configuration.
pub fn open(url: &str, create: bool) -> Result<Location, BackupError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(BackupError::Runtime)?;
    if !url.contains("://") {
        return open_dir(rt, PathBuf::from(url), create);
    }
    let parsed = url::Url::parse(url).map_err(|e| BackupError::BadUrl(format!("cannot parse the URL: {e}")))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(BackupError::BadUrl(
            "credentials in the URL are not supported; set them in the environment".to_owned(),
        ));
    }
    if parsed.scheme() == "file" {
        let dir = parsed.to_file_path().map_err(|()| BackupError::BadUrl(format!("{url} is not a local path")))?;
        return open_dir(rt, dir, create);
    }
    let bucket = parsed.host_str().filter(|h| !h.is_empty()).map(str::to_owned);
    let bucket = bucket.ok_or_else(|| BackupError::BadUrl(format!("{url} names no bucket or container")))?;
    let built = match parsed.scheme() {
        "s3" | "s3a" => {
            install_tls_provider();
            let mut builder = AmazonS3Builder::from_env();
            for (key, value) in env_overrides("AWS_") {
                if let Ok(key) = key.to_ascii_lowercase().parse() {
                    builder = builder.with_config(key, value);
                }
            }
            builder.with_bucket_name(&bucket).build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
        }
        "gs" => {
            install_tls_provider();
            let builder = GoogleCloudStorageBuilder::from_env().with_bucket_name(&bucket);
            builder.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
        }
        "az" | "azure" => {
            install_tls_provider();
            let builder = MicrosoftAzureBuilder::from_env().with_container_name(&bucket);
            builder.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
        }
        other => {
            return Err(BackupError::BadUrl(format!(
                "unsupported scheme {other}:// (use file://, s3://, gs:// or az://)"
            )));
        }
    };
    let store = built
        .map_err(|source| BackupError::Store { what: format!("configure {}://{bucket}", parsed.scheme()), source })?;
    let path = parsed.path().trim_matches('/');
    let prefix = Path::from_url_path(path).map_err(|e| BackupError::BadUrl(format!("bad prefix {path:?}: {e}")))?;
    let shown = format!("{}://{bucket}/{path}", parsed.scheme());
    Ok(Location { rt, store, prefix, shown: shown.trim_end_matches('/').to_owned() })
}

fn open_dir(rt: tokio::runtime::Runtime, dir: PathBuf, create: bool) -> Result<Location, BackupError> {
    if create {
        std::fs::create_dir_all(&dir).map_err(|e| BackupError::io(&dir, e))?;
    }
    if !dir.is_dir() {
        return Err(BackupError::BadUrl(format!("{} is not a directory", dir.display())));
    }
    let store = LocalFileSystem::new_with_prefix(&dir)
        .map_err(|source| BackupError::Store { what: format!("open {}", dir.display()), source })?
        // Backups must survive a crash right after they are reported done; pruning removes the
        // backup's directories along with its last file.
        .with_fsync(true)
        .with_automatic_cleanup(true);
    Ok(Location { rt, store: Arc::new(store), prefix: Path::default(), shown: format!("file://{}", dir.display()) })
}

/// Splits `URL/ID` into the storage URL and the backup id.
///
/// # Errors
/// [`BackupError::BadUrl`] when the last path segment is not a backup id.
pub fn split_backup(url_id: &str) -> Result<(String, String), BackupError> {
    let trimmed = url_id.trim_end_matches('/');
    let (base, id) = trimmed.rsplit_once('/').unwrap_or((".", trimmed));
    if !is_backup_id(id) {
        return Err(BackupError::BadUrl(format!(
            "expected URL/ID ending in a backup id like 20250131T120000Z, got {:?}",
            if url_id.contains('@') { "<URL with credentials>" } else { url_id }
        )));
    }
    // `file:///id` and `s3://bucket/id` keep their root.
    let base = if base.ends_with(':') || base.ends_with("//") || base == "file:" {
        format!("{base}/")
    } else {
        base.to_owned()
    };
    Ok((base, id.to_owned()))
}

impl Location {
    /// The URL for messages (never with credentials).
    pub fn shown(&self) -> &str {
        &self.shown
    }

    fn path(&self, rel: &str) -> Path {
        rel.split('/').filter(|p| !p.is_empty()).fold(self.prefix.clone(), |p, part| p.join(part))
    }

    fn store_error(&self, op: &str, rel: &str) -> impl Fn(object_store::Error) -> BackupError + use<> {
        let what = format!("{op} {}/{rel}", self.shown);
        move |source| BackupError::Store { what: what.clone(), source }
    }

    /// Uploads a local file to `rel`, reading it once through one open handle (so a concurrent
    /// rename by Redis cannot mix two versions) and hashing what was sent.
    ///
    /// # Errors
    /// [`BackupError::Io`] when the file cannot be read, [`BackupError::Store`] when the upload fails.
    pub fn put_file(&self, rel: &str, local: &FsPath) -> Result<Digest, BackupError> {
        let io = |e| BackupError::io(local, e);
        let mut file = std::fs::File::open(local).map_err(io)?;
        self.put_reader(rel, &mut file, &io, &mut |_| {})
    }

    /// Uploads everything `source` yields to `rel` as it comes (one PUT when it is small,
    /// otherwise a multipart upload of [`CHUNK`]s with a few parts in flight), hashing it on the
    /// way: memory stays at a few chunks whatever the size. `sent(n)` is told of every `n` bytes
    /// read. A failed read aborts the upload, so no partial object is left.
    ///
    /// # Errors
    /// `io(e)` for a failed read, [`BackupError::Store`] when the upload fails.
    pub fn put_reader(
        &self,
        rel: &str,
        source: &mut dyn Read,
        io: &dyn Fn(std::io::Error) -> BackupError,
        sent: &mut dyn FnMut(u64),
    ) -> Result<Digest, BackupError> {
        let path = self.path(rel);
        let fail = self.store_error("upload", rel);
        // WriteMultipart spawns each part's upload onto the runtime.
        let _runtime = self.rt.enter();
        let mut hasher = Sha256::new();
        let mut first = vec![0u8; CHUNK];
        let n = read_full(source, &mut first).map_err(io)?;
        first.truncate(n);
        hasher.update(&first);
        sent(n as u64);
        let mut size = n as u64;
        if n < CHUNK {
            self.rt.block_on(self.store.put(&path, PutPayload::from(first))).map_err(&fail)?;
            return Ok(Digest { size, sha256: hex::encode(hasher.finalize()) });
        }
        let upload = self.rt.block_on(self.store.put_multipart(&path)).map_err(&fail)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, CHUNK);
        writer.write(&first);
        let mut buf = vec![0u8; 1 << 20];
        let streamed: Result<(), BackupError> = loop {
            // Reads block this thread; the parts already written upload on the runtime's workers.
            let n = match source.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(io(e)),
            };
            hasher.update(&buf[..n]);
            size += n as u64;
            sent(n as u64);
            if let Err(source) = self.rt.block_on(writer.wait_for_capacity(PARTS_IN_FLIGHT)) {
                break Err(BackupError::Store { what: format!("upload {path}"), source });
            }
            writer.write(&buf[..n]);
        };
        if let Err(e) = streamed {
            let _ = self.rt.block_on(writer.abort());
            return Err(e);
        }
        self.rt.block_on(writer.finish()).map_err(&fail)?;
        Ok(Digest { size, sha256: hex::encode(hasher.finalize()) })
    }

    /// Writes a small object in one PUT.
    ///
    /// # Errors
    /// [`BackupError::Store`].
    pub fn put_bytes(&self, rel: &str, bytes: Vec<u8>) -> Result<(), BackupError> {
        let path = self.path(rel);
        self.rt
            .block_on(self.store.put(&path, PutPayload::from(bytes)))
            .map(drop)
            .map_err(self.store_error("write", rel))
    }

    /// Reads a small object whole; `None` when it does not exist.
    ///
    /// # Errors
    /// [`BackupError::Store`] for failures other than "not found".
    pub fn get_bytes(&self, rel: &str) -> Result<Option<Vec<u8>>, BackupError> {
        let path = self.path(rel);
        let got = self.rt.block_on(async { self.store.get(&path).await?.bytes().await });
        match got {
            Ok(bytes) => Ok(Some(bytes.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.store_error("read", rel)(e)),
        }
    }

    /// Streams an object through SHA-256, writing it to `dest` when given; `None` when it does not
    /// exist.
    ///
    /// # Errors
    /// [`BackupError::Store`] or, for `dest`, [`BackupError::Io`].
    pub fn fetch(&self, rel: &str, dest: Option<&FsPath>) -> Result<Option<Digest>, BackupError> {
        let path = self.path(rel);
        let fail = self.store_error("read", rel);
        self.rt.block_on(async {
            let mut stream = match self.store.get(&path).await {
                Ok(got) => got.into_stream(),
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(fail(e)),
            };
            let mut out = match dest {
                Some(d) => Some(tokio::fs::File::create(d).await.map_err(|e| BackupError::io(d, e))?),
                None => None,
            };
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|source| BackupError::Store { what: format!("read {path}"), source })?;
                hasher.update(&chunk);
                size += chunk.len() as u64;
                if let (Some(file), Some(d)) = (out.as_mut(), dest) {
                    file.write_all(&chunk).await.map_err(|e| BackupError::io(d, e))?;
                }
            }
            if let (Some(file), Some(d)) = (out.as_mut(), dest) {
                file.flush().await.map_err(|e| BackupError::io(d, e))?;
            }
            Ok(Some(Digest { size, sha256: hex::encode(hasher.finalize()) }))
        })
    }

    /// Every object under `rel` ("" for all) as (path relative to the location, size), sorted.
    ///
    /// # Errors
    /// [`BackupError::Store`].
    pub fn list(&self, rel: &str) -> Result<Vec<(String, u64)>, BackupError> {
        let under = self.path(rel);
        let prefix = (!under.as_ref().is_empty()).then_some(&under);
        let mut objects = self.rt.block_on(async {
            let mut stream = self.store.list(prefix);
            let mut objects = Vec::new();
            while let Some(meta) = stream.next().await {
                let meta = meta?;
                let rel = match meta.location.prefix_match(&self.prefix) {
                    Some(parts) => parts.map(|p| p.as_ref().to_owned()).collect::<Vec<_>>().join("/"),
                    None => continue,
                };
                objects.push((rel, meta.size));
            }
            Ok(objects)
        });
        if let Ok(objects) = objects.as_mut() {
            objects.sort();
        }
        objects.map_err(self.store_error("list", rel))
    }

    /// Deletes one object (a missing one is not an error).
    ///
    /// # Errors
    /// [`BackupError::Store`].
    pub fn delete(&self, rel: &str) -> Result<(), BackupError> {
        let path = self.path(rel);
        match self.rt.block_on(self.store.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.store_error("delete", rel)(e)),
        }
    }
}

/// Reads until `buf` is full or the source ends; returns the bytes read.
fn read_full(source: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match source.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// reqwest is built without a rustls provider (see Cargo.toml); make ring the process default
/// before the first HTTP client exists. Losing the race to another installer is fine: any
/// installed provider works, and the workspace builds only ring.
fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

thread_local! {
    static ENV_OVERRIDES: std::cell::RefCell<Vec<(String, String)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with extra `AWS_*` variables that win over the process environment for stores opened
/// on this thread (callers on parallel threads, such as tests, cannot safely set process variables).
pub fn with_env<T>(vars: &[(&str, &str)], f: impl FnOnce() -> T) -> T {
    let vars = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let previous = ENV_OVERRIDES.with(|o| std::mem::replace(&mut *o.borrow_mut(), vars));
    let result = f();
    ENV_OVERRIDES.with(|o| *o.borrow_mut() = previous);
    result
}

fn env_overrides(prefix: &str) -> Vec<(String, String)> {
    ENV_OVERRIDES.with(|o| o.borrow().iter().filter(|(k, _)| k.starts_with(prefix)).cloned().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_urls_split_into_location_and_id() {
        let id = "20250131T120000Z";
        for (input, base) in [
            ("file:///b/20250131T120000Z", "file:///b"),
            ("file:///20250131T120000Z", "file:///"),
            ("s3://bkt/a/b/20250131T120000Z/", "s3://bkt/a/b"),
            ("s3://bkt/20250131T120000Z", "s3://bkt"),
            ("/var/backups/20250131T120000Z", "/var/backups"),
            ("20250131T120000Z", "."),
        ] {
            assert_eq!(split_backup(input).unwrap(), (base.to_owned(), id.to_owned()), "{input}");
        }
        let err = split_backup("s3://key:secret@bkt/latest").unwrap_err().to_string();
        assert!(err.contains("backup id") && !err.contains("secret"), "{err}");
    }

    #[test]
    fn bad_urls_are_refused_without_echoing_credentials() {
        let err = open("s3://AKIA:hunter2@bkt/p", false).err().unwrap().to_string();
        assert!(err.contains("credentials") && !err.contains("hunter2"), "{err}");
        assert!(open("ftp://host/p", false).err().unwrap().to_string().contains("unsupported scheme"));
        assert!(open("s3:///p", false).err().unwrap().to_string().contains("no bucket"));
        assert!(open("file:///definitely/not/here", false).err().unwrap().to_string().contains("not a directory"));
    }

    #[test]
    fn local_files_round_trip_with_hashes_in_one_put_and_in_parts() {
        let dir = tempfile::tempdir().unwrap();
        let loc = open(dir.path().join("store").to_str().unwrap(), true).unwrap();
        let small = dir.path().join("small");
        std::fs::write(&small, b"abc").unwrap();
        let digest = loc.put_file("id/node/small", &small).unwrap();
        assert_eq!(digest.size, 3);
        assert_eq!(digest.sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let big = dir.path().join("big");
        let content: Vec<u8> = (0..(CHUNK * 2 + 12345)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&big, &content).unwrap();
        let digest = loc.put_file("id/node/big", &big).unwrap();
        assert_eq!(digest, Digest { size: content.len() as u64, sha256: hex::encode(Sha256::digest(&content)) });
        let copy = dir.path().join("copy");
        assert_eq!(loc.fetch("id/node/big", Some(&copy)).unwrap(), Some(digest));
        assert_eq!(std::fs::read(&copy).unwrap(), content);
        assert_eq!(loc.fetch("id/node/none", None).unwrap(), None);
        assert_eq!(loc.get_bytes("id/none").unwrap(), None);
        let listed: Vec<String> = loc.list("").unwrap().into_iter().map(|(p, _)| p).collect();
        assert_eq!(listed, ["id/node/big", "id/node/small"]);
        loc.delete("id/node/big").unwrap();
        loc.delete("id/node/big").unwrap();
        assert_eq!(loc.list("").unwrap().len(), 1);
    }
}
