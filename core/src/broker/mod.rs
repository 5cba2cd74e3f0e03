//! The topic broker: subscriptions, fan-out, exclusion, history and replay.
//!
//! [`Broker`] is a plain `&mut self` state machine: no locks, threads,
//! clocks or IO. It holds one epoch of a message log (see
//! [`message`](crate::message)): messages get the next sequence number
//! ([`publish`](Broker::publish)) or the one the log gave them
//! ([`publish_at`](Broker::publish_at)). Publishing pushes an
//! [`Arc`](alloc::sync::Arc) of the message into the bounded queue of every
//! matching subscription and wakes it through a
//! [`Waker`](core::task::Waker) if it registered one; the adapter drains
//! the queue when it is ready to write.
//!
//! To share one broker between threads, wrap it in [`SharedBroker`]: one
//! lock around the `&mut` API (any [`lock_api::RawMutex`]; with the `std`
//! feature, [`SyncBroker`] uses parking_lot's). Every critical section is
//! short and never waits on a subscriber, so a slow connection cannot stall
//! publishers: its queue fills (in messages or bytes), it is marked lagged
//! and dropped, and its client resumes from history.
//!
//! ```
//! use tidings_core::broker::{Broker, BrokerConfig, Drain, Placement};
//! use tidings_core::message::{ConnectionId, Epoch};
//! use tidings_core::topic::{Pattern, Topic};
//!
//! let mut broker = Broker::new(BrokerConfig::default(), Epoch::from_random(7), 0);
//! let ann = ConnectionId::from_random(1);
//! let player = broker.subscribe(&[Pattern::new("quiz:room1:>")?], Placement::Live, Some(ann)).id;
//! let other = broker.subscribe(&[Pattern::new("quiz:room1:*")?], Placement::Live, None).id;
//!
//! // The joining player is not told about their own join.
//! let joined = Topic::new("quiz:room1:joined")?;
//! broker.publish(joined, "ann", Some(ann));
//!
//! let mut out = Vec::new();
//! assert_eq!(broker.drain(other, &mut out, 16), Drain::Ready(1));
//! assert_eq!(*out[0].payload(), "ann");
//! out.clear();
//! assert_eq!(broker.drain(player, &mut out, 16), Drain::Empty);
//! # Ok::<(), tidings_core::topic::TopicError>(())
//! ```

mod history;
mod message;
mod shared;

use alloc::{boxed::Box, collections::BTreeMap, collections::VecDeque, sync::Arc, vec::Vec};
use core::{fmt, task::Waker};

use slab::Slab;

pub use history::HistoryLimits;
pub use message::{Message, SharedMessage, Weigh};
#[cfg(feature = "std")]
pub use shared::SyncBroker;
pub use shared::{RecvError, SharedBroker, Subscription};

use crate::{
    log::GapReason,
    message::{ConnectionId, Epoch, MessageId},
    topic::{IndexEntry, Pattern, PatternIndex, Topic},
};
use history::{Cursor, History, Page};

/// Tuning for a [`Broker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BrokerConfig {
    /// Messages a subscription may have waiting before it is marked lagged.
    /// A replay is not bounded by it: it is paged from history at most
    /// this many messages at a time as the subscription drains.
    pub queue_capacity: usize,
    /// Bytes (payload weight) a subscription may have waiting before it is
    /// marked lagged. A single larger message still goes to an empty queue.
    pub queue_bytes: usize,
    /// Bytes waiting across all subscriptions: over it, a subscription that
    /// already has something waiting is marked lagged instead of growing.
    pub total_queue_bytes: usize,
    /// What the history keeps for resuming.
    pub history: HistoryLimits,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 1024,
            queue_bytes: 1 << 20,
            total_queue_bytes: 256 << 20,
            history: HistoryLimits::default(),
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
    /// Sets [`queue_bytes`](Self::queue_bytes).
    #[must_use]
    pub fn queue_bytes(mut self, bytes: usize) -> Self {
        self.queue_bytes = bytes.max(1);
        self
    }
    /// Sets [`total_queue_bytes`](Self::total_queue_bytes).
    #[must_use]
    pub fn total_queue_bytes(mut self, bytes: usize) -> Self {
        self.total_queue_bytes = bytes.max(1);
        self
    }
    /// Sets the [`history`](Self::history) limits.
    #[must_use]
    pub fn history(mut self, history: HistoryLimits) -> Self {
        self.history = history;
        self
    }
}

/// Where a new subscription starts, decided from the client's resume id by
/// [`Broker::place`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Placement {
    /// No resume id: live from now.
    Live,
    /// After this id, which the broker has seen: replay what came after it.
    After(MessageId),
    /// After this id of the current epoch, which is ahead of everything the
    /// broker has seen. In one process it cannot exist; in a cluster
    /// another instance may have read further. Resolve it with
    /// [`confirm_ahead`](Self::confirm_ahead) before subscribing.
    Ahead(MessageId),
    /// The id cannot be placed: the stream gets `tidings.gap`, then live
    /// messages.
    Unplaceable(GapReason),
}

impl Placement {
    /// Resolves [`Ahead`](Self::Ahead) against the log's head (the newest
    /// sequence number the engine has produced): an id at or before the
    /// head is waited for; one after it cannot exist yet, so the stream
    /// gets a gap and goes live. Other placements are unchanged.
    pub fn confirm_ahead(self, head: u64) -> Self {
        match self {
            Self::Ahead(id) if id.seq > head => Self::Unplaceable(GapReason::FutureId),
            other => other,
        }
    }
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
    /// Set when messages the client was entitled to may be missing: send
    /// `tidings.gap` so the app reloads its state.
    pub gap: Option<GapReason>,
    /// Where the stream stands: the id to send with its first frame, so a
    /// client cut before any message resumes from here without loss.
    pub position: MessageId,
    /// Messages the history held after the resume point when the
    /// subscription opened: they are paged to it ahead of live ones (and
    /// so is what is published while it catches up).
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
    /// This many messages were moved to the output. `Ready(0)`: a replay
    /// page found only messages published with `exclude` naming this
    /// subscription's stream; drain again (the scan per drain is bounded).
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
    /// [`Broker::publish_at`] got an id not after the last one.
    NotAfterLast {
        /// The refused id.
        id: MessageId,
        /// Where the broker stands.
        last: MessageId,
    },
    /// [`Broker::publish_at`] got an id of another epoch.
    OtherEpoch {
        /// The refused id.
        id: MessageId,
        /// The broker's epoch.
        epoch: Epoch,
    },
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAfterLast { id, last } => write!(
                f,
                "message id {id} is not after the last published id {last}: ids must increase"
            ),
            Self::OtherEpoch { id, epoch } => write!(
                f,
                "message id {id} belongs to another epoch than the broker's ({epoch}): begin the new epoch first"
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
    /// Payload weight of `queue`.
    queued_bytes: usize,
    /// Newest sequence number queued (or resumed from): fan-out skips
    /// anything not after it, which removes duplicates from overlapping
    /// patterns and makes a cluster client wait for what it has not seen.
    high_water: u64,
    waker: Option<Waker>,
    entries: Vec<IndexEntry>,
    connection: Option<ConnectionId>,
    /// Set while the subscription catches up from history: live fan-out
    /// skips it, and each drain pages the next messages after
    /// `high_water` (its cursor) from the history, until a page reaches
    /// the newest message and it turns live.
    replaying: Option<Box<Replaying>>,
}

/// A subscription's replay cursor (its position is the sub's
/// `high_water`).
#[derive(Debug)]
struct Replaying {
    /// What the subscription matches, to page the history with.
    patterns: Vec<Pattern>,
    /// Messages up to this sequence number were already told missing
    /// (`tidings.gap` at subscribe, or a notice since): evictions up to it
    /// do not cut the replay.
    told_through: u64,
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
    /// Payload bytes waiting in subscription queues.
    pub queued_bytes: usize,
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
    /// Streams that may be named in `exclude`.
    connections: BTreeMap<ConnectionId, SubscriptionId>,
    history: History<M>,
    epoch: Epoch,
    /// Newest sequence number published (or the floor if none).
    last: u64,
    /// What came at or before this sequence number was never seen by this
    /// broker: a resume from before it is a gap.
    floor: u64,
    /// Total weight of every subscription's queue.
    queued_bytes: usize,
    generation: u32,
    published: u64,
    delivered: u64,
    lagged: u64,
    /// Topic of notices (`tidings.gap` frames), which are never retained.
    notice_topic: Topic,
    /// While set ([`defer_wakes`](Self::defer_wakes)), wakers of
    /// subscriptions that got something are collected here instead of
    /// being woken under the caller's lock.
    deferred: Option<Vec<Waker>>,
}

impl<M> Broker<M> {
    /// A broker for `epoch` that has seen nothing at or before `floor`: one
    /// process passes a fresh epoch and 0; a cluster instance passes the
    /// log's epoch and the sequence number before the oldest entry it
    /// loaded.
    pub fn new(config: BrokerConfig, epoch: Epoch, floor: u64) -> Self {
        let config = BrokerConfig {
            queue_capacity: config.queue_capacity.max(1),
            queue_bytes: config.queue_bytes.max(1),
            total_queue_bytes: config.total_queue_bytes.max(1),
            ..config
        };
        Self {
            config,
            subs: Slab::new(),
            index: PatternIndex::new(),
            connections: BTreeMap::new(),
            history: History::new(config.history),
            epoch,
            last: floor,
            floor,
            queued_bytes: 0,
            generation: 0,
            published: 0,
            delivered: 0,
            lagged: 0,
            notice_topic: Topic::new("tidings:notice").expect("a valid topic"),
            deferred: None,
        }
    }

    /// From now until [`take_wakes`](Self::take_wakes), wakers are
    /// collected instead of woken. A broker behind a lock wakes its
    /// subscribers after releasing it: a woken subscriber's first move is
    /// to take that lock, and waking one can cost a system call.
    pub fn defer_wakes(&mut self) {
        if self.deferred.is_none() {
            self.deferred = Some(Vec::new());
        }
    }

    /// Ends [`defer_wakes`](Self::defer_wakes): appends the collected
    /// wakers to `out`, for the caller to wake once the lock is released.
    pub fn take_wakes(&mut self, out: &mut Vec<Waker>) {
        if let Some(mut wakes) = self.deferred.take() {
            out.append(&mut wakes);
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// The epoch of the log this broker holds.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The newest id published (sequence number 0 or the floor if none):
    /// a subscription opened now sees everything after it.
    pub fn position(&self) -> MessageId {
        MessageId::new(self.epoch, self.last)
    }

    /// Counters for metrics.
    pub fn stats(&self) -> BrokerStats {
        BrokerStats {
            subscriptions: self.subs.len(),
            patterns: self.index.len(),
            topics: self.history.topic_count(),
            retained: self.history.len(),
            retained_bytes: self.history.bytes(),
            queued_bytes: self.queued_bytes,
            published: self.published,
            delivered: self.delivered,
            lagged: self.lagged,
        }
    }

    /// Places a client's resume id (`Last-Event-ID`) in this broker's log.
    ///
    /// ```
    /// use tidings_core::broker::{Broker, BrokerConfig, Placement};
    /// use tidings_core::log::GapReason;
    /// use tidings_core::message::Epoch;
    ///
    /// let broker: Broker<()> = Broker::new(BrokerConfig::default(), Epoch::from_random(35), 5);
    /// assert_eq!(broker.place(None), Placement::Live);
    /// assert!(matches!(broker.place(Some("z-3")), Placement::After(_)));
    /// assert!(matches!(broker.place(Some("z-6")), Placement::Ahead(_)));
    /// assert_eq!(broker.place(Some("y-3")), Placement::Unplaceable(GapReason::UnknownEpoch));
    /// assert_eq!(broker.place(Some("0-0")), Placement::Unplaceable(GapReason::UnknownId));
    /// ```
    pub fn place(&self, resume: Option<&str>) -> Placement {
        let Some(text) = resume.map(str::trim).filter(|t| !t.is_empty()) else {
            return Placement::Live;
        };
        let Ok(id) = text.parse::<MessageId>() else {
            return Placement::Unplaceable(GapReason::UnknownId);
        };
        if id.epoch != self.epoch {
            Placement::Unplaceable(GapReason::UnknownEpoch)
        } else if id.seq > self.last {
            Placement::Ahead(id)
        } else {
            Placement::After(id)
        }
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
        self.queued_bytes -= sub.queued_bytes;
        if let Some(connection) = sub.connection {
            if self.connections.get(&connection) == Some(&id) {
                self.connections.remove(&connection);
            }
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
        let Some(sub) = self
            .subs
            .get_mut(id.index as usize)
            .filter(|s| s.generation == id.generation)
        else {
            return Drain::Closed;
        };
        if sub.state == State::Lagged {
            return Drain::Lagged;
        }
        if sub.queue.is_empty() {
            if let (State::Live, Some(replaying)) = (sub.state, &sub.replaying) {
                // Catching up: the next page of history, straight to `out`
                // (bounded by `max` and the queue's bounds; never queued).
                let start = out.len();
                let cursor = Cursor {
                    patterns: &replaying.patterns,
                    after: sub.high_water,
                    told_through: replaying.told_through,
                    skip: sub.connection,
                };
                let page = self.history.page(
                    cursor,
                    max.min(self.config.queue_capacity).max(1),
                    self.config.queue_bytes,
                    out,
                );
                let n = out.len() - start;
                self.delivered += n as u64;
                match page {
                    Page::More { last } => sub.high_water = last,
                    Page::Done { .. } => {
                        // Everything after the cursor was paged under this
                        // lock, so live fan-out takes over with nothing
                        // missed and nothing twice.
                        sub.high_water = self.last;
                        sub.replaying = None;
                    }
                    Page::Lost => {
                        // History evicted past the cursor while it caught
                        // up: drop it like a lagged subscriber; its client
                        // resumes from its last id and is told the gap.
                        sub.state = State::Lagged;
                        sub.replaying = None;
                        self.lagged += 1;
                        return Drain::Lagged;
                    }
                }
                return match page {
                    Page::Done { .. } if n == 0 => Drain::Empty,
                    _ => Drain::Ready(n),
                };
            }
            return match sub.state {
                State::Closed => Drain::Closed,
                _ => Drain::Empty,
            };
        }
        let n = sub.queue.len().min(max);
        let mut bytes = 0;
        out.extend(sub.queue.drain(..n).inspect(|m| bytes += m.weight));
        sub.queued_bytes -= bytes;
        self.queued_bytes -= bytes;
        Drain::Ready(n)
    }

    /// True while `id` is catching up from history (it turns live once a
    /// drain reaches the newest message).
    pub fn is_replaying(&self, id: SubscriptionId) -> bool {
        self.subs
            .get(id.index as usize)
            .filter(|s| s.generation == id.generation)
            .is_some_and(|s| s.replaying.is_some())
    }

    /// Messages waiting for `id`.
    pub fn pending(&self, id: SubscriptionId) -> usize {
        self.subs
            .get(id.index as usize)
            .filter(|s| s.generation == id.generation)
            .map_or(0, |s| s.queue.len())
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
    /// Subscribes to `patterns` (duplicates and overlaps are fine: each
    /// message is queued once), starting where `placement` says; with
    /// `connection`, publishers may name it in `exclude`.
    ///
    /// Resuming delivers every retained message after the resume id first,
    /// oldest first, and live messages follow with no gap and no
    /// duplicate. The replay is not copied here: the subscription keeps a
    /// cursor into the history and each [`drain`](Self::drain) pages the
    /// next messages (what is published meanwhile included) until it
    /// reaches the newest one and turns live. If the history evicts a
    /// message past the cursor before it is paged, the subscription is
    /// marked lagged (its client resumes and is told the gap). When
    /// continuity cannot be promised at subscribe, the answer carries the
    /// [`GapReason`] to tell the client.
    pub fn subscribe(
        &mut self,
        patterns: &[Pattern],
        placement: Placement,
        connection: Option<ConnectionId>,
    ) -> Subscribed {
        let mut gap = None;
        let mut replaying = None;
        let mut replayed = 0;
        let mut high_water = self.last;
        let mut position = self.position();
        // Replay after this sequence number (with `gap` already decided, or
        // decided by what the history no longer holds).
        let mut replay_after = None;
        match placement {
            Placement::Live => {}
            // From the future: everything retained is what the client
            // claims to have; only what comes next is new.
            Placement::Unplaceable(GapReason::FutureId) => gap = Some(GapReason::FutureId),
            // Another epoch, or not an id: everything this epoch retains
            // came after what the client had (the log started over, or it
            // asked for everything with an id like `0-0`).
            Placement::Unplaceable(reason) => {
                gap = Some(reason);
                replay_after = Some(self.floor);
            }
            Placement::After(id) | Placement::Ahead(id) if id.epoch != self.epoch => {
                // The epoch changed while the client was being placed.
                gap = Some(GapReason::UnknownEpoch);
                replay_after = Some(self.floor);
            }
            Placement::After(id) | Placement::Ahead(id) if id.seq > self.last => {
                if matches!(placement, Placement::Ahead(_)) {
                    // Confirmed by the engine: wait for what comes after it.
                    high_water = id.seq;
                    position = id;
                } else {
                    gap = Some(GapReason::FutureId);
                }
            }
            Placement::After(id) | Placement::Ahead(id) => replay_after = Some(id.seq),
        }
        if let Some(after) = replay_after {
            let found = self.history.survey(patterns, after);
            let mut gap_through = found.gap_through;
            if after < self.floor {
                gap_through = Some(gap_through.map_or(self.floor, |g| g.max(self.floor)));
            }
            if gap_through.is_some() && gap.is_none() {
                gap = Some(GapReason::HistoryTrimmed);
            }
            let told_through = gap_through.unwrap_or(after);
            position = MessageId::new(self.epoch, told_through);
            if found.count > 0 {
                replayed = found.count;
                high_water = after;
                replaying = Some(Box::new(Replaying {
                    patterns: patterns.to_vec(),
                    told_through,
                }));
            }
        }
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
            queue: VecDeque::new(),
            queued_bytes: 0,
            high_water,
            waker: None,
            entries,
            connection,
            replaying,
        });
        if let Some(connection) = connection {
            self.connections.insert(connection, id);
        }
        Subscribed {
            id,
            gap,
            position,
            replayed,
        }
    }

    /// Publishes `payload` to `topic` with the next sequence number:
    /// retained in the topic's history and queued for every matching
    /// subscription except the stream `exclude` names. Never waits; a
    /// subscription whose queue is full is marked lagged instead.
    pub fn publish(
        &mut self,
        topic: Topic,
        payload: M,
        exclude: Option<ConnectionId>,
    ) -> Published {
        let id = MessageId::new(self.epoch, self.last + 1);
        self.publish_unchecked(id, topic, payload, exclude)
    }

    /// Publishes with an id the shared log gave it: it must be of the
    /// broker's epoch and after the last one. Sequence numbers skipped on
    /// the way were decided lost by the caller (see
    /// [`announce_loss`](Self::announce_loss)).
    pub fn publish_at(
        &mut self,
        id: MessageId,
        topic: Topic,
        payload: M,
        exclude: Option<ConnectionId>,
    ) -> Result<Published, PublishError> {
        if id.epoch != self.epoch {
            return Err(PublishError::OtherEpoch {
                id,
                epoch: self.epoch,
            });
        }
        if id.seq <= self.last {
            return Err(PublishError::NotAfterLast {
                id,
                last: self.position(),
            });
        }
        Ok(self.publish_unchecked(id, topic, payload, exclude))
    }

    fn publish_unchecked(
        &mut self,
        id: MessageId,
        topic: Topic,
        payload: M,
        exclude: Option<ConnectionId>,
    ) -> Published {
        let weight = payload.weight();
        let message = Arc::new(Message {
            id,
            topic,
            payload,
            weight,
            exclude: exclude.map(Box::new),
        });
        self.last = id.seq;
        self.published += 1;
        self.history.push(&message);
        let exclude = exclude.and_then(|c| self.connections.get(&c).copied());

        let limits = (
            self.config.queue_capacity,
            self.config.queue_bytes,
            self.config.total_queue_bytes,
        );
        let mut delivered = 0;
        let mut lagged = 0;
        let subs = &mut self.subs;
        let total = &mut self.queued_bytes;
        let deferred = &mut self.deferred;
        self.index.for_each_match(message.topic.as_str(), |&sid| {
            if Some(sid) == exclude {
                return;
            }
            let Some(sub) = subs.get_mut(sid.index as usize) else {
                return;
            };
            if sub.state != State::Live || sub.replaying.is_some() || sub.high_water >= id.seq {
                return;
            }
            sub.high_water = id.seq;
            if enqueue(sub, &message, limits, total, deferred) {
                delivered += 1;
            } else {
                lagged += 1;
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

    /// Declares that messages up to sequence number `through` may be
    /// missing (the engine trimmed or lost entries before this broker read
    /// them): a resume from before it reports a gap, and `notice` (a
    /// `tidings.gap` frame with id `through`) is queued for every live
    /// subscription that has not already seen past it.
    pub fn announce_loss(&mut self, through: u64, notice: M) -> usize {
        self.history.forget_through(through);
        self.last = self.last.max(through);
        let at = MessageId::new(self.epoch, through);
        self.notify(at, notice, |_, sub| sub.high_water < through)
    }

    /// Declares that messages of `topic` up to sequence number `through`,
    /// which is not after where the broker stands, may be missing (a
    /// shared log with one chain per topic found the hole after later
    /// messages of other topics were delivered): a resume from before it
    /// reports a gap, and `notice` (a `tidings.gap` frame with the broker's
    /// position as its id) is queued for every live subscription matching
    /// `topic`. Returns how many were told.
    pub fn announce_topic_loss(&mut self, topic: &Topic, through: u64, notice: M) -> usize {
        self.history.forget_through(through.min(self.last));
        let mut matching = Vec::new();
        self.index
            .for_each_match(topic.as_str(), |&sid| matching.push(sid.index as usize));
        matching.sort_unstable();
        let at = MessageId::new(self.epoch, self.last);
        self.notify(at, notice, |index, _| {
            matching.binary_search(&index).is_ok()
        })
    }

    /// Starts a new epoch of the log (the engine lost entries and started
    /// over): history is dropped, every live subscription is sent `notice`
    /// (a `tidings.gap` frame) and then receives the new epoch's messages
    /// after `floor`.
    pub fn begin_epoch(&mut self, epoch: Epoch, floor: u64, notice: M) -> usize {
        self.history.clear();
        self.epoch = epoch;
        self.last = floor;
        self.floor = floor;
        for (_, sub) in self.subs.iter_mut() {
            // A replay of the old epoch ends: the notice tells it.
            sub.replaying = None;
            sub.high_water = floor;
        }
        let at = MessageId::new(epoch, floor);
        self.notify(at, notice, |_, _| true)
    }

    /// Queues `notice` (never retained) for the live subscriptions `to`
    /// selects and moves them past `at`.
    fn notify(&mut self, at: MessageId, notice: M, to: impl Fn(usize, &Sub<M>) -> bool) -> usize {
        let weight = notice.weight();
        let message = Arc::new(Message {
            id: at,
            topic: self.notice_topic.clone(),
            payload: notice,
            weight,
            exclude: None,
        });
        let limits = (
            self.config.queue_capacity,
            self.config.queue_bytes,
            self.config.total_queue_bytes,
        );
        let mut told = 0;
        for (index, sub) in self.subs.iter_mut() {
            if sub.state != State::Live || !to(index, sub) {
                continue;
            }
            match &mut sub.replaying {
                // Catching up: the notice goes ahead of the rest of the
                // replay, whose cursor stays; the loss it tells no longer
                // cuts the replay.
                Some(replaying) => {
                    replaying.told_through = replaying.told_through.max(at.seq);
                }
                None => sub.high_water = sub.high_water.max(at.seq),
            }
            if enqueue(
                sub,
                &message,
                limits,
                &mut self.queued_bytes,
                &mut self.deferred,
            ) {
                told += 1;
            } else {
                self.lagged += 1;
            }
        }
        told
    }
}

/// Queues `message` for `sub`, or marks it lagged when a bound would be
/// passed; wakes it either way (or collects its waker in `deferred`).
/// Returns whether it was queued.
fn enqueue<M>(
    sub: &mut Sub<M>,
    message: &SharedMessage<M>,
    (capacity, max_bytes, max_total): (usize, usize, usize),
    total: &mut usize,
    deferred: &mut Option<Vec<Waker>>,
) -> bool {
    let weight = message.weight;
    let over = sub.queue.len() >= capacity
        || (!sub.queue.is_empty()
            && (sub.queued_bytes + weight > max_bytes || *total + weight > max_total));
    let queued = if over {
        sub.state = State::Lagged;
        *total -= sub.queued_bytes;
        sub.queued_bytes = 0;
        sub.queue = VecDeque::new();
        false
    } else {
        sub.queue.push_back(message.clone());
        sub.queued_bytes += weight;
        *total += weight;
        if sub.queue.len() > 1 {
            return true; // Already woken for the first one.
        }
        true
    };
    if let Some(waker) = sub.waker.take() {
        match deferred {
            Some(wakes) => wakes.push(waker),
            None => waker.wake(),
        }
    }
    queued
}
