//! Retries with the same idempotency key answer the original id.

use alloc::collections::{BTreeMap, VecDeque};

use crate::{
    message::{IdempotencyKey, MessageId},
    topic::Topic,
};

/// What an idempotency key says about a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Seen {
    /// First time within the window: publish it, then
    /// [`remember`](IdempotencyWindow::remember) its id.
    New,
    /// The same message was published under this key: answer its id and
    /// deliver nothing.
    Repeat(MessageId),
    /// A different message was published under this key: refuse.
    Conflict(MessageId),
}

/// The keys seen in the last `window` microseconds, per topic (so one
/// publisher's keys cannot block another's topics), bounded in count.
///
/// ```
/// use tidings_core::log::{IdempotencyWindow, Seen};
/// use tidings_core::message::{Epoch, IdempotencyKey, MessageId};
/// use tidings_core::topic::Topic;
///
/// let mut window = IdempotencyWindow::new(120_000_000, 10_000);
/// let (topic, key) = (Topic::new("a")?, IdempotencyKey::new("k1")?);
/// let id = MessageId::new(Epoch::from_random(1), 1);
/// assert_eq!(window.check(&topic, &key, 7, 0), Seen::New);
/// window.remember(topic.clone(), key.clone(), id, 7, 0);
/// assert_eq!(window.check(&topic, &key, 7, 1_000), Seen::Repeat(id));
/// assert_eq!(window.check(&topic, &key, 8, 1_000), Seen::Conflict(id));
/// assert_eq!(window.check(&topic, &key, 7, 120_000_001), Seen::New); // expired
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct IdempotencyWindow {
    window_us: u64,
    max_keys: usize,
    /// id, fingerprint and expiry of each key.
    keys: BTreeMap<(Topic, IdempotencyKey), (MessageId, u64, u64)>,
    /// Keys in the order they expire (the order they were remembered).
    expiry: VecDeque<(u64, Topic, IdempotencyKey)>,
    evicted_early: u64,
}

impl IdempotencyWindow {
    /// Keys live for `window_us` microseconds; at most `max_keys` are kept
    /// (the oldest go first, see [`evicted_early`](Self::evicted_early)).
    pub fn new(window_us: u64, max_keys: usize) -> Self {
        Self {
            window_us,
            max_keys: max_keys.max(1),
            keys: BTreeMap::new(),
            expiry: VecDeque::new(),
            evicted_early: 0,
        }
    }

    /// Looks `key` up for `topic` at time `now_us`; `fingerprint` is the
    /// message's [`Outgoing::fingerprint`](crate::message::Outgoing::fingerprint).
    pub fn check(
        &mut self,
        topic: &Topic,
        key: &IdempotencyKey,
        fingerprint: u64,
        now_us: u64,
    ) -> Seen {
        self.expire(now_us);
        match self.keys.get(&(topic.clone(), key.clone())) {
            None => Seen::New,
            Some(&(id, f, _)) if f == fingerprint => Seen::Repeat(id),
            Some(&(id, ..)) => Seen::Conflict(id),
        }
    }

    /// Remembers that `key` on `topic` published `id`.
    pub fn remember(
        &mut self,
        topic: Topic,
        key: IdempotencyKey,
        id: MessageId,
        fingerprint: u64,
        now_us: u64,
    ) {
        self.expire(now_us);
        while self.keys.len() >= self.max_keys {
            let Some((expires, t, k)) = self.expiry.pop_front() else {
                break;
            };
            if self.remove_if_expires(t, k, expires) {
                self.evicted_early += 1;
            }
        }
        let expires = now_us.saturating_add(self.window_us);
        self.expiry.push_back((expires, topic.clone(), key.clone()));
        self.keys.insert((topic, key), (id, fingerprint, expires));
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Keys dropped before their window ended because `max_keys` was
    /// reached: a retry under one of them would publish again.
    pub fn evicted_early(&self) -> u64 {
        self.evicted_early
    }

    fn expire(&mut self, now_us: u64) {
        while let Some((expires, ..)) = self.expiry.front() {
            if *expires >= now_us {
                break;
            }
            let Some((expires, topic, key)) = self.expiry.pop_front() else {
                break;
            };
            self.remove_if_expires(topic, key, expires);
        }
    }

    /// Removes the key if this expiry slot is still its own (a key can be
    /// remembered again after an early eviction).
    fn remove_if_expires(&mut self, topic: Topic, key: IdempotencyKey, expires: u64) -> bool {
        let slot = (topic, key);
        if self.keys.get(&slot).is_some_and(|v| v.2 == expires) {
            self.keys.remove(&slot);
            return true;
        }
        false
    }
}
