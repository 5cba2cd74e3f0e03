//! Refusals written on the socket by the connection layer itself, in the
//! contract's shape (`{"error": {"code", "message"}}`), where no handler
//! runs: over the TCP connection caps, on a header timeout, and in place of
//! the bare answers of hyper's HTTP/1 parser.

use std::{io, time::Duration};

use serde_json::json;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    time::Instant,
};

use crate::error::ApiError;

/// How long a refused connection keeps reading (and discarding) what the
/// client still sends, so the client reads the answer instead of a reset.
pub(crate) const LINGER: Duration = Duration::from_secs(2);

/// Bytes discarded at most while lingering.
pub(crate) const LINGER_BYTES: usize = 1024 * 1024;

/// The contract's error body for `error`.
pub(crate) fn json_body(error: &ApiError) -> String {
    json!({"error": {"code": error.code(), "message": error.to_string()}}).to_string()
}

/// A complete HTTP/1.1 response for `error` that closes the connection.
pub(crate) fn raw_response(error: &ApiError) -> Vec<u8> {
    let status = error.status();
    let body = json_body(error);
    let retry_after = error
        .retry_after()
        .map(|secs| format!("retry-after: {secs}\r\n"))
        .unwrap_or_default();
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{retry_after}\r\n{body}",
        status.as_str(),
        status.canonical_reason().unwrap_or(""),
        body.len(),
    )
    .into_bytes()
}

/// The message for a request hyper's parser refused as malformed.
const MALFORMED: &str = "the request is not valid HTTP/1.1: check the request line and headers, \
and percent-encode characters such as space, `\"`, `<`, `>`, `\\`, `^`, `{`, `|` and `}` in the URL";

/// If `written` starts with one of hyper's automatic parse-error answers,
/// the length of that answer's head and the error to answer instead.
///
/// Hyper's HTTP/1 server answers a request it cannot parse on its own,
/// before any service runs, with an empty body: `HTTP/1.1 400 Bad
/// Request`, `414 URI Too Long` or `431 Request Header Fields Too Large`,
/// then `connection: close`, `content-length: 0` and `date`. Responses of
/// the application always have a content type.
pub(crate) fn parser_refusal(written: &[u8]) -> Option<(usize, ApiError)> {
    let rest = written
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| written.strip_prefix(b"HTTP/1.0 "))?;
    let error = match rest.get(..3)? {
        b"400" => ApiError::BadRequest(MALFORMED.to_owned()),
        b"414" => ApiError::UriTooLong,
        b"431" => ApiError::HeadersTooLarge,
        _ => return None,
    };
    let end = find(written, b"\r\n\r\n")? + 4;
    let head = &written[..end];
    let automatic = find(head, b"\r\nconnection: close\r\n").is_some()
        && find(head, b"\r\ncontent-length: 0\r\n").is_some()
        && !head
            .windows(13)
            .any(|w| w.eq_ignore_ascii_case(b"content-type:"));
    automatic.then_some((end, error))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Serves a connection over a TCP cap: waits (at most `wait`) for the end
/// of a request head, answers `error`, and closes.
pub(crate) async fn refuse<S>(mut socket: S, error: ApiError, wait: Duration)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let head_read = async {
        // Only the end of the head matters: keep the last 3 bytes across reads.
        let mut buf = [0u8; 2048];
        let mut kept = 0;
        let mut total = 0;
        loop {
            let n = socket.read(&mut buf[kept..]).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            total += n;
            if find(&buf[..kept + n], b"\r\n\r\n").is_some() || total > 64 * 1024 {
                return Ok::<_, io::Error>(());
            }
            let end = kept + n;
            let keep = end.min(3);
            buf.copy_within(end - keep..end, 0);
            kept = keep;
        }
    };
    if !matches!(tokio::time::timeout(wait, head_read).await, Ok(Ok(()))) {
        return;
    }
    if socket.write_all(&raw_response(&error)).await.is_err() {
        return;
    }
    let _ = socket.shutdown().await;
    linger(&mut socket).await;
}

/// Reads and discards what the client still sends, until it closes, for
/// at most [`LINGER`] and [`LINGER_BYTES`].
pub(crate) async fn linger<S: AsyncRead + Unpin>(socket: &mut S) {
    let until = Instant::now() + LINGER;
    let mut buf = [0u8; 4096];
    let mut discarded = 0;
    while discarded < LINGER_BYTES {
        match tokio::time::timeout_at(until, socket.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => discarded += n,
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyper_automatic_answers_are_recognised_and_application_answers_are_not() {
        let hyper = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: Wed, 02 Dec 2026 03:59:10 GMT\r\n\r\n";
        let (len, error) = parser_refusal(hyper).unwrap();
        assert_eq!(len, hyper.len());
        assert_eq!(error.code(), "headers_too_large");
        assert_eq!(
            parser_refusal(
                b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
            )
            .unwrap()
            .1
            .code(),
            "bad_request"
        );
        let ours = raw_response(&ApiError::BadRequest("x".into()));
        assert!(parser_refusal(&ours).is_none());
        assert!(
            parser_refusal(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n")
                .is_none()
        );
        assert!(
            parser_refusal(b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-len")
                .is_none()
        );
        assert!(parser_refusal(b"event: x\ndata: HTTP/1.1 400\n\n").is_none());
    }

    #[test]
    fn raw_responses_are_complete_http_with_the_json_body() {
        let bytes = raw_response(&ApiError::TooManySockets { limit: 3 });
        let text = String::from_utf8(bytes).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{head}"
        );
        assert!(head.contains(&format!("content-length: {}\r\n", body.len())));
        assert!(head.contains("retry-after: 5"));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "server_full");
    }
}
