//! Wiring: from a validated [`Config`] to listening sockets, upstream pools and the topology.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::command::CommandTable;
use crate::config::{Config, ConfigError, ReadFrom};
use crate::listener;
use crate::resp::Limits;
use crate::session::{Shared, Stats};
use crate::topology::refresh::TopologySettings;
use crate::topology::{RefreshSignal, Topology, Trigger};
use crate::upstream::{ConnSettings, Upstreams, admin};

/// Why the proxy could not start.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("listen.tls is set but TLS is not implemented yet; use listen.plain")]
    TlsNotImplemented,
}

/// Runs the proxy until `shutdown` completes, then stops accepting and waits (up to
/// `listen.shutdown_timeout`) for connected clients to finish.
///
/// # Errors
/// [`ServerError`] when the proxy cannot start; once serving, failures are logged and survived.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
    let password = config.upstream_password()?;
    if config.listen.tls.is_some() {
        return Err(ServerError::TlsNotImplemented);
    }
    let signal = RefreshSignal::new();
    // Connections report failures to the topology, which owns the pools: a weak back-reference
    // set once the topology exists breaks the cycle.
    let topology_ref: Arc<OnceLock<Weak<Topology>>> = Arc::new(OnceLock::new());
    let on_failure = {
        let topology_ref = Arc::clone(&topology_ref);
        move |addr: &str| {
            if let Some(topology) = topology_ref.get().and_then(Weak::upgrade) {
                topology.report_failure(addr);
            }
        }
    };
    let settings = ConnSettings {
        user: config.upstream.user.clone(),
        password,
        connect_timeout: config.upstream.connect_timeout,
        command_timeout: config.upstream.command_timeout,
        on_failure: Arc::new(on_failure),
    };
    let upstreams = Arc::new(Upstreams::new(settings, config.upstream.connections_per_node));
    let topology = Topology::new(
        TopologySettings {
            seeds: config.upstream.seeds.clone(),
            refresh_interval: config.topology.refresh_interval,
            tls: config.upstream.tls,
            use_replicas: config.upstream.read_from != ReadFrom::Master,
        },
        Arc::clone(&upstreams),
        signal,
    );
    let _ = topology_ref.set(Arc::downgrade(&topology));

    if let Err(error) = topology.refresh(Trigger::Startup).await {
        // Not fatal: the refresher keeps polling quickly and clients get CLUSTERDOWN meanwhile.
        tracing::error!(%error, "no node gave a slot map at start-up; retrying in the background");
    }
    let table = learn_commands(&topology).await;
    topology.spawn_refresher();

    let shared = Arc::new(Shared {
        table: Arc::new(table),
        topology: Arc::clone(&topology),
        limits: Limits {
            max_request_bytes: config.limits.max_request_bytes,
            max_array_len: config.limits.max_array_len,
        },
        max_pipeline: config.limits.max_pipeline,
        client_output_limit: config.limits.client_output_limit,
        command_timeout: config.upstream.command_timeout,
        idle_timeout: config.listen.idle_timeout,
        read_from: config.upstream.read_from,
        refresh_on_moved: config.topology.refresh_on_moved,
        stats: Stats::default(),
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut listeners = Vec::new();
    if let Some(addr) = config.listen.plain {
        let listener =
            TcpListener::bind(addr).await.map_err(|source| ServerError::Bind { addr: addr.to_string(), source })?;
        tracing::info!(%addr, "listening (plain)");
        listeners.push(tokio::spawn(listener::serve_plain(
            listener,
            Arc::clone(&shared),
            config.listen.max_clients,
            stop_rx.clone(),
        )));
    }

    shutdown.await;
    tracing::info!("shutting down: no new connections");
    let _ = stop_tx.send(true);
    for listener in listeners {
        let _ = listener.await;
    }
    let deadline = Instant::now() + config.listen.shutdown_timeout;
    while shared.stats.connected_clients.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The built-in command table, plus the commands a master reports that the table does not know
/// (modules, newer servers), so those are routed by the key positions the server reports.
async fn learn_commands(topology: &Topology) -> CommandTable {
    let mut table = CommandTable::builtin();
    let master = topology.routing().masters().first().map(|m| m.addr().to_string());
    let Some(addr) = master else {
        return table;
    };
    match admin::query(&addr, topology.upstreams().settings(), &[b"COMMAND"]).await {
        Ok(reply) => {
            let learned = table.learn_from_command_reply(&reply);
            tracing::info!(node = %addr, learned, known = table.len(), "command table loaded");
        }
        Err(error) => tracing::warn!(node = %addr, %error, "COMMAND failed; using the built-in table only"),
    }
    table
}
