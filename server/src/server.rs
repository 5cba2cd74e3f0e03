//! Building and running the server: keys, engine, listener, accept loop
//! and graceful shutdown.

use std::{
    io,
    net::SocketAddr,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::Duration,
};

use axum::Router;
use tidings_core::{
    broker::{BrokerConfig, HistoryLimits},
    hub::HubConfig,
    topic::Pattern,
};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    auth::{Access, Authenticator, KeyError, Keys},
    config::{ServeArgs, StreamWriter},
    conn::{ConnSettings, Connections, HeadTimeouts},
    engine::{
        Engine, MemoryEngine, NatsEngine, NatsStartError, RedisEngine, RedisSettings,
        RedisStartError, nats::NatsArgsError,
    },
    http::{AppState, Settings, cors_layer, router},
    limits::{Admission, ConnectionLimiter, SocketLimiter, fit_to_open_files},
    metrics::Metrics,
    presence::Presence,
    tls::{CertStore, TlsError},
};

/// Reconnection delay announced to streams closed by a shutdown (ms).
pub const SHUTDOWN_RETRY_MS: u64 = 500;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A public pattern is invalid.
    #[error("public pattern `{pattern}` is invalid: {reason}")]
    BadPublicPattern {
        /// The pattern.
        pattern: String,
        /// Why.
        reason: String,
    },
    /// A key could not be used.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The public key file could not be read.
    #[error("cannot read the public key file {path}: {source}")]
    KeyFile {
        /// The file.
        path: String,
        /// The IO error.
        source: io::Error,
    },
    /// A CORS origin is invalid.
    #[error("{0}")]
    Cors(String),
    /// The TLS certificate or key (`--tls-cert`, `--tls-key`) cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Cluster mode (`--redis`) could not start.
    #[error(transparent)]
    Cluster(#[from] RedisStartError),
    /// NATS mode (`--nats`) could not start.
    #[error(transparent)]
    Nats(#[from] NatsStartError),
    /// The `--nats*` flags do not go together.
    #[error(transparent)]
    NatsArgs(#[from] NatsArgsError),
    /// More than one engine was asked for.
    #[error(
        "give only one of --redis (cluster mode on Redis) and --nats (cluster mode on NATS JetStream); without either, the server runs alone in memory"
    )]
    SeveralEngines,
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The IO error.
        source: io::Error,
    },
}

/// The hub settings that `args` ask for.
pub fn hub_config(args: &ServeArgs) -> HubConfig {
    let broker = BrokerConfig::default()
        .queue_capacity(args.queue)
        .queue_bytes(args.queue_bytes)
        .total_queue_bytes(args.queue_total_bytes)
        .history(HistoryLimits {
            per_topic: args.history,
            ..HistoryLimits::default()
        });
    HubConfig::default()
        .broker(broker)
        .idempotency_window_us(args.idempotency_window.as_micros() as u64)
}

/// The one-process engine for `args`.
pub fn memory_engine(args: &ServeArgs) -> Arc<dyn Engine> {
    Arc::new(MemoryEngine::new(hub_config(args)))
}

/// A running server. Dropping the handle does not stop it; call
/// [`shutdown`](Self::shutdown).
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
    state: Arc<AppState>,
    sockets: SocketLimiter,
    tls: Option<Arc<CertStore>>,
    generated_secret: Option<String>,
}

impl RunningServer {
    /// The address it listens on (with the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The HS256 secret made up at start when none was configured.
    pub fn generated_secret(&self) -> Option<&str> {
        self.generated_secret.as_deref()
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        self.state.metrics()
    }

    /// Streams the watchdog looks after now (open streams).
    pub fn open_streams(&self) -> usize {
        self.state.watchdog.len()
    }

    /// `https` when serving TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// Reads the TLS certificate and key files again (as on SIGHUP); new
    /// handshakes use them, open connections keep theirs. On error the
    /// previous certificate stays.
    pub fn reload_tls(&self) -> Result<(), TlsError> {
        self.tls.as_ref().map_or(Ok(()), |store| store.reload())
    }

    /// TCP connections open now, of every kind (streams, requests, idle
    /// keep-alive, refusals in progress).
    pub fn open_tcp_connections(&self) -> usize {
        self.sockets.open()
    }

    /// Starts a graceful shutdown without waiting for it.
    pub fn begin_shutdown(&self) {
        self.stop.cancel();
    }

    /// Shuts down gracefully: stops accepting, tells every stream to
    /// reconnect soon and closes it, finishes publishes in flight.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }

    /// Waits until the server stops (after [`begin_shutdown`](Self::begin_shutdown)).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Starts a server for `args` with the engine they ask for.
pub async fn start(args: ServeArgs) -> Result<RunningServer, StartError> {
    let nats = args.nats.settings()?;
    let engine = match (&args.redis, nats) {
        (Some(_), Some(_)) => return Err(StartError::SeveralEngines),
        (Some(url), None) => redis_engine(&args, url).await?,
        (None, Some(mut settings)) => {
            settings.duplicate_window = args.idempotency_window;
            Arc::new(NatsEngine::start(settings, hub_config(&args)).await?) as Arc<dyn Engine>
        }
        (None, None) => memory_engine(&args),
    };
    start_with_engine(args, engine).await
}

/// The cluster engine for `args` (`--redis`): connects to Redis and loads
/// the shared history.
async fn redis_engine(args: &ServeArgs, url: &str) -> Result<Arc<dyn Engine>, StartError> {
    let mut settings = RedisSettings::new(url);
    settings.stream_key = args.redis_stream_key.clone();
    settings.history = args.redis_history;
    settings.entry_format = args.redis_entry_format;
    settings.read_pause = Duration::from_millis(args.redis_read_pause_ms);
    settings.publish_timeout = args.redis_publish_timeout;
    settings.idempotency_window = args.idempotency_window;
    let engine = Arc::new(RedisEngine::connect(settings, hub_config(args)).await?);
    engine.start_probe();
    Ok(engine)
}

/// Starts a server for `args` on a given engine.
pub async fn start_with_engine(
    args: ServeArgs,
    engine: Arc<dyn Engine>,
) -> Result<RunningServer, StartError> {
    let mut keys = Keys::default().with_policy(args.token_policy());
    let mut generated_secret = None;
    match &args.keys.jwt_secret {
        Some(secret) => keys = keys.with_secret(secret.as_bytes())?,
        None if args.jwt_public_key.is_none() => {
            let secret = format!(
                "{:032x}{:032x}",
                rand::random::<u128>(),
                rand::random::<u128>()
            );
            keys = keys.with_secret(secret.as_bytes())?;
            generated_secret = Some(secret);
        }
        None => {}
    }
    if let Some(path) = &args.jwt_public_key {
        let pem = std::fs::read(path).map_err(|source| StartError::KeyFile {
            path: path.display().to_string(),
            source,
        })?;
        keys = keys.with_public_pem(&pem)?;
    }
    let (read, write) = args.public_patterns();
    let parse = |list: Vec<String>| {
        list.into_iter()
            .map(|p| {
                Pattern::new(&p).map_err(|e| StartError::BadPublicPattern {
                    pattern: p.clone(),
                    reason: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let public = Access {
        subscribe: parse(read)?,
        publish: parse(write)?,
    };
    let cors = cors_layer(&args.cors_origins).map_err(StartError::Cors)?;

    let settings = Settings {
        retry_ms: args.retry_ms,
        shutdown_retry_ms: SHUTDOWN_RETRY_MS.min(args.retry_ms),
        write_delay: args.write_delay,
        busy_write_delay: args.busy_write_delay,
        max_body_bytes: args.max_body_bytes,
        max_batch: args.max_batch,
        max_topics: args.max_topics,
        trust_forwarded_for: args.trust_forwarded_for,
        presence_page_max: args.presence_page_max,
        max_replays_per_ip: args.max_replays_per_ip,
        replay_rate: args.replay_rate,
        replay_starts_per_ip: args.replay_starts_per_ip,
        replay_rate_per_ip: args.replay_rate_per_ip,
    };
    let presence = Presence::new(engine.presence_store(), engine.clone(), args.presence_ttl);
    presence.start();
    let state = Arc::new(AppState::new(
        settings,
        Authenticator::new(keys, public),
        engine,
        ConnectionLimiter::new(args.max_connections, args.max_connections_per_ip),
        presence,
        args.heartbeat,
        args.write_timeout,
    ));
    let app = router(state.clone(), cors, args.demo_dir.as_deref());

    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: args.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: args.listen,
        source,
    })?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(Arc::new(CertStore::load(cert, key)?)),
        _ => None,
    };
    let sockets = socket_limiter(&args);
    let settings = ConnSettings {
        head: HeadTimeouts {
            header: args.header_timeout,
            keepalive: args.keepalive_timeout,
        },
        body: args.body_timeout,
        lean_streams: args.stream_writer != StreamWriter::Hyper,
        direct_writes: args.stream_writer == StreamWriter::Direct,
    };
    let stop = CancellationToken::new();
    if let Some(store) = &tls {
        tokio::spawn(store.clone().watch(stop.clone()));
    }
    let task = tokio::spawn(serve(
        listener,
        app,
        state.clone(),
        Accept {
            sockets: sockets.clone(),
            settings,
            tls: tls.as_ref().map(|store| Arc::new(store.server_config())),
        },
        stop.clone(),
        args.shutdown_timeout,
    ));
    Ok(RunningServer {
        addr,
        stop,
        task,
        state,
        sockets,
        tls,
        generated_secret,
    })
}

/// The TCP connection caps of `args`: `--max-tcp-connections` (default
/// `--max-connections` + 1024, fitted to the open-file limit) and
/// `--max-tcp-connections-per-ip` (default twice `--max-connections-per-ip`;
/// none behind a trusted proxy, where every peer is the proxy).
fn socket_limiter(args: &ServeArgs) -> SocketLimiter {
    let total = args
        .max_tcp_connections
        .unwrap_or(args.max_connections.saturating_add(1024));
    let per_ip = (!args.trust_forwarded_for).then(|| {
        args.max_tcp_connections_per_ip
            .unwrap_or(args.max_connections_per_ip.saturating_mul(2))
    });
    SocketLimiter::new(fit_to_open_files(total.max(1)), per_ip)
}

/// What the accept loop applies to each connection.
struct Accept {
    sockets: SocketLimiter,
    settings: ConnSettings,
    tls: Option<Arc<rustls::ServerConfig>>,
}

/// Accepts connections until `stop`, then shuts down gracefully.
async fn serve(
    listener: TcpListener,
    app: Router,
    state: Arc<AppState>,
    accept: Accept,
    stop: CancellationToken,
    shutdown_timeout: Duration,
) {
    let watchdog_stop = CancellationToken::new();
    tokio::spawn(state.watchdog.clone().run(watchdog_stop.clone()));
    let connections = Connections::new(app, accept.settings, accept.tls, state.metrics.clone());

    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait, don't spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        match accept.sockets.admit(peer.ip()) {
            Admission::Serve(permit) => connections.serve(tcp, peer, permit),
            Admission::Refuse(permit, error) => {
                state.metrics.tcp_refused.fetch_add(1, Relaxed);
                tracing::debug!(%peer, code = error.code(), "refused a connection over the TCP caps");
                connections.refuse(tcp, peer, permit, error);
            }
            Admission::Close => {
                state.metrics.tcp_refused.fetch_add(1, Relaxed);
                tracing::debug!(%peer, "closed a connection at accept: over the TCP caps and their reserve");
                drop(tcp);
            }
        }
    }

    // Shutdown: refuse new work, close every stream with a short `retry:`,
    // let responses and publishes in flight finish, within the timeout.
    drop(listener);
    state.shutting_down.store(true, Relaxed);
    let hub = state.engine.hub().clone();
    hub.close_all();
    let finish = async {
        // A subscription opened while we were closing the others is closed
        // by a later round.
        let closer = async {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                hub.close_all();
            }
        };
        tokio::select! {
            _ = connections.shutdown() => {}
            _ = closer => {}
        }
        // Leaves of the closed streams go out before the engine stops.
        state.presence.shutdown().await;
        state.engine.shutdown().await;
    };
    if tokio::time::timeout(shutdown_timeout, finish)
        .await
        .is_err()
    {
        tracing::warn!("shutdown timeout reached; closing the remaining connections");
    }
    watchdog_stop.cancel();
}
