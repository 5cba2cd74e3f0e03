//! The errors the HTTP API answers with: `{"error": {"code", "message"}}`.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::auth::AuthError;

/// Seconds a client is asked to wait after a connection limit (`Retry-After`).
pub const RETRY_AFTER_SECS: u64 = 5;

/// What clients are told when the message engine (Redis in cluster mode)
/// fails. The detail names internal addresses and OS errors: it goes to
/// the log only.
pub const ENGINE_UNAVAILABLE: &str = "the message engine is unavailable; retry later";

/// An error answered before a stream starts or instead of a publish result.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// Malformed request (400, `bad_request`).
    #[error("{0}")]
    BadRequest(String),
    /// A topic or pattern breaks the topic rules (400, `bad_topic`).
    #[error("bad topic `{topic}`: {reason}")]
    BadTopic {
        /// The refused text (truncated).
        topic: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Too many topics in one subscription (400, `too_many_topics`).
    #[error("{count} topics in one subscription; the limit is {max}")]
    TooManyTopics {
        /// Topics asked for.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Missing or bad token (401, `unauthorized`).
    #[error(transparent)]
    Unauthorized(#[from] AuthError),
    /// A topic outside the token's grant (403, `forbidden`).
    #[error("{0}")]
    Forbidden(String),
    /// Unknown path (404, `not_found`).
    #[error("no such endpoint; use GET /events, POST /publish, GET /healthz or GET /metrics")]
    NotFound,
    /// Wrong method (405, `method_not_allowed`).
    #[error("method not allowed on this endpoint")]
    MethodNotAllowed,
    /// Body over the limit (413, `payload_too_large`).
    #[error("the body is larger than the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// Batch over the limit (413, `batch_too_large`).
    #[error("{len} messages in one publish; the limit is {max}")]
    BatchTooLarge {
        /// Messages sent.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Publish without a JSON content type (415, `unsupported_media_type`).
    #[error("publish bodies must be sent with `Content-Type: application/json`")]
    UnsupportedMediaType,
    /// Too many streams from this client address (429, `too_many_connections`).
    #[error("too many open streams from your address (limit {limit}); retry later")]
    TooManyFromIp {
        /// The per-address limit.
        limit: usize,
    },
    /// Too many streams from this client address replaying history at once
    /// (429, `too_many_replays`).
    #[error(
        "too many streams from your address are replaying history at once (limit {limit}); retry after the others have caught up"
    )]
    TooManyReplays {
        /// The per-address limit.
        limit: usize,
    },
    /// This client address started too many replays from history in the
    /// last second (429, `too_many_replays`).
    #[error(
        "your address started too many replays from history (limit {per_sec} a second); resume again in {retry_after} s"
    )]
    TooManyReplayStarts {
        /// The per-address rate.
        per_sec: u64,
        /// Seconds until one may start (`Retry-After`).
        retry_after: u64,
    },
    /// Too many streams in total (503, `server_full`).
    #[error("the server has reached its stream limit ({limit}); retry later")]
    ServerFull {
        /// The global limit.
        limit: usize,
    },
    /// The server cannot accept the request now (503, `unavailable`).
    #[error("{0}")]
    Unavailable(String),
    /// Headers or body not received in time (408, `request_timeout`).
    #[error("the request {part} did not arrive within {secs} s; send requests whole and at once")]
    RequestTimeout {
        /// `headers` or `body`.
        part: &'static str,
        /// The limit in seconds (rounded up).
        secs: u64,
    },
    /// Request target over the parser's limit (414, `uri_too_long`).
    #[error("the URL is too long; send fewer or shorter topics, or the token in a header")]
    UriTooLong,
    /// Request headers over the parser's limits (431, `headers_too_large`).
    #[error("the request headers are too large or too many; send fewer or smaller headers")]
    HeadersTooLarge,
    /// Too many TCP connections from this client address (429, `too_many_connections`).
    #[error("too many open connections from your address (limit {limit}); retry later")]
    TooManySocketsFromIp {
        /// The per-address limit.
        limit: usize,
    },
    /// Too many TCP connections in total (503, `server_full`).
    #[error("the server has reached its connection limit ({limit}); retry later")]
    TooManySockets {
        /// The global limit.
        limit: usize,
    },
    /// An idempotency key was already used for a different message (409,
    /// `idempotency_key_reused`).
    #[error("{0}")]
    IdempotencyKeyReused(String),
}

impl ApiError {
    /// A [`ApiError::BadTopic`] for `topic`, whose text is cut to keep the answer small.
    pub fn bad_topic(topic: &str, reason: impl ToString) -> Self {
        let mut shown: String = topic.chars().take(64).collect();
        if shown.len() < topic.len() {
            shown.push('…');
        }
        Self::BadTopic {
            topic: shown,
            reason: reason.to_string(),
        }
    }

    /// A 503 for a failure of the message engine: the client gets
    /// `"{during}: "` + [`ENGINE_UNAVAILABLE`], the log (at warn) the detail.
    ///
    /// ```
    /// use tidings_server::error::ApiError;
    ///
    /// let e = ApiError::engine_unavailable("cannot subscribe now", "Redis (10.0.0.7:6379) unavailable");
    /// assert_eq!(e.to_string(), "cannot subscribe now: the message engine is unavailable; retry later");
    /// ```
    pub fn engine_unavailable(during: &str, detail: impl std::fmt::Display) -> Self {
        tracing::warn!(error = %detail, "{during}: the message engine is unavailable");
        Self::Unavailable(format!("{during}: {ENGINE_UNAVAILABLE}"))
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::BadTopic { .. } | Self::TooManyTopics { .. } => {
                StatusCode::BAD_REQUEST
            }
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge { .. } | Self::BatchTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooManyFromIp { .. }
            | Self::TooManySocketsFromIp { .. }
            | Self::TooManyReplays { .. }
            | Self::TooManyReplayStarts { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::ServerFull { .. } | Self::Unavailable(_) | Self::TooManySockets { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::UriTooLong => StatusCode::URI_TOO_LONG,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::IdempotencyKeyReused(_) => StatusCode::CONFLICT,
        }
    }

    /// The `Retry-After` seconds that go with this error, if any (every
    /// 429 and 503).
    pub fn retry_after(&self) -> Option<u64> {
        if let Self::TooManyReplayStarts { retry_after, .. } = self {
            return Some(*retry_after);
        }
        matches!(
            self.status(),
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        )
        .then_some(RETRY_AFTER_SECS)
    }

    /// The machine-readable code in the body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::BadTopic { .. } => "bad_topic",
            Self::TooManyTopics { .. } => "too_many_topics",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::BatchTooLarge { .. } => "batch_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::TooManyFromIp { .. } => "too_many_connections",
            Self::TooManyReplays { .. } | Self::TooManyReplayStarts { .. } => "too_many_replays",
            Self::ServerFull { .. } => "server_full",
            Self::Unavailable(_) => "unavailable",
            Self::RequestTimeout { .. } => "request_timeout",
            Self::UriTooLong => "uri_too_long",
            Self::HeadersTooLarge => "headers_too_large",
            Self::TooManySocketsFromIp { .. } => "too_many_connections",
            Self::TooManySockets { .. } => "server_full",
            Self::IdempotencyKeyReused(_) => "idempotency_key_reused",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = json!({"error": {"code": self.code(), "message": self.to_string()}});
        let retry_after = self.retry_after();
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tidings\""),
            );
        }
        response
    }
}
