//! The baseline: the SSE server a Rust user would write by hand instead of
//! Tidings. axum's `Sse` response, one `tokio::sync::broadcast` channel per
//! topic, the same `/events` and `/publish` endpoints and the same event
//! format (`retry:`, `tidings.connected`, then `id:`/`event:`/`data:`).
//!
//! Each subscriber turns every message into its own `axum::response::sse::Event`
//! (so a message is encoded once per subscriber, as axum's `Sse` does), and a
//! subscriber that lags behind the channel's capacity silently skips messages:
//! the load generator would report those as lost.
//!
//! With `--redis URL` it is the usual way to scale that server out: every
//! publish is a Redis `PUBLISH` (pipelined for a batch) and one pattern
//! subscription per process feeds the local broadcast channels.
//!
//! Run by the load benchmark as a separate process:
//! `load --serve-baseline --listen 127.0.0.1:0 [--capacity N] [--redis URL]`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use futures_util::future::ready;
use futures_util::stream::{self, Stream, StreamExt};
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;

/// Messages a topic's channel holds before a slow subscriber starts lagging
/// (the same bound as Tidings' default per-subscriber queue).
pub const CHANNEL_CAPACITY: usize = 1024;

/// One published message, shared by every subscriber of its topic.
struct Message {
    id: u64,
    kind: String,
    data: String,
}

struct AppState {
    capacity: usize,
    /// Where publishes go in Redis mode (they come back through the subscriber task).
    redis: Option<redis::aio::MultiplexedConnection>,
    topics: Mutex<HashMap<String, broadcast::Sender<Arc<Message>>>>,
    next_id: AtomicU64,
    next_connection: AtomicU64,
}

type Shared = Arc<AppState>;

/// Serves the baseline on `listen` until the process is killed, with
/// `capacity` messages per topic channel, through Redis at `redis` if given.
pub fn serve(listen: &str, capacity: usize, redis: Option<&str>) -> ! {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let mut state = AppState {
            capacity,
            redis: None,
            topics: Mutex::default(),
            next_id: AtomicU64::default(),
            next_connection: AtomicU64::default(),
        };
        let mut pubsub = None;
        if let Some(url) = redis {
            let client = redis::Client::open(url).unwrap_or_else(|e| panic!("redis {url}: {e}"));
            let connection = client.get_multiplexed_async_connection().await;
            state.redis = Some(connection.unwrap_or_else(|e| panic!("redis {url}: {e}")));
            let mut subscriber = client.get_async_pubsub().await.expect("redis pubsub");
            subscriber.psubscribe("*").await.expect("PSUBSCRIBE");
            pubsub = Some(subscriber.into_on_message());
        }
        let state = Shared::new(state);
        if let Some(mut messages) = pubsub {
            let state = state.clone();
            tokio::spawn(async move {
                while let Some(m) = messages.next().await {
                    if let Some(message) = decode(m.get_payload_bytes()) {
                        deliver(&state, m.get_channel_name(), message);
                    }
                }
                eprintln!("redis subscription ended");
                std::process::exit(1);
            });
        }
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .unwrap_or_else(|e| panic!("cannot listen on {listen}: {e}"));
        let addr = listener.local_addr().expect("local address");
        println!("listening on http://{addr}");
        let app = Router::new()
            .route("/events", get(events))
            .route("/publish", post(publish))
            .with_state(state);
        // TCP_NODELAY, as a careful user sets it: without it Nagle's algorithm
        // holds small SSE writes back for tens of milliseconds.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app).await.expect("serve");
    });
    std::process::exit(0)
}

async fn events(
    State(state): State<Shared>,
    Query(params): Query<Vec<(String, String)>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let topics: Vec<String> = params
        .into_iter()
        .filter(|(k, _)| k == "topic")
        .map(|(_, v)| v)
        .collect();
    let receivers: Vec<_> = {
        let mut map = state.topics.lock().expect("topics lock");
        topics
            .iter()
            .map(|t| {
                map.entry(t.clone())
                    .or_insert_with(|| broadcast::channel(state.capacity).0)
                    .subscribe()
            })
            .collect()
    };
    let connection = state.next_connection.fetch_add(1, Ordering::Relaxed);
    let connected = Event::default()
        .retry(Duration::from_secs(3))
        .event("tidings.connected")
        .data(json!({"connectionId": format!("b{connection}"), "topics": topics}).to_string());
    let messages = stream::select_all(receivers.into_iter().map(|rx| {
        BroadcastStream::new(rx).filter_map(|m| {
            // A lagging receiver gets `Err(Lagged)`: skip, as most hand-written servers do.
            ready(m.ok().map(|m| {
                Ok(Event::default()
                    .id(m.id.to_string())
                    .event(&m.kind)
                    .data(&m.data))
            }))
        })
    }));
    Sse::new(stream::once(async { Ok(connected) }).chain(messages)).keep_alive(KeepAlive::default())
}

async fn publish(State(state): State<Shared>, Json(body): Json<Value>) -> Response {
    let (batch, items) = match body {
        Value::Array(items) => (true, items),
        one => (false, vec![one]),
    };
    let mut ids = Vec::with_capacity(items.len());
    let mut pipe = redis::pipe();
    for item in items {
        let (Some(topic), Some(data)) =
            (item.get("topic").and_then(Value::as_str), item.get("data"))
        else {
            let error = json!({"error": {"code": "bad_request", "message": "need topic and data"}});
            return (StatusCode::BAD_REQUEST, Json(error)).into_response();
        };
        let kind = item
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("message");
        let id = state.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let message = Arc::new(Message {
            id,
            kind: kind.to_owned(),
            data: data.to_string(),
        });
        if state.redis.is_some() {
            pipe.publish(topic, encode(&message)).ignore();
        } else {
            deliver(&state, topic, message);
        }
        ids.push(id.to_string());
    }
    if let Some(redis) = &state.redis {
        let mut redis = redis.clone();
        if let Err(e) = pipe.query_async::<()>(&mut redis).await {
            let error = json!({"error": {"code": "unavailable", "message": e.to_string()}});
            return (StatusCode::SERVICE_UNAVAILABLE, Json(error)).into_response();
        }
    }
    if batch {
        Json(json!({ "ids": ids })).into_response()
    } else {
        Json(json!({ "id": ids[0] })).into_response()
    }
}

/// Hands `message` to the local subscribers of `topic`, if any.
fn deliver(state: &AppState, topic: &str, message: Arc<Message>) {
    let sender = state
        .topics
        .lock()
        .expect("topics lock")
        .get(topic)
        .cloned();
    if let Some(sender) = sender {
        let _ = sender.send(message); // no subscriber: dropped, like a hand-written server
    }
}

/// `id LF type LF data`: how a message travels through Redis.
fn encode(m: &Message) -> String {
    format!("{}\n{}\n{}", m.id, m.kind, m.data)
}

fn decode(payload: &[u8]) -> Option<Arc<Message>> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.splitn(3, '\n');
    Some(Arc::new(Message {
        id: parts.next()?.parse().ok()?,
        kind: parts.next()?.to_owned(),
        data: parts.next()?.to_owned(),
    }))
}
