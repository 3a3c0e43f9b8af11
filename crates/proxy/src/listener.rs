//! Accepting client connections: the connection limit, then one session task per client.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::session::{self, Shared};

/// The reply Redis gives a client beyond `maxclients`.
const MAX_CLIENTS_REACHED: &[u8] = b"-ERR max number of clients reached\r\n";

/// Accepts plain-TCP clients until `shutdown` turns true.
pub async fn serve_plain(
    listener: TcpListener,
    shared: Arc<Shared>,
    max_clients: usize,
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
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let stats = &shared.stats;
        if stats.connected_clients.fetch_add(1, Ordering::AcqRel) >= max_clients {
            stats.connected_clients.fetch_sub(1, Ordering::AcqRel);
            tokio::spawn(async move {
                let _ = stream.write_all(MAX_CLIENTS_REACHED).await;
                let _ = stream.shutdown().await;
            });
            continue;
        }
        stats.total_connections.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let (reader, writer) = stream.into_split();
            session::run(Arc::clone(&shared), reader, writer, peer, stop).await;
            shared.stats.connected_clients.fetch_sub(1, Ordering::AcqRel);
        });
    }
}
