//! Stream entries: how a message is written to the shared Redis stream and
//! read back.
//!
//! An entry is `topic T type Y data D at U [exclude C]` (`U`: when the
//! publish was accepted, µs since the Unix epoch, for the latency metric);
//! its Redis stream id is the message's SSE id. Decoding is lenient about what it does not own: an
//! entry written by someone else (missing fields, a bad topic) is reported
//! as [`Entry::Foreign`] so the reader can skip it and keep its position.

use ::redis::{Cmd, Value};
use tidings_core::{broker::MessageId, topic::Topic};

use crate::backend::Outgoing;

/// Field names of an entry.
const TOPIC: &[u8] = b"topic";
const TYPE: &[u8] = b"type";
const DATA: &[u8] = b"data";
const EXCLUDE: &[u8] = b"exclude";
const AT: &[u8] = b"at";

/// One entry read from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Entry {
    /// A message written by a Tidings instance, and when it was accepted
    /// (µs since the Unix epoch) if the entry says.
    Message(MessageId, Outgoing, Option<u64>),
    /// Something else under our key: skipped, but its id still counts as
    /// read.
    Foreign(MessageId, String),
}

impl Entry {
    pub(super) fn id(&self) -> MessageId {
        match self {
            Self::Message(id, ..) | Self::Foreign(id, _) => *id,
        }
    }
}

/// A reply that does not have the shape of a stream reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected reply from Redis: {0}")]
pub(super) struct BadReply(pub String);

/// `XADD key MAXLEN ~ max_len * topic T type Y data D at U [exclude C]`.
pub(super) fn xadd(key: &str, max_len: usize, message: &Outgoing, accepted_us: u64) -> Cmd {
    let mut cmd = ::redis::cmd("XADD");
    cmd.arg(key)
        .arg("MAXLEN")
        .arg("~")
        .arg(max_len)
        .arg("*")
        .arg(TOPIC)
        .arg(message.topic.as_str())
        .arg(TYPE)
        .arg(&message.event_type)
        .arg(DATA)
        .arg(&message.data)
        .arg(AT)
        .arg(accepted_us);
    if let Some(exclude) = &message.exclude {
        cmd.arg(EXCLUDE).arg(exclude);
    }
    cmd
}

/// Parses a stream id (`time-seq`) from a reply value.
pub(super) fn parse_id(value: &Value) -> Result<MessageId, BadReply> {
    let text =
        text(value).ok_or_else(|| BadReply(format!("expected a stream id, got {value:?}")))?;
    std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            BadReply(format!(
                "`{}` is not a stream id",
                String::from_utf8_lossy(text)
            ))
        })
}

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
    let Some([id, fields]) = array(value) else {
        return Err(BadReply(format!("expected [id, fields], got {value:?}")));
    };
    let id = parse_id(id)?;
    let fields: Vec<&Value> = match fields {
        Value::Array(items) => items.iter().collect(),
        Value::Map(pairs) => pairs.iter().flat_map(|(k, v)| [k, v]).collect(),
        Value::Nil => Vec::new(),
        other => return Err(BadReply(format!("expected entry fields, got {other:?}"))),
    };
    let (mut topic, mut event_type, mut data, mut exclude, mut at) = (None, None, None, None, None);
    for pair in fields.chunks(2) {
        let [name, value] = pair else { break };
        let (Some(name), Some(value)) = (text(name), text(value)) else {
            continue;
        };
        let slot = match name {
            TOPIC => &mut topic,
            TYPE => &mut event_type,
            DATA => &mut data,
            EXCLUDE => &mut exclude,
            AT => &mut at,
            _ => continue,
        };
        *slot = Some(value);
    }
    fn utf8(bytes: Option<&[u8]>) -> Option<&str> {
        bytes.and_then(|b| std::str::from_utf8(b).ok())
    }
    let (Some(topic), Some(data)) = (utf8(topic), utf8(data)) else {
        return Ok(Entry::Foreign(id, "no `topic` or `data` field".into()));
    };
    let topic = match Topic::new(topic) {
        Ok(topic) => topic,
        Err(e) => return Ok(Entry::Foreign(id, format!("bad topic `{topic}`: {e}"))),
    };
    let event_type = utf8(event_type).unwrap_or("message");
    if event_type.contains(['\r', '\n']) {
        return Ok(Entry::Foreign(id, "line break in `type`".into()));
    }
    Ok(Entry::Message(
        id,
        Outgoing {
            topic,
            event_type: event_type.to_owned(),
            data: data.to_owned(),
            exclude: utf8(exclude).map(str::to_owned),
        },
        utf8(at).and_then(|at| at.parse().ok()),
    ))
}

fn array(value: &Value) -> Option<&[Value]> {
    match value {
        Value::Array(items) | Value::Set(items) => Some(items),
        _ => None,
    }
}

fn text(value: &Value) -> Option<&[u8]> {
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
    fn xadd_writes_every_field_and_exclude_only_when_given() {
        let mut message = Outgoing {
            topic: Topic::new("a:b").unwrap(),
            event_type: "status".into(),
            data: r#"{"x":1}"#.into(),
            exclude: None,
        };
        let args = |cmd: &Cmd| -> Vec<String> {
            cmd.args_iter()
                .map(|a| match a {
                    ::redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
                    _ => "<cursor>".into(),
                })
                .collect()
        };
        assert_eq!(
            args(&xadd("k", 500, &message, 17)),
            [
                "XADD",
                "k",
                "MAXLEN",
                "~",
                "500",
                "*",
                "topic",
                "a:b",
                "type",
                "status",
                "data",
                r#"{"x":1}"#,
                "at",
                "17"
            ]
        );
        message.exclude = Some("c0ffee".into());
        assert_eq!(
            args(&xadd("k", 500, &message, 17))[14..],
            ["exclude", "c0ffee"]
        );
    }

    #[test]
    fn xread_replies_in_resp2_and_resp3_shapes() {
        let entries = Value::Array(vec![
            entry(
                "1-0",
                &["topic", "a:b", "type", "t", "data", "1", "at", "99"],
            ),
            entry("1-1", &["topic", "a:c", "data", "2", "exclude", "ff"]),
        ]);
        let resp2 = Value::Array(vec![Value::Array(vec![bulk("k"), entries.clone()])]);
        let resp3 = Value::Map(vec![(bulk("k"), entries)]);
        for reply in [resp2, resp3] {
            let got = parse_xread(&reply, "k").unwrap();
            assert_eq!(got.len(), 2);
            assert!(matches!(got[0], Entry::Message(_, _, Some(99))));
            let Entry::Message(id, m, None) = &got[1] else {
                panic!("{got:?}")
            };
            assert_eq!(*id, MessageId::new(1, 1));
            assert_eq!(m.topic.as_str(), "a:c");
            assert_eq!(m.event_type, "message");
            assert_eq!(m.data, "2");
            assert_eq!(m.exclude.as_deref(), Some("ff"));
            assert!(parse_xread(&reply, "other").unwrap().is_empty());
        }
        assert!(parse_xread(&Value::Nil, "k").unwrap().is_empty());
    }

    #[test]
    fn foreign_entries_keep_their_id_and_bad_replies_are_errors() {
        let reply = Value::Array(vec![
            entry("5-0", &["hello", "world"]),
            entry("6-0", &["topic", "bad topic", "data", "1"]),
            entry("7-0", &["topic", "a", "type", "x\ny", "data", "1"]),
        ]);
        let got = parse_entries(&reply).unwrap();
        assert!(matches!(&got[0], Entry::Foreign(id, _) if *id == MessageId::new(5, 0)));
        assert!(matches!(&got[1], Entry::Foreign(_, why) if why.contains("bad topic")));
        assert!(matches!(&got[2], Entry::Foreign(..)));
        assert!(parse_entries(&Value::Int(3)).is_err());
        assert!(parse_entries(&Value::Array(vec![entry("nope", &[])])).is_err());
        assert_eq!(parse_id(&bulk("17-3")), Ok(MessageId::new(17, 3)));
    }
}
