//! The public identity of one subscriber's stream.

use core::{fmt, str::FromStr};

/// A stream's public identity: 128 random bits (supplied by the adapter),
/// written as 32 lowercase hex digits. A publisher names it in `exclude` so
/// that the stream does not receive its own message; being unguessable, it
/// cannot be used to silence someone else's stream.
///
/// ```
/// use tidings_core::message::ConnectionId;
///
/// let id = ConnectionId::from_random(0xfeed);
/// assert_eq!(id.to_string(), "0000000000000000000000000000feed");
/// assert_eq!(id.to_string().parse::<ConnectionId>(), Ok(id));
/// assert!("feed".parse::<ConnectionId>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(u128);

impl ConnectionId {
    /// The id for 128 random bits.
    pub const fn from_random(bits: u128) -> Self {
        Self(bits)
    }

    /// The id's 128 bits.
    pub const fn bits(self) -> u128 {
        self.0
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// Text that is not a connection id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseConnectionIdError;

impl fmt::Display for ParseConnectionIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "not a connection id: expected the 32 hex digits of `connectionId` from the stream's `tidings.connected` event",
        )
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ParseConnectionIdError {}

impl FromStr for ConnectionId {
    type Err = ParseConnectionIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ParseConnectionIdError);
        }
        u128::from_str_radix(s, 16)
            .map(Self)
            .map_err(|_| ParseConnectionIdError)
    }
}
