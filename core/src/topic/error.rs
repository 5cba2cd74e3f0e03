use core::fmt;

/// Why a topic or pattern was refused. The message says how to fix it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TopicError {
    /// The name has no bytes.
    Empty,
    /// The name is longer than the limit.
    TooLong {
        /// Length of the refused name in bytes.
        len: usize,
        /// The limit ([`MAX_TOPIC_LEN`](super::MAX_TOPIC_LEN)).
        max: usize,
    },
    /// A byte outside printable ASCII (`!` to `~`), such as a space.
    InvalidByte {
        /// The refused byte.
        byte: u8,
        /// Its offset in the name.
        index: usize,
    },
    /// Two `:` in a row, or a `:` at the start or the end.
    EmptySegment {
        /// Zero-based position of the empty segment.
        segment: usize,
    },
    /// A topic one publishes to contains `*` or `>`.
    WildcardInTopic {
        /// Offset of the wildcard.
        index: usize,
    },
    /// In a pattern, `*` or `>` is part of a longer segment (`a*`).
    PartialWildcard {
        /// Zero-based position of the segment.
        segment: usize,
    },
    /// In a pattern, `>` is not the last segment.
    TailNotLast {
        /// Zero-based position of the `>` segment.
        segment: usize,
    },
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Empty => f.write_str("topic is empty: give at least one segment, like `news`"),
            Self::TooLong { len, max } => {
                write!(f, "topic is {len} bytes long; the limit is {max} bytes")
            }
            Self::InvalidByte { byte, index } => write!(
                f,
                "byte 0x{byte:02x} at offset {index} is not allowed: topics are printable ASCII without spaces"
            ),
            Self::EmptySegment { segment } => write!(
                f,
                "segment {segment} is empty: segments are separated by a single `:` with no `:` at either end"
            ),
            Self::WildcardInTopic { index } => write!(
                f,
                "`*` and `>` (offset {index}) are only allowed in subscription patterns, not in a topic you publish to"
            ),
            Self::PartialWildcard { segment } => write!(
                f,
                "segment {segment} mixes a wildcard with other characters: `*` and `>` must be whole segments"
            ),
            Self::TailNotLast { segment } => write!(
                f,
                "`>` is segment {segment} but may only be the last segment (it matches one or more trailing segments)"
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for TopicError {}
