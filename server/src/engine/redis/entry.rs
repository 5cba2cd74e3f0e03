//! Stream entries: how a message is stored in the shared Redis stream and
//! read back.
//!
//! An entry has one field, `m`, whose value is
//! `EPOCH SEQ AT EXCLUDE TOPIC TYPE` `\n` `DATA`: the message's Tidings id
//! is `EPOCH-SEQ` (the Redis stream id only orders entries and is where a
//! reader continues); `AT` is when the publish was accepted (µs since the
//! Unix epoch, for the latency metric); `EXCLUDE` is the sender's
//! connection id, or `-`; the type is last on its line (it may hold
//! spaces; topics cannot). One field instead of one per part: Redis
//! stores, sends and the reader parses a quarter of the values, which
//! showed in cluster mode's CPU per publish (BENCHMARKS.md).
//!
//! Entries written by earlier builds, one field per part
//! (`e EPOCH n SEQ topic T type Y data D at U [exclude C]`), are still
//! read. Entries are written only by the publish script (`scripts.rs`).
//! Decoding is lenient about what it does not own: an entry written by
//! someone else (missing fields, a bad topic) is reported as
//! [`Entry::Foreign`] so the reader can skip it and keep its position.

use ::redis::Value;
use tidings_core::{
    message::{ConnectionId, Epoch, EventType, MessageId, Outgoing},
    topic::Topic,
};

/// The field of an entry (see the module docs).
const MESSAGE: &[u8] = b"m";

/// Field names of an entry written by an earlier build.
pub(super) const EPOCH: &[u8] = b"e";
pub(super) const SEQ: &[u8] = b"n";
const TOPIC: &[u8] = b"topic";
const TYPE: &[u8] = b"type";
const DATA: &[u8] = b"data";
const EXCLUDE: &[u8] = b"exclude";
const AT: &[u8] = b"at";

/// A Redis stream id (`ms-seq`): where an entry sits in the stream.
pub(super) type StreamId = String;

/// One entry read from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Entry {
    /// A message written by a Tidings instance.
    Message {
        /// Where it sits in the Redis stream.
        at: StreamId,
        /// Its Tidings id.
        id: MessageId,
        /// The message.
        message: Outgoing,
        /// When it was accepted (µs since the Unix epoch), if the entry says.
        accepted_us: Option<u64>,
    },
    /// Something else under our key: skipped, but its position still
    /// counts as read.
    Foreign(StreamId, String),
}

impl Entry {
    /// Where the entry sits in the Redis stream.
    pub(super) fn stream_id(&self) -> &str {
        match self {
            Self::Message { at, .. } | Self::Foreign(at, _) => at,
        }
    }
}

/// A reply that does not have the shape of a stream reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected reply from Redis: {0}")]
pub(super) struct BadReply(pub String);

/// The entries of an `XRANGE`/`XREVRANGE` reply (or of one stream in an
/// `XREAD` reply), in the reply's order.
pub(super) fn parse_entries(value: &Value) -> Result<Vec<Entry>, BadReply> {
    let items = array(value).ok_or_else(|| BadReply(format!("expected entries, got {value:?}")))?;
    items.iter().map(parse_entry).collect()
}

/// The entries of an `XREAD` reply for `key` (nil when the block timed out).
pub(super) fn parse_xread(value: &Value, key: &str) -> Result<Vec<Entry>, BadReply> {
    // RESP2: [[key, entries], ...]; RESP3: {key: entries, ...}.
    let streams: Vec<(&Value, &Value)> = match value {
        Value::Nil => return Ok(Vec::new()),
        Value::Map(pairs) => pairs.iter().map(|(k, v)| (k, v)).collect(),
        Value::Array(items) => items
            .iter()
            .map(|item| match array(item) {
                Some([k, v]) => Ok((k, v)),
                _ => Err(BadReply(format!("expected [key, entries], got {item:?}"))),
            })
            .collect::<Result<_, _>>()?,
        other => return Err(BadReply(format!("expected a stream list, got {other:?}"))),
    };
    let mut entries = Vec::new();
    for (name, items) in streams {
        if text(name) == Some(key.as_bytes()) {
            entries.extend(parse_entries(items)?);
        }
    }
    Ok(entries)
}

fn parse_entry(value: &Value) -> Result<Entry, BadReply> {
    let Some([at, fields]) = array(value) else {
        return Err(BadReply(format!("expected [id, fields], got {value:?}")));
    };
    let at = utf8(text(at))
        .filter(|s| s.contains('-'))
        .ok_or_else(|| BadReply(format!("expected a stream id, got {at:?}")))?
        .to_owned();
    let fields: Vec<&Value> = match fields {
        Value::Array(items) => items.iter().collect(),
        Value::Map(pairs) => pairs.iter().flat_map(|(k, v)| [k, v]).collect(),
        Value::Nil => Vec::new(),
        other => return Err(BadReply(format!("expected entry fields, got {other:?}"))),
    };
    if let [name, packed] = fields[..]
        && text(name) == Some(MESSAGE)
    {
        return Ok(parse_packed(at, text(packed).unwrap_or_default()));
    }
    let mut slots: [Option<&[u8]>; 7] = [None; 7];
    for pair in fields.chunks(2) {
        let [name, value] = pair else { break };
        let (Some(name), Some(value)) = (text(name), text(value)) else {
            continue;
        };
        let slot = match name {
            EPOCH => 0,
            SEQ => 1,
            TOPIC => 2,
            TYPE => 3,
            DATA => 4,
            EXCLUDE => 5,
            AT => 6,
            _ => continue,
        };
        slots[slot] = Some(value);
    }
    let [epoch, seq, topic, event_type, data, exclude, accepted] = slots.map(utf8);
    let foreign = |why: String| Ok(Entry::Foreign(at.clone(), why));
    let (Some(epoch), Some(seq), Some(topic), Some(data)) = (epoch, seq, topic, data) else {
        return foreign("not a Tidings message (no `e`, `n`, `topic` or `data` field)".into());
    };
    let (Ok(epoch), Ok(seq)) = (epoch.parse::<Epoch>(), seq.parse::<u64>()) else {
        return foreign(format!("bad epoch `{epoch}` or sequence `{seq}`"));
    };
    let topic = match Topic::new(topic) {
        Ok(topic) => topic,
        Err(e) => return foreign(format!("bad topic `{topic}`: {e}")),
    };
    let event_type = match event_type.map_or(Ok(EventType::MESSAGE), EventType::from_log) {
        Ok(t) => t,
        Err(e) => return foreign(format!("bad type: {e}")),
    };
    let mut message = Outgoing::new(topic, event_type, data);
    message.exclude = exclude.and_then(|c| c.parse::<ConnectionId>().ok());
    Ok(Entry::Message {
        at,
        id: MessageId::new(epoch, seq),
        message,
        accepted_us: accepted.and_then(|a| a.parse().ok()),
    })
}

/// An entry's `m` field: `EPOCH SEQ AT EXCLUDE TOPIC TYPE\nDATA`.
fn parse_packed(at: StreamId, packed: &[u8]) -> Entry {
    let foreign = |why: String| Entry::Foreign(at.clone(), why);
    let Ok(packed) = std::str::from_utf8(packed) else {
        return foreign("the `m` field is not UTF-8".into());
    };
    let Some((head, data)) = packed.split_once('\n') else {
        return foreign("the `m` field has no line break before its data".into());
    };
    let mut parts = head.splitn(6, ' ');
    let (Some(epoch), Some(seq), Some(accepted), Some(exclude), Some(topic), Some(event_type)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return foreign(format!(
            "the `m` field's first line `{head}` has fewer than 6 parts"
        ));
    };
    let (Ok(epoch), Ok(seq)) = (epoch.parse::<Epoch>(), seq.parse::<u64>()) else {
        return foreign(format!("bad epoch `{epoch}` or sequence `{seq}`"));
    };
    let topic = match Topic::new(topic) {
        Ok(topic) => topic,
        Err(e) => return foreign(format!("bad topic `{topic}`: {e}")),
    };
    let event_type = match EventType::from_log(event_type) {
        Ok(t) => t,
        Err(e) => return foreign(format!("bad type: {e}")),
    };
    let mut message = Outgoing::new(topic, event_type, data);
    message.exclude = exclude.parse::<ConnectionId>().ok();
    Entry::Message {
        at,
        id: MessageId::new(epoch, seq),
        message,
        accepted_us: accepted.parse().ok(),
    }
}

fn utf8(bytes: Option<&[u8]>) -> Option<&str> {
    bytes.and_then(|b| std::str::from_utf8(b).ok())
}

pub(super) fn array(value: &Value) -> Option<&[Value]> {
    match value {
        Value::Array(items) | Value::Set(items) => Some(items),
        _ => None,
    }
}

pub(super) fn text(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(s) => Some(s.as_bytes()),
        Value::VerbatimString { text, .. } => Some(text.as_bytes()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn entry(id: &str, fields: &[&str]) -> Value {
        Value::Array(vec![
            bulk(id),
            Value::Array(fields.iter().map(|f| bulk(f)).collect()),
        ])
    }

    #[test]
    fn xread_replies_in_resp2_and_resp3_shapes() {
        let entries = Value::Array(vec![
            entry(
                "1-0",
                &[
                    "e", "z", "n", "7", "topic", "a:b", "type", "t", "data", "1", "at", "99",
                ],
            ),
            entry(
                "1-1",
                &[
                    "e",
                    "z",
                    "n",
                    "8",
                    "topic",
                    "a:c",
                    "data",
                    "2",
                    "exclude",
                    "000000000000000000000000000000ff",
                ],
            ),
        ]);
        let resp2 = Value::Array(vec![Value::Array(vec![bulk("k"), entries.clone()])]);
        let resp3 = Value::Map(vec![(bulk("k"), entries)]);
        for reply in [resp2, resp3] {
            let got = parse_xread(&reply, "k").unwrap();
            assert_eq!(got.len(), 2);
            assert!(matches!(
                got[0],
                Entry::Message {
                    accepted_us: Some(99),
                    ..
                }
            ));
            let Entry::Message {
                at,
                id,
                message,
                accepted_us: None,
            } = &got[1]
            else {
                panic!("{got:?}")
            };
            assert_eq!(at, "1-1");
            assert_eq!(id.to_string(), "z-8");
            assert_eq!(message.topic.as_str(), "a:c");
            assert_eq!(message.event_type.as_str(), "message");
            assert_eq!(message.data, "2");
            assert_eq!(message.exclude, Some(ConnectionId::from_random(0xff)));
            assert!(parse_xread(&reply, "other").unwrap().is_empty());
        }
        assert!(parse_xread(&Value::Nil, "k").unwrap().is_empty());
    }

    #[test]
    fn entries_in_one_field_are_read_with_data_kept_whole() {
        let reply = Value::Array(vec![
            entry("1-0", &["m", "z 7 99 - a:b t\nline 1\nline 2 "]),
            entry(
                "1-1",
                &[
                    "m",
                    "z 8 100 000000000000000000000000000000ff a:c my type\n{}",
                ],
            ),
            entry("1-2", &["m", "z 9 x - a:d message\n"]),
        ]);
        let got = parse_entries(&reply).unwrap();
        let Entry::Message {
            at,
            id,
            message,
            accepted_us,
        } = &got[0]
        else {
            panic!("{got:?}")
        };
        assert_eq!((at.as_str(), id.to_string()), ("1-0", "z-7".into()));
        assert_eq!(
            (message.topic.as_str(), message.event_type.as_str()),
            ("a:b", "t")
        );
        assert_eq!(message.data, "line 1\nline 2 ");
        assert_eq!((message.exclude, *accepted_us), (None, Some(99)));
        let Entry::Message { message, .. } = &got[1] else {
            panic!("{got:?}")
        };
        assert_eq!(message.event_type.as_str(), "my type");
        assert_eq!(message.exclude, Some(ConnectionId::from_random(0xff)));
        assert!(
            matches!(&got[2], Entry::Message { message, accepted_us: None, .. } if message.data.is_empty()),
            "{got:?}"
        );
    }

    #[test]
    fn damaged_one_field_entries_are_foreign() {
        let reply = Value::Array(vec![
            entry("1-0", &["m", "z 7 99 - a:b t"]),
            entry("1-1", &["m", "z 7 99 - a:b\n1"]),
            entry("1-2", &["m", "Z! 7 99 - a:b t\n1"]),
            entry("1-3", &["m", "z 7 99 - a:* t\n1"]),
            entry("1-4", &["m", "z 7 99 - a tidings.gap\n1"]),
            Value::Array(vec![
                bulk("1-5"),
                Value::Array(vec![bulk("m"), Value::BulkString(vec![0xff, b'\n'])]),
            ]),
        ]);
        let got = parse_entries(&reply).unwrap();
        assert_eq!(got.len(), 6);
        assert!(
            got.iter().all(|e| matches!(e, Entry::Foreign(..))),
            "{got:?}"
        );
        assert!(matches!(&got[1], Entry::Foreign(_, why) if why.contains("fewer than 6")));
    }

    #[test]
    fn foreign_entries_keep_their_position_and_bad_replies_are_errors() {
        let reply = Value::Array(vec![
            entry("5-0", &["hello", "world"]),
            entry(
                "6-0",
                &["e", "z", "n", "1", "topic", "bad topic", "data", "1"],
            ),
            entry(
                "7-0",
                &[
                    "e", "z", "n", "2", "topic", "a", "type", "x\ny", "data", "1",
                ],
            ),
            entry("8-0", &["e", "Z!", "n", "3", "topic", "a", "data", "1"]),
            entry("9-0", &["topic", "a", "data", "1"]),
        ]);
        let got = parse_entries(&reply).unwrap();
        assert!(
            got.iter().all(|e| matches!(e, Entry::Foreign(..))),
            "{got:?}"
        );
        assert_eq!(got[0].stream_id(), "5-0");
        assert!(matches!(&got[1], Entry::Foreign(_, why) if why.contains("bad topic")));
        assert!(parse_entries(&Value::Int(3)).is_err());
        assert!(parse_entries(&Value::Array(vec![entry("nope", &[])])).is_err());
    }
}
