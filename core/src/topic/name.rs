use alloc::sync::Arc;
use core::{borrow::Borrow, fmt, ops::Deref};

use super::{TopicError, check_common};

/// A validated topic that messages are published to.
///
/// Cheap to clone: the name is shared, not copied.
///
/// ```
/// use tidings_core::topic::{Topic, TopicError};
///
/// assert_eq!(Topic::new("quiz:room1:joined")?.as_str(), "quiz:room1:joined");
/// assert!(matches!(Topic::new("quiz:*"), Err(TopicError::WildcardInTopic { .. })));
/// assert!(matches!(Topic::new("quiz::x"), Err(TopicError::EmptySegment { segment: 1 })));
/// # Ok::<(), TopicError>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Topic(pub(super) Arc<str>);

impl Topic {
    /// Validates `name` as a publishable topic.
    pub fn new(name: &str) -> Result<Self, TopicError> {
        check_common(name)?;
        if let Some(index) = name.bytes().position(|b| b == b'*' || b == b'>') {
            return Err(TopicError::WildcardInTopic { index });
        }
        Ok(Self(Arc::from(name)))
    }

    /// The topic's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `:`-separated segments.
    pub fn segments(&self) -> core::str::Split<'_, char> {
        self.0.split(':')
    }
}

impl Deref for Topic {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Topic {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Topic {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl core::str::FromStr for Topic {
    type Err = TopicError;
    fn from_str(s: &str) -> Result<Self, TopicError> {
        Self::new(s)
    }
}
