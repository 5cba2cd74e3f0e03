//! Keys that make a publish safe to retry.

use alloc::sync::Arc;
use core::fmt;

/// Longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// A publisher's idempotency key: 1 to [`MAX_IDEMPOTENCY_KEY_LEN`] bytes of
/// printable ASCII. A retry with the same key (on the same topic, within the
/// window) is answered with the original id and not delivered again.
///
/// ```
/// use tidings_core::message::IdempotencyKey;
///
/// assert!(IdempotencyKey::new("order-42-shipped").is_ok());
/// assert!(IdempotencyKey::new("").is_err());
/// assert!(IdempotencyKey::new("tab\there").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyKey(Arc<str>);

/// Text that is not a usable idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdempotencyKeyError;

impl fmt::Display for IdempotencyKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "an idempotency key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} printable ASCII characters (a UUID works)"
        )
    }
}

#[cfg(feature = "std")]
impl std::error::Error for IdempotencyKeyError {}

impl IdempotencyKey {
    /// Checks a key.
    pub fn new(text: &str) -> Result<Self, IdempotencyKeyError> {
        if text.is_empty()
            || text.len() > MAX_IDEMPOTENCY_KEY_LEN
            || !text.bytes().all(|b| (0x20..=0x7e).contains(&b))
        {
            return Err(IdempotencyKeyError);
        }
        Ok(Self(Arc::from(text)))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
