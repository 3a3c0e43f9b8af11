//! The listener's TLS stream (`stream.rs`'s server side) against tokio-rustls' client, over
//! `tokio::io::duplex` with counted socket reads.

use super::*;

/// A duplex end that counts the reads tried on it.
#[derive(Debug)]
pub(super) struct CountedReads {
    io: DuplexStream,
    reads: Arc<std::sync::atomic::AtomicUsize>,
}

impl tokio::io::AsyncRead for CountedReads {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl crate::socket::Socket for CountedReads {}

impl tokio::io::AsyncWrite for CountedReads {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// One read of `stream` into a fresh 64-byte buffer: what it got, and the socket reads it tried.
pub(super) async fn read_once<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    reads: &std::sync::atomic::AtomicUsize,
) -> (Vec<u8>, usize) {
    let before = reads.load(std::sync::atomic::Ordering::Relaxed);
    let mut buf = Vec::with_capacity(64);
    stream.read_buf(&mut buf).await.unwrap();
    (buf, reads.load(std::sync::atomic::Ordering::Relaxed) - before)
}

/// A TLS 1.3 session over a duplex of `capacity` bytes whose server end counts its socket reads;
/// the client end also counts its own.
async fn counted_pair(
    pki: &Pki,
    capacity: usize,
) -> (ServerStream<CountedReads>, client::TlsStream<CountedReads>, Counts) {
    let acceptor = ReloadableAcceptor::new(pki.server_files()).unwrap();
    let counts = Counts::default();
    let (client_io, server_io) = CountedReads::pair(capacity, &counts);
    let connector = TlsConnector::from(client_trusting(&pki.ca, &[&rustls::version::TLS13]));
    let (server, client) = tokio::join!(
        accept(server_io, acceptor.config()),
        connector.connect(server_name("localhost").unwrap(), client_io)
    );
    (server.unwrap(), client.unwrap(), counts)
}

/// Socket reads tried by each end of a [`counted_pair`].
#[derive(Default)]
pub(super) struct Counts {
    pub(super) server: Arc<std::sync::atomic::AtomicUsize>,
    pub(super) client: Arc<std::sync::atomic::AtomicUsize>,
}

impl CountedReads {
    /// The two ends of a duplex of `capacity` bytes, counting their socket reads in `counts`
    /// (the client's end first).
    pub(super) fn pair(capacity: usize, counts: &Counts) -> (CountedReads, CountedReads) {
        let (client_io, server_io) = duplex(capacity);
        let client = CountedReads { io: client_io, reads: Arc::clone(&counts.client) };
        (client, CountedReads { io: server_io, reads: Arc::clone(&counts.server) })
    }
}

/// `from` writes `bytes` and `to` reads exactly those.
pub(super) async fn carries<W, R>(from: &mut W, to: &mut R, bytes: &[u8])
where
    W: tokio::io::AsyncWrite + Unpin,
    R: tokio::io::AsyncRead + Unpin,
{
    from.write_all(bytes).await.unwrap();
    from.flush().await.unwrap();
    let mut got = vec![0u8; bytes.len()];
    to.read_exact(&mut got).await.unwrap();
    assert_eq!(got, bytes);
}

#[tokio::test]
async fn server_stream_reads_the_socket_once_per_read_and_takes_every_record_it_brought() {
    let pki = Pki::new();
    let (mut server, mut client, counts) = counted_pair(&pki, 64 * 1024).await;

    // One record: one socket read.
    client.write_all(b"PING\r\n").await.unwrap();
    assert_eq!(read_once(&mut server, &counts.server).await, (b"PING\r\n".to_vec(), 1));

    // Three records that came together: all three from the one socket read that brought them.
    for _ in 0..3 {
        client.write_all(b"PING\r\n").await.unwrap();
    }
    assert_eq!(read_once(&mut server, &counts.server).await, (b"PING\r\n".repeat(3), 1));

    // A buffer smaller than the record: the rest comes without a socket read.
    client.write_all(b"PING\r\n").await.unwrap();
    let before = counts.server.load(std::sync::atomic::Ordering::Relaxed);
    let mut small = [0u8; 4];
    assert_eq!(server.read(&mut small).await.unwrap(), 4);
    assert_eq!(server.read(&mut small).await.unwrap(), 2);
    assert_eq!(&small[..2], b"\r\n");
    assert_eq!(counts.server.load(std::sync::atomic::Ordering::Relaxed) - before, 1);

    // The peer's close_notify ends the reads; the server can still answer (a half-close).
    client.shutdown().await.unwrap();
    assert_eq!(read_once(&mut server, &counts.server).await.0, b"");
    carries(&mut server, &mut client, b"+OK\r\n").await;
}

#[tokio::test]
async fn server_stream_carries_large_payloads_both_ways_through_a_small_socket_buffer() {
    let pki = Pki::new();
    // 4 KiB of socket buffer against payloads of 300 KiB: both ends wait for the other often.
    let (mut server, mut client, _) = counted_pair(&pki, 4 * 1024).await;
    exchange_large_payloads(&mut client, &mut server).await;
}

/// `requester` sends 300 KiB and `answerer`, once it has it all, 300 KiB back: both must arrive
/// intact. Then `answerer` closes cleanly and `requester` reads the end of the stream, not an error.
pub(super) async fn exchange_large_payloads<R, A>(requester: &mut R, answerer: &mut A)
where
    R: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let request: Vec<u8> = (0..300 * 1024).map(|i| (i % 251) as u8).collect();
    let reply: Vec<u8> = request.iter().rev().copied().collect();
    let ask = async {
        requester.write_all(&request).await.unwrap();
        requester.flush().await.unwrap();
        let mut got = vec![0u8; reply.len()];
        requester.read_exact(&mut got).await.unwrap();
        got
    };
    let answer = async {
        let mut got = vec![0u8; request.len()];
        answerer.read_exact(&mut got).await.unwrap();
        answerer.write_all(&reply).await.unwrap();
        answerer.flush().await.unwrap();
        got
    };
    let (reply_got, request_got) = tokio::join!(ask, answer);
    assert!(request_got == request, "the request arrived altered");
    assert!(reply_got == reply, "the reply arrived altered");
    answerer.shutdown().await.unwrap();
    let mut rest = Vec::new();
    assert_eq!(requester.read_to_end(&mut rest).await.unwrap(), 0);
}

#[tokio::test]
async fn server_stream_follows_a_key_update_from_the_client() {
    let pki = Pki::new();
    let (mut server, mut client, _) = counted_pair(&pki, 64 * 1024).await;
    for round in 0..3 {
        // The client asks for new keys both ways (TLS 1.3 KeyUpdate, update_requested): the
        // server must answer with its own before its next record can be read.
        client.get_mut().1.refresh_traffic_keys().unwrap();
        carries(&mut client, &mut server, format!("PING {round}\r\n").as_bytes()).await;
        carries(&mut server, &mut client, b"+PONG\r\n").await;
    }
}

#[tokio::test]
async fn server_stream_returns_a_request_followed_by_a_key_update_in_the_same_socket_read() {
    let pki = Pki::new();
    let (mut server, mut client, counts) = counted_pair(&pki, 64 * 1024).await;
    // The request's record, then the client's KeyUpdate record: one socket read brings both, and
    // the second has nothing for the reader.
    client.write_all(b"PING\r\n").await.unwrap();
    client.get_mut().1.refresh_traffic_keys().unwrap();
    client.flush().await.unwrap();
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), read_once(&mut server, &counts.server));
    assert_eq!(read.await.expect("the request was dropped: the read waits").0, b"PING\r\n");
    carries(&mut server, &mut client, b"+PONG\r\n").await;
}

#[tokio::test]
async fn server_stream_fails_for_good_on_a_forged_record_and_tells_the_client() {
    let pki = Pki::new();
    let (mut server, mut client, _) = counted_pair(&pki, 64 * 1024).await;
    // An application-data record whose tag cannot verify, written under the client's TLS layer.
    let forged = [23, 3, 3, 0, 22, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22];
    client.get_mut().0.io.write_all(&forged).await.unwrap();
    let mut buf = [0u8; 16];
    let error = server.read(&mut buf).await.expect_err("a forged record is refused");
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidData, "{error}");
    // rustls is not asked again (it would process the failed record twice): every later call
    // fails the same way, and none panics.
    assert_eq!(server.read(&mut buf).await.unwrap_err().kind(), std::io::ErrorKind::InvalidData);
    assert!(server.write_all(b"+OK\r\n").await.is_err());
    let _ = server.shutdown().await;
    // The client got the alert that says why.
    let mut rest = Vec::new();
    assert!(client.read_to_end(&mut rest).await.is_err(), "the client reads an alert, not data");
}

#[tokio::test]
async fn server_stream_buffers_stay_small_for_small_requests_and_grow_for_large_ones() {
    let pki = Pki::new();
    let (mut server, mut client, _) = counted_pair(&pki, 64 * 1024).await;
    // After the handshake the certificate chain's room is given back: the read room is left.
    assert!(server.buffer_bytes() <= 1024, "{} bytes after the handshake", server.buffer_bytes());
    client.write_all(b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n").await.unwrap();
    let mut request = [0u8; 22];
    server.read_exact(&mut request).await.unwrap();
    carries(&mut server, &mut client, b"$5\r\nvalue\r\n").await;
    assert!(server.buffer_bytes() <= 1024 + 128, "{} bytes after a GET", server.buffer_bytes());
    // A 100 KiB request: reads grow to whole records, and the request arrives intact.
    let large = vec![b'x'; 100 * 1024];
    let write = async {
        client.write_all(&large).await?;
        client.flush().await
    };
    let (written, read) = tokio::join!(write, async {
        let mut got = vec![0u8; large.len()];
        server.read_exact(&mut got).await.map(|_| got)
    });
    written.unwrap();
    assert!(read.unwrap() == large);
    assert!(server.buffer_bytes() >= 16 * 1024, "{} bytes after a large request", server.buffer_bytes());
}

#[tokio::test]
async fn server_stream_ends_reads_when_the_client_leaves_without_close_notify() {
    let pki = Pki::new();
    let (mut server, client, _) = counted_pair(&pki, 64 * 1024).await;
    drop(client);
    let mut buf = [0u8; 8];
    assert_eq!(server.read(&mut buf).await.unwrap(), 0);
}

#[tokio::test]
async fn server_stream_refuses_a_handshake_that_is_not_tls() {
    let pki = Pki::new();
    let acceptor = ReloadableAcceptor::new(pki.server_files()).unwrap();
    let (mut client_io, server_io) = duplex(64 * 1024);
    let server = tokio::spawn(accept(server_io, acceptor.config()));
    client_io.write_all(b"*1\r\n$4\r\nPING\r\n").await.unwrap();
    let error = server.await.unwrap().expect_err("a RESP request is no ClientHello");
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidData, "{error}");
    // The refusal is an alert the client can read, not silence.
    let mut alert = [0u8; 1];
    client_io.read_exact(&mut alert).await.unwrap();
    assert_eq!(alert[0], 21, "TLS alert record");
}
