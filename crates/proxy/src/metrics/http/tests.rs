use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::*;

struct Server {
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

async fn start() -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let metrics = Metrics::new();
    let ready = Arc::new(AtomicBool::new(false));
    let health: HealthCheck = {
        let ready = Arc::clone(&ready);
        Arc::new(move || {
            if ready.load(Ordering::Relaxed) {
                Health::Ready
            } else {
                Health::NotReady("3 of 16384 slots covered".to_string())
            }
        })
    };
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(serve(listener, Arc::clone(&metrics), health, stop_rx));
    Server { addr, metrics, ready, stop, task }
}

/// Sends one raw HTTP/1.1 request and returns (status, lowercased head, body).
async fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    timeout(Duration::from_secs(5), stream.read_to_end(&mut raw)).await.expect("response in time").expect("read");
    let raw = String::from_utf8(raw).expect("utf-8 response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("head and body");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status code");
    (status, head.to_ascii_lowercase(), body.to_string())
}

#[tokio::test]
async fn metrics_are_served_in_the_prometheus_text_format() {
    let server = start().await;
    server.metrics.client_connections.set(7);
    let (status, head, body) = request(server.addr, "GET", "/metrics").await;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/plain; version=0.0.4"), "{head}");
    assert!(body.contains("# TYPE redisforge_commands_total counter"), "{body}");
    assert!(body.contains("\nredisforge_client_connections 7\n"), "{body}");
}

#[tokio::test]
async fn healthz_answers_ok() {
    let server = start().await;
    let (status, _, body) = request(server.addr, "GET", "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok"));
}

#[tokio::test]
async fn readyz_reports_the_health_check_with_its_reason() {
    let server = start().await;
    let (status, _, body) = request(server.addr, "GET", "/readyz").await;
    assert_eq!((status, body.as_str()), (503, "3 of 16384 slots covered"));
    server.ready.store(true, Ordering::Relaxed);
    let (status, _, body) = request(server.addr, "GET", "/readyz").await;
    assert_eq!((status, body.as_str()), (200, "ready"));
}

#[tokio::test]
async fn unknown_paths_are_404_and_other_methods_405() {
    let server = start().await;
    assert_eq!(request(server.addr, "GET", "/nope").await.0, 404);
    assert_eq!(request(server.addr, "GET", "/metrics/extra").await.0, 404);
    let (status, head, _) = request(server.addr, "POST", "/metrics").await;
    assert_eq!(status, 405);
    assert!(head.contains("allow: get, head"), "{head}");
    assert_eq!(request(server.addr, "DELETE", "/readyz").await.0, 405);
}

#[tokio::test]
async fn head_gets_the_headers_without_a_body() {
    let server = start().await;
    let (status, head, body) = request(server.addr, "HEAD", "/metrics").await;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/plain; version=0.0.4"), "{head}");
    assert_eq!(body, "");
}

#[tokio::test]
async fn keep_alive_connections_serve_several_requests() {
    let server = start().await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    for _ in 0..2 {
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await.expect("write");
        let mut buf = vec![0u8; 1024];
        let n = timeout(Duration::from_secs(5), stream.read(&mut buf)).await.expect("in time").expect("read");
        let reply = String::from_utf8_lossy(&buf[..n]);
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.ends_with("\r\n\r\nok"), "{reply}");
    }
}

#[tokio::test]
async fn shutdown_stops_the_server_and_closes_idle_connections() {
    let server = start().await;
    let mut idle = TcpStream::connect(server.addr).await.expect("connect");
    // Let the server accept it before stopping.
    assert_eq!(request(server.addr, "GET", "/healthz").await.0, 200);
    server.stop.send_replace(true);
    timeout(Duration::from_secs(5), server.task).await.expect("serve returns").expect("no panic");
    let mut buf = [0u8; 16];
    let read = timeout(Duration::from_secs(5), idle.read(&mut buf)).await.expect("idle connection closed");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(TcpStream::connect(server.addr).await.is_err(), "listener still open after shutdown");
}
