//! Topics and patterns as NATS subjects, and back.
//!
//! A topic's `:`-separated segments become subject tokens under a prefix:
//! stored messages live on `<prefix>.m.<tokens>`, the stream republishes
//! them to `<prefix>.r.<tokens>` (what instances subscribe to). Segments may
//! contain `.` and `%`, which a token cannot hold as-is: `%` is written
//! `%25` and `.` is written `%2E`. Nothing else needs escaping: topics are
//! printable ASCII without spaces, and `*`/`>` only ever stand alone, as the
//! wildcards of patterns, where they mean what NATS's wildcards mean.
//!
//! ```
//! use tidings_core::topic::{Pattern, Topic};
//! use tidings_server::engine::nats::Subjects;
//!
//! let subjects = Subjects::new("tidings")?;
//! let topic = Topic::new("order:v1.2:50%")?;
//! assert_eq!(subjects.stored(&topic), "tidings.m.order.v1%2E2.50%25");
//! assert_eq!(subjects.topic_of_stored("tidings.m.order.v1%2E2.50%25"), Some(topic));
//! assert_eq!(subjects.live_filter(&Pattern::new("order:*:>")?), "tidings.r.order.*.>");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use tidings_core::topic::{Pattern, Segment, Topic};

/// Token after the prefix for stored messages.
const STORED: &str = "m";
/// Token after the prefix for republished messages.
const LIVE: &str = "r";

/// A subject prefix that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{prefix}` cannot be a NATS subject prefix: {why}; use dot-separated tokens of letters, digits, `-` and `_` (for example `tidings` or `acme.tidings`)"
)]
pub struct BadPrefix {
    /// The prefix given.
    pub prefix: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// Maps topics and patterns to the subjects of one deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    /// Subjects under `prefix` (one or more tokens, without wildcards).
    pub fn new(prefix: &str) -> Result<Self, BadPrefix> {
        let bad = |why| BadPrefix {
            prefix: prefix.to_owned(),
            why,
        };
        if prefix.is_empty() {
            return Err(bad("it is empty"));
        }
        for token in prefix.split('.') {
            if token.is_empty() {
                return Err(bad("it has an empty token"));
            }
            if !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(bad(
                    "it has a character other than letters, digits, `-`, `_`",
                ));
            }
        }
        Ok(Self {
            prefix: prefix.to_owned(),
        })
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Where `topic`'s messages are published and stored.
    pub fn stored(&self, topic: &Topic) -> String {
        self.subject(STORED, topic.segments().map(Segment::Literal))
    }

    /// Every stored subject: the stream's subject filter.
    pub fn stored_all(&self) -> String {
        format!("{}.{STORED}.>", self.prefix)
    }

    /// Every republished subject: the stream's republish destination.
    pub fn live_all(&self) -> String {
        format!("{}.{LIVE}.>", self.prefix)
    }

    /// The stored subjects `pattern` matches (a filter for direct gets and
    /// consumers).
    pub fn stored_filter(&self, pattern: &Pattern) -> String {
        self.subject(STORED, pattern.segments())
    }

    /// The republished subjects `pattern` matches (what an instance
    /// subscribes to).
    pub fn live_filter(&self, pattern: &Pattern) -> String {
        self.subject(LIVE, pattern.segments())
    }

    /// The topic of a stored subject, or `None` when the subject is not one
    /// of ours.
    pub fn topic_of_stored(&self, subject: &str) -> Option<Topic> {
        self.topic_of(STORED, subject)
    }

    /// The topic of a republished subject, or `None` when the subject is
    /// not one of ours.
    pub fn topic_of_live(&self, subject: &str) -> Option<Topic> {
        self.topic_of(LIVE, subject)
    }

    fn subject<'a>(&self, kind: &str, segments: impl Iterator<Item = Segment<'a>>) -> String {
        let mut out = String::with_capacity(self.prefix.len() + 64);
        out.push_str(&self.prefix);
        out.push('.');
        out.push_str(kind);
        for segment in segments {
            out.push('.');
            match segment {
                Segment::Literal(text) => escape_into(text, &mut out),
                Segment::Star => out.push('*'),
                Segment::Tail => out.push('>'),
            }
        }
        out
    }

    fn topic_of(&self, kind: &str, subject: &str) -> Option<Topic> {
        let rest = subject
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('.')?
            .strip_prefix(kind)?
            .strip_prefix('.')?;
        let mut name = String::with_capacity(rest.len());
        for (i, token) in rest.split('.').enumerate() {
            if i > 0 {
                name.push(':');
            }
            unescape_into(token, &mut name)?;
        }
        Topic::new(&name).ok()
    }
}

/// Appends `segment` as one subject token.
fn escape_into(segment: &str, out: &mut String) {
    for c in segment.chars() {
        match c {
            '%' => out.push_str("%25"),
            '.' => out.push_str("%2E"),
            _ => out.push(c),
        }
    }
}

/// Appends the segment a token stands for; `None` for a token no topic
/// maps to (a bad escape, a wildcard).
fn unescape_into(token: &str, out: &mut String) -> Option<()> {
    let mut rest = token;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3)?;
        match escape {
            "%25" => out.push('%'),
            "%2E" => out.push('.'),
            _ => return None,
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subjects() -> Subjects {
        Subjects::new("tidings").unwrap()
    }

    #[test]
    fn every_printable_segment_round_trips_through_one_token() {
        let s = subjects();
        // Every printable ASCII byte a topic may hold, in one segment.
        let all: String = (0x21u8..=0x7e)
            .map(char::from)
            .filter(|c| !matches!(c, ':' | '*' | '>'))
            .collect();
        for name in [
            "a",
            "order:status:acme:42",
            "v1.2:x",
            "50%:%2E:%25",
            "$JS:API:INFO",
            "a.b.c:...:%",
            all.as_str(),
        ] {
            let topic = Topic::new(name).unwrap();
            let subject = s.stored(&topic);
            let tokens: Vec<&str> = subject.split('.').collect();
            assert_eq!(tokens.len(), 2 + topic.segments().count(), "{subject}");
            assert!(
                tokens
                    .iter()
                    .all(|t| !t.is_empty() && *t != "*" && *t != ">")
            );
            assert!(!subject.contains(char::is_whitespace));
            assert_eq!(
                s.topic_of_stored(&subject),
                Some(topic.clone()),
                "{subject}"
            );
            let live = s.live_filter(&Pattern::new(name).unwrap());
            assert_eq!(s.topic_of_live(&live), Some(topic));
        }
    }

    #[test]
    fn wildcards_become_nats_wildcards_and_literals_stay_escaped() {
        let s = subjects();
        let p = |text| Pattern::new(text).unwrap();
        assert_eq!(
            s.stored_filter(&p("order:*:acme:>")),
            "tidings.m.order.*.acme.>"
        );
        assert_eq!(s.live_filter(&p("a.b:*")), "tidings.r.a%2Eb.*");
        assert_eq!(s.stored_all(), "tidings.m.>");
        assert_eq!(s.live_all(), "tidings.r.>");
    }

    #[test]
    fn foreign_subjects_and_bad_escapes_are_not_topics() {
        let s = subjects();
        for subject in [
            "other.m.a",
            "tidings.x.a",
            "tidings.m",
            "tidings.m.",
            "tidings.m.a..b",
            "tidings.m.a%2",
            "tidings.m.a%41",
            "tidings.m.*",
            "tidings.m.a.>",
            "tidingsX.m.a",
        ] {
            assert_eq!(s.topic_of_stored(subject), None, "{subject}");
        }
    }

    #[test]
    fn a_prefix_is_plain_tokens() {
        assert!(Subjects::new("acme.tidings-1_x").is_ok());
        for bad in ["", "a..b", ".a", "a.", "a.*", "a.>", "a b", "a%b", "$JS"] {
            let e = Subjects::new(bad).unwrap_err();
            assert!(e.to_string().contains("NATS subject prefix"), "{bad}: {e}");
        }
    }
}
