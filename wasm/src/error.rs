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

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Http { status } => write!(
                f,
                "server answered HTTP {status}; reconnecting with backoff"
            ),
            Self::Auth { status: 401 } => {
                f.write_str("server refused the token (401): give a valid token or a token hook")
            }
            Self::Auth { status } => write!(
                f,
                "topics not allowed for this token ({status}): check its subscribe patterns"
            ),
            Self::Network => {
                f.write_str("server unreachable or stream broken; reconnecting with backoff")
            }
            Self::Decode {
                event_type,
                id,
                message,
            } => write!(
                f,
                "event `{event_type}` (id {}) skipped, its data did not decode: {message}",
                id.as_deref().unwrap_or("none")
            ),
            Self::Handler {
                event_type,
                message,
            } => write!(f, "handler for `{event_type}` threw: {message}"),
            Self::Config(message) => write!(f, "invalid client options: {message}"),
        }
    }
}

impl core::error::Error for Error {}
