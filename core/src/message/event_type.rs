//! The SSE event type of a message, checked once when the message is made.

use alloc::{borrow::Cow, string::String};
use core::fmt;

/// Longest event type, in bytes.
pub const MAX_EVENT_TYPE_LEN: usize = 128;

/// Prefix of the server's own events (`tidings.gap`, ...), which publishers
/// may not use.
pub const RESERVED_PREFIX: &str = "tidings.";

/// A valid SSE event type: 1 to [`MAX_EVENT_TYPE_LEN`] bytes without control
/// characters (so it can never break the `event:` line). Types starting
/// with `tidings.` are reserved for the server's own events.
///
/// ```
/// use tidings_core::message::{EventType, EventTypeError};
///
/// assert_eq!(EventType::new("status")?.as_str(), "status");
/// assert_eq!(EventType::default().as_str(), "message");
/// assert_eq!(EventType::new("a\nb"), Err(EventTypeError::ControlCharacter));
/// assert_eq!(EventType::new("tidings.gap"), Err(EventTypeError::Reserved));
/// # Ok::<(), EventTypeError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventType(Cow<'static, str>);

/// Why a text is not a valid event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventTypeError {
    /// The type is empty.
    Empty,
    /// The type is longer than [`MAX_EVENT_TYPE_LEN`].
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The type contains a control character (a line break, a tab, ...).
    ControlCharacter,
    /// The type starts with `tidings.`.
    Reserved,
}

impl fmt::Display for EventTypeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty | Self::TooLong { .. } => {
                write!(f, "`type` must be 1 to {MAX_EVENT_TYPE_LEN} bytes")
            }
            Self::ControlCharacter => {
                f.write_str("`type` must not contain control characters or line breaks")
            }
            Self::Reserved => f.write_str(
                "types starting with `tidings.` are reserved for the server's own events",
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for EventTypeError {}

impl EventType {
    /// The default type, `message` (what `EventSource.onmessage` receives).
    pub const MESSAGE: Self = Self(Cow::Borrowed("message"));

    /// Checks a publisher's event type.
    pub fn new(text: &str) -> Result<Self, EventTypeError> {
        check(text)?;
        if text.starts_with(RESERVED_PREFIX) {
            return Err(EventTypeError::Reserved);
        }
        Ok(if text == "message" {
            Self::MESSAGE
        } else {
            Self(Cow::Owned(String::from(text)))
        })
    }

    /// `tidings.join`: a stream subscribed to a topic (presence). The server
    /// publishes it through the log, on the topic's `$presence:` twin.
    pub const JOIN: Self = Self(Cow::Borrowed("tidings.join"));

    /// `tidings.leave`: a stream left a topic, or its entry expired.
    pub const LEAVE: Self = Self(Cow::Borrowed("tidings.leave"));

    /// Reads a type back from the shared log: a publisher's type, or one of
    /// the server's own types that travel through the log
    /// ([`JOIN`](Self::JOIN), [`LEAVE`](Self::LEAVE)).
    ///
    /// ```
    /// use tidings_core::message::EventType;
    ///
    /// assert_eq!(EventType::from_log("tidings.join"), Ok(EventType::JOIN));
    /// assert!(EventType::from_log("tidings.gap").is_err());
    /// ```
    pub fn from_log(text: &str) -> Result<Self, EventTypeError> {
        match text {
            "tidings.join" => Ok(Self::JOIN),
            "tidings.leave" => Ok(Self::LEAVE),
            _ => Self::new(text),
        }
    }

    /// One of the server's own types (`tidings.gap`, ...).
    pub const fn internal(name: &'static str) -> Self {
        Self(Cow::Borrowed(name))
    }

    /// The type as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for EventType {
    fn default() -> Self {
        Self::MESSAGE
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn check(text: &str) -> Result<(), EventTypeError> {
    if text.is_empty() {
        return Err(EventTypeError::Empty);
    }
    if text.len() > MAX_EVENT_TYPE_LEN {
        return Err(EventTypeError::TooLong { len: text.len() });
    }
    if text.chars().any(char::is_control) {
        return Err(EventTypeError::ControlCharacter);
    }
    Ok(())
}
