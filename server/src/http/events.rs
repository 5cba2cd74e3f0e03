//! `GET /events`: open an SSE stream.

use std::{sync::Arc, time::Duration};

use axum::{
    body::Body,
    extract::{RawQuery, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::Response,
};
use bytes::Bytes;
use serde_json::json;
use tidings_core::{
    message::{ConnectionId, Frame},
    sse::{Event, encode_retry},
    topic::{Pattern, Topic, is_internal},
};

use super::AppState;
use crate::{
    auth::{AuthError, Session, find_token},
    engine::clock,
    error::ApiError,
    presence::{EVENTS_PREFIX, client_info, events_pattern},
    stream::{ConnectionInfo, EventStream, StreamParts},
};

/// Event sent, without an `id:`, just before the server ends a stream
/// whose token expired; data `{"exp": <the token's exp>}`.
pub const EXPIRED_EVENT: &str = "tidings.expired";

/// Longest a new stream waits for its presence join to be published
/// before it starts anyway.
const JOIN_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

/// What the query string asks for.
#[derive(Debug, Default)]
struct EventsQuery {
    topics: Vec<String>,
    last_event_id: Option<String>,
    access_token: Option<String>,
    /// `presence=1`: also receive `tidings.join` / `tidings.leave`.
    presence: bool,
    /// `presenceInfo=<JSON object>`: what presence shows about an
    /// anonymous client (unverified).
    presence_info: Option<String>,
}

impl EventsQuery {
    fn parse(query: Option<&str>) -> Self {
        let mut parsed = Self::default();
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match &*key {
                "topic" => parsed.topics.push(value.into_owned()),
                "lastEventId" => parsed.last_event_id = Some(value.into_owned()),
                "access_token" => parsed.access_token = Some(value.into_owned()),
                "presence" => parsed.presence = matches!(&*value, "1" | "true"),
                "presenceInfo" => parsed.presence_info = Some(value.into_owned()),
                _ => {}
            }
        }
        parsed
    }
}

pub(super) async fn subscribe(
    State(state): State<Arc<AppState>>,
    conn: Option<axum::Extension<ConnectionInfo>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    state.refuse_if_shutting_down()?;
    let query = EventsQuery::parse(query.as_deref());
    let settings = &state.settings;

    // Topics: present, within the limit, valid.
    if query.topics.is_empty() {
        return Err(ApiError::BadRequest(
            "give at least one topic: GET /events?topic=news:>".into(),
        ));
    }
    if query.topics.len() > settings.max_topics {
        return Err(ApiError::TooManyTopics {
            count: query.topics.len(),
            max: settings.max_topics,
        });
    }
    let patterns = query
        .topics
        .iter()
        .map(|t| Pattern::new(t).map_err(|e| ApiError::bad_topic(t, e)))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(internal) = patterns.iter().find(|p| is_internal(p.as_str())) {
        return Err(ApiError::BadRequest(format!(
            "topics starting with `$` belong to the server: `{internal}` cannot be subscribed to (for joins and leaves, add presence=1)"
        )));
    }
    // `presence=1`: each pattern's `$presence:` twin too.
    let mut hub_patterns = patterns.clone();
    if query.presence {
        for pattern in &patterns {
            hub_patterns.push(events_pattern(pattern).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "`{pattern}` is too long for presence=1 (at most {} bytes)",
                    tidings_core::topic::MAX_TOPIC_LEN - EVENTS_PREFIX.len()
                ))
            })?);
        }
    }

    // Rights.
    let token = find_token(&headers, query.access_token.as_deref())?;
    let Session {
        access,
        expiry,
        info,
    } = state.auth.session(token)?;
    if let Some(refused) = patterns.iter().find(|p| !access.may_subscribe(p)) {
        return Err(match token {
            None => ApiError::Unauthorized(AuthError::Missing),
            Some(_) => ApiError::Forbidden(format!(
                "your token does not allow subscribing to `{refused}`"
            )),
        });
    }

    // What presence shows: the token's word, or the client's own (checked,
    // and marked unverified).
    let (info, verified) = match (info, query.presence_info.as_deref()) {
        (Some(info), _) => (info, true),
        (None, Some(text)) => (client_info(text).map_err(ApiError::BadRequest)?, false),
        (None, None) => ("{}".to_owned(), false),
    };

    // Resume point: the header (browsers send it on reconnect) wins.
    let resume_text = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(query.last_event_id)
        .filter(|s| !s.trim().is_empty());

    // Limits last, so refused requests take no place.
    let conn = conn.map(|axum::Extension(c)| c);
    let ip = state.client_ip(conn.as_ref(), &headers);
    let now = Duration::from_micros(clock::now_us());
    if resume_text.is_some() {
        // A client looping resumes is turned away before it costs a
        // subscription.
        state.replays.check_start(ip, now)?;
    }
    let permit = state.limiter.acquire(ip)?;

    // Where the stream starts: the hub places the resume id; one ahead of
    // this instance is waited for only if the engine has produced it (and
    // an engine whose instances hold only what their streams need replays
    // from its log).
    let connection = ConnectionId::from_random(rand::random());
    let topic_count = patterns.len();
    let opened = state
        .engine
        .subscribe(&hub_patterns, resume_text.as_deref(), Some(connection))
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "cannot open a stream on the message engine");
            ApiError::Unavailable(
                "the message engine is unavailable, so the stream cannot be opened; retry later"
                    .into(),
            )
        })?;
    let (subscription, subscribed) = (opened.subscription, opened.subscribed);
    // A stream catching up from history holds a replay place of its
    // address until it is live (the subscription is dropped if refused).
    let replay = if subscription.is_replaying() || opened.replay_feed.is_some() {
        Some(state.replays.acquire(ip, now)?)
    } else {
        None
    };
    // Listed under each exact topic (not under what a pattern matches).
    let mut listed: Vec<Topic> = patterns
        .iter()
        .filter(|p| p.is_literal())
        .filter_map(|p| Topic::new(p.as_str()).ok())
        .collect();
    listed.sort();
    listed.dedup();
    let mut presence = state.presence.enter(listed, connection, &info, verified);
    if let Some(guard) = &mut presence {
        // The join is in the log before the client hears `connected`.
        guard.joined(JOIN_PATIENCE).await;
    }

    // `retry:`, `tidings.connected` with the stream's position as its id
    // (a stream cut before its first message resumes from there), and
    // `tidings.gap` when continuity cannot be promised.
    let mut preface = Vec::with_capacity(256);
    encode_retry(settings.retry_ms, &mut preface);
    let topics: Vec<&str> = query.topics.iter().map(String::as_str).collect();
    preface.extend_from_slice(&Frame::connected(subscribed.position, connection, &topics).bytes);
    if let Some(reason) = subscribed.gap {
        let gap = Frame::gap(subscribed.position, reason, resume_text.as_deref(), 0);
        preface.extend_from_slice(&gap.bytes);
    }
    preface.extend_from_slice(&opened.replay);

    tracing::debug!(%connection, %ip, topics = topic_count, replayed = subscribed.replayed, gap = ?subscribed.gap, "stream opened");
    let stream = EventStream::new(
        state.engine.direct_writes(),
        StreamParts {
            preface: Bytes::from(preface),
            farewell: state.farewell.clone(),
            expired: expiry.map_or_else(Bytes::new, |e| expired_frame(e.exp)),
            subscription,
            connection,
            patterns: topic_count,
            metrics: state.metrics.clone(),
            _permit: permit,
            replay,
            replay_feed: opened.replay_feed,
            write_delay: settings.write_delay,
            busy_write_delay: settings.busy_write_delay,
            slot: state
                .watchdog
                .register(conn.map(|c| c.io), expiry.map(|e| e.refused_at_ms)),
            _presence: presence,
        },
    );

    let handle = stream.direct_handle();
    let mut response = Response::new(Body::from_stream(stream));
    if let Some(handle) = handle {
        response.extensions_mut().insert(handle);
    }
    *response.status_mut() = StatusCode::OK;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// `tidings.expired` for a token whose `exp` is `exp`. No `id:`, so the
/// client's resume point stays its last message.
fn expired_frame(exp: u64) -> Bytes {
    let data = json!({ "exp": exp }).to_string();
    let mut frame = Vec::with_capacity(64);
    let _ = Event::new(&data)
        .with_event(EXPIRED_EVENT)
        .encode(&mut frame);
    Bytes::from(frame)
}
