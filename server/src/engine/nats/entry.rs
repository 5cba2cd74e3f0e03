//! A message as stored in the stream, and as read back.
//!
//! The payload is the message data (compact JSON); the event type, the
//! excluded connection and the acceptance time travel as headers. Reading
//! is lenient about what it does not own: a message on one of our subjects
//! written by someone else (no type header) reads as type `message`.

use async_nats::{HeaderMap, HeaderName, HeaderValue, header};
use bytes::Bytes;
use tidings_core::topic::Topic;

use super::Subjects;

/// Header: the SSE event type.
pub(super) const TYPE: &str = "Tidings-Type";
/// Header: a connection that must not receive the message.
pub(super) const EXCLUDE: &str = "Tidings-Exclude";
/// Header: when the publish was accepted, µs since the Unix epoch.
pub(super) const AT: &str = "Tidings-At";

/// One message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    /// Where it goes.
    pub topic: Topic,
    /// The SSE event type.
    pub event_type: String,
    /// The data as compact JSON.
    pub data: String,
    /// A connection that must not receive it.
    pub exclude: Option<String>,
    /// The publisher's idempotency key (becomes `Nats-Msg-Id`).
    pub idempotency_key: Option<String>,
}

/// One message read from the stream (republished live, or fetched).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEntry {
    /// The stream sequence.
    pub seq: u64,
    /// The previous sequence on the same subject (0: the subject's first
    /// message), when known: republished messages carry it, direct gets
    /// do not.
    pub prev: Option<u64>,
    /// The topic.
    pub topic: Topic,
    /// The SSE event type.
    pub event_type: String,
    /// The data (compact JSON).
    pub data: Bytes,
    /// A connection that must not receive it.
    pub exclude: Option<String>,
    /// When the publish was accepted (µs since the Unix epoch), if it says.
    pub accepted_us: Option<u64>,
}

/// Parses a header name (a `&str` key never finds a standard header in
/// async-nats 0.46; see docs/nats.md).
fn name(text: &str) -> HeaderName {
    text.parse().expect("header names here are valid")
}

fn get<'a>(headers: &'a HeaderMap, key: &str) -> Option<&'a str> {
    headers.get(name(key)).map(HeaderValue::as_str)
}

/// The headers of a publication.
pub(super) fn headers(message: &Publication, accepted_us: u64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(name(TYPE), message.event_type.as_str());
    headers.insert(name(AT), accepted_us.to_string().as_str());
    if let Some(exclude) = &message.exclude {
        headers.insert(name(EXCLUDE), exclude.as_str());
    }
    if let Some(key) = &message.idempotency_key {
        headers.insert(header::NATS_MESSAGE_ID, key.as_str());
    }
    headers
}

/// Reads a republished message (`None` when it is not one of ours or lacks
/// the stream's headers).
pub(super) fn from_republished(
    subjects: &Subjects,
    subject: &str,
    headers: Option<&HeaderMap>,
    payload: Bytes,
) -> Option<StreamEntry> {
    let headers = headers?;
    let topic = subjects.topic_of_live(subject)?;
    let seq = headers.get(header::NATS_SEQUENCE)?.as_str().parse().ok()?;
    let prev = headers
        .get(header::NATS_LAST_SEQUENCE)
        .and_then(|v| v.as_str().parse().ok());
    Some(entry(topic, seq, prev, headers, payload))
}

/// Reads a message fetched with a direct get.
pub(super) fn from_stored(
    subjects: &Subjects,
    subject: &str,
    seq: u64,
    headers: &HeaderMap,
    payload: Bytes,
) -> Option<StreamEntry> {
    let topic = subjects.topic_of_stored(subject)?;
    Some(entry(topic, seq, None, headers, payload))
}

fn entry(
    topic: Topic,
    seq: u64,
    prev: Option<u64>,
    headers: &HeaderMap,
    payload: Bytes,
) -> StreamEntry {
    StreamEntry {
        seq,
        prev,
        topic,
        event_type: get(headers, TYPE).unwrap_or("message").to_owned(),
        data: payload,
        exclude: get(headers, EXCLUDE).map(str::to_owned),
        accepted_us: get(headers, AT).and_then(|v| v.parse().ok()),
    }
}
