//! The byte streams the proxy's loops read and write (a client's, a node's; plain or TLS), and
//! the budget that makes a busy loop yield.
//!
//! tokio's `poll_read`/`poll_write` on a `TcpStream` check the task's cooperative budget (two
//! thread-local accesses) and set up a readiness check before each syscall: ~65 instructions a
//! call on top of the syscall, two or three calls per unpipelined request. [`Socket`]'s plain
//! TCP reads and writes go through tokio's `try_io` instead (one load of the socket's
//! readiness, then the syscall), register the waker only when the socket has nothing, and leave
//! the budget to the loop that calls them ([`IoBudget`]): the session's and the node
//! connection's loops yield after 128 passes in one wake-up (tokio's budget: 128 operations per
//! task poll). A node connection's hand-over of replies to a waiting session writes the client's
//! replies within its own passes (one write per hand-over).

use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, ready};

use bytes::BufMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, Interest};
use tokio::net::TcpStream;

/// A stream the proxy's loops read and write. The defaults are tokio's own calls; plain TCP
/// overrides them with cheaper ones (see the module's doc).
pub trait Socket: AsyncRead + AsyncWrite + Unpin {
    /// Pending, with `cx`'s waker registered for the stream's next readiness, when a read now
    /// would find nothing; Ready when it may find something (or fail). The default says Ready:
    /// the read itself tells (a TLS stream may hold decrypted bytes its socket does not show).
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let _ = cx;
        Poll::Ready(())
    }

    /// Reads once into `buf`'s spare room (as [`AsyncReadExt::read_buf`]); how many bytes were
    /// read, 0 at the stream's end. Pending registers `cx`'s waker.
    fn poll_read_into<B: BufMut>(&mut self, cx: &mut Context<'_>, buf: &mut B) -> Poll<io::Result<usize>> {
        pin!(self.read_buf(buf)).poll(cx)
    }

    /// Writes once from `bytes` (not empty); how many were written. Pending registers `cx`'s
    /// waker.
    fn poll_write_from(&mut self, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(self).poll_write(cx, bytes)
    }
}

/// Where one read or write that does not fill its buffer shows the socket drained (epoll and
/// kqueue report readiness by edges, so its readiness is cleared then: the next try waits for the
/// socket's next event instead of making a syscall to learn that nothing is there). tokio's own
/// reads and writes do the same on these systems.
const EDGE_TRIGGERED: bool = cfg!(all(
    not(mio_unsupported_force_poll_poll),
    any(
        target_os = "linux",
        target_os = "android",
        target_os = "illumos",
        target_os = "freebsd",
        target_os = "netbsd",
        target_os = "openbsd",
        target_os = "dragonfly",
        target_os = "macos",
        target_os = "ios",
    )
));

impl Socket for TcpStream {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // An error is Ready: the read that follows reports it.
        TcpStream::poll_read_ready(self, cx).map(|_| ())
    }

    fn poll_read_into<B: BufMut>(&mut self, cx: &mut Context<'_>, buf: &mut B) -> Poll<io::Result<usize>> {
        poll_try_io(self, cx, Interest::READABLE, |socket| {
            let room = buf.chunk_mut().len();
            Ok((socket.try_read_buf(buf)?, room))
        })
    }

    fn poll_write_from(&mut self, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        poll_try_io(self, cx, Interest::WRITABLE, |socket| Ok((socket.try_write(bytes)?, bytes.len())))
    }
}

/// One read or write of `socket` by `attempt` (how many bytes it moved, of how many it had room
/// for), through `try_io`; when the socket has nothing (or no room), `cx`'s waker is registered
/// for its readiness, and a readiness that came meanwhile tries again.
fn poll_try_io(
    socket: &TcpStream,
    cx: &mut Context<'_>,
    interest: Interest,
    mut attempt: impl FnMut(&TcpStream) -> io::Result<(usize, usize)>,
) -> Poll<io::Result<usize>> {
    loop {
        let mut done = 0;
        // The outer `try_io` takes the readiness before the syscall, so clearing it for a short
        // read or write cannot lose an event that came after it.
        let tried = socket.try_io(interest, || {
            let (moved, room) = attempt(socket)?;
            done = moved;
            short(moved, room)
        });
        match tried {
            Ok(()) => return Poll::Ready(Ok(done)),
            // Bytes moved: the error is `short`'s, which only cleared the readiness.
            Err(_) if done > 0 => return Poll::Ready(Ok(done)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => match interest == Interest::READABLE {
                true => ready!(socket.poll_read_ready(cx))?,
                false => ready!(socket.poll_write_ready(cx))?,
            },
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
}

/// `WouldBlock` (which clears the socket's readiness in `try_io`) when `done` bytes of `room`
/// show the socket drained or full; Ok otherwise.
#[inline]
fn short(done: usize, room: usize) -> io::Result<()> {
    match EDGE_TRIGGERED && done > 0 && done < room {
        true => Err(io::ErrorKind::WouldBlock.into()),
        false => Ok(()),
    }
}

impl<S: Socket> Socket for Box<S> {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        (**self).poll_read_ready(cx)
    }

    fn poll_read_into<B: BufMut>(&mut self, cx: &mut Context<'_>, buf: &mut B) -> Poll<io::Result<usize>> {
        (**self).poll_read_into(cx, buf)
    }

    fn poll_write_from(&mut self, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        (**self).poll_write_from(cx, bytes)
    }
}

/// Tests run the streams over in-memory pipes, with tokio's own reads and writes.
#[cfg(test)]
impl Socket for tokio::io::DuplexStream {}

/// How many passes one wake-up of a loop may make before it yields to the other tasks of its
/// worker: the count tokio's cooperative budget allows a task, which [`Socket`]'s plain reads
/// and writes do not draw on.
#[derive(Debug)]
pub struct IoBudget(u8);

impl IoBudget {
    const PASSES: u8 = 128;

    pub fn new() -> IoBudget {
        IoBudget(Self::PASSES)
    }

    /// Takes one pass from the budget; false once it is spent (the loop yields then).
    #[inline]
    pub fn spend(&mut self) -> bool {
        match self.0.checked_sub(1) {
            Some(left) => {
                self.0 = left;
                true
            }
            None => false,
        }
    }
}

impl Default for IoBudget {
    fn default() -> IoBudget {
        IoBudget::new()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::{Wake, Waker};
    use std::time::{Duration, Instant};

    use bytes::BytesMut;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A waker that records that it was woken.
    #[derive(Default)]
    struct Woken(AtomicBool);

    impl Wake for Woken {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::Release);
        }
    }

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (client, server)
    }

    /// Waits (a few seconds at most, the I/O driver running meanwhile) until `woken` was woken.
    async fn wait_for(woken: &Woken) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !woken.0.load(Ordering::Acquire) {
            assert!(Instant::now() < deadline, "the socket's wake never came");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test]
    async fn a_read_that_drains_the_socket_waits_for_its_next_bytes_and_is_woken_by_them() {
        let (mut client, mut server) = pair().await;
        client.write_all(b"PING\r\n").await.expect("write");
        let mut buf = BytesMut::with_capacity(64);
        let read = std::future::poll_fn(|cx| server.poll_read_into(cx, &mut buf)).await.expect("read");
        assert_eq!((read, &buf[..]), (6, &b"PING\r\n"[..]));
        // Drained: the next read waits, its waker registered with the socket.
        let woken = Arc::new(Woken::default());
        let waker = Waker::from(Arc::clone(&woken));
        assert!(server.poll_read_into(&mut Context::from_waker(&waker), &mut buf).is_pending());
        client.write_all(b"ECHO x\r\n").await.expect("write");
        wait_for(&woken).await;
        let read = server.poll_read_into(&mut Context::from_waker(&waker), &mut buf);
        assert!(matches!(read, Poll::Ready(Ok(8))), "{read:?}");
        assert_eq!(&buf[..], b"PING\r\nECHO x\r\n");
        // A read into a slice, as the TLS stream makes; then the peer's end reads as 0.
        drop(client);
        let mut room = [0u8; 16];
        let read = std::future::poll_fn(|cx| server.poll_read_into(cx, &mut &mut room[..])).await.expect("read");
        assert_eq!(read, 0, "the peer closed");
    }

    #[tokio::test]
    async fn a_read_that_fills_its_room_reads_again_without_waiting() {
        let (mut client, mut server) = pair().await;
        client.write_all(&[b'x'; 100]).await.expect("write");
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut room = [0u8; 60];
        let noop = Waker::noop();
        let read = server.poll_read_into(&mut Context::from_waker(noop), &mut &mut room[..]);
        assert!(matches!(read, Poll::Ready(Ok(60))), "{read:?}");
        // The socket still holds 40 bytes: its readiness was kept.
        let read = server.poll_read_into(&mut Context::from_waker(noop), &mut &mut room[..]);
        assert!(matches!(read, Poll::Ready(Ok(40))), "{read:?}");
    }

    #[tokio::test]
    async fn a_full_socket_makes_writes_wait_until_the_peer_reads() {
        let (mut client, mut server) = pair().await;
        let chunk = vec![b'y'; 256 * 1024];
        let woken = Arc::new(Woken::default());
        let waker = Waker::from(Arc::clone(&woken));
        let mut sent = 0;
        let mut full = false;
        // Bounded: the kernel's buffers hold a few MiB at most.
        for _ in 0..1_000 {
            match server.poll_write_from(&mut Context::from_waker(&waker), &chunk) {
                Poll::Ready(written) => sent += written.expect("write"),
                Poll::Pending => {
                    full = true;
                    break;
                }
            }
        }
        assert!(full && sent > 0, "the socket never filled ({sent} bytes sent)");
        let mut drained = vec![0u8; 1024 * 1024];
        let mut received = 0;
        while !woken.0.load(Ordering::Acquire) && received < sent {
            received += client.read(&mut drained).await.expect("read");
        }
        wait_for(&woken).await;
        let written = std::future::poll_fn(|cx| server.poll_write_from(cx, &chunk)).await.expect("write");
        assert!(written > 0);
        drop(server);
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.expect("read");
        assert_eq!(received + rest.len(), sent + written, "every byte written arrived");
        assert!(rest.iter().all(|&b| b == b'y'));
    }

    #[test]
    fn a_budget_allows_as_many_passes_as_tokio_then_none() {
        let mut budget = IoBudget::new();
        assert_eq!((0..1_000).take_while(|_| budget.spend()).count(), 128);
        assert!(!budget.spend());
    }
}
