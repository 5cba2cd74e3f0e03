use alloc::sync::Arc;
use core::fmt;

use super::{Topic, TopicError, check_common};

/// One segment of a [`Pattern`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment<'a> {
    /// Matches this exact segment.
    Literal(&'a str),
    /// `*`: matches exactly one segment.
    Star,
    /// `>`: matches one or more trailing segments; only ever last.
    Tail,
}

impl<'a> Segment<'a> {
    fn parse(s: &'a str) -> Self {
        match s {
            "*" => Self::Star,
            ">" => Self::Tail,
            _ => Self::Literal(s),
        }
    }
}

/// A validated subscription pattern: a topic, or a topic with wildcards.
///
/// ```
/// use tidings_core::topic::{Pattern, Topic, TopicError};
///
/// let all_acme = Pattern::new("order:status:acme:>")?;
/// assert!(all_acme.matches(&Topic::new("order:status:acme:42")?));
/// assert!(!all_acme.matches(&Topic::new("order:status:acme")?)); // `>` needs one or more
/// assert!(matches!(Pattern::new("order:>:x"), Err(TopicError::TailNotLast { segment: 1 })));
/// # Ok::<(), TopicError>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pattern {
    text: Arc<str>,
    /// Bytes before the first wildcard segment (the whole text when literal).
    literal_prefix: usize,
}

impl Pattern {
    /// Validates `text` as a subscription pattern.
    pub fn new(text: &str) -> Result<Self, TopicError> {
        check_common(text)?;
        let mut literal_prefix = text.len();
        let mut offset = 0;
        let count = text.split(':').count();
        for (segment, part) in text.split(':').enumerate() {
            match part {
                "*" => literal_prefix = literal_prefix.min(offset),
                ">" if segment + 1 == count => literal_prefix = literal_prefix.min(offset),
                ">" => return Err(TopicError::TailNotLast { segment }),
                _ if part.contains(['*', '>']) => {
                    return Err(TopicError::PartialWildcard { segment });
                }
                _ => {}
            }
            offset += part.len() + 1;
        }
        Ok(Self {
            text: Arc::from(text),
            literal_prefix,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True when the pattern has no wildcard, so it names exactly one topic.
    pub fn is_literal(&self) -> bool {
        self.literal_prefix == self.text.len()
    }

    /// The text before the first wildcard segment, `:` included: every
    /// topic the pattern matches starts with it.
    ///
    /// ```
    /// # use tidings_core::topic::Pattern;
    /// assert_eq!(Pattern::new("order:*:42").unwrap().literal_prefix(), "order:");
    /// assert_eq!(Pattern::new("order:42").unwrap().literal_prefix(), "order:42");
    /// ```
    pub fn literal_prefix(&self) -> &str {
        &self.text[..self.literal_prefix]
    }

    /// The pattern's segments.
    pub fn segments(&self) -> impl Iterator<Item = Segment<'_>> + Clone {
        self.text.split(':').map(Segment::parse)
    }

    /// True when `topic` is matched by this pattern.
    pub fn matches(&self, topic: &Topic) -> bool {
        self.matches_str(topic.as_str())
    }

    /// Like [`matches`](Self::matches) for a name that is known to be a
    /// valid topic.
    pub fn matches_str(&self, topic: &str) -> bool {
        if super::is_internal(topic) && !super::is_internal(&self.text) {
            return false; // a first-segment wildcard never matches `$...`.
        }
        let mut names = topic.split(':');
        for segment in self.segments() {
            match (segment, names.next()) {
                (Segment::Tail, Some(_)) => return true,
                (Segment::Star, Some(_)) => {}
                (Segment::Literal(want), Some(got)) if want == got => {}
                _ => return false,
            }
        }
        names.next().is_none()
    }

    /// True when every topic that `other` matches is also matched by `self`.
    ///
    /// This is what an access check needs: a grant of `order:acme:>` covers
    /// a subscription to `order:acme:*` but not one to `order:>`.
    ///
    /// ```
    /// # use tidings_core::topic::Pattern;
    /// let grant = Pattern::new("order:acme:>").unwrap();
    /// assert!(grant.covers(&Pattern::new("order:acme:*").unwrap()));
    /// assert!(grant.covers(&Pattern::new("order:acme:42:>").unwrap()));
    /// assert!(!grant.covers(&Pattern::new("order:>").unwrap()));
    /// assert!(!grant.covers(&Pattern::new("order:*:42").unwrap()));
    /// ```
    pub fn covers(&self, other: &Pattern) -> bool {
        if super::is_internal(&other.text) && !super::is_internal(&self.text) {
            return false; // `$...` topics are matched only by `$...` patterns.
        }
        let mut theirs = other.segments();
        for mine in self.segments() {
            let Some(their) = theirs.next() else {
                return false; // `other` is shorter: it matches topics we cannot.
            };
            match (mine, their) {
                (Segment::Tail, _) => return true, // they have at least one segment left.
                (Segment::Star, Segment::Literal(_) | Segment::Star) => {}
                (Segment::Literal(a), Segment::Literal(b)) if a == b => {}
                _ => return false,
            }
        }
        theirs.next().is_none()
    }
}

impl From<Topic> for Pattern {
    fn from(topic: Topic) -> Self {
        Self {
            literal_prefix: topic.len(),
            text: topic.0,
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.text, f)
    }
}

impl core::str::FromStr for Pattern {
    type Err = TopicError;
    fn from_str(s: &str) -> Result<Self, TopicError> {
        Self::new(s)
    }
}
