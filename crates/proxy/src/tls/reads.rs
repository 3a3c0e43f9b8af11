//! A TLS stream read without the extra socket read tokio-rustls makes.
//!
//! tokio-rustls' `poll_read`, once it has copied what rustls decrypted, tries the socket again
//! while the caller's buffer has room. On a client that sends one request and waits, that try
//! always finds nothing: one more socket read per request, with its readiness check and its
//! `WouldBlock` error. The session, like any reader that loops until Pending, tries its next read
//! anyway before it waits, so the extra try is pure cost: `TLS=1 bench/callgrind.sh` counted three
//! TLS reads per unpipelined request against the plain listener's two (bench/RESULTS.md).
//!
//! [`PlaintextReads`] reads through tokio-rustls' `AsyncBufRead` instead: it takes what rustls
//! holds decrypted, and goes to the socket only when rustls holds nothing.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, ReadBuf};

/// Whether a TLS stream holds decrypted bytes not read yet (so that reading them needs no socket
/// read).
pub trait HoldsPlaintext {
    fn holds_plaintext(&self) -> bool;
}

impl<IO> HoldsPlaintext for tokio_rustls::client::TlsStream<IO> {
    fn holds_plaintext(&self) -> bool {
        // rustls wants to read except while it holds plaintext, after the peer's close_notify (a
        // fill then finds the end: the loop below stops) and while a handshake has records to
        // send (never: the stream is handed over after the handshake).
        !self.get_ref().1.wants_read()
    }
}

/// A TLS stream whose reads copy what rustls decrypted and read the socket only when rustls holds
/// nothing; writes pass through unchanged.
#[derive(Debug)]
pub struct PlaintextReads<S>(pub S);

/// Reads tell: rustls may hold decrypted bytes its socket does not show.
impl<S> crate::readiness::ReadReady for PlaintextReads<S> where S: AsyncBufRead + HoldsPlaintext + Unpin {}

impl<S> AsyncRead for PlaintextReads<S>
where
    S: AsyncBufRead + HoldsPlaintext + Unpin,
{
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let stream = &mut self.get_mut().0;
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        // The first fill may read the socket (Pending registers the task's waker, as a read does);
        // the next ones only take records already decrypted.
        ready!(take_chunk(stream, cx, buf))?;
        while buf.remaining() > 0 && stream.holds_plaintext() {
            // An error here comes back from the next read, which goes to rustls again.
            let Poll::Ready(Ok(1..)) = take_chunk(stream, cx, buf) else { break };
        }
        Poll::Ready(Ok(()))
    }
}

/// Copies into `buf` what one fill of `stream` yields (as much as fits) and consumes it; how many
/// bytes (0 at the end of the stream).
fn take_chunk<S: AsyncBufRead + Unpin>(
    stream: &mut S,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
) -> Poll<io::Result<usize>> {
    let data = ready!(Pin::new(&mut *stream).poll_fill_buf(cx))?;
    let taken = data.len().min(buf.remaining());
    buf.put_slice(&data[..taken]);
    Pin::new(stream).consume(taken);
    Poll::Ready(Ok(taken))
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PlaintextReads<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}
