//! Redis modules built from source for the tests (`tests/modules/`): compiled with the machine's C
//! compiler (`cc`, as crates that build C use it) into a temp dir, once per test process, and
//! loaded into cluster nodes with `loadmodule`.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// Redis 7.0.15's key-spec test module (`kspec.*` commands), built; its `loadmodule` line for
/// [`crate::ClusterOptions::extra_config`].
pub fn keyspecs_loadmodule() -> String {
    format!("loadmodule {}", built("keyspecs").display())
}

/// `tests/modules/<name>.c` compiled into a shared object, once per process.
fn built(name: &str) -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    // Tests of one process may ask at once: one compiles, the others wait for it.
    static BUILDING: Mutex<()> = Mutex::new(());
    let _building = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    let dir = DIR.get_or_init(|| tempfile::Builder::new().prefix("redisforge-modules-").tempdir().expect("temp dir"));
    let out = dir.path().join(format!("{name}.so"));
    if out.exists() {
        return out;
    }
    let sources = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/modules");
    let compiled = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".to_string()))
        .args(["-shared", "-fPIC", "-O1", "-std=gnu99", "-I"])
        .arg(&sources)
        .arg("-o")
        .arg(&out)
        .arg(sources.join(format!("{name}.c")))
        .output()
        .expect("run the C compiler (cc) to build a test module");
    assert!(
        compiled.status.success(),
        "building tests/modules/{name}.c failed:\n{}",
        String::from_utf8_lossy(&compiled.stderr)
    );
    out
}
