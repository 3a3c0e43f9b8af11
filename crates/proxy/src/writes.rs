//! Writing a buffer out: one write of its bytes, then the buffer advanced past what went.
//!
//! tokio's `write_buf` prepares a vectored write of the buffer's chunks: it fills 64 `IoSlice`s on
//! the stack on every call (~130 instructions per write under callgrind; bench/RESULTS.md), though
//! the buffers here are one contiguous chunk each. Client and node connections write through this
//! instead, once or more per unpipelined request.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Buf;
use tokio::io::AsyncWrite;

/// Writes `buf`'s first chunk (all of it, for the buffers written here) to `writer` and advances
/// `buf` past the bytes written, which it returns.
#[inline]
pub fn poll_write_buf<W, B>(writer: &mut W, cx: &mut Context<'_>, buf: &mut B) -> Poll<io::Result<usize>>
where
    W: AsyncWrite + Unpin + ?Sized,
    B: Buf,
{
    let written = ready!(Pin::new(writer).poll_write(cx, buf.chunk()))?;
    buf.advance(written);
    Poll::Ready(Ok(written))
}
