//! Events as handlers receive them.

use alloc::string::String;

/// One message from a topic, its data decoded as `T`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event<T> {
    /// The event id (what the client resumes after).
    pub id: Option<String>,
    /// The message type (`event:` field).
    pub event_type: String,
    /// The decoded data.
    pub data: T,
}

/// An event as a transport hands it over, before decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawEvent {
    pub id: Option<String>,
    pub event_type: String,
    pub data: String,
}
