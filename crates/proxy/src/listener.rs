//! Accepting client connections: the connection limit, the TLS handshake, then one session task
//! per client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::session::{self, ClientSocket};
use crate::shared::Shared;
use crate::tls::ReloadableAcceptor;

/// The reply Redis gives a client beyond `maxclients`.
const MAX_CLIENTS_REACHED: &[u8] = b"-ERR max number of clients reached\r\n";

/// A client that has not finished its TLS handshake by then is dropped, so half-open connections
/// cannot pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts clients until `shutdown` turns true; with `tls`, every connection first completes a
/// TLS handshake with the acceptor's current certificate.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<Arc<ReloadableAcceptor>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let (mut stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(error) => {
                // Out of file descriptors and similar: pause instead of spinning on the error.
                crate::log_limited!(1, warn, %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(connected) = Connected::admit(&shared) else {
            // Over TLS the refusal is only readable after a handshake; over plain TCP it is sent as
            // is, like Redis does.
            if tls.is_none() {
                tokio::spawn(async move {
                    let _ = stream.write_all(MAX_CLIENTS_REACHED).await;
                    let _ = stream.shutdown().await;
                });
            }
            continue;
        };
        shared.stats.total_connections.fetch_add(1, Ordering::Relaxed);
        shared.metrics.client_connections_total.inc();
        let _ = stream.set_nodelay(true);
        let socket = client_socket(&stream, peer);
        let shared = Arc::clone(&shared);
        let tls = tls.as_ref().map(|t| t.config());
        // Two spawns rather than one task that could take either path: a task is as large as its
        // largest state, and a plain client's task would otherwise carry room for a TLS session.
        // `connected` moves into the task, so the counts drop however it ends, panics included.
        match tls {
            None => tokio::spawn(async move {
                let _connected = connected;
                session::run(shared, stream, socket, None).await;
            }),
            Some(config) => tokio::spawn(async move {
                let _connected = connected;
                serve_tls(config, stream, socket, shared).await;
            }),
        };
    }
}

/// One connected client, counted in `INFO` and in `client_connections` while it lives.
struct Connected(Arc<Shared>);

impl Connected {
    /// Counts a new client, unless `max_clients` are connected already (a smaller bound set while
    /// more are connected refuses new ones only, as Redis' `maxclients`).
    fn admit(shared: &Arc<Shared>) -> Option<Connected> {
        let max_clients = shared.max_clients.load(Ordering::Relaxed);
        if shared.stats.connected_clients.fetch_add(1, Ordering::AcqRel) >= max_clients {
            shared.stats.connected_clients.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        shared.metrics.client_connections.inc();
        Some(Connected(Arc::clone(shared)))
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.stats.connected_clients.fetch_sub(1, Ordering::AcqRel);
        self.0.metrics.client_connections.dec();
    }
}

/// What `CLIENT LIST` names of a client's connection: its address, the proxy's address it came
/// in on (`laddr`) and the socket's descriptor (`fd`).
fn client_socket(stream: &TcpStream, peer: SocketAddr) -> ClientSocket {
    use std::os::fd::AsRawFd;
    let local = stream.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    ClientSocket { peer, local, fd: stream.as_raw_fd() }
}

async fn serve_tls(config: Arc<rustls::ServerConfig>, stream: TcpStream, socket: ClientSocket, shared: Arc<Shared>) {
    let peer = socket.peer;
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, crate::tls::accept(stream, config)).await;
    let tls = match handshake {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            shared.metrics.tls_handshake_errors_total.inc();
            crate::log_limited!(10, info, %peer, %error, "TLS handshake failed");
            return;
        }
        Err(_) => {
            shared.metrics.tls_handshake_errors_total.inc();
            crate::log_limited!(10, info, %peer, "TLS handshake timed out");
            return;
        }
    };
    // With `tls.client_user`, the verified certificate names the client's ACL user.
    let identity = tls
        .connection()
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| crate::tls::certificate_user(leaf, shared.certificate_user));
    // Boxed: the stream (rustls' connection state, ~1 KiB) moves into the session's shared state,
    // and an argument of an async function keeps its room in the future (measured: +1 KiB per
    // idle TLS client unboxed, `bench/idle.py --tls-ca`).
    session::run(shared, Box::new(tls), socket, identity).await;
}
