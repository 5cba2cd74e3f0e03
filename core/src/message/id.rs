//! Message ids: the log's incarnation (epoch) and a position in it (seq).

use core::{fmt, num::NonZeroU64, str::FromStr};

/// One incarnation of a message log.
///
/// A log gets a new epoch whenever it may have lost entries: a process
/// whose in-memory broker restarted, a Redis that came back empty, a stream
/// that was deleted and created again. Sequence numbers restart with it, so
/// an id from another epoch can never be mistaken for one of this epoch:
/// the follower answers it with `tidings.gap`.
///
/// Epochs are random (the adapter supplies the entropy), never ordered.
/// Written in lowercase base 36.
///
/// ```
/// use tidings_core::message::Epoch;
///
/// let epoch = Epoch::from_random(0x1234_5678_9abc);
/// assert_eq!(epoch.to_string().parse::<Epoch>(), Ok(epoch));
/// assert_eq!(Epoch::from_random(0), Epoch::from_random(1)); // never zero
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Epoch(NonZeroU64);

impl Epoch {
    /// The epoch for 64 random bits (0 is mapped to 1).
    pub const fn from_random(bits: u64) -> Self {
        match NonZeroU64::new(bits) {
            Some(n) => Self(n),
            None => Self(NonZeroU64::MIN),
        }
    }

    /// The epoch's number.
    pub const fn get(self) -> u64 {
        self.0.get()
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // u64::MAX is 13 digits in base 36.
        let mut digits = [0u8; 13];
        let mut n = self.get();
        let mut at = digits.len();
        while n > 0 {
            at -= 1;
            let d = (n % 36) as u8;
            digits[at] = if d < 10 { b'0' + d } else { b'a' + d - 10 };
            n /= 36;
        }
        // Only ASCII digits and letters were written.
        f.write_str(core::str::from_utf8(&digits[at..]).unwrap_or("?"))
    }
}

impl FromStr for Epoch {
    type Err = ParseMessageIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > 13 {
            return Err(ParseMessageIdError);
        }
        let mut n: u64 = 0;
        for b in s.bytes() {
            let d = match b {
                b'0'..=b'9' => b - b'0',
                b'a'..=b'z' => b - b'a' + 10,
                _ => return Err(ParseMessageIdError),
            };
            n = n
                .checked_mul(36)
                .and_then(|n| n.checked_add(u64::from(d)))
                .ok_or(ParseMessageIdError)?;
        }
        NonZeroU64::new(n).map(Self).ok_or(ParseMessageIdError)
    }
}

/// A message id: the log's [`Epoch`] and the message's sequence number in
/// it. Sequence numbers start at 1 and grow by one per message of the log,
/// so a follower can prove that nothing was skipped. `seq` 0 names the
/// position before the first message.
///
/// Written `EPOCH-SEQ`; clients treat it as opaque.
///
/// ```
/// use tidings_core::message::{Epoch, MessageId};
///
/// let id = MessageId::new(Epoch::from_random(46_656), 7);
/// assert_eq!(id.to_string(), "1000-7");
/// assert_eq!("1000-7".parse::<MessageId>(), Ok(id));
/// assert!("1700000000000".parse::<MessageId>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageId {
    /// The log's incarnation.
    pub epoch: Epoch,
    /// Position in the log; 0 is "before the first message".
    pub seq: u64,
}

impl MessageId {
    /// An id from its parts.
    pub const fn new(epoch: Epoch, seq: u64) -> Self {
        Self { epoch, seq }
    }

    /// The position before the first message of `epoch`.
    pub const fn origin(epoch: Epoch) -> Self {
        Self { epoch, seq: 0 }
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.epoch, self.seq)
    }
}

/// A string that is not a Tidings message id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseMessageIdError;

impl fmt::Display for ParseMessageIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "not a Tidings event id: expected EPOCH-SEQ as sent in an event's `id:` field, like `3k9xq2m1-42`",
        )
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ParseMessageIdError {}

impl FromStr for MessageId {
    type Err = ParseMessageIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (epoch, seq) = s.split_once('-').ok_or(ParseMessageIdError)?;
        if seq.is_empty() || seq.len() > 20 || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseMessageIdError);
        }
        Ok(Self {
            epoch: epoch.parse()?,
            seq: seq.parse().map_err(|_| ParseMessageIdError)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn text_round_trips_at_the_edges() {
        for bits in [1, 35, 36, u64::MAX, 0x8000_0000_0000_0000] {
            let id = MessageId::new(Epoch::from_random(bits), u64::MAX);
            assert_eq!(id.to_string().parse::<MessageId>(), Ok(id));
        }
        assert_eq!(Epoch::from_random(u64::MAX).to_string(), "3w5e11264sgsf");
    }

    #[test]
    fn junk_is_refused() {
        for junk in [
            "",
            "-",
            "a-",
            "-1",
            "A-1",
            "a-1-2",
            "a- 1",
            "0-1",
            "3w5e11264sgsg-1",
            "a-+1",
            "a-123456789012345678901",
            "zzzzzzzzzzzzzz-1",
        ] {
            assert!(junk.parse::<MessageId>().is_err(), "{junk}");
        }
    }
}
