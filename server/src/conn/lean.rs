//! The lean path for HTTP/1.1 event streams.
//!
//! Hyper keeps an 8 KiB read buffer and an 8 KiB write buffer for every
//! HTTP/1 connection as long as it lives, and polls each delivery through
//! its dispatcher. A stream only writes, so on a connection whose next
//! request is a plain `GET /events` the head is parsed here (`httparse`),
//! the request goes through the same application (routes, middleware,
//! CORS, auth), and an event-stream response is written straight to the
//! socket in chunked coding: the same bytes on the wire as hyper's, with no
//! buffer kept between deliveries. Anything else (another route, a body, an
//! `Upgrade`, HTTP/1.0, a head over [`LEAN_HEAD_MAX`] or one the parser
//! refuses) is given back untouched to hyper, which serves the rest of the
//! connection; so do the requests after a lean stream ends on a keep-alive
//! connection, once one of them is not a stream.
//!
//! While a stream is written, the socket is read too: an end of file means
//! the client went away (the stream ends at once, not at the next
//! heartbeat); bytes sent ahead (a pipelined request) are kept, up to
//! [`LEAN_HEAD_MAX`], and given to whoever reads next.

use std::{
    io,
    sync::atomic::{AtomicI64, Ordering::Relaxed},
    time::{Duration, Instant, SystemTime},
};

use axum::{
    Router,
    body::Body,
    extract::Request,
    http::{HeaderName, HeaderValue, Method, Response, StatusCode, Uri, Version, header},
};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::{GuardedIo, body::InFlight, serve::Socket};
use crate::{
    metrics::Metrics,
    stream::{ConnectionInfo, DirectHandle, WatchedIo},
};

/// Largest request head the lean path reads (longer heads go to hyper,
/// whose limit is [`super::MAX_HEAD_BYTES`]); also the most bytes kept
/// from a client that sends ahead while its stream is written.
pub(crate) const LEAN_HEAD_MAX: usize = 8 * 1024;

/// Most header lines of a lean head (more go to hyper).
const LEAN_MAX_HEADERS: usize = 48;

/// Largest response body written whole by the lean path (errors and other
/// short answers of `/events`); a larger one closes the connection.
const LEAN_MAX_FULL_BODY: usize = 64 * 1024;

/// Two writes of a stream closer than this mean it is busy: it yields to
/// the other tasks once after each write, so that more messages join its
/// next one. Measured (burst-1, 100 subscribers, one message per POST):
/// 28 % more deliveries a second at 20 % less CPU each, with no change for
/// streams written less often (topics-1, rate-1).
const BUSY_WRITES: Duration = Duration::from_millis(1);

/// How a lean head starts: only these requests can be streams (origin
/// form, or absolute form as some clients send it).
const PREFIXES: [&[u8]; 3] = [b"GET /events", b"GET http://", b"GET https://"];

/// True if `bytes`, the first of a request, can still start a head the
/// lean path would take (a prefix of one, or longer and starting with one).
pub(crate) fn may_be_stream(bytes: &[u8]) -> bool {
    PREFIXES.iter().any(|prefix| {
        let n = bytes.len().min(prefix.len());
        bytes[..n] == prefix[..n]
    })
}

/// The body length a complete request `head` announces: its
/// `Content-Length`, 0 without one; `None` for a chunked body, conflicting
/// lengths or a head that does not parse.
pub(crate) fn body_length(head: &[u8]) -> Option<u64> {
    let mut headers = [httparse::EMPTY_HEADER; LEAN_MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    if !matches!(request.parse(head), Ok(httparse::Status::Complete(_))) {
        return None;
    }
    let mut length = None;
    for h in request.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return None;
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let n: u64 = std::str::from_utf8(h.value).ok()?.trim().parse().ok()?;
            if length.is_some_and(|l| l != n) {
                return None;
            }
            length = Some(n);
        }
    }
    Some(length.unwrap_or(0))
}

/// The socket as the connection layer wraps it.
pub(crate) type ConnIo = WatchedIo<GuardedIo<Socket>>;

/// What the connection does after [`serve`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Closed, or to be closed: nothing more to serve.
    Close,
    /// Hyper serves the rest; any bytes read ahead were given back.
    Hyper,
}

/// Serves the connection's requests for as long as each one is a plain
/// `GET /events`; see the module documentation. With `direct`, a stream
/// on a cleartext socket may be written by its publishers too
/// ([`crate::stream::direct`]).
pub(crate) async fn serve(
    io: &mut ConnIo,
    app: &Router,
    info: &ConnectionInfo,
    closing: &CancellationToken,
    metrics: &Metrics,
    direct: bool,
) -> Next {
    loop {
        let head = tokio::select! {
            head = read_head(io) => head,
            _ = closing.cancelled() => return Next::Close,
        };
        let request = match head {
            Head::Lean(request) => request,
            Head::NotLean(bytes) => {
                io.get_mut().unread(bytes);
                return Next::Hyper;
            }
            Head::Closed => return Next::Close,
        };
        let keep_alive = !wants_close(request.headers());
        match answer(io, app, info, request, keep_alive, closing, metrics, direct).await {
            Ok(true) if keep_alive && !closing.is_cancelled() => continue,
            Ok(_) => return Next::Close,
            Err(e) => {
                tracing::debug!(peer = %info.peer, error = %e, "stream connection ended");
                return Next::Close;
            }
        }
    }
}

/// A request head, as far as the lean path is concerned.
enum Head {
    /// A `GET /events` to serve here.
    Lean(Box<Request<Body>>),
    /// Something else: these bytes (all that was read) go to hyper.
    NotLean(Vec<u8>),
    /// The client closed, or the head timed out and was answered.
    Closed,
}

/// Reads a request head as long as it can still be a lean one.
async fn read_head(io: &mut ConnIo) -> Head {
    let mut bytes = Vec::new();
    loop {
        if !may_be_stream(&bytes) {
            return Head::NotLean(bytes);
        }
        if PREFIXES.iter().any(|prefix| bytes.starts_with(prefix)) {
            match parse_head(&bytes) {
                Parsed::Partial if bytes.len() < LEAN_HEAD_MAX => {}
                Parsed::Lean(request) => return Head::Lean(request),
                Parsed::Partial | Parsed::NotLean => return Head::NotLean(bytes),
            }
        }
        bytes.reserve(1024.min(LEAN_HEAD_MAX - bytes.len()));
        // Reads go through the guard: its idle and head timeouts apply.
        match io.read_buf(&mut bytes).await {
            Ok(0) | Err(_) => {
                return if bytes.is_empty() {
                    Head::Closed
                } else {
                    // Let hyper see the truncated head (and refuse it).
                    Head::NotLean(bytes)
                };
            }
            Ok(_) => {}
        }
    }
}

enum Parsed {
    Partial,
    NotLean,
    Lean(Box<Request<Body>>),
}

/// Parses `bytes` as one whole `GET /events` head with no body and
/// nothing after it.
fn parse_head(bytes: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; LEAN_MAX_HEADERS];
    let mut head = httparse::Request::new(&mut headers);
    let len = match head.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::NotLean,
    };
    let Ok(uri) = head.path.unwrap_or("").parse::<Uri>() else {
        return Parsed::NotLean;
    };
    let lean = len == bytes.len()
        && head.method == Some("GET")
        && head.version == Some(1)
        && uri.path() == "/events";
    if !lean {
        return Parsed::NotLean;
    }
    let mut request = Request::new(Body::empty());
    *request.method_mut() = Method::GET;
    *request.version_mut() = Version::HTTP_11;
    *request.uri_mut() = uri;
    let map = request.headers_mut();
    for h in head.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) else {
            return Parsed::NotLean;
        };
        // A body, or a protocol switch: hyper's business.
        let bodyless = match name {
            header::CONTENT_LENGTH => value.as_bytes() == b"0",
            header::TRANSFER_ENCODING | header::UPGRADE | header::EXPECT => false,
            _ => true,
        };
        if !bodyless {
            return Parsed::NotLean;
        }
        map.append(name, value);
    }
    Parsed::Lean(Box::new(request))
}

/// Whether the client asked to close after this request.
fn wants_close(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("close"))
}

/// Runs `request` through the application and writes the answer: an event
/// stream until it ends, anything else whole. True when the connection can
/// serve another request.
#[allow(clippy::too_many_arguments)]
async fn answer(
    io: &mut ConnIo,
    app: &Router,
    info: &ConnectionInfo,
    mut request: Box<Request<Body>>,
    keep_alive: bool,
    closing: &CancellationToken,
    metrics: &Metrics,
    direct: bool,
) -> io::Result<bool> {
    // Counted before the application sees it, like hyper's requests: the
    // guard must see the request as in progress until its answer is out.
    let in_flight = InFlight::start(&info.io);
    request.extensions_mut().insert(info.clone());
    // Boxed: the router's future is large, and a stream's task would
    // otherwise carry room for it while the stream is open.
    let response = Box::pin(app.clone().oneshot(*request))
        .await
        .unwrap_or_else(|e| match e {});
    let (mut parts, body) = response.into_parts();
    let handle = parts.extensions.remove::<DirectHandle>();
    let streaming = parts.status == StatusCode::OK
        && parts
            .headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if !streaming {
        let Ok(collected) = Limited::new(body, LEAN_MAX_FULL_BODY).collect().await else {
            return Ok(false);
        };
        let body = collected.to_bytes();
        let response = Response::from_parts(parts, ());
        let mut out = response_head(&response, Some(body.len()), keep_alive);
        out.extend_from_slice(&body);
        io.write_all(&out).await?;
        io.flush().await?;
        drop(in_flight);
        return Ok(true);
    }
    let head = response_head(&Response::from_parts(parts, ()), None, keep_alive);
    io.write_all(&head).await?;
    io.flush().await?;
    metrics.lean_streams.fetch_add(1, Relaxed);
    let _open = LeanOpen(&metrics.lean_streams);
    // Publishers may write to a cleartext socket while the stream lasts;
    // the guard ends that before the socket can close or serve another
    // request.
    let direct = handle.zip(io.get_mut().get_ref().plain_fd().filter(|_| direct));
    let _attached = direct.as_ref().map(|(handle, fd)| handle.attach(*fd));
    let ended = stream(io, body, closing, direct.as_ref().map(|(handle, _)| handle)).await?;
    drop(in_flight);
    Ok(ended)
}

/// Counts a lean stream out when it ends (or its future is dropped).
struct LeanOpen<'a>(&'a AtomicI64);

impl Drop for LeanOpen<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// The status line and headers of `response`, with `content-length` when
/// the body is whole, else chunked coding; `date` when the application set
/// none and `connection: close` when the connection ends after it (as
/// hyper does).
fn response_head(response: &Response<()>, length: Option<usize>, keep_alive: bool) -> Vec<u8> {
    let status = response.status();
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in response.headers() {
        if matches!(
            *name,
            header::CONTENT_LENGTH | header::TRANSFER_ENCODING | header::CONNECTION
        ) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !response.headers().contains_key(header::DATE) {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(httpdate::fmt_http_date(SystemTime::now()).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    }
    match length {
        Some(length) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(length.to_string().as_bytes());
        }
        None => out.extend_from_slice(b"transfer-encoding: chunked"),
    }
    out.extend_from_slice(b"\r\n\r\n");
    out
}

/// Writes the event stream `body` in chunks until it ends (true: the
/// terminating chunk was written and the connection can go on) or the
/// client goes away (false). With `direct` attached, what a direct write
/// left unwritten goes out first. The caller watches the kill switch.
async fn stream(
    io: &mut ConnIo,
    mut body: Body,
    closing: &CancellationToken,
    direct: Option<&DirectHandle>,
) -> io::Result<bool> {
    // Bytes the client sent ahead, given back after the stream.
    let mut ahead = Vec::new();
    let mut reading = true;
    let mut last_write: Option<Instant> = None;
    // Woken like the body: the direct write that leaves a tail wakes the
    // stream's task, whose waker the body's poll registered.
    let tail = || {
        std::future::poll_fn(move |_| match direct.and_then(DirectHandle::take_tail) {
            Some(tail) => std::task::Poll::Ready(tail),
            None => std::task::Poll::Pending,
        })
    };
    loop {
        // What to write: the rest of a direct write's chunk (raw bytes,
        // before anything else), or the body's next frame as a chunk. One
        // write below for both keeps the stream's future small.
        let (data, framed) = tokio::select! {
            biased;
            tail = tail(), if direct.is_some() => (tail, false),
            frame = body.frame() => match frame {
                None => break,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "event stream body failed");
                    return Ok(false);
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => (data, true),
                    _ => continue,
                },
            },
            read = read_ahead(io, &mut ahead), if reading => {
                match read {
                    // The client went away (or broke the connection).
                    Ok(0) | Err(_) => return Ok(false),
                    Ok(_) => reading = ahead.len() < LEAN_HEAD_MAX,
                }
                continue;
            }
        };
        write_chunk(io, &data, framed).await?;
        // A stream written to again within BUSY_WRITES lets the other tasks
        // run once before it looks for more: the publishes they handle
        // meanwhile join its next write instead of taking one each.
        let now = Instant::now();
        if last_write.is_some_and(|at| now - at < BUSY_WRITES) {
            tokio::task::yield_now().await;
        }
        last_write = Some(now);
    }
    drop(body);
    io.write_all(b"0\r\n\r\n").await?;
    io.flush().await?;
    io.get_mut().unread(ahead);
    // A client that sent more than we keep cannot be served further.
    Ok(reading && !closing.is_cancelled())
}

/// Reads what the client sends while its stream is written into `ahead`;
/// 0 at the end of the stream.
async fn read_ahead(io: &mut ConnIo, ahead: &mut Vec<u8>) -> io::Result<usize> {
    if ahead.capacity() == ahead.len() {
        ahead.reserve(64.min(LEAN_HEAD_MAX - ahead.len()).max(1));
    }
    io.read_buf(ahead).await
}

/// Writes `data` as one chunk (size line, data, CRLF), in one vectored
/// write when the socket takes it all; unframed, `data` alone (the rest of
/// a chunk).
async fn write_chunk(io: &mut ConnIo, data: &Bytes, framed: bool) -> io::Result<()> {
    let mut size = [0u8; 18];
    let size_len = if framed {
        chunk_size_line(data.len(), &mut size)
    } else {
        0
    };
    let end: &[u8] = if framed { b"\r\n" } else { b"" };
    let mut parts: [&[u8]; 3] = [&size[..size_len], data, end];
    let mut first = 0;
    while first < parts.len() {
        let slices: [io::IoSlice<'_>; 3] = [
            io::IoSlice::new(parts[0]),
            io::IoSlice::new(parts[1]),
            io::IoSlice::new(parts[2]),
        ];
        let mut n = io.write_vectored(&slices[first..]).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while first < parts.len() && n >= parts[first].len() {
            n -= parts[first].len();
            parts[first] = &[];
            first += 1;
        }
        if first < parts.len() {
            parts[first] = &parts[first][n..];
        }
    }
    io.flush().await
}

/// Writes the chunk size line for `len` (hex, CRLF) into `out`; its length.
pub(crate) fn chunk_size_line(len: usize, out: &mut [u8; 18]) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut n = 0;
    let mut rest = len;
    loop {
        digits[n] = HEX[rest & 0xf];
        n += 1;
        rest >>= 4;
        if rest == 0 {
            break;
        }
    }
    for i in 0..n {
        out[i] = digits[n - 1 - i];
    }
    out[n] = b'\r';
    out[n + 1] = b'\n';
    n + 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_size_lines_are_lowercase_hex() {
        let mut out = [0u8; 18];
        for (len, want) in [
            (0, "0\r\n"),
            (9, "9\r\n"),
            (26, "1a\r\n"),
            (4096, "1000\r\n"),
            (usize::MAX, "ffffffffffffffff\r\n"),
        ] {
            let n = chunk_size_line(len, &mut out);
            assert_eq!(std::str::from_utf8(&out[..n]).unwrap(), want);
        }
    }

    #[test]
    fn only_whole_bodyless_event_stream_gets_are_lean() {
        let lean = |head: &str| matches!(parse_head(head.as_bytes()), Parsed::Lean(_));
        assert!(lean("GET /events?topic=a HTTP/1.1\r\nhost: x\r\n\r\n"));
        assert!(lean(
            "GET /events HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n"
        ));
        assert!(lean(
            "GET http://x/events?topic=a HTTP/1.1\r\nhost: x\r\n\r\n"
        ));
        for not in [
            "GET /events?topic=a HTTP/1.0\r\nhost: x\r\n\r\n",
            "GET /eventsx HTTP/1.1\r\nhost: x\r\n\r\n",
            "GET http://x/publish HTTP/1.1\r\nhost: x\r\n\r\n",
            "GET /events HTTP/1.1\r\ncontent-length: 3\r\n\r\nabc",
            "GET /events HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
            "GET /events HTTP/1.1\r\nupgrade: websocket\r\n\r\n",
            "GET /events HTTP/1.1\r\nexpect: 100-continue\r\n\r\n",
            // A pipelined request after the head.
            "GET /events HTTP/1.1\r\nhost: x\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n",
            "GET /events?a=> HTTP/1.1\r\nhost: x\r\n\r\n",
        ] {
            assert!(!lean(not), "{not:?} was taken as lean");
        }
        assert!(matches!(
            parse_head(b"GET /events?topic=a HTTP/1.1\r\nhost"),
            Parsed::Partial
        ));
        let request = match parse_head(
            b"GET /events?topic=a%3Eb HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 1-2\r\n\r\n",
        ) {
            Parsed::Lean(request) => request,
            _ => panic!("not lean"),
        };
        assert_eq!(request.uri(), "/events?topic=a%3Eb");
        assert_eq!(request.headers()["last-event-id"], "1-2");
        assert_eq!(request.headers()["host"], "x");
    }

    #[test]
    fn a_client_can_ask_to_close() {
        let mut headers = axum::http::HeaderMap::new();
        assert!(!wants_close(&headers));
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Close"),
        );
        assert!(wants_close(&headers));
    }
}
