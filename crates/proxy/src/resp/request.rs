//! Client requests: RESP multibulk arrays and inline commands, framed as Redis frames them.
//!
//! One pass over each header: it checks the limits as soon as a length is known (so an oversized
//! request is refused without being buffered whole), resumes where it stopped when a request
//! arrives in pieces, and records where each argument lies. The request keeps the bytes it arrived
//! in, so it is forwarded upstream without being re-encoded.
//!
//! `redis-protocol` is not used here: its decoder re-parses from the start on every call and
//! builds a frame tree, which cost about 1,300 instructions per request under callgrind — a tenth
//! of the proxy's whole per-request cost — for ranges this pass already knows.

use bytes::{BufMut, Bytes, BytesMut};
use smallvec::SmallVec;
use thiserror::Error;

use super::scan::{MAX_LINE, ScanError, parse_len, parse_usize, read_line, short_header};

/// Size limits on one request, from `[limits]` in the config.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request, all arguments together; also the largest single bulk argument.
    pub max_request_bytes: usize,
    /// Most arguments in one request.
    pub max_array_len: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_request_bytes: 512 * 1024 * 1024, max_array_len: 1024 * 1024 }
    }
}

/// A request that is not valid RESP. Redis answers these with `-ERR Protocol error: …` and closes
/// the connection; the text after `Protocol error: ` matches Redis' own where Redis has one.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ProtocolError {
    #[error("too big inline request")]
    InlineTooBig,
    #[error("unbalanced quotes in request")]
    UnbalancedQuotes,
    #[error("too big mbulk count string")]
    CountTooBig,
    #[error("invalid multibulk length")]
    InvalidMultibulkLength,
    #[error("too big bulk count string")]
    BulkCountTooBig,
    #[error("expected '$', got '{}'", char::from(*.0))]
    ExpectedBulk(u8),
    #[error("invalid bulk length")]
    InvalidBulkLength,
    #[error("request larger than max_request_bytes ({0} bytes)")]
    RequestTooBig(usize),
    #[error("bulk argument not terminated by CRLF")]
    MissingCrlf,
    #[error("unauthenticated multibulk length")]
    UnauthenticatedCount,
    #[error("unauthenticated bulk length")]
    UnauthenticatedBulk,
}

/// Most arguments, and the longest argument, a client that has not logged in may send (Redis'
/// `processMultibulkBuffer`, against memory spent on requests of clients not yet known).
const UNAUTHENTICATED_COUNT: usize = 10;
const UNAUTHENTICATED_BULK: usize = 16 * 1024;

/// One client request, argv-style: argument 0 is the command name.
#[derive(Debug, Clone)]
pub struct Request {
    /// The request as RESP bytes, exactly as forwarded upstream.
    bytes: Bytes,
    /// Start and end of each argument inside `bytes`: inline for the usual few arguments, so a
    /// request costs no allocation of its own.
    args: ArgRanges,
}

/// Where each argument of a request lies.
type ArgRanges = SmallVec<[(usize, usize); INLINE_ARGS]>;

/// Arguments kept inline in a [`Request`] (`SET key value EX 10` has five).
const INLINE_ARGS: usize = 5;

impl Request {
    /// Builds a request from arguments, encoding them as a RESP array.
    pub fn from_args<A: AsRef<[u8]>>(args: &[A]) -> Request {
        let bytes = encode_command(args);
        let mut ranges = ArgRanges::with_capacity(args.len());
        // Each argument is `$<len>\r\n<data>\r\n` after the array header.
        let mut at = bytes.iter().position(|&b| b == b'\n').map_or(0, |p| p + 1);
        for arg in args {
            let header = bytes[at..].iter().position(|&b| b == b'\n').map_or(0, |p| p + 1);
            let start = at + header;
            ranges.push((start, start + arg.as_ref().len()));
            at = start + arg.as_ref().len() + 2;
        }
        Request { bytes, args: ranges }
    }

    /// The RESP bytes to forward upstream.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The RESP bytes, the request consumed: a request forwarded whole hands them on without a
    /// second reference to count.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// Number of arguments, the command name included.
    pub fn argc(&self) -> usize {
        self.args.len()
    }

    /// Argument `i` as the client encoded it, `$<len>\r\n<data>\r\n` (copied whole into the parts
    /// of a split request); empty when out of range.
    pub fn arg_encoded(&self, i: usize) -> &[u8] {
        let Some(&(start, end)) = self.args.get(i) else {
            return &[];
        };
        // The data follows its header `$<digits>\r\n`: the last `$` before the CRLF starts it.
        let header = self.bytes.get(..start.saturating_sub(2)).and_then(|b| b.iter().rposition(|&c| c == b'$'));
        header.and_then(|header| self.bytes.get(header..end + 2)).unwrap_or(&[])
    }

    /// Argument `i` (0 is the command name); empty when out of range.
    pub fn arg(&self, i: usize) -> &[u8] {
        match self.args.get(i) {
            Some(&(start, end)) => self.bytes.get(start..end).unwrap_or(&[]),
            None => &[],
        }
    }
}

impl crate::command::Args for Request {
    fn len(&self) -> usize {
        self.argc()
    }
    fn get(&self, i: usize) -> &[u8] {
        self.arg(i)
    }
}

/// Encodes arguments as a RESP array of bulk strings.
pub fn encode_command<A: AsRef<[u8]>>(args: &[A]) -> Bytes {
    let size: usize = args.iter().map(|a| a.as_ref().len() + 16).sum::<usize>() + 16;
    let mut out = BytesMut::with_capacity(size);
    put_header(&mut out, b'*', args.len());
    for arg in args {
        let arg = arg.as_ref();
        put_header(&mut out, b'$', arg.len());
        out.put_slice(arg);
        out.put_slice(b"\r\n");
    }
    out.freeze()
}

fn put_header(out: &mut BytesMut, kind: u8, len: usize) {
    out.put_u8(kind);
    super::put_decimal(out, len as i64);
    out.put_slice(b"\r\n");
}

/// Splits a byte stream into [`Request`]s, keeping its place inside a partly received multibulk.
#[derive(Debug)]
pub struct RequestDecoder {
    limits: Limits,
    /// The client must still log in ([`RequestDecoder::set_unauthenticated`]).
    unauthenticated: bool,
    /// Arguments still expected in the multibulk being received, and the offset of the next one.
    multibulk: Option<(usize, usize)>,
    /// Where the arguments received so far lie.
    ranges: ArgRanges,
}

impl RequestDecoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: Limits) -> RequestDecoder {
        RequestDecoder { limits, unauthenticated: false, multibulk: None, ranges: ArgRanges::new() }
    }

    /// Whether the client must still log in: its requests are then held to
    /// [`UNAUTHENTICATED_COUNT`] arguments of [`UNAUTHENTICATED_BULK`] bytes at most.
    #[inline]
    pub fn set_unauthenticated(&mut self, unauthenticated: bool) {
        self.unauthenticated = unauthenticated;
    }

    /// Takes the next complete request off the front of `buf`.
    ///
    /// Returns `Ok(None)` when more bytes are needed. Empty requests (blank inline lines, `*0`)
    /// are skipped, as Redis skips them.
    ///
    /// # Errors
    /// A [`ProtocolError`] when the bytes are not a valid request or break a limit; the connection
    /// must then be answered and closed, since the stream cannot be resynchronised.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, ProtocolError> {
        loop {
            if buf.is_empty() {
                return Ok(None);
            }
            if self.multibulk.is_none() && buf[0] != b'*' {
                match self.decode_inline(buf)? {
                    Some(Some(request)) => return Ok(Some(request)),
                    Some(None) => continue,
                    None => return Ok(None),
                }
            }
            let (mut left, mut pos) = match self.multibulk {
                Some(state) => state,
                // A multibulk starts here: read in one pass when it is the usual kind.
                None if let Some(request) = self.whole_request(buf) => return Ok(Some(request)),
                None => match self.multibulk_header(buf)? {
                    Header::Args(count, next) => (count, next),
                    Header::Skipped => continue,
                    Header::Incomplete => return Ok(None),
                },
            };
            while left > 0 {
                let Some((start, end)) = self.bulk_argument(buf, pos)? else {
                    self.multibulk = Some((left, pos));
                    return Ok(None);
                };
                self.ranges.push((start, end - 2));
                pos = end;
                left -= 1;
            }
            self.multibulk = None;
            let args = std::mem::take(&mut self.ranges);
            return Ok(Some(Request { bytes: buf.split_to(pos).freeze(), args }));
        }
    }

    /// The usual request in one pass: a multibulk of at most [`INLINE_ARGS`] arguments with short
    /// headers ([`short_header`]), all of it in `buf` and within the limits, taken off its front.
    /// `None` for anything else, which [`RequestDecoder::decode`]'s general path then reads,
    /// resuming, skipping or refusing as the bytes require: this one only spares the common case
    /// that path's bookkeeping (~170 instructions of a three-argument request, bench/RESULTS.md).
    #[inline]
    fn whole_request(&self, buf: &mut BytesMut) -> Option<Request> {
        let (count, mut pos) = short_header(buf, 0)?;
        if count == 0 || count > INLINE_ARGS || count > self.limits.max_array_len {
            return None;
        }
        // Filled in place and handed over whole: a push per argument checked for room each time.
        let mut ranges = [(0, 0); INLINE_ARGS];
        for range in ranges.iter_mut().take(count) {
            if *buf.get(pos)? != b'$' {
                return None;
            }
            let (len, start) = short_header(buf, pos)?;
            // At most nine digits: the sum cannot overflow.
            let end = start + len + 2;
            if end > self.limits.max_request_bytes
                || (len > UNAUTHENTICATED_BULK && self.unauthenticated)
                || buf.get(end - 2..end)? != b"\r\n"
            {
                return None;
            }
            *range = (start, end - 2);
            pos = end;
        }
        let args = ArgRanges::from_buf_and_len(ranges, count);
        Some(Request { bytes: buf.split_to(pos).freeze(), args })
    }

    /// The `*<count>` line at the front of `buf`. A header that counts no arguments (`*0`, `*-1`,
    /// `*-10`: any count ≤ 0) is skipped, as Redis skips it.
    fn multibulk_header(&mut self, buf: &mut BytesMut) -> Result<Header, ProtocolError> {
        let (count, next) = match short_header(buf, 0) {
            Some(header) => header,
            None => {
                let Some(line) = read_line(buf, 0).map_err(|e| header_error(e, true))? else {
                    return Ok(Header::Incomplete);
                };
                let count = &buf[1..line.end];
                match parse_len(count) {
                    Ok(Some(n)) => (n, line.next),
                    Ok(None) => (0, line.next),
                    Err(_) if count.first() == Some(&b'-') && parse_usize(&count[1..]).is_some() => (0, line.next),
                    Err(_) => return Err(ProtocolError::InvalidMultibulkLength),
                }
            }
        };
        if count > UNAUTHENTICATED_COUNT && self.unauthenticated {
            return Err(ProtocolError::UnauthenticatedCount);
        }
        if count == 0 {
            let _ = buf.split_to(next);
            return Ok(Header::Skipped);
        }
        if count > self.limits.max_array_len {
            return Err(ProtocolError::InvalidMultibulkLength);
        }
        // Room beyond the inline arguments for small requests only: a huge count must not
        // reserve memory before its arguments have arrived.
        self.ranges.clear();
        if count > INLINE_ARGS {
            self.ranges.reserve(count.min(16));
        }
        Ok(Header::Args(count, next))
    }

    /// The bulk argument `$<len>\r\n<data>\r\n` at `pos`: where its data starts and where the
    /// argument ends (after its CRLF); `None` until all of it is in `buf`.
    fn bulk_argument(&self, buf: &[u8], pos: usize) -> Result<Option<(usize, usize)>, ProtocolError> {
        let Some(&first) = buf.get(pos) else {
            return Ok(None);
        };
        if first != b'$' {
            return Err(ProtocolError::ExpectedBulk(first));
        }
        let (len, start) = match short_header(buf, pos) {
            Some(header) => header,
            None => {
                let Some(line) = read_line(buf, pos).map_err(|e| header_error(e, false))? else {
                    return Ok(None);
                };
                match parse_len(&buf[pos + 1..line.end]) {
                    Ok(Some(len)) => (len, line.next),
                    _ => return Err(ProtocolError::InvalidBulkLength),
                }
            }
        };
        if len > self.limits.max_request_bytes {
            return Err(ProtocolError::InvalidBulkLength);
        }
        if len > UNAUTHENTICATED_BULK && self.unauthenticated {
            return Err(ProtocolError::UnauthenticatedBulk);
        }
        let end = start + len + 2;
        // Refuse before buffering: the header already tells how big the request will be.
        if end > self.limits.max_request_bytes {
            return Err(ProtocolError::RequestTooBig(self.limits.max_request_bytes));
        }
        if buf.len() < end {
            return Ok(None);
        }
        if &buf[end - 2..end] != b"\r\n" {
            return Err(ProtocolError::MissingCrlf);
        }
        Ok(Some((start, end)))
    }

    /// Decodes one inline command line. `Some(None)`: a blank line was skipped.
    ///
    /// As Redis' `processInlineBuffer`: a line whose end is in the buffer is taken whatever its
    /// length; only a buffer of more than [`MAX_LINE`] bytes with no line end yet is refused.
    fn decode_inline(&mut self, buf: &mut BytesMut) -> Result<Option<Option<Request>>, ProtocolError> {
        let Some(lf) = buf.iter().position(|&b| b == b'\n') else {
            return if buf.len() > MAX_LINE { Err(ProtocolError::InlineTooBig) } else { Ok(None) };
        };
        let line = buf.split_to(lf + 1);
        let text = line[..lf].strip_suffix(b"\r").unwrap_or(&line[..lf]);
        let args = split_inline_args(text).ok_or(ProtocolError::UnbalancedQuotes)?;
        if args.is_empty() {
            return Ok(Some(None));
        }
        if args.len() > self.limits.max_array_len {
            return Err(ProtocolError::InvalidMultibulkLength);
        }
        Ok(Some(Some(Request::from_args(&args))))
    }
}

/// What the `*<count>` line at the front of the buffer says.
enum Header {
    /// `count` arguments follow, from offset `next` on.
    Args(usize, usize),
    /// A header that counts no arguments, dropped.
    Skipped,
    /// The line has not all arrived yet.
    Incomplete,
}

fn header_error(err: ScanError, count: bool) -> ProtocolError {
    match (err, count) {
        (ScanError::LineTooLong, true) => ProtocolError::CountTooBig,
        (ScanError::LineTooLong, false) => ProtocolError::BulkCountTooBig,
        (_, true) => ProtocolError::InvalidMultibulkLength,
        (_, false) => ProtocolError::InvalidBulkLength,
    }
}

/// Splits an inline command line into arguments with the quoting rules of Redis' `sdssplitargs`:
/// double quotes with `\n \r \t \b \a \\ \"` and `\xHH` escapes, single quotes with `\'`, and a
/// closing quote that must be followed by a space or the end. `None` for unbalanced quotes.
///
/// Longer than ~80 lines on purpose: one state machine ported from `sdssplitargs` state for state,
/// so that it can be checked against Redis' source side by side.
pub fn split_inline_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    // Redis splits inline commands as a C string: a NUL byte ends the line.
    let line = line.split(|&b| b == 0).next().unwrap_or(&[]);
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        // Skipped like C's isspace(); a token ends only at space, tab, CR or LF, as in sdssplitargs.
        while i < line.len() && (line[i].is_ascii_whitespace() || line[i] == 0x0b) {
            i += 1;
        }
        if i == line.len() {
            return Some(args);
        }
        let mut arg = Vec::new();
        let mut quote: Option<u8> = None;
        loop {
            let Some(&c) = line.get(i) else {
                if quote.is_some() {
                    return None;
                }
                break;
            };
            match quote {
                Some(b'"') => {
                    if c == b'\\'
                        && i + 3 < line.len()
                        && line[i + 1] == b'x'
                        && is_hex(line[i + 2])
                        && is_hex(line[i + 3])
                    {
                        arg.push(hex(line[i + 2]) * 16 + hex(line[i + 3]));
                        i += 4;
                        continue;
                    }
                    if c == b'\\' && i + 1 < line.len() {
                        arg.push(match line[i + 1] {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 8,
                            b'a' => 7,
                            other => other,
                        });
                        i += 2;
                        continue;
                    }
                    if c == b'"' {
                        // A closing quote must be followed by a space or the end of the line.
                        if line.get(i + 1).is_some_and(|b| !b.is_ascii_whitespace()) {
                            return None;
                        }
                        i += 1;
                        break;
                    }
                    arg.push(c);
                }
                Some(_) => {
                    if c == b'\\' && line.get(i + 1) == Some(&b'\'') {
                        arg.push(b'\'');
                        i += 2;
                        continue;
                    }
                    if c == b'\'' {
                        if line.get(i + 1).is_some_and(|b| !b.is_ascii_whitespace()) {
                            return None;
                        }
                        i += 1;
                        break;
                    }
                    arg.push(c);
                }
                None => match c {
                    b' ' | b'\t' | b'\r' | b'\n' => break,
                    b'"' | b'\'' => quote = Some(c),
                    _ => arg.push(c),
                },
            }
            i += 1;
        }
        args.push(arg);
    }
}

fn is_hex(b: u8) -> bool {
    b.is_ascii_hexdigit()
}

fn hex(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

#[cfg(test)]
mod tests;
