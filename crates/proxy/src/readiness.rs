//! One readiness check per read: an event loop that polls a socket on every pass (sessions, node
//! connections) reads it again only once the socket has woken the task since its last read
//! returned Pending.
//!
//! A task is woken by many sources (a node's reply, queued requests, timers) and cannot tell which
//! one woke it; without this, every wake-up polled the idle socket again (tokio's readiness check,
//! ~100 instructions, about once per unpipelined request on each side). Reads register a waker of
//! their own that marks the socket as worth reading and then wakes the task.
//!
//! A read that returns bytes without filling the buffer has drained the socket (its readiness is
//! cleared then, on Linux's epoll and the BSDs' kqueue, as tokio's own reads do: `socket.rs`;
//! elsewhere the check says Ready and the read tells), so the next attempt only asks the socket
//! for readiness ([`Socket::poll_read_ready`]), which
//! registers the waker as a read finding nothing would, without sizing a buffer or setting up a
//! read (~90 instructions per unpipelined request, once on each side).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use bytes::BytesMut;
use futures_util::task::AtomicWaker;

use crate::socket::Socket;

/// Reads a socket only when it may have something (see the module's doc).
pub struct ReadGate {
    signal: Arc<Signal>,
    /// The waker reads register: it marks the signal and wakes the task.
    waker: Waker,
    /// The last read returned Pending, or [`ReadGate::drained`] found nothing: `waker` waits for
    /// the socket.
    armed: bool,
    /// The last read returned bytes without filling the buffer: the socket is likely drained.
    drained: bool,
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
        ReadGate { waker: Waker::from(Arc::clone(&signal)), signal, armed: false, drained: false }
    }
}

impl ReadGate {
    /// Registers the task's waker and says whether a read may find something: the last read did
    /// not return Pending, or the socket has woken the gate since (the mark is taken).
    ///
    /// The waker is registered on every call, not only when a read is tried: a socket's wake sets
    /// the mark and then takes the registered waker, and a read tried between the two would clear
    /// the mark while the wake still takes the waker registered for that read — without a new
    /// registration on the next pass, the socket's next wake would find none.
    #[inline]
    pub fn poll_ready(&mut self, cx: &Context<'_>) -> bool {
        self.signal.task.register(cx.waker());
        !self.armed || self.signal.woken.swap(false, Ordering::AcqRel)
    }

    /// After a read that drained the socket: whether it is still drained, asked of `reader`
    /// without reading. If so the gate is armed as by a read that found nothing, its waker
    /// registered for the socket's next readiness, and no read need be tried.
    #[inline]
    pub fn drained<R: Socket>(&mut self, reader: &mut R) -> bool {
        if !std::mem::take(&mut self.drained) {
            return false;
        }
        self.armed = reader.poll_read_ready(&mut Context::from_waker(&self.waker)).is_pending();
        self.armed
    }

    /// Reads from `reader` into `buf` once (after [`ReadGate::poll_ready`] said a read may find
    /// something, and [`ReadGate::drained`] did not say it finds nothing); a read that finds
    /// nothing arms the gate until the socket wakes it.
    pub fn read<R: Socket>(&mut self, reader: &mut R, buf: &mut BytesMut) -> Poll<std::io::Result<usize>> {
        let read = reader.poll_read_into(&mut Context::from_waker(&self.waker), buf);
        self.armed = read.is_pending();
        self.drained = matches!(read, Poll::Ready(Ok(n)) if n > 0 && buf.len() < buf.capacity());
        read
    }

    /// Reads from `reader` into `buf`, unless the last read returned Pending and the socket has
    /// not woken the task since: Pending then, with the task's waker kept for the socket's wake.
    pub fn poll_read<R: Socket>(
        &mut self,
        cx: &Context<'_>,
        reader: &mut R,
        buf: &mut BytesMut,
    ) -> Poll<std::io::Result<usize>> {
        match self.poll_ready(cx) && !self.drained(reader) {
            true => self.read(reader, buf),
            false => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpStream;

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

    #[tokio::test]
    async fn after_a_read_that_drains_the_socket_only_readiness_is_asked_and_its_wake_still_comes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut client = TcpStream::connect(listener.local_addr().expect("addr")).await.expect("connect");
        let (mut server, _) = listener.accept().await.expect("accept");
        let mut gate = ReadGate::default();
        let mut buf = BytesMut::with_capacity(64);
        let waker = futures_util::task::noop_waker();
        let cx = Context::from_waker(&waker);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"PING\r\n").await.expect("write");
        let read = std::future::poll_fn(|cx| gate.poll_read(cx, &mut server, &mut buf)).await.expect("read");
        assert_eq!((read, &buf[..]), (6, &b"PING\r\n"[..]));
        assert!(gate.drained, "6 bytes into 64 of room drained the socket");
        // The next attempt asks for readiness only: none, so the gate is armed, its waker with
        // the socket.
        assert!(gate.poll_read(&cx, &mut server, &mut buf).is_pending());
        assert!(gate.armed && !gate.drained);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"ECHO\r\n").await.expect("write");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !gate.signal.woken.load(Ordering::Acquire) {
            assert!(std::time::Instant::now() < deadline, "the socket's wake never came");
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        assert!(matches!(gate.poll_read(&cx, &mut server, &mut buf), Poll::Ready(Ok(6))));
        assert_eq!(&buf[..], b"PING\r\nECHO\r\n");
        // A read that fills the buffer does not count as draining: the next attempt reads.
        buf.reserve(4);
        let room = buf.capacity() - buf.len();
        tokio::io::AsyncWriteExt::write_all(&mut client, &vec![b'x'; room + 10]).await.expect("write");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        while !gate.poll_ready(&cx) || gate.read(&mut server, &mut buf).is_pending() {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        assert!(buf.len() == buf.capacity() && !gate.drained);
    }

    /// Counts its wake-ups.
    struct Count(std::sync::atomic::AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_wake_split_around_a_read_does_not_leave_the_task_without_a_waker() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let mut gate = ReadGate::default();
        let mut buf = BytesMut::with_capacity(64);
        let count = Arc::new(Count(std::sync::atomic::AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        let cx = Context::from_waker(&waker);
        assert!(gate.poll_read(&cx, &mut server, &mut buf).is_pending());
        // A wake of the socket, on another thread, sets the mark ...
        gate.signal.woken.store(true, Ordering::Release);
        // ... a pass reads meanwhile (the mark taken, nothing there) ...
        assert!(gate.poll_read(&cx, &mut server, &mut buf).is_pending());
        // ... and the wake then takes the waker that pass registered.
        gate.signal.task.wake();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        // The task's next pass finds no mark and reads nothing, but registers its waker again,
        // so that the socket's next wake reaches the task.
        assert!(gate.poll_read(&cx, &mut server, &mut buf).is_pending());
        tokio::io::AsyncWriteExt::write_all(&mut client, b"PING\r\n").await.expect("write");
        assert_eq!(count.0.load(Ordering::SeqCst), 2, "the socket's wake reached the task");
        assert!(matches!(gate.poll_read(&cx, &mut server, &mut buf), Poll::Ready(Ok(6))));
    }
}
