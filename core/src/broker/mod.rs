//! The topic broker: subscriptions, fan-out, exclusion, history and replay.
//!
//! [`Broker`] is a plain `&mut self` state machine: no locks, threads,
//! clocks or IO. Publishing pushes an [`Arc`](alloc::sync::Arc) of the
//! message into the bounded queue of every matching subscription and wakes
//! it through a [`Waker`](core::task::Waker) if it registered one; the
//! adapter drains the queue when it is ready to write.
//!
//! To share one broker between threads, wrap it in [`SharedBroker`]: one
//! lock around the `&mut` API (any [`lock_api::RawMutex`]; with the `std`
//! feature, [`SyncBroker`] uses parking_lot's). Every critical section is
//! short and never waits on a subscriber, so a slow connection cannot stall
//! publishers: its queue fills, it is marked lagged and dropped, and its
//! client resumes from history.
//!
//! ```
//! use tidings_core::broker::{Broker, BrokerConfig, Drain, MessageId};
//! use tidings_core::topic::{Pattern, Topic};
//!
//! let mut broker = Broker::new(BrokerConfig::default(), MessageId::new(1, 0));
//! let player = broker.subscribe(&[Pattern::new("quiz:room1:>")?], None).id;
//! let other = broker.subscribe(&[Pattern::new("quiz:room1:*")?], None).id;
//!
//! // The joining player is not told about their own join.
//! let joined = Topic::new("quiz:room1:joined")?;
//! broker.publish(joined, "ann", Some(player));
//!
//! let mut out = Vec::new();
//! assert_eq!(broker.drain(other, &mut out, 16), Drain::Ready(1));
//! assert_eq!(*out[0].payload(), "ann");
//! out.clear();
//! assert_eq!(broker.drain(player, &mut out, 16), Drain::Empty);
//! # Ok::<(), tidings_core::topic::TopicError>(())
//! ```

mod history;
mod id;
mod message;
mod shared;

use alloc::{collections::VecDeque, sync::Arc, vec::Vec};
use core::{fmt, task::Waker};

use slab::Slab;

pub use history::HistoryLimits;
pub use id::{MessageId, ParseMessageIdError};
pub use message::{Message, SharedMessage, Weigh};
#[cfg(feature = "std")]
pub use shared::SyncBroker;
pub use shared::{RecvError, SharedBroker, Subscription};

use crate::topic::{IndexEntry, Pattern, PatternIndex, Topic};
use history::History;

/// Tuning for a [`Broker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BrokerConfig {
    /// Messages a subscription may have waiting before it is marked lagged.
    /// Replays are cut to this many messages (with a gap signal).
    pub queue_capacity: usize,
    /// What the history keeps for resuming.
    pub history: HistoryLimits,
    /// What to do with a resume id newer than anything this broker has seen.
    pub resume_ahead: ResumeAhead,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 1024,
            history: HistoryLimits::default(),
            resume_ahead: ResumeAhead::Gap,
        }
    }
}

impl BrokerConfig {
    /// Sets [`queue_capacity`](Self::queue_capacity).
    #[must_use]
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity.max(1);
        self
    }
    /// Sets the [`history`](Self::history) limits.
    #[must_use]
    pub fn history(mut self, history: HistoryLimits) -> Self {
        self.history = history;
        self
    }
    /// Sets [`resume_ahead`](Self::resume_ahead).
    #[must_use]
    pub fn resume_ahead(mut self, policy: ResumeAhead) -> Self {
        self.resume_ahead = policy;
        self
    }
}

/// Policy for a resume id newer than the newest published message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeAhead {
    /// The id comes from elsewhere (another process, a restarted one):
    /// signal a gap and deliver from now on. Right for a single process.
    Gap,
    /// The id comes from a shared log this broker has not caught up with
    /// yet: deliver only messages after it. Right for a cluster whose
    /// instances all feed the same ordered log through `publish_with_id`.
    Await,
}

/// Identifies a subscription inside one [`Broker`]. Ids of removed
/// subscriptions are never confused with later ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubscriptionId {
    index: u32,
    generation: u32,
}

/// What [`Broker::subscribe`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "the subscription stays until `unsubscribe`"]
pub struct Subscribed {
    /// The new subscription.
    pub id: SubscriptionId,
    /// Messages after the resume id were lost: the app should reload its state.
    pub gap: bool,
    /// Messages from history queued ahead of live ones.
    pub replayed: usize,
}

/// What [`Broker::publish`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The id the message got.
    pub id: MessageId,
    /// Subscriptions it was queued for.
    pub delivered: usize,
    /// Subscriptions that overflowed their queue on this message and are
    /// now lagged.
    pub lagged: usize,
}

/// What [`Broker::drain`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Drain {
    /// This many messages were moved to the output.
    Ready(usize),
    /// Nothing is waiting; register a waker and try later.
    Empty,
    /// The subscription fell behind its queue bound and receives nothing
    /// more: drop the connection so the client resumes from history.
    Lagged,
    /// The subscription was closed ([`Broker::close`]) or does not exist.
    Closed,
}

/// Why a message was not published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishError {
    /// [`Broker::publish_with_id`] got an id not above the last one.
    IdNotIncreasing {
        /// The refused id.
        id: MessageId,
        /// The newest id already published.
        last: MessageId,
    },
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::IdNotIncreasing { id, last } => write!(
                f,
                "message id {id} is not after the last published id {last}: ids must increase"
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for PublishError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Live,
    Lagged,
    Closed,
}

#[derive(Debug)]
struct Sub<M> {
    generation: u32,
    state: State,
    queue: VecDeque<SharedMessage<M>>,
    /// Newest id queued (or the resume id): fan-out skips anything not
    /// after it, which removes duplicates from overlapping patterns.
    high_water: Option<MessageId>,
    waker: Option<Waker>,
    entries: Vec<IndexEntry>,
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BrokerStats {
    /// Live subscriptions (including lagged ones not yet removed).
    pub subscriptions: usize,
    /// Patterns indexed across subscriptions.
    pub patterns: usize,
    /// Topics with retained history.
    pub topics: usize,
    /// Retained messages.
    pub retained: usize,
    /// Retained payload bytes.
    pub retained_bytes: usize,
    /// Messages published since start.
    pub published: u64,
    /// Messages queued for subscribers since start.
    pub delivered: u64,
    /// Subscriptions marked lagged since start.
    pub lagged: u64,
}

/// The broker: topics, subscriptions, fan-out and history. See the
/// [module docs](self).
#[derive(Debug)]
pub struct Broker<M> {
    config: BrokerConfig,
    subs: Slab<Sub<M>>,
    index: PatternIndex<SubscriptionId>,
    history: History<M>,
    /// Id the next [`publish`](Self::publish) gets.
    next_id: MessageId,
    /// Newest published id.
    last_id: Option<MessageId>,
    /// Ids below this were never seen by this broker.
    floor: MessageId,
    generation: u32,
    published: u64,
    delivered: u64,
    lagged: u64,
}

impl<M> Broker<M> {
    /// A broker whose first message gets id `first`, the smallest id it
    /// will ever see (a cluster instance passes the oldest id of the shared
    /// log it will feed in). A single process picks
    /// `MessageId::new(start_time_ms, 0)` so that ids stay increasing across
    /// restarts and a resume id from before the restart is seen as a gap.
    pub fn new(config: BrokerConfig, first: MessageId) -> Self {
        let config = BrokerConfig {
            queue_capacity: config.queue_capacity.max(1),
            ..config
        };
        Self {
            config,
            subs: Slab::new(),
            index: PatternIndex::new(),
            history: History::new(config.history),
            next_id: first,
            last_id: None,
            floor: first,
            generation: 0,
            published: 0,
            delivered: 0,
            lagged: 0,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// The newest published id, if any.
    pub fn last_id(&self) -> Option<MessageId> {
        self.last_id
    }

    /// Counters for metrics.
    pub fn stats(&self) -> BrokerStats {
        BrokerStats {
            subscriptions: self.subs.len(),
            patterns: self.index.len(),
            topics: self.history.topic_count(),
            retained: self.history.len(),
            retained_bytes: self.history.bytes(),
            published: self.published,
            delivered: self.delivered,
            lagged: self.lagged,
        }
    }

    /// Subscribes to `patterns` (duplicates and overlaps are fine: each
    /// message is queued once). With `resume`, every retained message after
    /// that id is queued first, oldest first, and live messages follow with
    /// no gap and no duplicate.
    pub fn subscribe(&mut self, patterns: &[Pattern], resume: Option<MessageId>) -> Subscribed {
        let mut gap = false;
        let mut replay = Vec::new();
        let mut high_water = self.last_id;
        if let Some(after) = resume {
            if after < self.floor {
                gap = true;
            } else if self.last_id.is_none_or(|last| after > last) {
                match self.config.resume_ahead {
                    ResumeAhead::Gap => gap = true,
                    ResumeAhead::Await => high_water = Some(after),
                }
            }
            let found = self.history.replay(patterns, after);
            gap |= found.gap;
            replay = found.messages;
            let cap = self.config.queue_capacity;
            if replay.len() > cap {
                // More than the queue holds: keep the newest and say so.
                replay.drain(..replay.len() - cap);
                gap = true;
            }
        }
        let replayed = replay.len();
        self.generation = self.generation.wrapping_add(1);
        let generation = self.generation;
        let slot = self.subs.vacant_entry();
        let id = SubscriptionId {
            index: u32::try_from(slot.key()).expect("fewer than 2^32 subscriptions"),
            generation,
        };
        let entries = patterns.iter().map(|p| self.index.insert(p, id)).collect();
        slot.insert(Sub {
            generation,
            state: State::Live,
            queue: VecDeque::from(replay),
            high_water,
            waker: None,
            entries,
        });
        Subscribed { id, gap, replayed }
    }

    fn sub_mut(&mut self, id: SubscriptionId) -> Option<&mut Sub<M>> {
        self.subs
            .get_mut(id.index as usize)
            .filter(|s| s.generation == id.generation)
    }

    /// True while `id` is subscribed (live or lagged).
    pub fn contains(&self, id: SubscriptionId) -> bool {
        self.subs
            .get(id.index as usize)
            .is_some_and(|s| s.generation == id.generation)
    }

    /// Removes a subscription and everything it holds. Returns false if it
    /// was already gone, so calling it twice is harmless.
    pub fn unsubscribe(&mut self, id: SubscriptionId) -> bool {
        if !self.contains(id) {
            return false;
        }
        let sub = self.subs.remove(id.index as usize);
        for entry in sub.entries {
            self.index.remove(entry);
        }
        true
    }

    /// Ends a subscription's delivery without removing it: its next drain
    /// answers [`Drain::Closed`] once the queue is empty, and its waker is
    /// woken. Used for shutdown; the owner still calls `unsubscribe`.
    pub fn close(&mut self, id: SubscriptionId) {
        let Some(sub) = self.sub_mut(id) else { return };
        if sub.state == State::Live {
            sub.state = State::Closed;
        }
        if let Some(waker) = sub.waker.take() {
            waker.wake();
        }
    }

    /// [`close`](Self::close)s every subscription.
    pub fn close_all(&mut self) {
        for (_, sub) in self.subs.iter_mut() {
            if sub.state == State::Live {
                sub.state = State::Closed;
            }
            if let Some(waker) = sub.waker.take() {
                waker.wake();
            }
        }
    }

    /// Moves up to `max` waiting messages of `id` into `out`.
    pub fn drain(
        &mut self,
        id: SubscriptionId,
        out: &mut Vec<SharedMessage<M>>,
        max: usize,
    ) -> Drain {
        let Some(sub) = self.sub_mut(id) else {
            return Drain::Closed;
        };
        if sub.state == State::Lagged {
            return Drain::Lagged;
        }
        if sub.queue.is_empty() {
            return match sub.state {
                State::Closed => Drain::Closed,
                _ => Drain::Empty,
            };
        }
        let n = sub.queue.len().min(max);
        out.extend(sub.queue.drain(..n));
        Drain::Ready(n)
    }

    /// Messages waiting for `id`.
    pub fn pending(&self, id: SubscriptionId) -> usize {
        self.subs
            .get(id.index as usize)
            .filter(|s| s.generation == id.generation)
            .map_or(0, |s| s.queue.len())
    }

    /// Declares that messages up to `through` may be missing (an adapter
    /// found that its source dropped entries before it read them): a later
    /// resume from an id before `through` reports a gap instead of
    /// pretending that the replay is complete.
    ///
    /// ```
    /// use tidings_core::broker::{Broker, BrokerConfig, MessageId};
    /// use tidings_core::topic::{Pattern, Topic};
    ///
    /// let mut broker = Broker::new(BrokerConfig::default(), MessageId::new(1, 0));
    /// let seen = broker.publish(Topic::new("a")?, "x", None).id;
    /// broker.forget_through(MessageId::new(5, 0)); // entries up to 5-0 were lost upstream
    /// assert!(broker.subscribe(&[Pattern::new("a")?], Some(seen)).gap);
    /// # Ok::<(), tidings_core::topic::TopicError>(())
    /// ```
    pub fn forget_through(&mut self, through: MessageId) {
        self.history.forget_through(through);
    }

    /// Stores the waker to wake when a message arrives for `id` (or it lags
    /// or closes). Replaces any earlier one.
    pub fn register_waker(&mut self, id: SubscriptionId, waker: &Waker) {
        if let Some(sub) = self.sub_mut(id) {
            match &mut sub.waker {
                Some(old) if old.will_wake(waker) => {}
                slot => *slot = Some(waker.clone()),
            }
        }
    }
}

impl<M: Weigh> Broker<M> {
    /// Publishes `payload` to `topic` with the next id: retained in the
    /// topic's history and queued for every matching subscription except
    /// `exclude`. Never waits; a subscription whose queue is full is marked
    /// lagged instead.
    pub fn publish(
        &mut self,
        topic: Topic,
        payload: M,
        exclude: Option<SubscriptionId>,
    ) -> Published {
        let id = self.next_id;
        self.publish_at(id, topic, payload, exclude)
    }

    /// Publishes with an id chosen elsewhere (a cluster's shared log). Ids
    /// must increase.
    pub fn publish_with_id(
        &mut self,
        id: MessageId,
        topic: Topic,
        payload: M,
        exclude: Option<SubscriptionId>,
    ) -> Result<Published, PublishError> {
        if id < self.floor || self.last_id.is_some_and(|last| id <= last) {
            return Err(PublishError::IdNotIncreasing {
                id,
                last: self.last_id.unwrap_or(self.floor),
            });
        }
        Ok(self.publish_at(id, topic, payload, exclude))
    }

    fn publish_at(
        &mut self,
        id: MessageId,
        topic: Topic,
        payload: M,
        exclude: Option<SubscriptionId>,
    ) -> Published {
        let weight = payload.weight();
        let message = Arc::new(Message {
            id,
            topic,
            payload,
            weight,
        });
        self.last_id = Some(id);
        self.next_id = id.successor();
        self.published += 1;
        self.history.push(&message);

        let capacity = self.config.queue_capacity;
        let mut delivered = 0;
        let mut lagged = 0;
        let subs = &mut self.subs;
        self.index.for_each_match(message.topic.as_str(), |&sid| {
            if Some(sid) == exclude {
                return;
            }
            let Some(sub) = subs.get_mut(sid.index as usize) else {
                return;
            };
            if sub.state != State::Live || sub.high_water.is_some_and(|h| h >= id) {
                return;
            }
            sub.high_water = Some(id);
            if sub.queue.len() >= capacity {
                sub.state = State::Lagged;
                sub.queue = VecDeque::new();
                lagged += 1;
            } else {
                sub.queue.push_back(message.clone());
                delivered += 1;
                if sub.queue.len() > 1 {
                    return; // Already woken for the first one.
                }
            }
            if let Some(waker) = sub.waker.take() {
                waker.wake();
            }
        });
        self.delivered += delivered as u64;
        self.lagged += lagged as u64;
        Published {
            id,
            delivered,
            lagged,
        }
    }
}
