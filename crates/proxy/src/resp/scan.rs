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
    /// Where the bulk payload being waited for ends (its CRLF included), when `pos` is at its
    /// header and the payload is not all there yet.
    bulk_end: Option<usize>,
    /// Bytes of a bulk payload (CRLF included) still to come after its header and first bytes
    /// were taken away with [`FrameScanner::take_settled`].
    bulk_left: usize,
}

impl FrameScanner {
    /// A scanner at the start of a frame.
    pub fn new() -> FrameScanner {
        FrameScanner::default()
    }

    /// Whether the scanner is in the middle of a frame (some bytes of it were seen).
    pub fn in_frame(&self) -> bool {
        self.pos > 0 || self.bulk_left > 0
    }

    /// How many bytes at the start of `buf` surely belong to the frame being scanned (headers and
    /// elements already scanned, and the part of a bulk payload that has arrived), after a
    /// [`FrameScanner::scan`] that returned `Ok(None)`. A caller may pass them on before the frame
    /// is complete, then must call [`FrameScanner::take_settled`].
    pub fn settled(&self, buf: &[u8]) -> usize {
        match self.bulk_end {
            // The CRLF after the payload is checked when it arrives: hold its two bytes back.
            Some(end) => buf.len().min(end.saturating_sub(2)).max(self.pos),
            None if self.bulk_left > 0 => buf.len().min(self.bulk_left.saturating_sub(2)),
            None => self.pos.min(buf.len()),
        }
    }

    /// The caller removed the first `n` bytes of the buffer, `n` at most [`FrameScanner::settled`]:
    /// scanning goes on in what follows.
    pub fn take_settled(&mut self, n: usize) {
        if let Some(end) = self.bulk_end.take().filter(|_| n > self.pos) {
            // Inside a bulk payload: what is left of it is skipped next time.
            self.bulk_left = end - n;
            self.pos = 0;
        } else if self.bulk_left > 0 {
            self.bulk_left -= n;
        } else {
            self.pos -= n.min(self.pos);
            self.bulk_end = self.bulk_end.map(|end| end - n);
        }
    }

    /// Continues scanning `buf`, which starts at the frame's first byte.
    ///
    /// Returns `Ok(Some(len))` when the first `len` bytes of `buf` are one complete frame (and resets
    /// the scanner for the next one), `Ok(None)` when more bytes are needed.
    ///
    /// # Errors
    /// A [`ScanError`] when the bytes are not RESP; the stream cannot be resynchronised after that.
    ///
    /// Longer than ~80 lines on purpose: the scanner's one hot loop, a state machine over RESP's
    /// type bytes kept in one function so the compiler keeps its state in registers.
    pub fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, ScanError> {
        // The rest of a bulk payload whose start was taken away: it ends one element.
        if self.bulk_left > 0 {
            if buf.len() < self.bulk_left {
                return Ok(None);
            }
            if &buf[self.bulk_left - 2..self.bulk_left] != b"\r\n" {
                return Err(ScanError::MissingCrlf);
            }
            self.pos = self.bulk_left;
            self.bulk_left = 0;
            if let Some(len) = self.element_done() {
                return Ok(Some(len));
            }
        }
        if let Some(whole) = self.whole_bulk(buf) {
            return whole.map(Some);
        }
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
                                self.bulk_end = Some(end);
                                return Ok(None);
                            }
                            self.bulk_end = None;
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
            if let Some(len) = self.element_done() {
                return Ok(Some(len));
            }
        }
    }

    /// A whole bulk string at the start of a frame, the usual reply to a read: its short header
    /// read without the line search, and no state to keep (~50 instructions of ~115,
    /// bench/RESULTS.md); `Some` with its length, or the error the loop would find. `None` for
    /// anything else, or a string not all here yet: [`FrameScanner::scan`]'s loop reads those.
    #[inline(always)]
    fn whole_bulk(&mut self, buf: &[u8]) -> Option<Result<usize, ScanError>> {
        if self.pos != 0 || !self.open.is_empty() || buf.first() != Some(&b'$') {
            return None;
        }
        let (len, start) = short_header(buf, 0)?;
        let crlf = buf.get(start + len..start + len + 2)?;
        if crlf != b"\r\n" {
            return Some(Err(ScanError::MissingCrlf));
        }
        // It may have been seen incomplete before: nothing of it is pending now.
        self.bulk_end = None;
        Some(Ok(start + len + 2))
    }

    /// One element finished: it completes every aggregate whose last element it was. Returns the
    /// frame's length when that completes the frame (and resets the scanner).
    fn element_done(&mut self) -> Option<usize> {
        loop {
            match self.open.last_mut() {
                None => {
                    let len = self.pos;
                    self.pos = 0;
                    return Some(len);
                }
                Some(left) => {
                    *left -= 1;
                    if *left > 0 {
                        return None;
                    }
                    self.open.pop();
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

/// The header line of the frame at `at` in a complete reply: its type byte, the count or length
/// the line carries, and where what follows the line starts. `None` when there is no complete
/// line there or it carries no non-negative number (a null, a simple string).
pub(crate) fn header(frame: &[u8], at: usize) -> Option<(u8, usize, usize)> {
    let kind = *frame.get(at)?;
    let line = read_line(frame, at).ok()??;
    Some((kind, parse_usize(frame.get(at + 1..line.end)?)?, line.next))
}

/// The value of the integer reply (`:n\r\n`) at `at` in a complete reply, and where it ends.
pub(crate) fn integer_at(frame: &[u8], at: usize) -> Option<(i64, usize)> {
    if frame.get(at) != Some(&b':') {
        return None;
    }
    let line = read_line(frame, at).ok()??;
    let value = std::str::from_utf8(frame.get(at + 1..line.end)?).ok()?.parse().ok()?;
    Some((value, line.next))
}

/// The value of `reply` when it is one whole integer reply (`:n\r\n`).
pub(crate) fn integer(reply: &[u8]) -> Option<i64> {
    integer_at(reply, 0).filter(|(_, end)| *end == reply.len()).map(|(value, _)| value)
}

/// The type byte and payload of the length-prefixed string (bulk `$`, blob error `!`, verbatim
/// `=`) at `at` in a complete reply; `None` for a null or anything without a length.
pub(crate) fn string_at(frame: &[u8], at: usize) -> Option<(u8, &[u8])> {
    let (kind, len, start) = header(frame, at)?;
    Some((kind, frame.get(start..start.checked_add(len)?)?))
}

/// The usual header line at `at`: a type byte, one to nine digits and CRLF, all in `buf`; its
/// number and where the line ends. `None` for anything else (more digits, a sign, a line still
/// arriving, bad bytes), which the general path ([`read_line`], [`parse_len`]) then reads and
/// judges: this one only spares it the search for the line's end, about half of decoding a
/// short request (and of scanning a bulk string reply). Always inlined: as a call it cost ~10
/// instructions of its ~30 (three or four headers per request).
#[inline(always)]
pub(crate) fn short_header(buf: &[u8], at: usize) -> Option<(usize, usize)> {
    if let Some(header) = tiny_header(buf, at) {
        return Some(header);
    }
    let (mut value, mut end) = (0, at + 1);
    while end <= at + 9 {
        let &digit = buf.get(end)?;
        if !digit.is_ascii_digit() {
            break;
        }
        value = value * 10 + usize::from(digit - b'0');
        end += 1;
    }
    if end == at + 1 || buf.get(end..end + 2)? != b"\r\n" {
        return None;
    }
    Some((value, end + 2))
}

/// [`short_header`] of one or two digits (`*2`, `$3`, `$16`, `$64`: most headers of short
/// requests and replies), read from one word load when eight bytes are there: ~12 instructions
/// where the byte loop takes ~35 (bench/RESULTS.md). `None` for anything else.
#[inline(always)]
fn tiny_header(buf: &[u8], at: usize) -> Option<(usize, usize)> {
    const CRLF: u16 = u16::from_le_bytes(*b"\r\n");
    let word = u64::from_le_bytes(buf.get(at..at + 8)?.try_into().ok()?);
    let byte = |i: u32| (word >> (8 * i)) as u8;
    let first = byte(1).wrapping_sub(b'0');
    if first > 9 {
        return None;
    }
    if (word >> 16) as u16 == CRLF {
        return Some((usize::from(first), at + 4));
    }
    let second = byte(2).wrapping_sub(b'0');
    if second > 9 || (word >> 24) as u16 != CRLF {
        return None;
    }
    Some((usize::from(first) * 10 + usize::from(second), at + 5))
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

    #[test]
    fn short_headers_read_from_a_word_match_the_byte_loop() {
        // Every one- to three-digit header, with and without room for a word after it.
        for text in ["$0\r\n", "$7\r\n", "*2\r\n", "$16\r\n", "$99\r\n", "$05\r\n", "$123\r\n"] {
            for tail in ["", "abcdefgh"] {
                let buf = format!("{text}{tail}");
                let digits = &text[1..text.len() - 2];
                let want = Some((digits.parse().expect("digits"), text.len()));
                assert_eq!(short_header(buf.as_bytes(), 0), want, "{buf:?}");
                assert_eq!(short_header(format!("xx{buf}").as_bytes(), 2), want.map(|(n, end)| (n, end + 2)));
            }
        }
        for bad in
            ["$\r\nabcdefgh", "$1\rxabcdefgh", "$1x\r\nabcdefg", "$-1\r\nabcdefg", "$1\n\rabcdefgh", "$12\r\r\nabcdef"]
        {
            assert_eq!(short_header(bad.as_bytes(), 0), None, "{bad:?}");
        }
    }

    #[test]
    fn string_at_reads_the_payload_of_a_length_prefixed_string_only() {
        assert_eq!(string_at(b"*2\r\n$3\r\nfoo\r\n:1\r\n", 4), Some((b'$', &b"foo"[..])));
        assert_eq!(string_at(b"!9\r\nERR oops!\r\n", 0), Some((b'!', &b"ERR oops!"[..])));
        assert_eq!(string_at(b"$-1\r\n", 0), None, "a null has no payload");
        assert_eq!(string_at(b"+OK\r\n", 0), None);
        assert_eq!(string_at(b"$10\r\nshort\r\n", 0), None, "cut short");
    }

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
    fn padded_and_null_bulk_headers_read_alike_whole_and_byte_by_byte() {
        // Zero-padded lengths and a null inside one frame.
        let mut frame = b"*4\r\n$5\r\nhello\r\n$000000003\r\nabc\r\n$0000000002\r\nxy\r\n$-1\r\n".to_vec();
        frame.extend_from_slice(b":1\r\n");
        let len = frame.len() - 4;
        assert_eq!(whole(&frame), Some(len));
        let mut scanner = FrameScanner::new();
        for end in 0..len {
            assert_eq!(scanner.scan(&frame[..end]).expect("valid"), None, "prefix {end}");
        }
        assert_eq!(scanner.scan(&frame).expect("valid"), Some(len));
        assert_eq!(FrameScanner::new().scan(b"$3\r\nabcd\r\n"), Err(ScanError::MissingCrlf));
        assert_eq!(FrameScanner::new().scan(b"$3x\r\nabc\r\n"), Err(ScanError::InvalidLength));
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

    /// Feeds `frame` in pieces of `step` bytes, taking the settled prefix after every piece, as a
    /// connection streaming a large reply does; returns what was taken, the final piece included.
    fn stream(frame: &[u8], step: usize) -> Vec<u8> {
        let mut scanner = FrameScanner::new();
        let mut buf = Vec::new();
        let mut taken = Vec::new();
        for piece in frame.chunks(step) {
            buf.extend_from_slice(piece);
            match scanner.scan(&buf).expect("valid RESP") {
                Some(len) => {
                    assert_eq!(len, buf.len(), "the frame ends with the last piece");
                    taken.extend_from_slice(&buf);
                    buf.clear();
                }
                None => {
                    let settled = scanner.settled(&buf);
                    taken.extend(buf.drain(..settled));
                    scanner.take_settled(settled);
                }
            }
        }
        assert!(buf.is_empty() && !scanner.in_frame(), "the frame completed");
        taken
    }

    #[test]
    fn a_frame_taken_in_settled_pieces_is_passed_on_whole_and_in_order() {
        let big = vec![b'x'; 1000];
        let mut bulk = format!("${}\r\n", big.len()).into_bytes();
        bulk.extend_from_slice(&big);
        bulk.extend_from_slice(b"\r\n");
        let mut array = b"*3\r\n:1\r\n".to_vec();
        array.extend_from_slice(&bulk);
        array.extend_from_slice(b"*2\r\n$3\r\nabc\r\n$-1\r\n");
        let map = b"%2\r\n+a\r\n$5\r\nhello\r\n+b\r\n*1\r\n$2\r\nhi\r\n".to_vec();
        for frame in [&bulk, &array, &map] {
            for step in [1, 2, 3, 7, 64, 999, 1000, 5000] {
                assert_eq!(stream(frame, step), *frame, "step {step}");
            }
        }
    }

    #[test]
    fn a_bulk_seen_incomplete_then_whole_leaves_nothing_pending() {
        // The usual small reply split over two reads, without its start taken in between.
        let mut scanner = FrameScanner::new();
        assert_eq!(scanner.scan(b"$3\r\nfo"), Ok(None));
        assert_eq!(scanner.scan(b"$3\r\nfoo\r\n+OK\r\n"), Ok(Some(9)));
        assert!(!scanner.in_frame());
        assert_eq!(scanner.settled(b"+O"), 0);
        assert_eq!(scanner.scan(b"+OK\r\n"), Ok(Some(5)));
    }

    #[test]
    fn a_taken_bulk_without_its_crlf_is_still_an_error() {
        let mut scanner = FrameScanner::new();
        let mut buf = b"$4\r\nab".to_vec();
        assert_eq!(scanner.scan(&buf), Ok(None));
        let settled = scanner.settled(&buf);
        buf.drain(..settled);
        scanner.take_settled(settled);
        buf.extend_from_slice(b"cdXY");
        assert_eq!(scanner.scan(&buf), Err(ScanError::MissingCrlf));
    }

    #[test]
    fn integer_replies_are_read_whole_or_in_place() {
        assert_eq!(integer(b":42\r\n"), Some(42));
        assert_eq!(integer(b":-7\r\n"), Some(-7));
        assert_eq!(integer(b":42\r\n:1\r\n"), None, "more than one reply");
        assert_eq!(integer(b"$2\r\n42\r\n"), None, "a bulk string");
        assert_eq!(integer(b":4x\r\n"), None);
        let pair = b"*2\r\n:1\r\n:0\r\n";
        assert_eq!(integer_at(pair, 4), Some((1, 8)));
        assert_eq!(integer_at(pair, 8), Some((0, pair.len())));
        assert_eq!(integer_at(pair, 0), None, "an array header");
    }
}
