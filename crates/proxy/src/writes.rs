//! Write buffers, and writing them out: one write of a buffer's bytes, then the buffer advanced
//! past what went.
//!
//! tokio's `write_buf` prepares a vectored write of the buffer's chunks: it fills 64 `IoSlice`s on
//! the stack on every call (~130 instructions per write under callgrind; bench/RESULTS.md), though
//! the buffers here are one contiguous chunk each. Client and node connections write through this
//! instead, once or more per unpipelined request.
//!
//! [`WriteBuffer`] is what clients' replies and nodes' requests wait in. A `BytesMut` did this
//! before, and gave its room back only through `reserve`: once the buffer had been written out,
//! the next bytes that did not fit in what was left behind the written ones called
//! `BytesMut::reserve_inner` to move back to the start (measured: ~32 instructions per
//! unpipelined request, for half the replies). A `WriteBuffer` starts over the moment its last
//! byte is written, in the same call that counts it written.

use std::io;
use std::task::{Context, Poll, ready};

use crate::socket::Socket;

/// Bytes waiting to be written to a connection: appended at the end, written from the front.
#[derive(Default)]
pub struct WriteBuffer {
    bytes: Vec<u8>,
    /// How many of `bytes` are written; always fewer than its length unless both are 0.
    sent: usize,
}

impl WriteBuffer {
    pub fn with_capacity(capacity: usize) -> WriteBuffer {
        WriteBuffer { bytes: Vec::with_capacity(capacity), sent: 0 }
    }

    /// Writes the bytes not yet written to `writer` (one write: as many as it takes) and moves
    /// past those written, whose count it returns.
    #[inline]
    pub fn poll_write_to<W: Socket>(&mut self, writer: &mut W, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let written = ready!(writer.poll_write_from(cx, &self[..]))?;
        self.advance(written);
        Poll::Ready(Ok(written))
    }

    /// `count` more bytes were written; once all are, the buffer starts over at its beginning.
    #[inline]
    fn advance(&mut self, count: usize) {
        assert!(count <= self.len(), "advanced {count} bytes past the {} buffered", self.len());
        self.sent += count;
        if self.sent == self.bytes.len() {
            self.bytes.clear();
            self.sent = 0;
        }
    }

    /// Bytes not yet written.
    #[inline]
    pub fn len(&self) -> usize {
        self.bytes.len() - self.sent
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The room the buffer holds (what `CLIENT LIST` shows as `obl`'s buffer, and what an idle
    /// client keeps).
    #[inline]
    pub fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    /// Appends `data` after what is not written yet. A buffer part-way written first moves its
    /// unwritten rest to the start when that makes the room and the rest is no longer than what
    /// was written (so each byte is moved at most about once, as `BytesMut::reserve` does);
    /// otherwise it grows.
    #[inline]
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        let spare = self.bytes.capacity() - self.bytes.len();
        if spare < data.len() && self.sent > 0 && self.sent >= self.len() && spare + self.sent >= data.len() {
            self.bytes.drain(..self.sent);
            self.sent = 0;
        }
        self.bytes.extend_from_slice(data);
    }

    /// Gives the room back when nothing waits to be written and it is over `keep` bytes.
    #[inline]
    pub fn shrink_when_empty(&mut self, keep: usize) {
        if self.bytes.is_empty() && self.bytes.capacity() > keep {
            self.bytes = Vec::new();
        }
    }
}

impl std::ops::Deref for WriteBuffer {
    type Target = [u8];

    /// The bytes not yet written.
    fn deref(&self) -> &[u8] {
        &self.bytes[self.sent..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_over_once_written_and_keeps_its_room() {
        let mut buffer = WriteBuffer::default();
        buffer.extend_from_slice(b"+OK\r\n");
        buffer.extend_from_slice(b":1\r\n");
        assert_eq!(&buffer[..], b"+OK\r\n:1\r\n");
        buffer.advance(3);
        assert_eq!((buffer.len(), &buffer[..]), (6, &b"\r\n:1\r\n"[..]));
        let room = buffer.capacity();
        buffer.advance(6);
        assert!(buffer.is_empty() && buffer[..].is_empty() && buffer.capacity() == room);
        buffer.extend_from_slice(b"+PONG\r\n");
        assert_eq!(&buffer[..], b"+PONG\r\n");
    }

    #[test]
    fn a_partly_written_buffer_moves_its_rest_forward_only_if_no_longer_than_what_was_written() {
        // (bytes first, of them written, appended, whether the rest moved rather than grew)
        for (first, written, appended, moved) in [(64, 60, 50, true), (1000, 10, 20, false)] {
            let mut buffer = WriteBuffer::default();
            buffer.extend_from_slice(&vec![b'a'; first]);
            let room = buffer.capacity();
            buffer.advance(written);
            buffer.extend_from_slice(&vec![b'b'; appended]);
            assert_eq!((buffer.sent == 0, buffer.capacity() == room), (moved, moved), "{first} {written}");
            let rest = first - written;
            assert_eq!(buffer.len(), rest + appended);
            assert!(buffer[..rest].iter().all(|&b| b == b'a') && buffer[rest..].iter().all(|&b| b == b'b'));
        }
    }

    #[test]
    fn only_an_empty_buffer_gives_its_room_back() {
        let mut buffer = WriteBuffer::default();
        buffer.extend_from_slice(&[b'x'; 10_000]);
        buffer.shrink_when_empty(4096);
        assert_eq!(buffer.len(), 10_000, "unwritten bytes are kept");
        buffer.advance(10_000);
        buffer.shrink_when_empty(4096);
        assert_eq!(buffer.capacity(), 0);
    }
}
