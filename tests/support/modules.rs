//! Redis modules built from source for the tests (`tests/modules/`): compiled with the machine's C
//! compiler (`cc`, as crates that build C use it) into the test target's temp dir, once, and loaded
//! into cluster nodes with `loadmodule`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Redis 7.0.15's key-spec test module (`kspec.*` commands), built into `dir` (an integration
/// test's `env!("CARGO_TARGET_TMPDIR")`); its `loadmodule` line for
/// [`crate::ClusterOptions::extra_config`].
pub fn keyspecs_loadmodule(dir: &str) -> String {
    format!("loadmodule {}", built("keyspecs", Path::new(dir)).display())
}

/// `tests/modules/<name>.c` compiled into `dir/<name>.so`, unless it is there already. Test
/// processes running at once may each compile it: each writes a name of its own and renames it
/// into place, so a node never loads a half-written file.
fn built(name: &str, dir: &Path) -> PathBuf {
    let out = dir.join(format!("{name}.so"));
    if out.exists() {
        return out;
    }
    let sources = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/modules");
    let partial = dir.join(format!("{name}.so.{}", std::process::id()));
    let compiled = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".to_string()))
        .args(["-shared", "-fPIC", "-O1", "-std=gnu99", "-I"])
        .arg(&sources)
        .arg("-o")
        .arg(&partial)
        .arg(sources.join(format!("{name}.c")))
        .output()
        .expect("run the C compiler (cc) to build a test module");
    assert!(
        compiled.status.success(),
        "building tests/modules/{name}.c failed:\n{}",
        String::from_utf8_lossy(&compiled.stderr)
    );
    std::fs::rename(&partial, &out).expect("move the built module into place");
    out
}
