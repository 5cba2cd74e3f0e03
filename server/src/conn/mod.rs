//! The connection layer between the accept loop and the application:
//! timeouts for idle connections, request heads and request bodies, the
//! refusals of the TCP connection caps, and the contract's JSON body for
//! the HTTP parser's own rejections.
//!
//! | what | where | answer |
//! | --- | --- | --- |
//! | idle connection (keep-alive, or silent after connect) | [`guard`] | closed quietly after `--keepalive-timeout` |
//! | request head started but not finished | [`guard`] | `408` + close after `--header-timeout` |
//! | request body not received whole | [`body`] + [`handle`] | `408` + close after `--body-timeout` |
//! | malformed request, URL or headers too large | hyper's parser, rewritten in [`guard`] | `400` / `414` / `431` + close |
//! | over the TCP caps | [`crate::limits::SocketLimiter`] + [`reject::refuse`] | `429` / `503` + close, or closed at accept |
//!
//! HTTP/1.1 requests for an event stream are served by [`lean`] without
//! hyper (no per-connection buffers while a stream is open); everything
//! else by hyper, HTTP/1.1 or HTTP/2.

mod body;
mod guard;
mod lean;
mod reject;
mod serve;

use std::{convert::Infallible, future::Future, sync::atomic::Ordering::Relaxed, time::Duration};

use axum::{
    Router,
    extract::Request,
    http::{HeaderValue, Method, Version, header},
    response::{IntoResponse, Response},
};
use hyper::body::Incoming;
use tower::ServiceExt;

use self::body::{InFlight, RequestBody};
pub(crate) use self::lean::chunk_size_line;
pub(crate) use self::{
    body::TrackedBody,
    guard::{GuardedIo, HeadTimeouts},
    serve::Connections,
};
use crate::{
    error::ApiError,
    stream::{ConnectionInfo, IoState},
};

/// Largest request head (request line and headers) in bytes; larger heads
/// get `431` (and more than 100 header lines too). Fits a URL of hyper's
/// maximum (64 KiB, `414` above) and bounds what a slow head can hold.
pub(crate) const MAX_HEAD_BYTES: usize = 96 * 1024;

/// The connection layer's timeouts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnSettings {
    /// Head and idle timeouts (HTTP/1).
    pub head: HeadTimeouts,
    /// Longest time for a whole request body.
    pub body: Duration,
    /// HTTP/1.1 event streams written by [`lean`] rather than hyper.
    pub lean_streams: bool,
    /// Lean streams on plain TCP may be written by their publishers
    /// ([`crate::stream::direct`]).
    pub direct_writes: bool,
}

/// Serves one request of a connection (the body of its hyper service):
/// hands it to `app` with the connection's [`ConnectionInfo`], counts it in
/// progress until its response ends, and answers `408` when the body
/// misses its deadline.
pub(crate) fn handle(
    app: &Router,
    info: &ConnectionInfo,
    body_timeout: Duration,
    mut request: Request<Incoming>,
) -> impl Future<Output = Result<Response<TrackedBody<axum::body::Body>>, Infallible>> + Send + use<>
{
    // Counted at once, before the future first runs: the connection's
    // guard must see the request as started.
    let in_flight = InFlight::start(&info.io);
    let version = request.version();
    if version == Version::HTTP_2 {
        // A stream (GET /events and the like) gets its own kill switch, so
        // the watchdog can close it alone; the executor that spawns this
        // request's task next picks it up.
        let stream = (request.method() == Method::GET).then(|| IoState::for_stream(&info.io));
        *info.io.next_stream.lock() = stream.as_ref().map(|s| s.kill.clone());
        let info = stream.map_or_else(|| info.clone(), |io| ConnectionInfo::new(info.peer, io));
        request.extensions_mut().insert(info);
    } else {
        request.extensions_mut().insert(info.clone());
    }
    let (parts, body) = request.into_parts();
    let (body, expired) = RequestBody::new(body, body_timeout);
    let request = Request::from_parts(parts, body);
    let app = app.clone();
    async move {
        let mut response = app.oneshot(request).await.unwrap_or_else(|e| match e {});
        if expired.is_some_and(|expired| expired.load(Relaxed)) {
            tracing::info!("a request body did not arrive in time: 408");
            response = ApiError::RequestTimeout {
                part: "body",
                secs: body_timeout.as_secs_f64().ceil() as u64,
            }
            .into_response();
            if version < Version::HTTP_2 {
                // The rest of the body may still be coming: close, and let
                // it in for a moment so the client reads the 408.
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                in_flight.io().linger.store(true, Relaxed);
            }
        }
        Ok(response.map(|body| TrackedBody::new(body, in_flight)))
    }
}
