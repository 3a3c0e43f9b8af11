//! Port reservation that stays safe when many test processes and threads run at once.
//!
//! A port `P` is handed out only when this process holds an exclusive `flock` on
//! `/tmp/redisforge-ports/P.lock` and both `P` and `P + 10000` (a Redis Cluster node's bus port)
//! bind on 127.0.0.1 at that moment. The kernel drops the lock when the holder dies, so an
//! aborted test leaves no stale reservation behind. Lock files are never removed: removing a
//! file another process has just opened would let two holders lock two different inodes.
//!
//! Ports come from 12000..22000 so that bus ports land in 22000..32000: both ranges sit below
//! Linux's default ephemeral range (32768..60999), which outgoing connections draw from.

use std::collections::hash_map::RandomState;
use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// First port handed out.
const BASE: u16 = 12000;
/// How many ports the allocator cycles through.
const SPAN: u16 = 10000;
/// Offset of a Redis Cluster node's bus port from its client port.
pub const BUS_OFFSET: u16 = 10000;

/// A reserved port; the reservation ends when this is dropped (or the process dies).
#[derive(Debug)]
pub struct PortGuard {
    port: u16,
    // Holding the open file holds the flock.
    _lock: File,
}

impl PortGuard {
    /// The reserved port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// Reserves a port (and its bus port `+10000`) for as long as the guard lives.
///
/// # Panics
/// When no port in the range is free, or the lock directory cannot be created.
pub fn reserve_port() -> PortGuard {
    let dir = lock_dir();
    for _ in 0..SPAN {
        let port = next_candidate();
        let path = dir.join(format!("{port}.lock"));
        let Ok(file) = OpenOptions::new().create(true).truncate(false).write(true).open(&path) else {
            continue;
        };
        if file.try_lock().is_err() {
            continue;
        }
        if binds(port) && binds(port + BUS_OFFSET) {
            return PortGuard { port, _lock: file };
        }
    }
    panic!("no free port pair in {BASE}..{} (and +{BUS_OFFSET})", BASE + SPAN);
}

/// Reserves a port for the rest of this process's life and returns its number.
///
/// For one-off listeners in tests; prefer [`reserve_port`] when the reservation can be scoped.
pub fn free_port() -> u16 {
    let guard = reserve_port();
    let port = guard.port;
    // The lock is released by the kernel when this process exits.
    std::mem::forget(guard);
    port
}

/// `n` consecutive ports (each with its bus port), reserved as [`reserve_port`] reserves one: for a
/// script that numbers its nodes from one base port (scripts/start-local.sh).
#[derive(Debug)]
pub struct PortBlock {
    first: PortGuard,
    _rest: Vec<File>,
}

impl PortBlock {
    /// The first port of the block.
    pub fn first(&self) -> u16 {
        self.first.port
    }
}

/// Reserves `n` consecutive ports for as long as the block lives.
///
/// # Panics
/// When no such block is free after many tries.
pub fn reserve_block(n: u16) -> PortBlock {
    let dir = lock_dir();
    for _ in 0..500 {
        let first = reserve_port();
        let mut rest = Vec::new();
        let locked = (1..n).all(|i| {
            let Some(port) = first.port.checked_add(i).filter(|p| p.checked_add(BUS_OFFSET).is_some()) else {
                return false;
            };
            let path = dir.join(format!("{port}.lock"));
            let Ok(file) = OpenOptions::new().create(true).truncate(false).write(true).open(path) else {
                return false;
            };
            if file.try_lock().is_err() || !binds(port) || !binds(port + BUS_OFFSET) {
                return false;
            }
            rest.push(file);
            true
        });
        if locked {
            return PortBlock { first, _rest: rest };
        }
    }
    panic!("no {n} consecutive free ports");
}

fn binds(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

fn lock_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join("redisforge-ports");
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create port lock dir {}: {e}", dir.display()));
        dir
    })
    .clone()
}

/// Next port to try: a per-process random start plus an atomic counter.
fn next_candidate() -> u16 {
    static START: OnceLock<u32> = OnceLock::new();
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = *START.get_or_init(|| {
        let mut h = RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            h.write_u128(t.as_nanos());
        }
        (h.finish() % u64::from(SPAN)) as u32
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let offset = (start + n) % u32::from(SPAN);
    BASE + u16::try_from(offset).expect("offset < SPAN fits in u16")
}
