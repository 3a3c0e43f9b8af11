//! The client matrix (issue #10): real client libraries from other ecosystems run realistic
//! sessions through the proxy, each over plain TCP and over TLS, and every reply is checked.
//!
//! - redis-py, sync and asyncio, RESP2 and RESP3 (`tests/clients/python/`);
//! - node-redis (RESP2 and RESP3) and ioredis (`tests/clients/node/`, installed by `npm ci`);
//! - hiredis, a C program built against Debian's libhiredis-dev (`tests/clients/hiredis/`),
//!   plain TCP only: bookworm's hiredis 0.14 has no TLS;
//! - the connect handshakes of Lettuce, go-redis and Jedis, and the connection housekeeping
//!   commands clients and tools send, replayed byte for byte as those clients write them (their
//!   exact arguments and pipelining were read from each client's source), over a raw socket or,
//!   for TLS, through an `openssl s_client` tunnel.
//!
//! Each real-client session runs strings with expiry (SET/GET/INCR/EXPIRE, a 1 MiB value), hashes,
//! a pipeline, a MULTI/EXEC on one hash slot (and a WATCH conflict in the redis-py and node
//! sessions), pub/sub across two connections, a Lua script with a key and a SCAN with MATCH over
//! its own keys, all under a key prefix unique to the test, then deletes what it wrote. Clients log
//! in as an ACL user, as production clients do. `scripts/install-client-deps.sh` (run by
//! `scripts/test.sh deps`) installs node, npm, gcc, libhiredis-dev and openssl when missing, and
//! the node packages with `npm ci`.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use redisforge_tests::resp::{self, Frame};
use redisforge_tests::{Cluster, Proxy, ProxyOptions, generate_certs, resp_command};

/// The ACL user every client logs in as.
const USER: &str = "matrix";
const PASSWORD: &str = "matrix-pass";
/// How long one client program may run (its own steps are bounded far below this).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(150);
/// How long the raw tests wait for one reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Plain,
    Tls,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Plain => "plain",
            Transport::Tls => "tls",
        }
    }
}

/// A proxy in front of the shared cluster with a plain and a TLS listener and one ACL user.
struct Endpoint {
    proxy: Proxy,
    certs: tempfile::TempDir,
    _acl_dir: tempfile::TempDir,
}

impl Endpoint {
    fn start() -> Endpoint {
        let certs = generate_certs();
        let acl_dir = tempfile::tempdir().expect("create the ACL temp dir");
        let acl_file = acl_dir.path().join("users.acl");
        std::fs::write(&acl_file, format!("user {USER} on >{PASSWORD} ~* &* +@all\nuser default off\n"))
            .expect("write users.acl");
        let extra = format!(
            "[listen]\nplain = \"@PLAIN@\"\ntls = \"@TLS@\"\n\
             [tls]\ncert = \"{}\"\nkey = \"{}\"\n\
             [auth]\nacl_file = \"{}\"\n",
            certs.path().join("server.crt").display(),
            certs.path().join("server.key").display(),
            acl_file.display(),
        );
        let proxy = Proxy::start(Cluster::shared(), ProxyOptions { extra_toml: extra, ..ProxyOptions::default() });
        Endpoint { proxy, certs, _acl_dir: acl_dir }
    }

    fn port(&self, transport: Transport) -> u16 {
        match transport {
            Transport::Plain => self.proxy.port(),
            Transport::Tls => {
                let addr = self.proxy.tls_addr().expect("the proxy has a TLS listener");
                addr.rsplit_once(':').and_then(|(_, port)| port.parse().ok()).expect("TLS address is host:port")
            }
        }
    }

    /// The CA that signed the proxy's certificate, for clients to trust.
    fn ca(&self) -> PathBuf {
        self.certs.path().join("ca.crt")
    }

    /// The command-line arguments every session script takes.
    fn session_args(&self, transport: Transport, prefix: &str) -> Vec<String> {
        let mut args = vec![
            "--port".to_owned(),
            self.port(transport).to_string(),
            "--user".to_owned(),
            USER.to_owned(),
            "--password".to_owned(),
            PASSWORD.to_owned(),
            "--prefix".to_owned(),
            prefix.to_owned(),
        ];
        if transport == Transport::Tls {
            args.extend(["--tls-ca".to_owned(), self.ca().display().to_string()]);
        }
        args
    }
}

/// A key prefix no other test (nor a rerun racing this one) writes under.
fn prefix(client: &str, transport: Transport) -> String {
    format!("cm:{client}:{}:{}", transport.name(), std::process::id())
}

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// Runs a client program to completion within [`CLIENT_TIMEOUT`] and returns its stdout.
///
/// # Panics
/// When it cannot start, runs too long (it is killed) or exits non-zero; the message has its
/// output and the proxy's log tail.
fn run_client(what: &str, cmd: &mut Command, endpoint: &Endpoint) -> String {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start {cmd:?}: {e} (run scripts/install-client-deps.sh)"));
    let stdout = drain(child.stdout.take().expect("stdout is piped"));
    let stderr = drain(child.stderr.take().expect("stderr is piped"));
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let status = loop {
        match child.try_wait().expect("poll the client process") {
            Some(status) => break Some(status),
            None if Instant::now() >= deadline => break None,
            None => thread::sleep(Duration::from_millis(50)),
        }
    };
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let (stdout, stderr) = (joined(stdout), joined(stderr));
    match status {
        Some(status) if status.success() => stdout,
        Some(status) => panic!(
            "{what} failed ({status}):\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}\n{}",
            endpoint.proxy.log_tail(30)
        ),
        None => panic!(
            "{what} did not finish within {CLIENT_TIMEOUT:?} and was killed:\n--- stdout ---\n{stdout}\n\
             --- stderr ---\n{stderr}\n{}",
            endpoint.proxy.log_tail(30)
        ),
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut out = Vec::new();
        let _ = pipe.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    })
}

fn joined(handle: JoinHandle<String>) -> String {
    handle.join().unwrap_or_else(|_| "<reader thread panicked>".to_owned())
}

fn assert_session_passed(what: &str, stdout: &str) {
    assert!(stdout.contains("checks passed"), "{what} exited 0 without its summary line:\n{stdout}");
    eprintln!("{}", stdout.trim());
}

// ---------------------------------------------------------------------------------------------
// redis-py

fn redis_py(script: &str, transport: Transport) {
    let endpoint = Endpoint::start();
    let path = clients_dir().join("python").join(script);
    for protocol in ["2", "3"] {
        let what = format!("redis-py {script} RESP{protocol} over {}", transport.name());
        let prefix = format!("{}:resp{protocol}", prefix(script, transport));
        let stdout = run_client(
            &what,
            Command::new("python3")
                .arg(&path)
                .args(endpoint.session_args(transport, &prefix))
                .args(["--protocol", protocol]),
            &endpoint,
        );
        assert_session_passed(&what, &stdout);
    }
}

#[test]
fn redis_py_sync_session_over_plain_tcp() {
    redis_py("sync_matrix.py", Transport::Plain);
}

#[test]
fn redis_py_sync_session_over_tls() {
    redis_py("sync_matrix.py", Transport::Tls);
}

#[test]
fn redis_py_asyncio_session_over_plain_tcp() {
    redis_py("asyncio_matrix.py", Transport::Plain);
}

#[test]
fn redis_py_asyncio_session_over_tls() {
    redis_py("asyncio_matrix.py", Transport::Tls);
}

// ---------------------------------------------------------------------------------------------
// node-redis and ioredis

/// Runs `matrix.js --client CLIENT` (npm package `package`) once per RESP version in `protocols`.
fn node_client(client: &str, package: &str, protocols: &[&str], transport: Transport) {
    let dir = clients_dir().join("node");
    assert!(
        dir.join("node_modules").join(package).join("package.json").is_file(),
        "npm package {package} is not installed in {}: run scripts/install-client-deps.sh",
        dir.display()
    );
    let endpoint = Endpoint::start();
    for protocol in protocols {
        let what = format!("{client} RESP{protocol} over {}", transport.name());
        let prefix = format!("{}:resp{protocol}", prefix(client, transport));
        let stdout = run_client(
            &what,
            Command::new("node")
                .arg(dir.join("matrix.js"))
                .args(["--client", client])
                .args(endpoint.session_args(transport, &prefix))
                .args(["--protocol", protocol])
                .current_dir(&dir),
            &endpoint,
        );
        assert_session_passed(&what, &stdout);
    }
}

#[test]
fn node_redis_session_over_plain_tcp() {
    node_client("node-redis", "redis", &["2", "3"], Transport::Plain);
}

#[test]
fn node_redis_session_over_tls() {
    node_client("node-redis", "redis", &["2", "3"], Transport::Tls);
}

#[test]
fn ioredis_session_over_plain_tcp() {
    node_client("ioredis", "ioredis", &["2"], Transport::Plain);
}

#[test]
fn ioredis_session_over_tls() {
    node_client("ioredis", "ioredis", &["2"], Transport::Tls);
}

// ---------------------------------------------------------------------------------------------
// hiredis

/// Compiles `tests/clients/hiredis/matrix.c` against the system libhiredis into `dir`.
fn build_hiredis_matrix(dir: &Path) -> PathBuf {
    let src = clients_dir().join("hiredis/matrix.c");
    let bin = dir.join("hiredis-matrix");
    let out = Command::new("gcc")
        .args(["-std=c99", "-O1", "-Wall", "-Wextra", "-Werror"])
        .arg(&src)
        .arg("-o")
        .arg(&bin)
        .arg("-lhiredis")
        .output()
        .unwrap_or_else(|e| panic!("run gcc: {e} (run scripts/install-client-deps.sh)"));
    assert!(
        out.status.success(),
        "compiling {} failed (is libhiredis-dev installed? scripts/install-client-deps.sh):\n{}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

#[test]
fn hiredis_session_over_plain_tcp() {
    let build = tempfile::tempdir().expect("create the build dir");
    let bin = build_hiredis_matrix(build.path());
    let endpoint = Endpoint::start();
    let port = endpoint.port(Transport::Plain).to_string();
    let what = "hiredis over plain";
    let stdout = run_client(
        what,
        Command::new(&bin).args(["127.0.0.1", &port, USER, PASSWORD, &prefix("hiredis", Transport::Plain)]),
        &endpoint,
    );
    assert_session_passed(what, &stdout);
}

// ---------------------------------------------------------------------------------------------
// Raw RESP: what Lettuce, go-redis and Jedis send when they connect

/// One RESP reply, RESP2 or RESP3, as the raw tests read it.
#[derive(Clone, Debug, PartialEq)]
enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Reply>),
    Map(Vec<(Reply, Reply)>),
    Set(Vec<Reply>),
    Push(Vec<Reply>),
    Double(String),
    Bool(bool),
    BigNumber(String),
    /// A verbatim string's text, without its `txt:` format.
    Verbatim(Vec<u8>),
}

impl Reply {
    fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    fn text(&self) -> Option<String> {
        match self {
            Reply::Status(s) | Reply::Double(s) | Reply::BigNumber(s) => Some(s.clone()),
            Reply::Bulk(b) | Reply::Verbatim(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    /// The key/value pairs of a RESP3 map or of a RESP2 flat array of pairs (HELLO, HGETALL).
    fn pairs(&self) -> Option<Vec<(String, Reply)>> {
        let pairs: Vec<(&Reply, &Reply)> = match self {
            Reply::Map(pairs) => pairs.iter().map(|(k, v)| (k, v)).collect(),
            Reply::Array(items) if items.len() % 2 == 0 => items.chunks(2).map(|kv| (&kv[0], &kv[1])).collect(),
            _ => return None,
        };
        pairs.into_iter().map(|(k, v)| Some((k.text()?, v.clone()))).collect()
    }

    fn get(&self, key: &str) -> Option<Reply> {
        self.pairs()?.into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// Parses one reply from the start of `buf` with the harness' RESP parser: `Ok(None)` while it is
/// incomplete, else the reply and the number of bytes it took. RESP3 attributes are dropped.
fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, String> {
    Ok(resp::parse(buf)?.map(|(frame, used)| (Reply::from(frame), used)))
}

impl From<Frame> for Reply {
    fn from(frame: Frame) -> Reply {
        let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
        match frame {
            Frame::Line(b'+', line) => Reply::Status(text(line)),
            Frame::Line(b'-', line) => Reply::Error(text(line)),
            Frame::Line(b':', line) => Reply::Int(text(line).parse().unwrap_or(i64::MIN)),
            Frame::Line(b',', line) => Reply::Double(text(line)),
            Frame::Line(b'(', line) => Reply::BigNumber(text(line)),
            Frame::Line(b'#', line) => Reply::Bool(line == b"t"),
            Frame::Line(..) | Frame::Blob(_, None) | Frame::Aggregate(_, None) => Reply::Nil,
            Frame::Blob(b'$', Some(data)) => Reply::Bulk(data),
            Frame::Blob(b'!', Some(data)) => Reply::Error(text(data)),
            // A verbatim string's text, without its `txt:` format.
            Frame::Blob(_, Some(data)) => Reply::Verbatim(data.get(4..).unwrap_or_default().to_vec()),
            Frame::Aggregate(kind, Some(items)) => {
                let mut items = items.into_iter().map(Reply::from);
                match kind {
                    b'~' => Reply::Set(items.collect()),
                    b'>' => Reply::Push(items.collect()),
                    b'%' => Reply::Map(std::iter::from_fn(|| Some((items.next()?, items.next()?))).collect()),
                    _ => Reply::Array(items.collect()),
                }
            }
        }
    }
}

/// A client connection that writes raw RESP and reads replies one at a time, over plain TCP or
/// through `openssl s_client` for TLS (its stdin and stdout carry the application bytes). The
/// harness' [`resp::Conn`] speaks plain TCP only; the TLS tunnel is what this one adds.
struct RawConn {
    label: String,
    writer: Box<dyn Write + Send>,
    chunks: Receiver<Vec<u8>>,
    buf: Vec<u8>,
    socket: Option<TcpStream>,
    tunnel: Option<Child>,
    tunnel_stderr: Option<JoinHandle<String>>,
}

impl RawConn {
    fn open(endpoint: &Endpoint, transport: Transport, label: &str) -> RawConn {
        let port = endpoint.port(transport);
        let (tx, chunks) = mpsc::channel();
        let label = format!("{label} over {}", transport.name());
        match transport {
            Transport::Plain => {
                let socket =
                    TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("{label}: connect: {e}"));
                socket.set_nodelay(true).expect("set TCP_NODELAY");
                let reader = socket.try_clone().expect("clone the socket for reading");
                let writer = socket.try_clone().expect("clone the socket for writing");
                spawn_reader(reader, tx);
                RawConn {
                    label,
                    writer: Box::new(writer),
                    chunks,
                    buf: Vec::new(),
                    socket: Some(socket),
                    tunnel: None,
                    tunnel_stderr: None,
                }
            }
            Transport::Tls => {
                // -quiet: only application data on stdout (and keep reading after stdin ends);
                // the proxy's certificate must chain to the harness CA and name 127.0.0.1.
                let mut child = Command::new("openssl")
                    .args(["s_client", "-quiet", "-verify_return_error", "-verify_ip", "127.0.0.1", "-CAfile"])
                    .arg(endpoint.ca())
                    .args(["-connect", &format!("127.0.0.1:{port}")])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap_or_else(|e| panic!("{label}: run openssl s_client: {e} (scripts/install-client-deps.sh)"));
                let writer = child.stdin.take().expect("stdin is piped");
                spawn_reader(child.stdout.take().expect("stdout is piped"), tx);
                let stderr = drain(child.stderr.take().expect("stderr is piped"));
                RawConn {
                    label,
                    writer: Box::new(writer),
                    chunks,
                    buf: Vec::new(),
                    socket: None,
                    tunnel: Some(child),
                    tunnel_stderr: Some(stderr),
                }
            }
        }
    }

    /// Writes `commands` in one write, as a client pipelines them.
    fn send(&mut self, commands: &[&[&str]]) {
        let mut bytes = Vec::new();
        for args in commands {
            let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
            bytes.extend_from_slice(&resp_command(&args));
        }
        let written = self.writer.write_all(&bytes).and_then(|()| self.writer.flush());
        if let Err(e) = written {
            let log = self.tunnel_log();
            panic!("{}: write {:?}: {e}{log}", self.label, String::from_utf8_lossy(&bytes));
        }
    }

    /// Reads the next reply, waiting at most [`REPLY_TIMEOUT`].
    fn read(&mut self, what: &str) -> Reply {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            match parse_reply(&self.buf) {
                Ok(Some((reply, used))) => {
                    self.buf.drain(..used);
                    return reply;
                }
                Ok(None) => {}
                Err(e) => {
                    panic!("{}: {what}: unparsable reply {e}: {:?}", self.label, String::from_utf8_lossy(&self.buf))
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.chunks.recv_timeout(left) {
                Ok(chunk) => self.buf.extend_from_slice(&chunk),
                Err(RecvTimeoutError::Timeout) => panic!(
                    "{}: {what}: no complete reply within {REPLY_TIMEOUT:?}; have {:?}",
                    self.label,
                    String::from_utf8_lossy(&self.buf)
                ),
                Err(RecvTimeoutError::Disconnected) => {
                    let log = self.tunnel_log();
                    panic!(
                        "{}: {what}: connection closed; have {:?}{log}",
                        self.label,
                        String::from_utf8_lossy(&self.buf)
                    )
                }
            }
        }
    }

    fn call(&mut self, args: &[&str]) -> Reply {
        self.send(&[args]);
        self.read(&args.join(" "))
    }

    /// Sends `commands` in one write and reads one reply per command.
    fn pipeline(&mut self, commands: &[&[&str]]) -> Vec<Reply> {
        self.send(commands);
        commands.iter().map(|args| self.read(&args.join(" "))).collect()
    }

    /// After QUIT: the server closes the connection and sends nothing more.
    fn expect_closed(&mut self) {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.chunks.recv_timeout(left) {
                Ok(chunk) => self.buf.extend_from_slice(&chunk),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!("{}: the connection stayed open after QUIT", self.label),
            }
        }
        assert!(
            self.buf.is_empty(),
            "{}: bytes after QUIT's reply: {:?}",
            self.label,
            String::from_utf8_lossy(&self.buf)
        );
    }

    fn tunnel_log(&mut self) -> String {
        match (self.tunnel.as_mut(), self.tunnel_stderr.take()) {
            (Some(child), Some(stderr)) => {
                let _ = child.kill();
                let _ = child.wait();
                format!("\nopenssl s_client stderr:\n{}", joined(stderr))
            }
            _ => String::new(),
        }
    }
}

impl Drop for RawConn {
    fn drop(&mut self) {
        if let Some(socket) = &self.socket {
            let _ = socket.shutdown(Shutdown::Both);
        }
        if let Some(child) = self.tunnel.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Forwards what `source` yields to `tx` until it ends; a dropped channel means the peer closed.
fn spawn_reader(mut source: impl Read + Send + 'static, tx: mpsc::Sender<Vec<u8>>) {
    thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match source.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    });
}

#[track_caller]
fn assert_ok(reply: &Reply, what: &str) {
    assert_eq!(reply, &Reply::Status("OK".into()), "{what}");
}

/// A HELLO reply as Redis 7 gives it: server, version, proto, id, mode, role, modules.
#[track_caller]
fn assert_hello(reply: &Reply, proto: i64, what: &str) {
    if proto == 3 {
        assert!(matches!(reply, Reply::Map(_)), "{what}: HELLO 3 must answer a RESP3 map, got {reply:?}");
    }
    assert_eq!(reply.get("server"), Some(Reply::Bulk(b"redis".to_vec())), "{what}: server in {reply:?}");
    assert_eq!(reply.get("proto"), Some(Reply::Int(proto)), "{what}: proto in {reply:?}");
    assert!(matches!(reply.get("id"), Some(Reply::Int(_))), "{what}: id in {reply:?}");
    for key in ["version", "mode", "role"] {
        assert!(reply.get(key).and_then(|v| v.text()).is_some_and(|v| !v.is_empty()), "{what}: {key} in {reply:?}");
    }
    assert!(reply.get("modules").is_some(), "{what}: modules in {reply:?}");
}

/// Clients send some commands fire-and-forget and ignore an error (a server too old for them);
/// the proxy may refuse them, but with exactly one well-formed reply.
#[track_caller]
fn assert_ok_or_refused(reply: &Reply, what: &str) {
    assert!(matches!(reply, Reply::Status(s) if s == "OK") || reply.is_error(), "{what}: got {reply:?}");
}

/// `CLIENT INFO` shows what the handshake set.
#[track_caller]
fn assert_client_info(conn: &mut RawConn, expected: &[&str]) {
    let info = conn.call(&["CLIENT", "INFO"]);
    let text = info.text().unwrap_or_else(|| panic!("{}: CLIENT INFO: got {info:?}", conn.label));
    for field in expected {
        assert!(text.split_whitespace().any(|f| f == *field), "{}: CLIENT INFO lacks {field}: {text}", conn.label);
    }
}

/// Lettuce 6.x/7.x (`RedisHandshake`): `HELLO 3 AUTH user pass SETNAME name`, then the connection
/// metadata pipelined and fire-and-forget (`CLIENT SETINFO lib-name Lettuce`, `lib-ver`), then
/// `CLIENT MAINT_NOTIFICATIONS on moving-endpoint-type …` (failures ignored); then RESP3 traffic.
fn lettuce_handshake(transport: Transport) {
    let endpoint = Endpoint::start();
    let mut c = RawConn::open(&endpoint, transport, "Lettuce");
    let p = prefix("lettuce", transport);
    let hello = c.call(&["HELLO", "3", "AUTH", USER, PASSWORD, "SETNAME", "lettuce-matrix"]);
    assert_hello(&hello, 3, "Lettuce HELLO 3 AUTH SETNAME");
    let metadata = c
        .pipeline(&[&["CLIENT", "SETINFO", "lib-name", "Lettuce"], &["CLIENT", "SETINFO", "lib-ver", "6.7.1.RELEASE"]]);
    for reply in &metadata {
        assert_ok(reply, "Lettuce CLIENT SETINFO");
    }
    let maint = c.call(&["CLIENT", "MAINT_NOTIFICATIONS", "on", "moving-endpoint-type", "internal-ip"]);
    assert_ok_or_refused(&maint, "Lettuce CLIENT MAINT_NOTIFICATIONS");

    // The session the application then runs, in RESP3.
    assert_eq!(c.call(&["PING"]), Reply::Status("PONG".into()));
    let (k, h) = (format!("{p}:k"), format!("{p}:h"));
    assert_ok(&c.call(&["SET", &k, "v", "EX", "100"]), "SET");
    assert_eq!(c.call(&["GET", &k]), Reply::Bulk(b"v".to_vec()));
    assert_eq!(c.call(&["HSET", &h, "f", "v"]), Reply::Int(1));
    assert_eq!(
        c.call(&["HGETALL", &h]),
        Reply::Map(vec![(Reply::Bulk(b"f".to_vec()), Reply::Bulk(b"v".to_vec()))]),
        "HGETALL is a map in RESP3"
    );
    assert_eq!(c.call(&["GET", &format!("{p}:missing")]), Reply::Nil);
    assert_client_info(&mut c, &["name=lettuce-matrix", "lib-name=Lettuce", "lib-ver=6.7.1.RELEASE", "resp=3"]);
    assert_eq!(c.call(&["DEL", &k, &h]), Reply::Int(2));
    assert_ok(&c.call(&["QUIT"]), "QUIT");
    c.expect_closed();
}

#[test]
fn lettuce_handshake_over_plain_tcp() {
    lettuce_handshake(Transport::Plain);
}

#[test]
fn lettuce_handshake_over_tls() {
    lettuce_handshake(Transport::Tls);
}

/// go-redis v9 (`baseClient.initConn`), lower-case as it writes them: `hello 3 auth user pass`;
/// a pipeline of `client setname`; `client maint_notifications on moving-endpoint-type …` (auto
/// mode: an error turns the feature off); a pipeline of `client setinfo LIB-NAME go-redis(,goX)`
/// and `client setinfo LIB-VER` (errors ignored).
fn go_redis_handshake(transport: Transport) {
    let endpoint = Endpoint::start();
    let mut c = RawConn::open(&endpoint, transport, "go-redis");
    let p = prefix("go-redis", transport);
    let hello = c.call(&["hello", "3", "auth", USER, PASSWORD]);
    assert_hello(&hello, 3, "go-redis hello 3 auth");
    assert_ok(&c.pipeline(&[&["client", "setname", "go-redis-matrix"]])[0], "go-redis client setname");
    let maint = c.call(&["client", "maint_notifications", "on", "moving-endpoint-type", "internal-ip"]);
    assert_ok_or_refused(&maint, "go-redis client maint_notifications");
    let identity = c.pipeline(&[
        &["client", "setinfo", "LIB-NAME", "go-redis(,go1.24.4)"],
        &["client", "setinfo", "LIB-VER", "9.14.0"],
    ]);
    for reply in &identity {
        assert_ok(reply, "go-redis client setinfo");
    }

    assert_eq!(c.call(&["ping"]), Reply::Status("PONG".into()));
    let k = format!("{p}:k");
    assert_ok(&c.call(&["set", &k, "v", "ex", "60"]), "set ex");
    assert_eq!(c.call(&["get", &k]), Reply::Bulk(b"v".to_vec()));
    let ttl = c.call(&["ttl", &k]);
    assert!(matches!(ttl, Reply::Int(1..=60)), "ttl: {ttl:?}");
    assert_client_info(&mut c, &["name=go-redis-matrix", "lib-name=go-redis(,go1.24.4)", "lib-ver=9.14.0", "resp=3"]);
    assert_eq!(c.call(&["del", &k]), Reply::Int(1));
}

#[test]
fn go_redis_handshake_over_plain_tcp() {
    go_redis_handshake(Transport::Plain);
}

#[test]
fn go_redis_handshake_over_tls() {
    go_redis_handshake(Transport::Tls);
}

/// Jedis 5.x (`Connection.initializeFromClientConfig`). RESP2, its default: `AUTH user pass`,
/// then fire-and-forget in one write `CLIENT SETNAME`, `CLIENT SETINFO LIB-NAME jedis`,
/// `CLIENT SETINFO LIB-VER`, and a pool's validation `PING`. RESP3 with a user: `HELLO 3 AUTH user
/// pass SETNAME name` instead of AUTH and SETNAME.
fn jedis_handshake(transport: Transport) {
    let endpoint = Endpoint::start();
    let p = prefix("jedis", transport);

    let mut c = RawConn::open(&endpoint, transport, "Jedis RESP2");
    assert_ok(&c.call(&["AUTH", USER, PASSWORD]), "Jedis AUTH user pass");
    let init = c.pipeline(&[
        &["CLIENT", "SETNAME", "jedis-matrix"],
        &["CLIENT", "SETINFO", "LIB-NAME", "jedis"],
        &["CLIENT", "SETINFO", "LIB-VER", "5.2.0"],
    ]);
    for reply in &init {
        assert_ok(reply, "Jedis connection init");
    }
    assert_eq!(c.call(&["PING"]), Reply::Status("PONG".into()), "pool validation PING");
    let h = format!("{p}:h");
    assert_eq!(c.call(&["HSET", &h, "f", "v"]), Reply::Int(1));
    assert_eq!(
        c.call(&["HGETALL", &h]),
        Reply::Array(vec![Reply::Bulk(b"f".to_vec()), Reply::Bulk(b"v".to_vec())]),
        "HGETALL is a flat array in RESP2"
    );
    assert_eq!(c.call(&["CLIENT", "GETNAME"]), Reply::Bulk(b"jedis-matrix".to_vec()));
    assert_client_info(&mut c, &["lib-name=jedis", "lib-ver=5.2.0", "resp=2"]);
    assert_ok(&c.call(&["QUIT"]), "QUIT");
    c.expect_closed();

    let mut c = RawConn::open(&endpoint, transport, "Jedis RESP3");
    let hello = c.call(&["HELLO", "3", "AUTH", USER, PASSWORD, "SETNAME", "jedis3-matrix"]);
    assert_hello(&hello, 3, "Jedis HELLO 3 AUTH SETNAME");
    let init = c.pipeline(&[&["CLIENT", "SETINFO", "LIB-NAME", "jedis"], &["CLIENT", "SETINFO", "LIB-VER", "5.2.0"]]);
    for reply in &init {
        assert_ok(reply, "Jedis RESP3 connection init");
    }
    assert_eq!(
        c.call(&["HGETALL", &h]),
        Reply::Map(vec![(Reply::Bulk(b"f".to_vec()), Reply::Bulk(b"v".to_vec()))]),
        "HGETALL is a map in RESP3"
    );
    assert_eq!(c.call(&["CLIENT", "GETNAME"]), Reply::Bulk(b"jedis3-matrix".to_vec()));
    assert_eq!(c.call(&["DEL", &h]), Reply::Int(1));
}

#[test]
fn jedis_handshake_over_plain_tcp() {
    jedis_handshake(Transport::Plain);
}

#[test]
fn jedis_handshake_over_tls() {
    jedis_handshake(Transport::Tls);
}

/// Connection housekeeping that clients and tools send around connect: redis-cli 7's `COMMAND
/// DOCS` (for its hints), `SELECT 0` (clients configured with a database), `CLIENT NO-EVICT on`
/// and `CLIENT NO-TOUCH on`, READONLY/READWRITE (cluster-aware replica reads), PING with and
/// without a message, ECHO, CLIENT ID, COMMAND COUNT / INFO, a bare `HELLO`, and `COMMAND DOCS`
/// again after `HELLO 3`.
fn connection_housekeeping(transport: Transport) {
    let endpoint = Endpoint::start();
    let mut c = RawConn::open(&endpoint, transport, "housekeeping");
    assert_ok(&c.call(&["AUTH", USER, PASSWORD]), "AUTH user pass");

    let docs = c.call(&["COMMAND", "DOCS"]);
    let names: Vec<String> = docs.pairs().unwrap_or_default().into_iter().map(|(name, _)| name).collect();
    assert!(names.len() > 150, "COMMAND DOCS: {} commands described", names.len());
    assert!(names.iter().any(|n| n == "get"), "COMMAND DOCS describes GET");

    let in_one_write = c.pipeline(&[
        &["SELECT", "0"],
        &["CLIENT", "NO-EVICT", "on"],
        &["CLIENT", "NO-TOUCH", "on"],
        &["READONLY"],
        &["READWRITE"],
    ]);
    for (reply, what) in in_one_write.iter().zip(["SELECT 0", "NO-EVICT", "NO-TOUCH", "READONLY", "READWRITE"]) {
        assert_ok(reply, what);
    }
    assert_eq!(c.call(&["PING"]), Reply::Status("PONG".into()));
    assert_eq!(c.call(&["PING", "hello"]), Reply::Bulk(b"hello".to_vec()));
    assert_eq!(c.call(&["ECHO", "matrix"]), Reply::Bulk(b"matrix".to_vec()));
    assert!(matches!(c.call(&["CLIENT", "ID"]), Reply::Int(id) if id > 0));
    assert!(matches!(c.call(&["COMMAND", "COUNT"]), Reply::Int(n) if n > 150));
    let info = c.call(&["COMMAND", "INFO", "get"]);
    assert!(
        matches!(&info, Reply::Array(entries) if entries.len() == 1 && matches!(&entries[0], Reply::Array(e) if e.first() == Some(&Reply::Bulk(b"get".to_vec())))),
        "COMMAND INFO get: {info:?}"
    );
    assert_hello(&c.call(&["HELLO"]), 2, "bare HELLO");

    assert_hello(&c.call(&["HELLO", "3"]), 3, "HELLO 3");
    let docs = c.call(&["COMMAND", "DOCS", "get"]);
    assert!(matches!(&docs, Reply::Map(m) if m.len() == 1), "COMMAND DOCS get in RESP3: {docs:?}");
    assert_eq!(c.call(&["PING"]), Reply::Status("PONG".into()));
    assert_ok(&c.call(&["QUIT"]), "QUIT");
    c.expect_closed();
}

#[test]
fn connection_housekeeping_commands_over_plain_tcp() {
    connection_housekeeping(Transport::Plain);
}

#[test]
fn connection_housekeeping_commands_over_tls() {
    connection_housekeeping(Transport::Tls);
}

#[test]
fn resp_reader_handles_every_reply_type() {
    let bytes = b"+OK\r\n-ERR x\r\n:5\r\n$3\r\nabc\r\n$-1\r\n*-1\r\n_\r\n,1.5\r\n#t\r\n(123\r\n=8\r\ntxt:abcd\r\n\
                  !3\r\nBAD\r\n%1\r\n$1\r\nk\r\n*1\r\n:1\r\n~1\r\n:2\r\n>2\r\n$7\r\nmessage\r\n:3\r\n\
                  |1\r\n$1\r\na\r\n:1\r\n:9\r\n";
    let mut rest = &bytes[..];
    let mut replies = Vec::new();
    while let Some((reply, used)) = parse_reply(rest).expect("well-formed") {
        replies.push(reply);
        rest = &rest[used..];
    }
    assert!(rest.is_empty(), "left over: {:?}", String::from_utf8_lossy(rest));
    let bulk = |s: &str| Reply::Bulk(s.as_bytes().to_vec());
    assert_eq!(
        replies,
        [
            Reply::Status("OK".into()),
            Reply::Error("ERR x".into()),
            Reply::Int(5),
            bulk("abc"),
            Reply::Nil,
            Reply::Nil,
            Reply::Nil,
            Reply::Double("1.5".into()),
            Reply::Bool(true),
            Reply::BigNumber("123".into()),
            Reply::Verbatim(b"abcd".to_vec()),
            Reply::Error("BAD".into()),
            Reply::Map(vec![(bulk("k"), Reply::Array(vec![Reply::Int(1)]))]),
            Reply::Set(vec![Reply::Int(2)]),
            Reply::Push(vec![bulk("message"), Reply::Int(3)]),
            Reply::Int(9),
        ]
    );
    assert_eq!(parse_reply(b"$5\r\nab").expect("incomplete is not an error"), None);
    assert_eq!(parse_reply(b"*2\r\n:1\r\n").expect("incomplete is not an error"), None);
    assert!(parse_reply(b"?x\r\n").is_err());
}
