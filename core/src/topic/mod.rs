//! Topic names, subscription patterns and the index that matches them.
//!
//! A topic is 1 to [`MAX_TOPIC_LEN`] bytes of printable ASCII without spaces,
//! made of non-empty segments separated by `:` (`order:status:acme:42`).
//! A pattern may use `*` for exactly one segment and `>` as its last segment
//! for one or more trailing segments (`order:status:acme:*`, `order:>`).
//!
//! ```
//! use tidings_core::topic::{Pattern, Topic};
//!
//! let topic = Topic::new("order:status:acme:42")?;
//! assert!(Pattern::new("order:status:*:42")?.matches(&topic));
//! assert!(Pattern::new("order:>")?.matches(&topic));
//! assert!(!Pattern::new("order:status:globex:*")?.matches(&topic));
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
