//! The proxy as "the server" of `INFO server`: the fields one Redis node reports about its
//! process, filled in with the proxy's own (its pid, a run id of its own, its listeners, its
//! executable and config file).
//!
//! Client libraries, exporters and Redis' own test suite read these fields (`run_id` to notice a
//! restart, `uptime_in_days`, `tcp_port`, `redis_git_sha1`, `os`), so the section has every field
//! of the Redis version the proxy reports, in Redis' order; fields about a node's build the proxy
//! does not have take the value a node built without them shows (`redis_git_sha1:00000000`,
//! `gcc_version:0.0.0`).

use std::fmt::Write as _;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::config::Config;

/// What the proxy reports about its process; fixed at start.
#[derive(Debug, Clone)]
pub struct Identity {
    /// 40 random hex digits, new on every start, as a node's `run_id`.
    run_id: String,
    /// `uname`'s system name, release and machine, as Redis' `os` field shows them.
    os: String,
    /// `systemd` when started under systemd's notify protocol, else `no` (Redis' `supervised`).
    supervised: &'static str,
    /// The plain listener's port, else the TLS listener's (Redis: `port`, else `tls-port`).
    tcp_port: u16,
    /// Redis 7.2's `listener<N>:` lines: `tcp` as listener 0, `tls` as listener 2.
    listeners: String,
    executable: String,
    config_file: String,
    started: Instant,
}

impl Identity {
    /// The identity of a proxy started now with `config`.
    pub fn new(config: &Config) -> Identity {
        let tcp_port = config.listen.plain.or(config.listen.tls).map_or(0, |addr| addr.port());
        let mut listeners = String::new();
        let mut listener = |index: usize, name: &str, addr: Option<SocketAddr>| {
            if let Some(addr) = addr {
                let _ = write!(listeners, "listener{index}:name={name},bind={},port={}\r\n", addr.ip(), addr.port());
            }
        };
        listener(0, "tcp", config.listen.plain);
        listener(2, "tls", config.listen.tls);
        let executable = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_default();
        let config_file = config.file.as_deref().map(Path::display).map(|p| p.to_string()).unwrap_or_default();
        Identity {
            run_id: random_hex(40),
            os: os_string(),
            supervised: if std::env::var_os("NOTIFY_SOCKET").is_some() { "systemd" } else { "no" },
            tcp_port,
            listeners,
            executable,
            config_file,
            started: Instant::now(),
        }
    }

    /// `# Server` as a node of `version` writes it (7.2 on: with its listener lines), ending in
    /// the blank line that separates sections.
    pub fn server_section(&self, out: &mut String, version: &str, valkey: Option<&crate::Valkey>) {
        let uptime = self.started.elapsed().as_secs();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let _ = write!(out, "# Server\r\nredis_version:{version}\r\n");
        // Valkey names itself after `redis_version` (8.1 adds its release stage), calls its mode
        // `server_mode` unless it runs with `extended-redis-compatibility`, has no
        // `atomicvar_api`, and adds `clients_hz` (8.1) and `availability_zone`.
        let valkey_81 = valkey.is_some_and(|v| v.at_least(8, 1));
        if let Some(valkey) = valkey {
            let _ = write!(out, "server_name:valkey\r\nvalkey_version:{}\r\n", valkey.version);
            if valkey_81 {
                out.push_str("valkey_release_stage:ga\r\n");
            }
        }
        let mode = match valkey {
            Some(v) if !v.redis_compat => "server_mode",
            _ => "redis_mode",
        };
        let atomicvar = if valkey.is_some() { "" } else { "atomicvar_api:c11-builtin\r\n" };
        let clients_hz = if valkey_81 { "clients_hz:10\r\n" } else { "" };
        let _ = write!(
            out,
            "redis_git_sha1:00000000\r\nredis_git_dirty:0\r\n\
             redis_build_id:{BUILD_ID}\r\n{mode}:standalone\r\nos:{os}\r\narch_bits:{bits}\r\n\
             monotonic_clock:POSIX clock_gettime\r\nmultiplexing_api:epoll\r\n{atomicvar}\
             gcc_version:0.0.0\r\nprocess_id:{pid}\r\nprocess_supervised:{supervised}\r\nrun_id:{run_id}\r\n\
             tcp_port:{port}\r\nserver_time_usec:{usec}\r\nuptime_in_seconds:{uptime}\r\n\
             uptime_in_days:{days}\r\nhz:10\r\nconfigured_hz:10\r\n{clients_hz}lru_clock:{lru}\r\nexecutable:{exe}\r\n\
             config_file:{config}\r\nio_threads_active:0\r\n",
            os = self.os,
            bits = usize::BITS,
            pid = std::process::id(),
            supervised = self.supervised,
            run_id = self.run_id,
            port = self.tcp_port,
            usec = now.as_micros(),
            days = uptime / (3600 * 24),
            // Redis' LRU clock: seconds, in 24 bits.
            lru = now.as_secs() & ((1 << 24) - 1),
            exe = self.executable,
            config = self.config_file,
        );
        if valkey.is_some() {
            out.push_str("availability_zone:\r\n");
        }
        if crate::version_at_least(version, 7, 2) {
            out.push_str(&self.listeners);
        }
        let _ = write!(out, "redisforge_version:{}\r\n\r\n", env!("CARGO_PKG_VERSION"));
    }
}

/// The proxy's build id: its name and version, so that it changes with the proxy's version as a
/// node's changes with its build.
const BUILD_ID: &str = concat!("redisforge-", env!("CARGO_PKG_VERSION"));

/// `uname -s -r -m` from `/proc` (Linux), else the platform's names.
fn os_string() -> String {
    let read = |path: &str| std::fs::read_to_string(path).ok().map(|s| s.trim().to_string());
    let system = read("/proc/sys/kernel/ostype").unwrap_or_else(|| std::env::consts::OS.to_string());
    let release = read("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{system} {release} {}", std::env::consts::ARCH)
}

/// `len` hex digits from the process' random hash keys (seeded from the OS' randomness), mixed
/// with the time and pid.
fn random_hex(len: usize) -> String {
    let mut out = String::with_capacity(len + 16);
    let mut round = 0u64;
    while out.len() < len {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(round);
        hasher.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos());
        hasher.write_u32(std::process::id());
        let _ = write!(out, "{:016x}", hasher.finish());
        round += 1;
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(section: &str) -> Vec<&str> {
        section.split("\r\n").filter_map(|line| line.split_once(':').map(|(name, _)| name)).collect()
    }

    #[test]
    fn the_server_section_has_redis_fields_in_redis_order() {
        let mut config = Config::default();
        config.listen.plain = Some("127.0.0.1:7379".parse().expect("an address"));
        config.listen.tls = Some("0.0.0.0:6380".parse().expect("an address"));
        let identity = Identity::new(&config);
        let mut out = String::new();
        identity.server_section(&mut out, "7.0.15", None);
        let redis_7_0 = [
            "redis_version",
            "redis_git_sha1",
            "redis_git_dirty",
            "redis_build_id",
            "redis_mode",
            "os",
            "arch_bits",
            "monotonic_clock",
            "multiplexing_api",
            "atomicvar_api",
            "gcc_version",
            "process_id",
            "process_supervised",
            "run_id",
            "tcp_port",
            "server_time_usec",
            "uptime_in_seconds",
            "uptime_in_days",
            "hz",
            "configured_hz",
            "lru_clock",
            "executable",
            "config_file",
            "io_threads_active",
            "redisforge_version",
        ];
        assert_eq!(fields(&out), redis_7_0);
        assert!(out.contains("\r\ntcp_port:7379\r\n"), "{out}");
        assert!(out.ends_with("\r\n\r\n"));
        let mut newer = String::new();
        identity.server_section(&mut newer, "7.2.4", None);
        assert!(
            newer.contains(
                "\r\nlistener0:name=tcp,bind=127.0.0.1,port=7379\r\nlistener2:name=tls,bind=0.0.0.0,port=6380\r\n"
            ),
            "{newer}"
        );
    }

    #[test]
    fn run_ids_are_forty_hex_digits_and_differ_between_starts() {
        let (a, b) = (random_hex(40), random_hex(40));
        assert_eq!(a.len(), 40);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
