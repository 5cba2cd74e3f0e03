//! Errors the client reports to the app.

use alloc::string::String;
use core::fmt;

/// Something went wrong; the client tells the app through its error
/// callbacks and streams and, unless the error is final, keeps going.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The server answered an HTTP error status; the client reconnects.
    Http {
        /// The HTTP status code (429, 502, 503, ...).
        status: u16,
    },
    /// The server refused the credentials (401) or the topics (403). Final
    /// unless a token hook returns a fresh token.
    Auth {
        /// 401 or 403.
        status: u16,
    },
    /// The token expired on an open stream (`tidings.expired`) and no token
    /// hook gave a fresh one. Final.
    Expired,
    /// The server could not be reached or the stream broke; the client
    /// reconnects.
    Network,
    /// An event's data was not JSON or not the shape the handler expects;
    /// the event is skipped and the stream goes on.
    Decode {
        /// The event type (`event:` field).
        event_type: String,
        /// The event id, if it had one.
        id: Option<String>,
        /// What did not fit.
        message: String,
    },
    /// A JavaScript handler threw; the other handlers still ran.
    Handler {
        /// The event type being handled.
        event_type: String,
        /// What the handler threw.
        message: String,
    },
    /// The client options are unusable (no topics, unknown transport, ...).
    Config(String),
}

impl Error {
    /// The HTTP status behind this error, if any.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Http { status } | Self::Auth { status } => Some(*status),
            _ => None,
        }
    }
}

// Pieces with `write_str` rather than `write!("{}")`: string padding and
// integer formatting machinery cost the bundle more than a kilobyte.
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pieces: [&str; 6] = match self {
            Self::Http { status } => [
                "server answered HTTP ",
                status_text(*status),
                "; reconnecting with backoff",
                "",
                "",
                "",
            ],
            Self::Auth { status: 401 } => [
                "server refused the token (401): give a valid token or a token hook",
                "",
                "",
                "",
                "",
                "",
            ],
            Self::Auth { status } => [
                "topics not allowed for this token (",
                status_text(*status),
                "): check its subscribe patterns",
                "",
                "",
                "",
            ],
            Self::Expired => [
                "the token expired and no fresh one came: give a token hook (`getToken`) to stay connected",
                "",
                "",
                "",
                "",
                "",
            ],
            Self::Network => [
                "server unreachable or stream broken; reconnecting with backoff",
                "",
                "",
                "",
                "",
                "",
            ],
            Self::Decode {
                event_type,
                id,
                message,
            } => [
                "event `",
                event_type,
                "` (id ",
                id.as_deref().unwrap_or("none"),
                ") skipped, its data did not decode: ",
                message,
            ],
            Self::Handler {
                event_type,
                message,
            } => ["handler for `", event_type, "` threw: ", message, "", ""],
            Self::Config(message) => ["invalid client options: ", message, "", "", "", ""],
        };
        pieces.iter().try_for_each(|piece| f.write_str(piece))
    }
}

/// The status as text, for the statuses a server sends; others read "error".
fn status_text(status: u16) -> &'static str {
    match status {
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        408 => "408",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        _ => "error",
    }
}

impl core::error::Error for Error {}
