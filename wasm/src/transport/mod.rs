//! The two ways to carry the stream: the browser's `EventSource`, or `fetch`
//! with a `ReadableStream` decoded by `tidings_core::sse`. Both report to a
//! [`Sink`] and are RAII: dropping a connection closes it and frees every
//! listener and closure it registered.

mod event_source;
mod fetch;
mod probe;

use alloc::rc::Weak;
use alloc::string::String;
use alloc::vec::Vec;

use crate::error::Error;
use crate::event::RawEvent;
use crate::reconnect::Failure;

pub(crate) use event_source::EventSourceConnection;
pub(crate) use fetch::{FetchConnection, global_fetch};

/// Which browser API carries the stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// The browser's `EventSource`: no custom headers (the token goes in the
    /// `access_token` query parameter or the `tidings_token` cookie).
    #[default]
    EventSource,
    /// `fetch` with a streamed body: sends `Authorization` and any other
    /// header, and reads the server's `retry:`.
    Fetch,
}

/// Where a connection reports what happens to it.
pub(crate) trait Sink {
    /// Status 200 and the stream headers arrived.
    fn opened(&self);
    /// One event arrived.
    fn event(&self, event: RawEvent);
    /// The server sent `retry:`.
    fn retry(&self, ms: u32);
    /// Something the app should hear about that does not end the stream.
    fn error(&self, error: Error);
    /// The attempt failed or the stream ended; the connection is finished.
    fn failed(&self, failure: Failure);
}

/// What to connect to.
#[derive(Debug, Clone)]
pub(crate) struct ConnectRequest {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub with_credentials: bool,
}

/// A live connection of either kind.
pub(crate) enum Connection {
    EventSource(EventSourceConnection),
    Fetch(
        #[allow(dead_code, reason = "held for its Drop, which aborts the request")] FetchConnection,
    ),
}

impl Connection {
    pub fn open(
        transport: Transport,
        request: &ConnectRequest,
        event_types: &[String],
        sink: Weak<dyn Sink>,
    ) -> Result<Self, Error> {
        Ok(match transport {
            Transport::EventSource => {
                Self::EventSource(EventSourceConnection::open(request, event_types, sink)?)
            }
            Transport::Fetch => Self::Fetch(FetchConnection::open(request, sink)),
        })
    }

    /// A handler for a new event type was added while connected.
    pub fn listen(&self, event_type: &str) {
        if let Self::EventSource(connection) = self {
            connection.listen(event_type);
        }
    }
}

/// The `Retry-After` header in milliseconds (seconds form only), 0 if absent.
pub(crate) fn retry_after_ms(headers: &web_sys::Headers) -> u32 {
    headers
        .get("retry-after")
        .ok()
        .flatten()
        .and_then(|value| parse_seconds(value.trim_ascii()))
        .map_or(0, |seconds| seconds.saturating_mul(1_000))
}

/// Digits only (the HTTP-date form is ignored); saturates instead of failing.
fn parse_seconds(value: &str) -> Option<u32> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(value.bytes().fold(0u32, |n, digit| {
        n.saturating_mul(10).saturating_add(u32::from(digit - b'0'))
    }))
}

/// Milliseconds since the epoch, the client's only clock.
pub(crate) fn now_ms() -> u64 {
    js_sys::Date::now() as u64
}

#[cfg(test)]
mod tests {
    use super::parse_seconds;

    #[test]
    fn retry_after_takes_delay_seconds_only() {
        assert_eq!(parse_seconds("120"), Some(120));
        assert_eq!(parse_seconds("0"), Some(0));
        assert_eq!(parse_seconds("99999999999"), Some(u32::MAX), "saturates");
        assert_eq!(parse_seconds(""), None);
        assert_eq!(parse_seconds("-1"), None);
        assert_eq!(parse_seconds("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }
}
