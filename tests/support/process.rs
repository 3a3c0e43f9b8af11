//! Child-process plumbing shared by clusters and proxies: signals, reaping, the watchdog, logs.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// A POSIX signal a test sends to a child process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: graceful shutdown.
    Term,
    /// SIGINT: graceful shutdown, as from Ctrl-C.
    Int,
    /// SIGHUP: reload (certs, users).
    Hup,
    /// SIGKILL: immediate death.
    Kill,
    /// SIGSTOP: freeze (the process keeps its sockets but answers nothing).
    Stop,
    /// SIGCONT: resume after [`Signal::Stop`].
    Cont,
    /// SIGQUIT.
    Quit,
    /// SIGUSR1.
    Usr1,
    /// SIGUSR2.
    Usr2,
}

impl Signal {
    /// The name `kill -s` takes.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Term => "TERM",
            Signal::Int => "INT",
            Signal::Hup => "HUP",
            Signal::Kill => "KILL",
            Signal::Stop => "STOP",
            Signal::Cont => "CONT",
            Signal::Quit => "QUIT",
            Signal::Usr1 => "USR1",
            Signal::Usr2 => "USR2",
        }
    }
}

/// Sends `sig` to `pid` with the shell's `kill` builtin (no libc, no procps needed).
///
/// # Errors
/// When `sh` cannot run or `kill` fails (for example the process is gone).
pub fn send_signal(pid: u32, sig: Signal) -> io::Result<()> {
    let status = Command::new("sh")
        .args(["-c", r#"kill -s "$0" "$1""#, sig.name(), &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if status.success() { Ok(()) } else { Err(io::Error::other(format!("kill -s {} {pid}: {status}", sig.name()))) }
}

/// SIGKILLs `child` (waking it first if stopped does not matter for SIGKILL) and reaps it.
pub fn kill_and_reap(child: &mut Child) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    let _ = child.kill();
    child.wait().ok()
}

/// Polls `child` until it exits or `timeout` passes.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let step = Duration::from_millis(20);
    let mut status = None;
    crate::wait_until(timeout, step, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    status
}

/// A `sh` process that SIGKILLs the PIDs listed in a file once the test process is gone.
///
/// It polls `kill -0 <test pid>` once a second and exits right after the test process does,
/// so it never outlives it by more than a couple of seconds. It also removes `cleanup_dir`
/// then, which covers temp dirs of `static` values that are never dropped. Dropping the
/// `Watchdog` (normal teardown) kills the watchdog itself.
#[derive(Debug)]
pub struct Watchdog {
    child: Child,
}

impl Watchdog {
    /// Starts a watchdog for the PIDs in `pid_file` (whitespace-separated, rewritten freely).
    ///
    /// # Panics
    /// When `sh` cannot be started.
    pub fn spawn(pid_file: &Path, cleanup_dir: Option<&Path>) -> Watchdog {
        const SCRIPT: &str = r#"
t=$1; pids=$2; dir=$3
while kill -0 "$t" 2>/dev/null; do sleep 1; done
for p in $(cat "$pids" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
if [ -n "$dir" ]; then sleep 1; rm -rf "$dir"; fi
"#;
        let dir = cleanup_dir.map(Path::as_os_str).unwrap_or_default();
        let child = Command::new("sh")
            .arg("-c")
            .arg(SCRIPT)
            .arg("redisforge-watchdog")
            .arg(std::process::id().to_string())
            .arg(pid_file)
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the sh watchdog");
        Watchdog { child }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

/// Atomically replaces `path` with the given PIDs, one per line, for a [`Watchdog`] to read.
pub fn write_pid_file(path: &Path, pids: impl IntoIterator<Item = u32>) {
    let body: String = pids.into_iter().map(|p| format!("{p}\n")).collect();
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    // Rename so the watchdog never reads a half-written list.
    if std::fs::write(&tmp, body).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

/// The last `lines` lines of a text file, or a note saying it could not be read.
pub fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// The resident memory of process `pid` in bytes (`VmRSS` in `/proc/<pid>/status`).
///
/// # Panics
/// When the process is gone or the file has no `VmRSS`.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/<pid>/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status");
    kib * 1024
}

/// How many file descriptors process `pid` has open.
///
/// # Panics
/// When the process is gone.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).expect("list /proc/<pid>/fd").count()
}
