//! Wiring: from a validated [`Config`] to listening sockets, upstream pools and the topology.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::{Access, AclError};
use crate::command::CommandTable;
use crate::config::{Config, ConfigError, ReadFrom};
use crate::executor::hold::{HoldBudget, HoldLimits};
use crate::health;
use crate::listener;
use crate::metrics::http::HealthCheck;
use crate::metrics::{self, Metrics};
use crate::resp::Limits;
use crate::shared::{Shared, Stats};
use crate::tls::{self, ReloadableAcceptor, TlsError, TlsFiles};
use crate::topology::refresh::TopologySettings;
use crate::topology::{RefreshSignal, Topology, Trigger};
use crate::upstream::{ConnSettings, NodeReport, Upstreams, connect};
use sd_notify::NotifyState;

/// Why the proxy could not start.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("listen.tls is set but the [tls] section is missing")]
    TlsSectionMissing,
    #[error("upstream.tls = true needs upstream.ca")]
    UpstreamCaMissing,
    #[error("ACL: {0}")]
    Acl(#[from] AclError),
    #[error("the open-file limit (ulimit -n) serves no client beside 32 descriptors of the proxy's own")]
    OpenFileLimit,
}

/// Everything built from files named in the config (certificates, keys), checked before serving.
///
/// Both `--check` and start-up go through here, so a file that `--check` accepts is one the
/// proxy can start with.
pub struct Prepared {
    /// The client-facing TLS identity, when `listen.tls` is set.
    pub acceptor: Option<Arc<ReloadableAcceptor>>,
    /// TLS to the nodes, when `upstream.tls` is on.
    pub upstream_tls: Option<Arc<rustls::ClientConfig>>,
    /// The upstream password from its environment variable.
    pub password: Option<String>,
}

/// Loads and checks the files and secrets the config names.
///
/// # Errors
/// [`ServerError`] naming the bad file or variable.
pub fn prepare(config: &Config) -> Result<Prepared, ServerError> {
    let password = config.upstream_password()?;
    let acceptor = match (&config.listen.tls, &config.tls) {
        (None, _) => None,
        (Some(_), None) => return Err(ServerError::TlsSectionMissing),
        (Some(_), Some(files)) => Some(Arc::new(ReloadableAcceptor::new(TlsFiles::from(files))?)),
    };
    let upstream_tls = match (config.upstream.tls, &config.upstream.ca) {
        (false, _) => None,
        (true, None) => return Err(ServerError::UpstreamCaMissing),
        (true, Some(ca)) => {
            Some(tls::client_config(ca, config.upstream.client_cert.as_deref(), config.upstream.client_key.as_deref())?)
        }
    };
    // Checked against the built-in table here; at start-up the file is read again with the commands
    // the cluster reports, so it may also name module commands.
    Access::from_config(config.auth.as_ref(), &CommandTable::builtin())?;
    Ok(Prepared { acceptor, upstream_tls, password })
}

/// `listen.max_clients`, with the open-file limit raised for it, or as many clients as the limit
/// serves when it cannot be raised that far, as Redis reduces its `maxclients`. None when the limit
/// serves no client (Redis then refuses to start).
fn max_clients_served(max_clients: usize) -> Option<usize> {
    let wanted = u32::try_from(max_clients).unwrap_or(u32::MAX);
    match crate::fd_limit::make_room_for(wanted) {
        Ok(()) => Some(max_clients),
        Err(0) => None,
        Err(served) => {
            let served = usize::try_from(served).unwrap_or(usize::MAX);
            tracing::warn!(
                max_clients,
                served,
                "the open-file limit (ulimit -n, systemd's LimitNOFILE) cannot be raised to serve \
                 listen.max_clients and 32 more descriptors: max_clients reduced"
            );
            Some(served)
        }
    }
}

/// Runs the proxy until `shutdown` completes, then stops accepting and waits (up to
/// `listen.shutdown_timeout`) for connected clients to finish.
///
/// # Errors
/// [`ServerError`] when the proxy cannot start; once serving, failures are logged and survived.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
    let Prepared { acceptor, upstream_tls, password } = prepare(&config)?;
    let max_clients = max_clients_served(config.listen.max_clients).ok_or(ServerError::OpenFileLimit)?;
    let metrics = Metrics::new();
    if let Some(acceptor) = &acceptor {
        metrics.tls_cert_expiry_seconds.set(unix_now() + acceptor.expiry());
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let topology = build_topology(&config, upstream_tls, password, &metrics);
    // Bound before the first topology load, so /healthz answers (and /readyz says why not ready)
    // while the proxy is still starting.
    if let Some(addr) = config.metrics.listen {
        let listener =
            TcpListener::bind(addr).await.map_err(|source| ServerError::Bind { addr: addr.to_string(), source })?;
        tracing::info!(%addr, "metrics and health endpoints listening");
        let health: HealthCheck = {
            let (metrics, topology) = (Arc::clone(&metrics), Arc::clone(&topology));
            Arc::new(move || health::readiness(&metrics, &topology))
        };
        tokio::spawn(metrics::http::serve(listener, Arc::clone(&metrics), health, stop_rx.clone()));
    }

    if let Err(error) = topology.refresh(Trigger::Startup).await {
        // Not fatal: the refresher keeps polling quickly and clients get CLUSTERDOWN meanwhile.
        tracing::error!(%error, "no node gave a slot map at start-up; retrying in the background");
    }
    let table = learn_commands(&topology).await;
    topology.spawn_refresher();
    health::spawn_health_poller(Arc::clone(&metrics), Arc::clone(&topology), HEALTH_POLL_INTERVAL);
    let access = Access::from_config(config.auth.as_ref(), &table)?;
    let shared = Arc::new(shared_state(&config, max_clients, metrics, access, table, Arc::clone(&topology)));

    let mut listeners = Vec::new();
    for (addr, tls) in [(config.listen.plain, None), (config.listen.tls, acceptor.clone())] {
        let Some(addr) = addr else {
            continue;
        };
        let listener =
            TcpListener::bind(addr).await.map_err(|source| ServerError::Bind { addr: addr.to_string(), source })?;
        tracing::info!(%addr, tls = tls.is_some(), "listening");
        let serve = listener::serve(listener, Arc::clone(&shared), tls, stop_rx.clone());
        listeners.push(tokio::spawn(serve));
    }
    spawn_reloader(acceptor, Arc::clone(&shared));
    let timing = crate::tracking::stream::StreamTiming {
        liveness_interval: config.tracking.liveness_interval,
        command_timeout: config.upstream.command_timeout,
    };
    crate::tracking::stream::spawn_supervisor(Arc::clone(&shared.tracking), Arc::clone(&topology), timing);
    spawn_ready_notifier(&topology);
    spawn_idle_trimmer(Arc::downgrade(&shared));
    spawn_subscription_follower(Arc::downgrade(&shared), &topology);

    shutdown.await;
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
    tracing::info!("shutting down: no new connections");
    let _ = stop_tx.send(true);
    shared.clients.stop_all();
    for listener in listeners {
        let _ = listener.await;
    }
    let deadline = Instant::now() + config.listen.shutdown_timeout;
    while shared.stats.connected_clients.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The node pools and the topology that owns them; nothing is loaded yet.
fn build_topology(
    config: &Config,
    upstream_tls: Option<Arc<rustls::ClientConfig>>,
    password: Option<String>,
    metrics: &Arc<Metrics>,
) -> Arc<Topology> {
    // Connections report failures and reconnections to the topology, which owns the pools: a
    // weak back-reference set once the topology exists breaks the cycle.
    let topology_ref: Arc<OnceLock<Weak<Topology>>> = Arc::new(OnceLock::new());
    let on_node = {
        let topology_ref = Arc::clone(&topology_ref);
        move |addr: &str, report: NodeReport| {
            if let Some(topology) = topology_ref.get().and_then(Weak::upgrade) {
                match report {
                    NodeReport::Failed => topology.report_failure(addr),
                    NodeReport::Answered { since } => topology.report_reachable(addr, since),
                }
            }
        }
    };
    let settings = ConnSettings {
        user: config.upstream.user.clone(),
        password,
        connect_timeout: config.upstream.connect_timeout,
        command_timeout: config.upstream.command_timeout,
        tls: upstream_tls,
        on_node: Arc::new(on_node),
        no_evict_refused: Default::default(),
    };
    let upstreams = Arc::new(Upstreams::new(
        settings,
        config.connections_per_node(),
        config.upstream.spare_connections,
        Arc::clone(metrics),
    ));
    let topology = Topology::new(
        TopologySettings {
            seeds: config.upstream.seeds.clone(),
            refresh_interval: config.topology.refresh_interval,
            tls: config.upstream.tls,
            use_replicas: config.upstream.read_from != ReadFrom::Master,
        },
        upstreams,
        RefreshSignal::new(),
    );
    let _ = topology_ref.set(Arc::downgrade(&topology));
    topology
}

/// What every session shares, from the configuration and what start-up learnt.
fn shared_state(
    config: &Config,
    max_clients: usize,
    metrics: Arc<Metrics>,
    access: Access,
    table: CommandTable,
    topology: Arc<Topology>,
) -> Shared {
    Shared {
        access,
        table: Arc::new(table),
        topology,
        limits: Limits {
            max_request_bytes: config.limits.max_request_bytes,
            max_array_len: config.limits.max_array_len,
        },
        max_pipeline: config.limits.max_pipeline,
        client_output_limit: config.limits.client_output_limit,
        output_classes: crate::output_classes::OutputClasses::new(
            crate::output_classes::Limits {
                hard: config.limits.normal_output_limit,
                soft: config.limits.normal_output_soft_limit,
                soft_time: config.limits.normal_output_soft_time,
            },
            crate::output_classes::Limits {
                hard: config.limits.pubsub_output_limit,
                soft: config.limits.pubsub_output_soft_limit,
                soft_time: config.limits.pubsub_output_soft_time,
            },
        ),
        max_clients: std::sync::atomic::AtomicUsize::new(max_clients),
        certificate_user: config.tls.as_ref().map(|t| t.client_user).unwrap_or_default(),
        command_timeout: config.upstream.command_timeout,
        idle_timeout: crate::shared::IdleTimeout::new(config.listen.idle_timeout),
        read_from: config.upstream.read_from,
        refresh_on_moved: config.topology.refresh_on_moved,
        stats: Stats::default(),
        identity: crate::identity::Identity::new(config),
        functions: Default::default(),
        hold: Arc::new(HoldBudget::new(
            config.upstream.failover_wait,
            HoldLimits {
                max_requests: config.limits.held_requests,
                max_bytes: config.limits.held_bytes,
                per_client_requests: config.limits.held_requests_per_client,
                per_client_bytes: config.limits.held_bytes_per_client,
            },
            metrics.held.now.clone(),
        )),
        scripts: Default::default(),
        clients: Default::default(),
        tracking: Arc::new(crate::tracking::Hub::new(config.tracking.max_keys, metrics.tracking.clone())),
        metrics,
    }
}

/// Tells systemd (`Type=notify`) the proxy is ready once the listeners are bound and a slot map is
/// loaded, which may be after start-up when no node answered at first. Without systemd
/// (`NOTIFY_SOCKET` unset) this does nothing.
fn spawn_ready_notifier(topology: &Arc<Topology>) {
    let mut changes = topology.subscribe();
    tokio::spawn(async move {
        if changes.wait_for(|generation| *generation > 0).await.is_ok()
            && let Err(error) = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status("serving")])
        {
            tracing::warn!(%error, "cannot notify systemd");
        }
    });
}

/// Asks every subscribed client to look at the slot map when it changed: classic subscriptions
/// follow the pub/sub home, keyspace-notification mirrors the masters, as soon as the map names
/// them (a subscriber that only listens may send nothing for hours).
fn spawn_subscription_follower(shared: Weak<Shared>, topology: &Arc<Topology>) {
    let mut changes = topology.subscribe();
    tokio::spawn(async move {
        while changes.changed().await.is_ok() {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            shared.clients.signal_subscribed();
        }
    });
}

/// Once a second, asks the clients that sent nothing for [`IDLE_TRIM_AFTER`] to give back the
/// buffers their last requests left them ([`Clients::trim_idle`](crate::session::clients::Clients::trim_idle)),
/// as Redis' `clientsCron` frees idle clients' query buffers. One pass over the clients a
/// second; nothing on a request's path.
fn spawn_idle_trimmer(shared: Weak<Shared>) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_secs(1));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(shared) = shared.upgrade() else {
                return;
            };
            shared.clients.trim_idle(IDLE_TRIM_AFTER);
        }
    });
}

/// How long a client sends nothing before its session gives back its spare buffers (Redis frees
/// an idle client's query buffer after 2 s).
const IDLE_TRIM_AFTER: Duration = Duration::from_secs(2);

/// How often every node is asked for INFO replication (node_up, replication lag, /readyz).
const HEALTH_POLL_INTERVAL: Duration = Duration::from_secs(5);

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Reloads certificates and users on SIGHUP: new handshakes use the new certificate, open
/// connections keep theirs, and users are looked up again on their next command. A bad new file
/// is refused with a log line and what was in force stays.
fn spawn_reloader(acceptor: Option<Arc<ReloadableAcceptor>>, shared: Arc<Shared>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; certificates and users will not be reloaded");
        return;
    };
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let _ = sd_notify::notify(&[NotifyState::Reloading]);
            if let Some(acceptor) = &acceptor {
                match acceptor.reload() {
                    Ok(()) => {
                        shared.metrics.tls_cert_expiry_seconds.set(unix_now() + acceptor.expiry());
                        tracing::info!(expires_in_seconds = acceptor.expiry(), "TLS certificate reloaded");
                    }
                    Err(error) => tracing::error!(%error, "TLS reload refused; keeping the current certificate"),
                }
            }
            match shared.access.reload(&shared.table) {
                Ok(Some(users)) => tracing::info!(users, "ACL file reloaded"),
                Ok(None) => {}
                Err(error) => tracing::error!(%error, "ACL reload refused; keeping the current users"),
            }
            let _ = sd_notify::notify(&[NotifyState::Ready]);
        }
    });
}

/// The built-in command table, plus the commands a master reports that the table does not know
/// (modules, newer servers), so those are routed by the key positions the server reports.
async fn learn_commands(topology: &Topology) -> CommandTable {
    let mut table = CommandTable::builtin();
    let master = topology.routing().masters().first().map(|m| m.addr().to_string());
    let Some(addr) = master else {
        return table;
    };
    match connect::query(&addr, topology.upstreams().settings(), &[b"COMMAND"]).await {
        Ok(reply) => {
            let learned = table.learn_from_command_reply(&reply);
            // `built_in` says which Redis the table started from, `learned` what this cluster adds.
            let built_in = CommandTable::builtin_redis_version();
            tracing::info!(node = %addr, built_in, learned, known = table.len(), "command table loaded");
        }
        Err(error) => tracing::warn!(node = %addr, %error, "COMMAND failed; using the built-in table only"),
    }
    table
}
