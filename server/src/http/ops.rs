//! `GET /healthz` and `GET /metrics`.

use std::sync::{Arc, Mutex, atomic::Ordering::Relaxed};

use axum::{
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::AppState;
use crate::{error::ENGINE_UNAVAILABLE, metrics::write_metric};

pub(super) async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    if state.shutting_down.load(Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "shutting down"})),
        )
            .into_response();
    }
    match state.engine.ready() {
        Ok(()) => {
            *last_logged() = None;
            axum::Json(json!({"status": "ok"})).into_response()
        }
        Err(e) => {
            // The detail names the engine's address and OS errors: the log
            // gets it, once per change (health checks poll often).
            let detail = e.to_string();
            let mut last = last_logged();
            if last.as_deref() != Some(detail.as_str()) {
                tracing::warn!(error = %detail, "not ready: the message engine is unavailable");
                *last = Some(detail);
            }
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({"status": "unavailable", "reason": ENGINE_UNAVAILABLE})),
            )
                .into_response()
        }
    }
}

/// The engine failure `/healthz` logged last (`None` once ready again).
fn last_logged() -> std::sync::MutexGuard<'static, Option<String>> {
    static LAST: Mutex<Option<String>> = Mutex::new(None);
    LAST.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut text = state.metrics.render();
    let stats = state.engine.hub().stats();
    let gauges = [
        (
            "tidings_replays",
            "Streams catching up from history (each holds a place of --max-replays-per-ip).",
            state.replays.running(),
        ),
        (
            "tidings_history_messages",
            "Messages retained for resuming.",
            stats.retained,
        ),
        (
            "tidings_history_bytes",
            "Bytes of retained messages.",
            stats.retained_bytes,
        ),
        (
            "tidings_history_topics",
            "Topics with retained messages.",
            stats.topics,
        ),
        (
            "tidings_queued_bytes",
            "Bytes of messages waiting in streams' queues.",
            stats.queued_bytes,
        ),
    ];
    for (name, help, value) in gauges {
        write_metric(&mut text, "gauge", name, help, value);
    }
    state.presence.render_metrics(&mut text);
    state.engine.render_metrics(&mut text);
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
