//! Messages as streams send them: SSE frames encoded once and shared.

use alloc::vec::Vec;
use core::fmt::Write as _;

use bytes::Bytes;

use super::{ConnectionId, EventType, MessageId, Outgoing};
use crate::{broker::Weigh, log::GapReason, sse::Event};

/// Type of the first event of every stream.
pub const CONNECTED_EVENT: EventType = EventType::internal("tidings.connected");
/// Type of the event that says continuity could not be proven.
pub const GAP_EVENT: EventType = EventType::internal("tidings.gap");

/// One SSE frame (`id:`, `event:`, `data:` lines and the blank line),
/// encoded once and shared by every stream that sends it, and when its
/// message was accepted (microseconds on the adapter's clock, for latency
/// metrics).
///
/// ```
/// use tidings_core::message::{Epoch, EventType, Frame, MessageId, Outgoing};
/// use tidings_core::topic::Topic;
///
/// let id = MessageId::new(Epoch::from_random(35), 1);
/// let message = Outgoing::new(Topic::new("a:b")?, EventType::new("status")?, "{}");
/// let frame = Frame::message(id, &message, 0);
/// assert_eq!(&frame.bytes[..], b"id: z-1\nevent: status\ndata: {}\n\n");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The encoded event.
    pub bytes: Bytes,
    /// When the message was accepted (µs on the adapter's clock).
    pub published_us: u64,
}

impl Weigh for Frame {
    fn weight(&self) -> usize {
        self.bytes.len()
    }
}

impl Frame {
    /// The frame of a published message.
    pub fn message(id: MessageId, message: &Outgoing, published_us: u64) -> Self {
        Self {
            bytes: encode(id, &message.event_type, &message.data),
            published_us,
        }
    }

    /// A `tidings.gap` frame: messages before `at` may be missing; delivery
    /// continues after `at`, which is also where a client that is cut
    /// right after this frame resumes from. `last_event_id` is the id the
    /// client asked to resume from, if this gap answers a resume.
    pub fn gap(
        at: MessageId,
        reason: GapReason,
        last_event_id: Option<&str>,
        published_us: u64,
    ) -> Self {
        let mut data = alloc::string::String::with_capacity(64);
        data.push_str("{\"reason\":\"");
        data.push_str(reason.code());
        data.push_str("\",\"lastEventId\":");
        match last_event_id {
            Some(text) => push_json_string(&mut data, text),
            None => data.push_str("null"),
        }
        data.push('}');
        Self {
            bytes: encode(at, &GAP_EVENT, &data),
            published_us,
        }
    }

    /// The `tidings.connected` frame that opens a stream: the connection id
    /// (for `exclude`) and the topics, with `at` as its id so that a stream
    /// cut before its first message still resumes without loss.
    pub fn connected(at: MessageId, connection: ConnectionId, topics: &[&str]) -> Self {
        let mut data = alloc::string::String::with_capacity(64 + topics.len() * 24);
        let _ = write!(data, "{{\"connectionId\":\"{connection}\",\"topics\":[");
        for (i, topic) in topics.iter().enumerate() {
            if i > 0 {
                data.push(',');
            }
            push_json_string(&mut data, topic);
        }
        data.push_str("]}");
        Self {
            bytes: encode(at, &CONNECTED_EVENT, &data),
            published_us: 0,
        }
    }
}

/// The frame's bytes. Cannot fail: an id is digits, letters and `-`, and an
/// [`EventType`] has no control characters.
fn encode(id: MessageId, event_type: &EventType, data: &str) -> Bytes {
    let id_text = alloc::string::ToString::to_string(&id);
    let event = Event::new(data)
        .with_id(id_text.as_str())
        .with_event(event_type.as_str());
    let mut out = Vec::with_capacity(event.encoded_len().unwrap_or(data.len() + 64));
    let encoded = event.encode(&mut out);
    debug_assert!(encoded.is_ok(), "checked parts always encode");
    Bytes::from(out)
}

/// Appends `text` as a JSON string literal.
fn push_json_string(out: &mut alloc::string::String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Epoch;

    #[test]
    fn gap_and_connected_frames_are_json_and_carry_the_position() {
        let at = MessageId::new(Epoch::from_random(10), 4);
        let gap = Frame::gap(at, GapReason::UnknownId, Some("x\"y"), 0);
        assert_eq!(
            &gap.bytes[..],
            b"id: a-4\nevent: tidings.gap\ndata: {\"reason\":\"unknown_id\",\"lastEventId\":\"x\\\"y\"}\n\n"
        );
        let connected = Frame::connected(at, ConnectionId::from_random(1), &["a:>", "b\\"]);
        assert_eq!(
            &connected.bytes[..],
            b"id: a-4\nevent: tidings.connected\ndata: {\"connectionId\":\"00000000000000000000000000000001\",\"topics\":[\"a:>\",\"b\\\\\"]}\n\n"
        );
    }
}
