//! Resumable frame-boundary scanner for RESP2 and RESP3.
//!
//! Replies that only pass through the proxy are never decoded: the proxy needs to know where one
//! reply ends so it can hand exactly those bytes to the client that asked. `redis-protocol` decodes
//! whole frames from the start of the buffer each time it is called, which costs O(n²) on a large
//! reply that arrives in many reads (`KEYS *`, `HGETALL` of a big hash); this scanner keeps its place
//! between reads instead, so every byte is looked at once and large bulk payloads are skipped, not read.

use thiserror::Error;

/// Longest header line (type byte, length or simple value, CRLF) accepted before it must be complete.
///
/// Redis caps inline and multibulk header lines at 64 KiB (`PROTO_INLINE_MAX_SIZE`).
pub const MAX_LINE: usize = 64 * 1024;

/// Why a byte stream is not valid RESP.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ScanError {
    /// A byte that starts no RESP type where a frame must start.
    #[error("unexpected byte '{}' where a RESP frame starts", char::from(*.0))]
    UnknownType(u8),
    /// A length or count that is not a number, is negative (other than the null `-1`) or too big.
    #[error("invalid length")]
    InvalidLength,
    /// A header line longer than [`MAX_LINE`] without its CRLF.
    #[error("header line too long")]
    LineTooLong,
    /// A bulk payload not followed by CRLF.
    #[error("bulk payload not terminated by CRLF")]
    MissingCrlf,
    /// RESP3 streamed strings and aggregates (`$?`, `*?`): Redis never sends them.
    #[error("streamed RESP3 frames are not supported")]
    Streamed,
}

/// Finds where complete RESP frames end in a growing buffer.
///
/// Feed it the same buffer (with more bytes appended) until [`FrameScanner::scan`] returns the length
/// of the first complete frame; the caller then removes those bytes and the scanner starts afresh.
#[derive(Debug, Default, Clone)]
pub struct FrameScanner {
    /// Offset of the next element header to read.
    pos: usize,
    /// Elements still to come in each aggregate that is open, innermost last.
    open: Vec<u64>,
}

impl FrameScanner {
    /// A scanner at the start of a frame.
    pub fn new() -> FrameScanner {
        FrameScanner::default()
    }

    /// Whether the scanner is in the middle of a frame (some bytes of it were seen).
    pub fn in_frame(&self) -> bool {
        self.pos > 0
    }

    /// Continues scanning `buf`, which starts at the frame's first byte.
    ///
    /// Returns `Ok(Some(len))` when the first `len` bytes of `buf` are one complete frame (and resets
    /// the scanner for the next one), `Ok(None)` when more bytes are needed.
    ///
    /// # Errors
    /// A [`ScanError`] when the bytes are not RESP; the stream cannot be resynchronised after that.
    pub fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, ScanError> {
        loop {
            let Some(header) = read_line(buf, self.pos)? else {
                return Ok(None);
            };
            // An empty line has no type byte.
            if header.end <= self.pos {
                return Err(ScanError::UnknownType(buf[self.pos]));
            }
            let kind = buf[self.pos];
            let body = &buf[self.pos + 1..header.end];
            match kind {
                b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => self.pos = header.next,
                b'$' | b'!' | b'=' => {
                    if body.first() == Some(&b'?') {
                        return Err(ScanError::Streamed);
                    }
                    let len = parse_len(body)?;
                    match len {
                        None if kind == b'$' => self.pos = header.next,
                        None => return Err(ScanError::InvalidLength),
                        Some(len) => {
                            let end = header
                                .next
                                .checked_add(len)
                                .and_then(|e| e.checked_add(2))
                                .ok_or(ScanError::InvalidLength)?;
                            if buf.len() < end {
                                // Stay on this header: the payload is skipped, not scanned, next time.
                                return Ok(None);
                            }
                            if &buf[end - 2..end] != b"\r\n" {
                                return Err(ScanError::MissingCrlf);
                            }
                            self.pos = end;
                        }
                    }
                }
                b'*' | b'~' | b'>' | b'%' | b'|' => {
                    if body.first() == Some(&b'?') {
                        return Err(ScanError::Streamed);
                    }
                    self.pos = header.next;
                    let count = match parse_len(body)? {
                        None if kind == b'*' => 0,
                        None => return Err(ScanError::InvalidLength),
                        Some(n) => n as u64,
                    };
                    let elements = match kind {
                        b'%' => count * 2,
                        // An attribute map is followed by the value it describes: one more element.
                        b'|' => count * 2 + 1,
                        _ => count,
                    };
                    if elements > 0 {
                        self.open.push(elements);
                        continue;
                    }
                }
                other => return Err(ScanError::UnknownType(other)),
            }
            // One element finished: it completes every aggregate whose last element it was.
            loop {
                match self.open.last_mut() {
                    None => {
                        let len = self.pos;
                        self.pos = 0;
                        return Ok(Some(len));
                    }
                    Some(left) => {
                        *left -= 1;
                        if *left > 0 {
                            break;
                        }
                        self.open.pop();
                    }
                }
            }
        }
    }
}

/// Where a header line ends: `end` is the offset of its CR, `next` the offset after its LF.
pub(crate) struct Line {
    pub(crate) end: usize,
    pub(crate) next: usize,
}

/// Finds the CRLF-terminated line that starts at `start`.
pub(crate) fn read_line(buf: &[u8], start: usize) -> Result<Option<Line>, ScanError> {
    let window = &buf[start.min(buf.len())..];
    let limit = window.len().min(MAX_LINE);
    match window[..limit].iter().position(|&b| b == b'\n') {
        Some(0) => Err(ScanError::MissingCrlf),
        Some(lf) if window[lf - 1] == b'\r' => Ok(Some(Line { end: start + lf - 1, next: start + lf + 1 })),
        Some(_) => Err(ScanError::MissingCrlf),
        None if window.len() >= MAX_LINE => Err(ScanError::LineTooLong),
        None => Ok(None),
    }
}

/// Parses a RESP length: `Some(n)` for n ≥ 0, `None` for the null length `-1`.
pub(crate) fn parse_len(digits: &[u8]) -> Result<Option<usize>, ScanError> {
    if digits == b"-1" {
        return Ok(None);
    }
    parse_usize(digits).map(Some).ok_or(ScanError::InvalidLength)
}

/// Parses a non-negative decimal without sign or spaces, as Redis' `string2ll` accepts lengths.
pub(crate) fn parse_usize(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    digits.iter().try_fold(0usize, |n, &d| d.is_ascii_digit().then(|| n * 10 + usize::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(frame: &[u8]) -> Option<usize> {
        FrameScanner::new().scan(frame).expect("valid RESP")
    }

    #[test]
    fn simple_frames_end_after_their_crlf() {
        for frame in [&b"+OK\r\n"[..], b"-ERR x\r\n", b":12\r\n", b"_\r\n", b",1.5\r\n", b"#t\r\n", b"(123\r\n"] {
            assert_eq!(whole(frame), Some(frame.len()));
        }
    }

    #[test]
    fn bulk_and_null_bulk() {
        assert_eq!(whole(b"$3\r\nfoo\r\n+next\r\n"), Some(9));
        assert_eq!(whole(b"$-1\r\n"), Some(5));
        assert_eq!(whole(b"$0\r\n\r\n"), Some(6));
        assert_eq!(whole(b"=7\r\ntxt:abc\r\n"), Some(13));
    }

    #[test]
    fn nested_aggregates() {
        let frame = b"*2\r\n*2\r\n:1\r\n$1\r\na\r\n%1\r\n+k\r\n*0\r\n";
        assert_eq!(whole(frame), Some(frame.len()));
        assert_eq!(whole(b"*-1\r\n"), Some(5));
        assert_eq!(whole(b"*0\r\n"), Some(4));
        let push = b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n";
        assert_eq!(whole(push), Some(push.len()));
    }

    #[test]
    fn attribute_counts_the_value_it_describes() {
        let frame = b"|1\r\n+key\r\n+val\r\n:42\r\n";
        assert_eq!(whole(frame), Some(frame.len()));
    }

    #[test]
    fn resumes_across_partial_reads_byte_by_byte() {
        let frame = b"*3\r\n$3\r\nfoo\r\n*1\r\n:7\r\n$-1\r\n";
        let mut scanner = FrameScanner::new();
        for end in 0..frame.len() {
            assert_eq!(scanner.scan(&frame[..end]).expect("valid"), None, "prefix {end}");
        }
        assert_eq!(scanner.scan(frame).expect("valid"), Some(frame.len()));
        assert!(!scanner.in_frame());
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        assert_eq!(FrameScanner::new().scan(b"?x\r\n"), Err(ScanError::UnknownType(b'?')));
        assert_eq!(FrameScanner::new().scan(b"$abc\r\n"), Err(ScanError::InvalidLength));
        assert_eq!(FrameScanner::new().scan(b"$-5\r\n"), Err(ScanError::InvalidLength));
        assert_eq!(FrameScanner::new().scan(b"$1\r\nab\r\n"), Err(ScanError::MissingCrlf));
        assert_eq!(FrameScanner::new().scan(b"+ok\n"), Err(ScanError::MissingCrlf));
        assert_eq!(FrameScanner::new().scan(b"$?\r\n"), Err(ScanError::Streamed));
        let long = vec![b'+'; MAX_LINE + 1];
        assert_eq!(FrameScanner::new().scan(&long), Err(ScanError::LineTooLong));
        let huge = b"$99999999999999999999\r\n";
        assert_eq!(FrameScanner::new().scan(huge), Err(ScanError::InvalidLength));
    }
}
