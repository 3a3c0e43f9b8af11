//! One readiness check per read: an event loop that polls a socket on every pass (sessions, node
//! connections) reads it again only once the socket has woken the task since its last read
//! returned Pending.
//!
//! A task is woken by many sources (a node's reply, queued requests, timers) and cannot tell which
//! one woke it; without this, every wake-up polled the idle socket again (tokio's readiness check,
//! ~100 instructions, about once per unpipelined request on each side). Reads register a waker of
//! their own that marks the socket as worth reading and then wakes the task.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use bytes::BytesMut;
use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Reads a socket only when it may have something (see the module's doc).
pub struct ReadGate {
    signal: Arc<Signal>,
    /// The waker reads register: it marks the signal and wakes the task.
    waker: Waker,
    /// The last read returned Pending; `waker` waits for the socket.
    armed: bool,
}

/// What the read's waker and the loop share.
#[derive(Default)]
struct Signal {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl Default for ReadGate {
    fn default() -> ReadGate {
        let signal = Arc::new(Signal::default());
        ReadGate { waker: Waker::from(Arc::clone(&signal)), signal, armed: false }
    }
}

impl ReadGate {
    /// Whether a read may find something: no read has returned Pending since the socket last
    /// woke the gate. While it may not, [`ReadGate::poll_read`] returns Pending without reading.
    #[inline]
    pub fn may_read(&self) -> bool {
        !self.armed || self.signal.woken.load(Ordering::Acquire)
    }

    /// Reads from `reader` into `buf`, unless the last read returned Pending and the socket has
    /// not woken the task since: Pending then, with the task's waker kept for the socket's wake.
    ///
    /// The task's waker is registered only when a read is tried: while the socket has not woken
    /// the gate, the waker registered at the last read is still in place (the socket's wake is
    /// what takes it), so registering it again on every pass would only repeat that.
    pub fn poll_read<R: AsyncRead + Unpin>(
        &mut self,
        cx: &Context<'_>,
        reader: &mut R,
        buf: &mut BytesMut,
    ) -> Poll<std::io::Result<usize>> {
        if !self.may_read() {
            return Poll::Pending;
        }
        self.signal.woken.store(false, Ordering::Release);
        self.signal.task.register(cx.waker());
        // Out of tokio's per-task budget a read returns Pending and wakes this waker at once: the
        // next pass reads again.
        let read = pin!(reader.read_buf(buf)).poll(&mut Context::from_waker(&self.waker));
        self.armed = read.is_pending();
        read
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pending_read_is_not_tried_again_until_the_socket_wakes_it() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let mut gate = ReadGate::default();
        let mut buf = BytesMut::with_capacity(64);
        let waker = futures_util::task::noop_waker();
        let cx = Context::from_waker(&waker);
        assert!(gate.poll_read(&cx, &mut server, &mut buf).is_pending());
        assert!(gate.armed);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"PING\r\n").await.expect("write");
        // The write woke the read's waker: the next pass reads.
        assert!(gate.signal.woken.load(Ordering::Acquire));
        assert!(matches!(gate.poll_read(&cx, &mut server, &mut buf), Poll::Ready(Ok(6))));
        assert_eq!(&buf[..], b"PING\r\n");
        // Nothing more: Pending, and without a wake no read is tried.
        assert!(gate.poll_read(&cx, &mut server, &mut buf).is_pending());
        drop(client);
        assert!(matches!(gate.poll_read(&cx, &mut server, &mut buf), Poll::Ready(Ok(0))), "EOF wakes it too");
    }
}
