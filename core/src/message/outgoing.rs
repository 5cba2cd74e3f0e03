//! A message on its way in: checked, not yet numbered.

use alloc::string::String;

use super::{ConnectionId, EventType, IdempotencyKey};
use crate::topic::Topic;

/// One message to publish, with every part already checked: a valid topic,
/// a valid event type, data as one JSON text.
///
/// ```
/// use tidings_core::message::{EventType, Outgoing};
/// use tidings_core::topic::Topic;
///
/// let message = Outgoing::new(Topic::new("order:acme:42")?, EventType::new("status")?, r#"{"state":"shipped"}"#);
/// assert_eq!(message.event_type.as_str(), "status");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Where it goes.
    pub topic: Topic,
    /// Its SSE event type.
    pub event_type: EventType,
    /// Its data: JSON text (newlines are allowed: SSE splits them over
    /// several `data:` lines and the client joins them back).
    pub data: String,
    /// A stream that must not receive it (the publisher's own).
    pub exclude: Option<ConnectionId>,
    /// Makes a retry return the original id instead of publishing again.
    pub idempotency_key: Option<IdempotencyKey>,
}

impl Outgoing {
    /// A message without `exclude` or idempotency key.
    pub fn new(topic: Topic, event_type: EventType, data: impl Into<String>) -> Self {
        Self {
            topic,
            event_type,
            data: data.into(),
            exclude: None,
            idempotency_key: None,
        }
    }

    /// A 64-bit digest of what the message says (topic, type, data,
    /// exclude): a retry under the same idempotency key must say the same.
    pub fn fingerprint(&self) -> u64 {
        let mut hash = Fnv1a::new();
        hash.write(self.topic.as_str().as_bytes());
        hash.write(self.event_type.as_str().as_bytes());
        hash.write(self.data.as_bytes());
        if let Some(exclude) = self.exclude {
            hash.write(&exclude.bits().to_le_bytes());
        }
        hash.finish()
    }
}

/// FNV-1a, 64 bits, with a length prefix per part so that parts cannot run
/// into each other.
struct Fnv1a(u64);

impl Fnv1a {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in (bytes.len() as u64).to_le_bytes().iter().chain(bytes) {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}
