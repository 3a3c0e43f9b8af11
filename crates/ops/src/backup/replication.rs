//! A master's snapshot over the network, the way a replica (or `redis-cli --rdb`) gets it: the
//! replication handshake makes the master fork and stream an RDB, so the backup needs no access to
//! the node's files and works from any host that reaches the node.
//!
//! Over TLS with `--tls` (rustls, `--ca`, `--cert`/`--key`), as the other verbs. The handshake:
//! `AUTH` (with `--user`/`--pass-env`), `REPLCONF capa eof` (so a master with
//! `repl-diskless-sync yes`, Redis 7's default, streams from memory instead of writing a file
//! first), `REPLCONF rdb-only 1` (7.0+: no replication stream after the RDB; older servers refuse
//! the option, which is harmless), then `SYNC`. While the master prepares the snapshot it sends a
//! newline every second; then the RDB comes framed as `$<length>\r\n<bytes>` (from its disk) or
//! `$EOF:<40-byte mark>\r\n<bytes><mark>` (diskless). [`RdbStream`] is the RDB itself as a
//! [`Read`], so the upload streams it to object storage as it arrives: no local copy, memory
//! bounded by one read buffer.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::BackupError;
use super::node::Login;

/// The connection to the master: TCP, or TLS over it.
trait Duplex: Read + Write + Send {}
impl<T: Read + Write + Send> Duplex for T {}

/// Connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Length of the diskless end mark.
const MARK: usize = 40;
/// Longest header line accepted (`$EOF:` + mark, or `$` + a length; errors are longer).
const MAX_LINE: usize = 4096;

/// How the master frames the RDB.
#[derive(Debug)]
enum Framing {
    /// `$<length>`: this many bytes are left.
    Length(u64),
    /// `$EOF:<mark>`: the RDB ends where the mark appears.
    Eof([u8; MARK]),
}

/// The RDB a master streams, as a reader of exactly its bytes.
pub struct RdbStream {
    /// What follows the header: bytes the handshake's reader had buffered, then the socket.
    body: Box<dyn Read + Send>,
    framing: Framing,
    /// Diskless framing: bytes read, handed out up to `offset` (the mark may be in the rest).
    pending: Vec<u8>,
    offset: usize,
    /// The end was reached (the length read, or the mark seen).
    ended: bool,
    /// The first bytes were checked to be an RDB (`REDIS` magic).
    checked: bool,
}

impl std::fmt::Debug for RdbStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RdbStream").field("framing", &self.framing).field("ended", &self.ended).finish()
    }
}

/// Asks the master at `addr` for a snapshot and returns it once its first byte is about to come.
/// `wait` bounds every read: the time the master takes to fork, and any stall of the transfer.
///
/// # Errors
/// [`BackupError::Node`] naming the step: connection, login, a refused `SYNC` (an ACL user without
/// `+sync`, a replica-only setting), or a reply that is not a snapshot.
pub fn open(addr: &str, login: &Login, wait: Duration) -> Result<RdbStream, BackupError> {
    let fail = |why: String| BackupError::Node { node: addr.to_owned(), why };
    let sock = addr
        .to_socket_addrs()
        .map_err(|e| fail(format!("resolve: {e}")))?
        .next()
        .ok_or_else(|| fail("no address".to_owned()))?;
    let stream = TcpStream::connect_timeout(&sock, CONNECT_TIMEOUT).map_err(|e| fail(format!("connect: {e}")))?;
    stream
        .set_read_timeout(Some(wait))
        .and_then(|()| stream.set_write_timeout(Some(wait)))
        .map_err(|e| fail(e.to_string()))?;
    let stream: Box<dyn Duplex> = match login.tls() {
        None => Box::new(stream),
        Some(tls) => {
            let host = redisforge_cluster::addr::split_addr(addr).map_or(addr, |(host, _)| host);
            tls_over(stream, host, tls).map_err(|e| fail(format!("TLS: {e}")))?
        }
    };
    let mut reader = BufReader::with_capacity(1 << 20, stream);
    if let Some(auth) = login.auth_args() {
        let words: Vec<&str> = std::iter::once("AUTH").chain(auth.iter().map(String::as_str)).collect();
        call(&mut reader, &words).map_err(|e| fail(format!("AUTH: {e}")))?;
    }
    call(&mut reader, &["REPLCONF", "capa", "eof"]).map_err(|e| fail(format!("REPLCONF capa eof: {e}")))?;
    // Redis < 7.0 does not know the option; the RDB is then followed by the replication
    // stream, which is never read: the connection closes after the RDB.
    let _ = call(&mut reader, &["REPLCONF", "rdb-only", "1"]);
    send(reader.get_mut(), &["SYNC"]).map_err(|e| fail(format!("SYNC: {e}")))?;
    let header = header(&mut reader).map_err(|e| fail(format!("SYNC: {e}")))?;
    let framing = parse_header(&header).map_err(|why| fail(format!("SYNC: {why}")))?;
    let buffered = reader.buffer().to_vec();
    Ok(RdbStream::new(Box::new(io::Cursor::new(buffered).chain(reader.into_inner())), framing))
}

/// TLS to `host` over `tcp`, verified with `--ca` (or the system's roots), with the client
/// certificate when given. The handshake happens on the first read or write.
fn tls_over(tcp: TcpStream, host: &str, tls: &redis::TlsCertificates) -> io::Result<Box<dyn Duplex>> {
    let bad = |e: &dyn std::fmt::Display| io::Error::new(io::ErrorKind::InvalidInput, e.to_string());
    let mut roots = rustls::RootCertStore::empty();
    match &tls.root_cert {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
            }
        }
        None => {
            let _ = roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&e))?
        .with_root_certificates(roots);
    let config = match &tls.client_tls {
        Some(redis::ClientTlsConfig { client_cert: cert, client_key: key }) => {
            let chain = CertificateDer::pem_slice_iter(cert).collect::<Result<Vec<_>, _>>().map_err(|e| bad(&e))?;
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| bad(&e))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| bad(&e))?
        }
        None => builder.with_no_client_auth(),
    };
    let name =
        ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']').to_owned()).map_err(|e| bad(&e))?;
    let connection = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| bad(&e))?;
    Ok(Box::new(rustls::StreamOwned::new(connection, tcp)))
}

fn send(stream: &mut dyn Write, words: &[&str]) -> io::Result<()> {
    let mut out = format!("*{}\r\n", words.len()).into_bytes();
    for w in words {
        out.extend_from_slice(format!("${}\r\n{w}\r\n", w.len()).as_bytes());
    }
    stream.write_all(&out)
}

/// Sends a command whose reply is one status line; `Err` with the server's error text.
fn call(reader: &mut BufReader<Box<dyn Duplex>>, words: &[&str]) -> io::Result<()> {
    send(reader.get_mut(), words)?;
    let line = line(reader)?;
    match line.strip_prefix('+') {
        Some(_) => Ok(()),
        None => Err(io::Error::other(line.strip_prefix('-').unwrap_or(&line).to_owned())),
    }
}

/// One `\r\n`-terminated line, without the terminator.
fn line(reader: &mut BufReader<Box<dyn Duplex>>) -> io::Result<String> {
    let mut raw = Vec::new();
    reader.by_ref().take(MAX_LINE as u64).read_until(b'\n', &mut raw)?;
    if raw.last() != Some(&b'\n') {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the connection closed mid-reply"));
    }
    while matches!(raw.last(), Some(b'\n' | b'\r')) {
        raw.pop();
    }
    Ok(String::from_utf8_lossy(&raw).into_owned())
}

/// The RDB's header line, after the newlines the master sends while it forks.
fn header(reader: &mut BufReader<Box<dyn Duplex>>) -> io::Result<String> {
    loop {
        let available = reader.fill_buf()?;
        match available.first() {
            None => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the master closed the connection")),
            Some(b'\n') => reader.consume(1),
            Some(_) => return line(reader),
        }
    }
}

fn parse_header(header: &str) -> Result<Framing, String> {
    if let Some(error) = header.strip_prefix('-') {
        return Err(error.to_owned());
    }
    if let Some(mark) = header.strip_prefix("$EOF:") {
        let mark: [u8; MARK] = mark.as_bytes().try_into().map_err(|_| format!("bad end mark in {header:?}"))?;
        return Ok(Framing::Eof(mark));
    }
    match header.strip_prefix('$').and_then(|n| n.parse::<u64>().ok()) {
        Some(length) => Ok(Framing::Length(length)),
        None => Err(format!("expected an RDB, got {:?}", header.chars().take(80).collect::<String>())),
    }
}

impl Read for RdbStream {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = match self.framing {
            Framing::Length(left) => {
                if left == 0 {
                    return Ok(0);
                }
                let want = out.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let n = self.body.read(&mut out[..want])?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the RDB ended {left} bytes short"),
                    ));
                }
                self.framing = Framing::Length(left - n as u64);
                n
            }
            Framing::Eof(mark) => self.read_until_mark(&mark, out)?,
        };
        if !self.checked && n > 0 {
            // Only the first read is checked; the store hashes every byte anyway.
            self.checked = true;
            if n >= 5 && &out[..5] != b"REDIS" {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "the master sent something that is not an RDB"));
            }
        }
        Ok(n)
    }
}

impl RdbStream {
    fn new(body: Box<dyn Read + Send>, framing: Framing) -> RdbStream {
        RdbStream { body, framing, pending: Vec::new(), offset: 0, ended: false, checked: false }
    }

    /// Diskless framing: hands out what was read except the last `MARK` bytes (which may be the
    /// start of the mark) until the mark is seen. Each byte is searched once and copied once.
    fn read_until_mark(&mut self, mark: &[u8; MARK], out: &mut [u8]) -> io::Result<usize> {
        loop {
            let unread = &self.pending[self.offset..];
            let ready = if self.ended { unread.len() } else { unread.len().saturating_sub(MARK) };
            if ready > 0 {
                let n = ready.min(out.len());
                out[..n].copy_from_slice(&unread[..n]);
                self.offset += n;
                return Ok(n);
            }
            if self.ended {
                return Ok(0);
            }
            // Keep only the tail that may hold the start of the mark, then read more.
            self.pending.drain(..self.offset);
            self.offset = 0;
            let searched_to = self.pending.len().saturating_sub(MARK - 1);
            let mut chunk = [0u8; 64 * 1024];
            let n = self.body.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the master closed before the RDB's end mark",
                ));
            }
            self.pending.extend_from_slice(&chunk[..n]);
            if let Some(at) = self.pending[searched_to..].windows(MARK).position(|w| w == mark) {
                self.pending.truncate(searched_to + at);
                self.ended = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_name_the_framing_or_the_error() {
        assert!(matches!(parse_header("$1234"), Ok(Framing::Length(1234))));
        let eof = format!("$EOF:{}", "a".repeat(40));
        assert!(matches!(parse_header(&eof), Ok(Framing::Eof(m)) if m == [b'a'; 40]));
        assert_eq!(
            parse_header("-NOPERM this user has no permissions to run the 'sync' command").err().as_deref(),
            Some("NOPERM this user has no permissions to run the 'sync' command")
        );
        assert!(parse_header("$EOF:short").is_err());
        assert!(parse_header("+FULLRESYNC x 0").unwrap_err().contains("expected an RDB"));
    }

    fn drain(body: &[u8], framing: Framing, read_size: usize) -> io::Result<Vec<u8>> {
        let mut stream = RdbStream::new(Box::new(io::Cursor::new(body.to_vec())), framing);
        let mut out = Vec::new();
        let mut buf = vec![0u8; read_size];
        loop {
            match stream.read(&mut buf)? {
                0 => return Ok(out),
                n => out.extend_from_slice(&buf[..n]),
            }
        }
    }

    #[test]
    fn the_rdb_is_exactly_the_framed_bytes() {
        let rdb: Vec<u8> = b"REDIS0010".iter().copied().chain((0..200_000u32).map(|i| (i % 251) as u8)).collect();
        let mark = [b'm'; MARK];
        // Length framing stops at the length, whatever follows (the replication stream).
        let mut sent = rdb.clone();
        sent.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
        for size in [1, 7, 4096, 1 << 20] {
            assert_eq!(drain(&sent, Framing::Length(rdb.len() as u64), size).unwrap(), rdb, "read size {size}");
        }
        // Diskless framing: the mark ends it, even split across reads, and what follows is ignored.
        let mut sent = rdb.clone();
        sent.extend_from_slice(&mark);
        sent.extend_from_slice(b"+after");
        for size in [1, 39, 40, 41, 65_536, 1 << 20] {
            assert_eq!(drain(&sent, Framing::Eof(mark), size).unwrap(), rdb, "read size {size}");
        }
        // Cut short: an error, never a silently truncated RDB.
        assert!(drain(&rdb[..1000], Framing::Length(rdb.len() as u64), 4096).is_err());
        assert!(drain(&rdb[..1000], Framing::Eof(mark), 4096).is_err());
        assert!(drain(b"NOTANRDB", Framing::Length(8), 64).is_err());
    }
}
