//! Raw RESP for the command walk: requests written as RESP arrays, replies kept as the exact bytes of
//! one frame. Frames are parsed only to find where they end and to describe their shape for the
//! commands whose values are not deterministic.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// How long one reply may take (blocking cases wait at most a few hundred milliseconds).
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// One parsed frame, RESP2 or RESP3; attributes are skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A one-line frame: `+` simple string, `-` error, `:` integer, `_` null, `,` double, `#` boolean,
    /// `(` big number.
    Line(u8, Vec<u8>),
    /// A length-prefixed frame: `$` bulk string, `!` blob error, `=` verbatim string; `None` is null.
    Blob(u8, Option<Vec<u8>>),
    /// An aggregate: `*` array, `~` set, `>` push, `%` map (keys and values flattened); `None` is a
    /// null array.
    Aggregate(u8, Option<Vec<Frame>>),
}

impl Frame {
    /// The frame's type and structure without the values that vary from run to run: the text of
    /// simple strings and booleans and the first word of errors are kept (they are not data),
    /// integers, strings and doubles are reduced to their type, aggregates to their length and
    /// their elements' shapes.
    pub fn shape(&self) -> String {
        match self {
            Frame::Line(b'-', text) => {
                let word = text.split(|&b| b == b' ').next().unwrap_or_default();
                format!("-{}", String::from_utf8_lossy(word))
            }
            Frame::Line(kind @ (b'+' | b'#'), text) => format!("{}{}", *kind as char, String::from_utf8_lossy(text)),
            Frame::Line(kind, _) => (*kind as char).to_string(),
            Frame::Blob(kind, None) => format!("{}-1", *kind as char),
            Frame::Blob(kind, Some(_)) => (*kind as char).to_string(),
            Frame::Aggregate(kind, None) => format!("{}-1", *kind as char),
            Frame::Aggregate(kind, Some(items)) => {
                let inner: Vec<String> = items.iter().map(Frame::shape).collect();
                format!("{}{}[{}]", *kind as char, items.len(), inner.join(","))
            }
        }
    }

    /// Whether the frame is an error reply.
    pub fn is_error(&self) -> bool {
        matches!(self, Frame::Line(b'-', _) | Frame::Blob(b'!', _))
    }

    /// The elements of an array, set or push.
    pub fn items(&self) -> Option<&[Frame]> {
        match self {
            Frame::Aggregate(_, Some(items)) => Some(items),
            _ => None,
        }
    }

    /// The bytes of a simple or bulk string.
    pub fn text(&self) -> Option<&[u8]> {
        match self {
            Frame::Line(b'+', text) | Frame::Blob(b'$', Some(text)) => Some(text),
            _ => None,
        }
    }

    /// The value of an integer reply.
    pub fn integer(&self) -> Option<i64> {
        match self {
            Frame::Line(b':', text) => std::str::from_utf8(text).ok()?.parse().ok(),
            _ => None,
        }
    }
}

/// Parses the frame at the start of `buf`: `Ok(None)` when it is incomplete, else the frame and its
/// length in bytes.
///
/// # Errors
/// When the bytes are not RESP.
pub fn parse(buf: &[u8]) -> Result<Option<(Frame, usize)>, String> {
    let Some(line_end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let Some((&kind, line)) = buf[..line_end].split_first() else {
        return Err("empty line where a frame should start".into());
    };
    let body = line_end + 2;
    let count = || -> Result<i64, String> {
        std::str::from_utf8(line)
            .ok()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("bad length {:?}", String::from_utf8_lossy(line)))
    };
    match kind {
        b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => Ok(Some((Frame::Line(kind, line.to_vec()), body))),
        b'$' | b'!' | b'=' => {
            let len = count()?;
            if len < 0 {
                return Ok(Some((Frame::Blob(kind, None), body)));
            }
            let end = body + len as usize;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            Ok(Some((Frame::Blob(kind, Some(buf[body..end].to_vec())), end + 2)))
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let len = count()?;
            if len < 0 {
                return Ok(Some((Frame::Aggregate(kind, None), body)));
            }
            let elements = if matches!(kind, b'%' | b'|') { len * 2 } else { len };
            let mut items = Vec::new();
            let mut at = body;
            for _ in 0..elements {
                match parse(&buf[at..])? {
                    Some((item, used)) => {
                        items.push(item);
                        at += used;
                    }
                    None => return Ok(None),
                }
            }
            if kind == b'|' {
                // An attribute describes the frame that follows it; the walk compares that frame.
                return Ok(parse(&buf[at..])?.map(|(frame, used)| (frame, at + used)));
            }
            Ok(Some((Frame::Aggregate(kind, Some(items)), at)))
        }
        other => Err(format!("unknown frame type byte {:?}", other as char)),
    }
}

/// Encodes `args` as one RESP2 array of bulk strings.
pub fn encode(args: &[Vec<u8>]) -> Vec<u8> {
    let slices: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
    crate::resp_command(&slices)
}

/// Shows reply bytes readably in failure messages, cut at `max` characters.
pub fn show(bytes: &[u8], max: usize) -> String {
    let text: String = bytes.escape_ascii().to_string();
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}… ({} bytes)", &text[..cut], bytes.len()),
        None => text,
    }
}

/// A plain TCP connection to a node or the proxy that reads one reply frame at a time.
pub struct Conn {
    addr: String,
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// Connects to `addr`, in RESP3 after `HELLO 3` when `resp3`.
    ///
    /// # Panics
    /// When the connection fails or HELLO 3 is not answered with a map.
    pub fn open_with(addr: &str, resp3: bool) -> Conn {
        let mut conn = Conn::open(addr);
        if resp3 {
            match conn.call(&[b"HELLO".to_vec(), b"3".to_vec()]) {
                Ok((_, Frame::Aggregate(b'%', Some(_)))) => {}
                other => panic!("HELLO 3 on {addr}: {other:?}"),
            }
        }
        conn
    }

    /// Connects to `addr`.
    ///
    /// # Panics
    /// When the connection fails.
    pub fn open(addr: &str) -> Conn {
        Conn::connect(addr).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Connects to `addr`, or says why it cannot.
    ///
    /// # Errors
    /// When `addr` is not a socket address or the connection fails within the reply timeout.
    pub fn connect(addr: &str) -> Result<Conn, String> {
        let sock = addr
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| format!("{addr} is not a socket address"))?;
        let stream = TcpStream::connect_timeout(&sock, REPLY_TIMEOUT).map_err(|e| format!("connect to {addr}: {e}"))?;
        stream.set_write_timeout(Some(REPLY_TIMEOUT)).map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        Ok(Conn { addr: addr.to_owned(), stream, buf: Vec::new() })
    }

    /// Sends one command and reads its reply: the exact bytes of one frame and the parsed frame.
    ///
    /// # Errors
    /// When the write fails, the connection closes, the reply is not RESP or does not come within
    /// the reply timeout; the connection should not be used after that.
    pub fn call(&mut self, args: &[Vec<u8>]) -> Result<(Vec<u8>, Frame), String> {
        self.send(args)?;
        self.read()
    }

    /// Sends one command without reading its reply (a command that blocks, or a pipeline).
    ///
    /// # Errors
    /// When the write fails.
    pub fn send(&mut self, args: &[Vec<u8>]) -> Result<(), String> {
        self.stream.write_all(&encode(args)).map_err(|e| format!("write to {}: {e}", self.addr))
    }

    /// Sends bytes as they are (a pipeline built with [`encode`]).
    ///
    /// # Errors
    /// When the write fails.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream.write_all(bytes).map_err(|e| format!("write to {}: {e}", self.addr))
    }

    /// Reads the next reply frame.
    ///
    /// # Errors
    /// As [`Conn::call`].
    pub fn read(&mut self) -> Result<(Vec<u8>, Frame), String> {
        self.read_within(REPLY_TIMEOUT)?
            .ok_or_else(|| format!("no complete reply from {} within {REPLY_TIMEOUT:?}", self.addr))
    }

    /// Reads the next frame if one comes within `timeout` (`None`: nothing came).
    ///
    /// # Errors
    /// When the connection closes or sends something that is not RESP.
    pub fn read_within(&mut self, timeout: Duration) -> Result<Option<(Vec<u8>, Frame)>, String> {
        let deadline = Instant::now() + timeout;
        let mut chunk = [0u8; 16 * 1024];
        // Bounded by the deadline: every read waits at most for the time left.
        loop {
            if let Some((frame, used)) = parse(&self.buf)? {
                let bytes: Vec<u8> = self.buf.drain(..used).collect();
                return Ok(Some((bytes, frame)));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.stream.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(format!("{} closed the connection", self.addr)),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::Interrupted) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => return Err(format!("read from {}: {e}", self.addr)),
            }
        }
    }
}
