//! The HTTP API: routes, shared state, CORS and request logging.

mod events;
mod ops;
mod presence;
mod publish;

use std::{
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::{Request, State},
    http::{HeaderName, HeaderValue, Method, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use tower_http::{
    cors::{AllowOrigin, Any, CorsLayer},
    services::ServeDir,
};

use crate::{
    auth::Authenticator,
    engine::Engine,
    error::ApiError,
    limits::{ConnectionLimiter, ReplayLimiter, ReplayPace},
    metrics::Metrics,
    presence::Presence,
    stream::{ConnectionInfo, Watchdog},
};

/// Limits and timings the handlers apply.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `retry:` sent at the start of every stream (ms).
    pub retry_ms: u64,
    /// `retry:` sent just before closing streams on shutdown (ms).
    pub shutdown_retry_ms: u64,
    /// Least time between two writes of a live stream (zero: none).
    pub write_delay: std::time::Duration,
    /// Without a write delay: least time after a write that carried
    /// several messages (zero: none).
    pub busy_write_delay: std::time::Duration,
    /// Largest publish body.
    pub max_body_bytes: usize,
    /// Most messages per publish.
    pub max_batch: usize,
    /// Most topics per subscription.
    pub max_topics: usize,
    /// Use the last `X-Forwarded-For` address as the client's (behind a proxy).
    pub trust_forwarded_for: bool,
    /// Most clients one `GET /presence` answer lists.
    pub presence_page_max: usize,
    /// Most streams per client IP replaying history at once.
    pub max_replays_per_ip: usize,
    /// Messages a second all replays together may send (0: unlimited).
    pub replay_rate: u64,
    /// Replays one client IP may start a second (0: unlimited).
    pub replay_starts_per_ip: u64,
    /// Messages a second all replays of one client IP may send (0:
    /// unlimited).
    pub replay_rate_per_ip: u64,
}

/// State shared by every request.
pub struct AppState {
    pub(crate) settings: Settings,
    pub(crate) auth: Authenticator,
    pub(crate) engine: Arc<dyn Engine>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) limiter: ConnectionLimiter,
    pub(crate) replays: ReplayLimiter,
    pub(crate) watchdog: Arc<Watchdog>,
    pub(crate) presence: Arc<Presence>,
    pub(crate) shutting_down: AtomicBool,
    /// What every stream sends before closing on shutdown (a short
    /// `retry:`), encoded once and shared.
    pub(crate) farewell: bytes::Bytes,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("settings", &self.settings)
            .field("shutting_down", &self.shutting_down)
            .finish_non_exhaustive()
    }
}

impl AppState {
    pub(crate) fn new(
        settings: Settings,
        auth: Authenticator,
        engine: Arc<dyn Engine>,
        limiter: ConnectionLimiter,
        presence: Arc<Presence>,
        heartbeat: Duration,
        write_timeout: Duration,
    ) -> Self {
        let mut farewell = Vec::with_capacity(16);
        tidings_core::sse::encode_retry(settings.shutdown_retry_ms, &mut farewell);
        Self {
            farewell: farewell.into(),
            replays: ReplayLimiter::new(settings.max_replays_per_ip)
                .paced(ReplayPace::new(settings.replay_rate))
                .with_start_rate(settings.replay_starts_per_ip)
                .with_address_rate(settings.replay_rate_per_ip),
            settings,
            auth,
            engine,
            metrics: Arc::default(),
            limiter,
            watchdog: Arc::new(Watchdog::new(heartbeat, write_timeout)),
            presence,
            shutting_down: AtomicBool::new(false),
        }
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub(crate) fn refuse_if_shutting_down(&self) -> Result<(), ApiError> {
        if self.shutting_down.load(Relaxed) {
            return Err(ApiError::Unavailable(
                "the server is shutting down; retry on another instance".into(),
            ));
        }
        Ok(())
    }

    /// The client's address: the socket's peer, or the last hop of
    /// `X-Forwarded-For` when configured to trust a proxy.
    pub(crate) fn client_ip(
        &self,
        conn: Option<&ConnectionInfo>,
        headers: &axum::http::HeaderMap,
    ) -> IpAddr {
        if self.settings.trust_forwarded_for {
            let forwarded = headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .next_back()
                .and_then(|ip| ip.trim().parse::<IpAddr>().ok());
            if let Some(ip) = forwarded {
                return ip;
            }
        }
        conn.map_or(IpAddr::from([127, 0, 0, 1]), |c| c.peer.ip())
    }
}

/// CORS for the configured origins; `None` when no origin is configured
/// (same-origin use only).
pub fn cors_layer(origins: &[String]) -> Result<Option<CorsLayer>, String> {
    if origins.is_empty() {
        return Ok(None);
    }
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("last-event-id"),
        ])
        .expose_headers([header::RETRY_AFTER, header::CONTENT_TYPE])
        .max_age(Duration::from_secs(600));
    if origins.iter().any(|o| o == "*") {
        return Ok(Some(layer.allow_origin(Any)));
    }
    let list = origins
        .iter()
        .map(|o| {
            HeaderValue::from_str(o.trim_end_matches('/'))
                .map_err(|_| format!("CORS origin `{o}` is not a valid header value"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(
        layer
            .allow_origin(AllowOrigin::list(list))
            .allow_credentials(true),
    ))
}

/// The application's routes.
pub fn router(
    state: Arc<AppState>,
    cors: Option<CorsLayer>,
    demo_dir: Option<&std::path::Path>,
) -> Router {
    let mut router = Router::new()
        .route("/events", get(events::subscribe))
        .route("/publish", post(publish::publish))
        .route("/presence", get(presence::presence))
        .route("/healthz", get(ops::healthz))
        .route("/metrics", get(ops::metrics))
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed });
    router = match demo_dir {
        Some(dir) => {
            router.fallback_service(ServeDir::new(dir).append_index_html_on_directories(true))
        }
        None => router.fallback(|| async { ApiError::NotFound }),
    };
    let router = router.layer(middleware::from_fn_with_state(state.clone(), log_request));
    let router = match cors {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router.with_state(state)
}

/// Logs each request by method and *path only*: a query string may carry
/// an access token, and tokens never go to the logs.
async fn log_request(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status();
    if status.is_client_error() || status.is_server_error() {
        state.metrics.rejected.fetch_add(1, Relaxed);
    }
    let micros = started.elapsed().as_micros() as u64;
    let status = status.as_u16();
    // Successes are routine (and many under load): debug. Refusals: info.
    if status >= 500 {
        tracing::warn!(%method, path, status, micros, "request");
    } else if status >= 400 {
        tracing::info!(%method, path, status, micros, "request");
    } else {
        tracing::debug!(%method, path, status, micros, "request");
    }
    response.into_response()
}
