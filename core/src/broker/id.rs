use core::{fmt, str::FromStr};

/// A message id: ordered, unique within a deployment, and written
/// `time-seq` like a Redis stream id so one format serves both the
/// in-memory broker and the cluster.
///
/// ```
/// use tidings_core::broker::MessageId;
///
/// let id: MessageId = "1700000000000-7".parse()?;
/// assert_eq!(id, MessageId::new(1_700_000_000_000, 7));
/// assert_eq!(id.to_string(), "1700000000000-7");
/// assert!(id < MessageId::new(1_700_000_000_000, 8));
/// assert!(id < MessageId::new(1_700_000_000_001, 0));
/// # Ok::<(), tidings_core::broker::ParseMessageIdError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MessageId {
    /// Major part: an epoch or a millisecond timestamp chosen by the adapter.
    pub time: u64,
    /// Minor part: a sequence number within `time`.
    pub seq: u64,
}

impl MessageId {
    /// The smallest id.
    pub const ZERO: Self = Self { time: 0, seq: 0 };

    /// An id from its two parts.
    pub const fn new(time: u64, seq: u64) -> Self {
        Self { time, seq }
    }

    /// The id right after this one.
    #[must_use]
    pub const fn successor(self) -> Self {
        match self.seq.checked_add(1) {
            Some(seq) => Self {
                time: self.time,
                seq,
            },
            None => Self {
                time: self.time + 1,
                seq: 0,
            },
        }
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.time, self.seq)
    }
}

/// A string that is not a `time-seq` message id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseMessageIdError;

impl fmt::Display for ParseMessageIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a Tidings event id: expected two decimal numbers joined by `-`, like `1700000000000-0`")
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ParseMessageIdError {}

impl FromStr for MessageId {
    type Err = ParseMessageIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (time, seq) = s.split_once('-').ok_or(ParseMessageIdError)?;
        let digits = |part: &str| {
            if part.is_empty() || part.len() > 20 || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ParseMessageIdError);
            }
            part.parse::<u64>().map_err(|_| ParseMessageIdError)
        };
        Ok(Self {
            time: digits(time)?,
            seq: digits(seq)?,
        })
    }
}
