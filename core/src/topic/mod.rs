//! Topic names, subscription patterns and the index that matches them.
//!
//! A topic is 1 to [`MAX_TOPIC_LEN`] bytes of printable ASCII without spaces,
//! made of non-empty segments separated by `:` (`order:status:acme:42`).
//! A pattern may use `*` for exactly one segment and `>` as its last segment
//! for one or more trailing segments (`order:status:acme:*`, `order:>`).
//!
//! Topics whose first segment starts with `$` belong to the server (as in
//! MQTT, where `#` never matches `$SYS/...`): a wildcard in a pattern's
//! *first* segment does not match them, so `>` or `*:room1` never see
//! `$presence:room1`; only a pattern that spells the `$` segment out does.
//!
//! ```
//! use tidings_core::topic::{Pattern, Topic};
//!
//! let topic = Topic::new("order:status:acme:42")?;
//! assert!(Pattern::new("order:status:*:42")?.matches(&topic));
//! assert!(Pattern::new("order:>")?.matches(&topic));
//! assert!(!Pattern::new("order:status:globex:*")?.matches(&topic));
//!
//! let internal = Topic::new("$presence:room1")?;
//! assert!(!Pattern::new(">")?.matches(&internal));
//! assert!(Pattern::new("$presence:>")?.matches(&internal));
//! # Ok::<(), tidings_core::topic::TopicError>(())
//! ```

mod error;
mod index;
mod name;
mod pattern;

pub use error::TopicError;
pub use index::{IndexEntry, PatternIndex};
pub use name::Topic;
pub use pattern::{Pattern, Segment};

/// Longest topic or pattern, in bytes.
pub const MAX_TOPIC_LEN: usize = 256;

/// The byte that separates segments.
pub const SEPARATOR: u8 = b':';

/// The first byte of a server-owned topic's first segment (see the
/// [module docs](self)).
pub const INTERNAL_MARK: u8 = b'$';

/// True when `name` (a topic or pattern) is server-owned: its first segment
/// starts with [`INTERNAL_MARK`].
///
/// ```
/// use tidings_core::topic::is_internal;
///
/// assert!(is_internal("$presence:room1"));
/// assert!(!is_internal("room1:$x"));
/// ```
pub fn is_internal(name: &str) -> bool {
    name.as_bytes().first() == Some(&INTERNAL_MARK)
}

/// Checks the rules shared by topics and patterns: length, printable ASCII
/// without spaces, no empty segment.
fn check_common(s: &str) -> Result<(), TopicError> {
    let bytes = s.as_bytes();
    if bytes.is_empty() {
        return Err(TopicError::Empty);
    }
    if bytes.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong {
            len: bytes.len(),
            max: MAX_TOPIC_LEN,
        });
    }
    if let Some(index) = bytes.iter().position(|b| !(0x21..=0x7e).contains(b)) {
        return Err(TopicError::InvalidByte {
            byte: bytes[index],
            index,
        });
    }
    if let Some(segment) = s.split(':').position(str::is_empty) {
        return Err(TopicError::EmptySegment { segment });
    }
    Ok(())
}
