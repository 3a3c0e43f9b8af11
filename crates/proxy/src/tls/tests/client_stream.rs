//! A node connection's TLS stream (`stream.rs`'s client side) against tokio-rustls' server, over
//! `tokio::io::duplex` with counted socket reads.

use super::streams::{CountedReads, Counts, carries, exchange_large_payloads, read_once};
use super::*;

/// A session over a duplex of `capacity` bytes: tokio-rustls' server with `pki`'s identity, and
/// our client trusting `ca` and offering `versions`.
async fn client_pair(
    pki: &Pki,
    ca: &CertifiedIssuer<'static, KeyPair>,
    versions: &[&'static rustls::SupportedProtocolVersion],
    capacity: usize,
) -> (std::io::Result<tokio_rustls::server::TlsStream<CountedReads>>, std::io::Result<ClientStream<CountedReads>>, Counts)
{
    let acceptor = ReloadableAcceptor::new(pki.server_files()).unwrap();
    let counts = Counts::default();
    let (client_io, server_io) = CountedReads::pair(capacity, &counts);
    let (server, client) = tokio::join!(
        tokio_rustls::TlsAcceptor::from(acceptor.config()).accept(server_io),
        connect(client_io, client_trusting(ca, versions), server_name("localhost").unwrap())
    );
    (server, client, counts)
}

#[tokio::test]
async fn client_stream_talks_tls12_and_tls13_and_takes_every_record_one_socket_read_brought() {
    let pki = Pki::new();
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let (server, client, counts) = client_pair(&pki, &pki.ca, &[version], 64 * 1024).await;
        let (mut server, mut client) = (server.unwrap(), client.unwrap());
        assert_eq!(client.connection().protocol_version(), Some(version.version));
        client.write_all(b"*1\r\n$4\r\nPING\r\n").await.unwrap();
        client.flush().await.unwrap();
        let mut request = [0u8; 14];
        server.read_exact(&mut request).await.unwrap();
        assert_eq!(&request, b"*1\r\n$4\r\nPING\r\n");
        // Three replies in three records, in the socket together: one read takes them all.
        for _ in 0..3 {
            server.write_all(b"+PONG\r\n").await.unwrap();
            server.flush().await.unwrap();
        }
        let (pongs, reads) = read_once(&mut client, &counts.client).await;
        assert_eq!((pongs, reads), (b"+PONG\r\n".repeat(3), 1), "{version:?}");
        // The server's close_notify ends the client's reads.
        server.shutdown().await.unwrap();
        assert_eq!(read_once(&mut client, &counts.client).await.0, b"", "{version:?}");
    }
}

#[tokio::test]
async fn client_stream_carries_large_payloads_both_ways_through_a_small_socket_buffer() {
    let pki = Pki::new();
    let (server, client, _) = client_pair(&pki, &pki.ca, &[&rustls::version::TLS13], 4 * 1024).await;
    exchange_large_payloads(&mut client.unwrap(), &mut server.unwrap()).await;
}

#[tokio::test]
async fn client_stream_refuses_a_node_whose_certificate_its_roots_do_not_sign() {
    let (pki, other) = (Pki::new(), Pki::new());
    let (server, client, _) = client_pair(&pki, &other.ca, &[&rustls::version::TLS13], 64 * 1024).await;
    let error = client.expect_err("a certificate from another CA is refused");
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidData, "{error}");
    assert!(error.to_string().contains("certificate"), "{error}");
    // The server heard why (the client's alert), rather than waiting.
    assert!(server.is_err());
}

#[tokio::test]
async fn client_stream_waits_when_only_the_servers_session_tickets_came() {
    let pki = Pki::new();
    let (server, client, _) = client_pair(&pki, &pki.ca, &[&rustls::version::TLS13], 64 * 1024).await;
    let (mut server, mut client) = (server.unwrap(), client.unwrap());
    server.flush().await.unwrap();
    // TLS 1.3 servers send tickets after the handshake: records with nothing for the reader,
    // which must not read as the end of the stream.
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(std::time::Duration::from_millis(200), client.read(&mut buf)).await;
    assert!(read.is_err(), "a read with only tickets in returned {read:?}");
    server.write_all(b"+OK\r\n").await.unwrap();
    server.flush().await.unwrap();
    assert_eq!(client.read(&mut buf).await.unwrap(), 5);
}

#[tokio::test]
async fn client_stream_follows_key_updates_from_the_server() {
    let pki = Pki::new();
    let (server, client, _) = client_pair(&pki, &pki.ca, &[&rustls::version::TLS13], 64 * 1024).await;
    let (mut server, mut client) = (server.unwrap(), client.unwrap());
    for round in 0..3 {
        // New keys both ways, asked by the server: the client's answer must precede its next
        // record, encrypted under its new key.
        server.get_mut().1.refresh_traffic_keys().unwrap();
        carries(&mut server, &mut client, format!("+PONG {round}\r\n").as_bytes()).await;
        carries(&mut client, &mut server, b"*1\r\n$4\r\nPING\r\n").await;
    }
}
