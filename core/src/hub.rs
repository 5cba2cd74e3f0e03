//! The hub: where an instance's messages arrive and fan out to its streams.
//!
//! A [`Hub`] is the local [`Broker`] of SSE [`Frame`]s plus the decisions
//! around it, behind locks so that an adapter can share it between tasks:
//!
//! - as **the log itself** (one process, [`Hub::publish`]): it numbers
//!   messages, answers repeated idempotency keys, encodes each message once
//!   and fans it out;
//! - as **a follower of a shared log** (Redis, NATS; [`Hub::feed`],
//!   [`Hub::resync`]): the engine driver hands over what it read, and the
//!   [`Follower`] decides what is delivered and when streams must be told
//!   `tidings.gap`.
//!
//! Nothing here reads a clock or a socket: times come in as microseconds
//! on the adapter's clock.
//!
//! ```
//! use tidings_core::broker::Placement;
//! use tidings_core::hub::{HubConfig, SyncHub};
//! use tidings_core::message::{ConnectionId, Epoch, EventType, Outgoing};
//! use tidings_core::topic::{Pattern, Topic};
//!
//! let hub = SyncHub::new(HubConfig::default(), Epoch::from_random(9), 0);
//! let (mut stream, opened) = hub.subscribe(&[Pattern::new("news:>")?], Placement::Live, Some(ConnectionId::from_random(1)));
//! assert_eq!(opened.position.to_string(), "9-0");
//! let ids = hub.publish(&[Outgoing::new(Topic::new("news:eu")?, EventType::MESSAGE, "1")], 0)?;
//! let mut frames = Vec::new();
//! stream.try_recv_many(&mut frames, 8)?;
//! assert_eq!(&frames[0].payload().bytes[..], b"id: 9-1\nevent: message\ndata: 1\n\n");
//! assert_eq!(ids[0].id.to_string(), "9-1");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use alloc::vec::Vec;
use core::{fmt, task::Waker};

use lock_api::{Mutex, RawMutex};

use crate::{
    broker::{
        Broker, BrokerConfig, BrokerStats, Placement, SharedBroker, Subscribed, Subscription,
    },
    log::{
        Chain, Follower, GapReason, IdempotencyWindow, LogState, Resync, ResyncTicket, Seen,
        Verdict,
    },
    message::{ConnectionId, Epoch, Frame, MessageId, Outgoing},
    topic::{Pattern, Topic},
};

/// A stream's subscription to a [`Hub`]; dropping it unsubscribes (and
/// undoes its `exclude` registration).
pub type FrameSubscription<R> = Subscription<Frame, R>;

/// A [`Hub`] locked by parking_lot's mutex.
#[cfg(feature = "std")]
pub type SyncHub = Hub<parking_lot::RawMutex>;

/// Tuning for a [`Hub`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HubConfig {
    /// The broker's bounds.
    pub broker: BrokerConfig,
    /// How long an idempotency key is remembered (µs); memory mode.
    pub idempotency_window_us: u64,
    /// Most idempotency keys remembered; memory mode.
    pub idempotency_max_keys: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            broker: BrokerConfig::default(),
            idempotency_window_us: 120_000_000,
            idempotency_max_keys: 100_000,
        }
    }
}

impl HubConfig {
    /// Sets the broker's bounds.
    #[must_use]
    pub fn broker(mut self, broker: BrokerConfig) -> Self {
        self.broker = broker;
        self
    }
    /// Sets the idempotency window (µs).
    #[must_use]
    pub fn idempotency_window_us(mut self, window_us: u64) -> Self {
        self.idempotency_window_us = window_us;
        self
    }
}

/// One message a publisher was told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// Its id.
    pub id: MessageId,
    /// True when an idempotency key matched an earlier publish: nothing was
    /// delivered again, `id` is the original one.
    pub repeat: bool,
}

/// A publish refused because an idempotency key was already used for a
/// different message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyReused {
    /// Index of the message in its batch.
    pub index: usize,
    /// The id the key published first (`None`: an earlier message of the
    /// same batch).
    pub original: Option<MessageId>,
}

impl fmt::Display for KeyReused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "message {} reuses an idempotency key that published a different message on the same topic",
            self.index
        )?;
        if let Some(original) = self.original {
            write!(f, " ({original})")?;
        }
        f.write_str(": use a new key for a new message")
    }
}

#[cfg(feature = "std")]
impl std::error::Error for KeyReused {}

/// One entry read from a shared log.
#[derive(Debug, Clone, Copy)]
pub struct LogEntry<'a> {
    /// Its id in the log.
    pub id: MessageId,
    /// Its chain, to prove continuity.
    pub chain: Chain<'a>,
    /// The message.
    pub message: &'a Outgoing,
    /// When it was accepted (µs on the adapter's clock).
    pub published_us: u64,
}

/// What [`Hub::feed`] did with a run of entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[must_use]
pub struct Fed {
    /// Entries consumed (delivered or skipped), from the start of the run.
    pub consumed: usize,
    /// Entries delivered.
    pub delivered: usize,
    /// Times live streams were told `tidings.gap` (loss or new epoch).
    pub gaps: usize,
    /// Messages put in streams' queues: each delivered entry counts once
    /// per stream it was queued for (the fan-out's cost: a driver may
    /// pause its next read after a run that queued many, so that each
    /// stream writes several messages per wake).
    pub queued: usize,
    /// Streams woken to write what was delivered (a stream that still held
    /// messages was woken for them already and is not counted).
    pub woken: usize,
    /// Set when the run stopped at an entry whose chain is broken: fetch
    /// the missing entries of its topic (`after + 1 ..= prev`), feed them,
    /// then feed the rest of the run again.
    pub missing: Option<(usize, u64, u64)>,
}

struct LogSide {
    follower: Follower,
    keys: IdempotencyWindow,
}

/// Moves the wakers `broker` collected since `defer_wakes` to `wakes` and
/// releases its lock; returns how many it moved.
fn take_wakes<R: RawMutex>(
    mut broker: lock_api::MutexGuard<'_, R, Broker<Frame>>,
    wakes: &mut Vec<Waker>,
) -> usize {
    let before = wakes.len();
    broker.take_wakes(wakes);
    wakes.len() - before
}

/// Wakes `wakes`, emptying it.
fn wake_all(wakes: &mut Vec<Waker>) {
    for waker in wakes.drain(..) {
        waker.wake();
    }
}

/// The hub. See the [module docs](self).
pub struct Hub<R: RawMutex> {
    broker: SharedBroker<Frame, R>,
    /// Held while numbering or following, always before the broker's lock.
    log: Mutex<R, LogSide>,
}

impl<R: RawMutex> fmt::Debug for Hub<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("position", &self.position())
            .finish_non_exhaustive()
    }
}

impl<R: RawMutex> Hub<R> {
    /// A hub for the log's `epoch`, having seen nothing at or before
    /// `floor` (0 for a fresh log).
    pub fn new(config: HubConfig, epoch: Epoch, floor: u64) -> Self {
        Self {
            broker: SharedBroker::new(Broker::new(config.broker, epoch, floor)),
            log: Mutex::new(LogSide {
                follower: Follower::new(),
                keys: IdempotencyWindow::new(
                    config.idempotency_window_us,
                    config.idempotency_max_keys,
                ),
            }),
        }
    }

    /// The broker, for direct use (stats, close).
    pub fn broker(&self) -> &SharedBroker<Frame, R> {
        &self.broker
    }

    /// The newest id delivered here.
    pub fn position(&self) -> MessageId {
        self.broker.lock().position()
    }

    /// Broker counters.
    pub fn stats(&self) -> BrokerStats {
        self.broker.lock().stats()
    }

    /// Idempotency keys dropped before their window ended (memory mode).
    pub fn keys_evicted_early(&self) -> u64 {
        self.log.lock().keys.evicted_early()
    }

    /// Places a client's resume id; see [`Broker::place`].
    pub fn place(&self, resume: Option<&str>) -> Placement {
        self.broker.lock().place(resume)
    }

    /// Opens a stream's subscription; see [`Broker::subscribe`].
    pub fn subscribe(
        &self,
        patterns: &[Pattern],
        placement: Placement,
        connection: Option<ConnectionId>,
    ) -> (FrameSubscription<R>, Subscribed) {
        self.broker.subscribe(patterns, placement, connection)
    }

    /// Ends every stream (shutdown): each drains what it has and closes.
    pub fn close_all(&self) {
        self.broker.lock().close_all();
    }

    /// Publishes a batch as the log itself (memory mode), in order and
    /// all-or-nothing: a message whose idempotency key already published it
    /// is answered with the original id and not delivered again; a key
    /// reused for a different message refuses the whole batch.
    pub fn publish(&self, batch: &[Outgoing], now_us: u64) -> Result<Vec<Accepted>, KeyReused> {
        let mut wakes = Vec::new();
        let accepted = self.publish_deferred(batch, now_us, &mut wakes);
        wake_all(&mut wakes);
        accepted
    }

    /// [`publish`](Self::publish), but the streams to wake are appended to
    /// `wakes` instead of woken: the caller wakes them once it holds no
    /// lock the wakers may need (nothing of the hub's is held by then). A
    /// server whose wakers write to their stream's socket at once wakes
    /// them here, on the publisher's thread.
    ///
    /// ```
    /// # use tidings_core::{broker::Placement, hub::{HubConfig, SyncHub}, message::{Epoch, EventType, Outgoing}, topic::{Pattern, Topic}};
    /// # let hub = SyncHub::new(HubConfig::default(), Epoch::from_random(9), 0);
    /// # let (_stream, _) = hub.subscribe(&[Pattern::new("news:>")?], Placement::Live, None);
    /// let mut wakes = Vec::new();
    /// let message = Outgoing::new(Topic::new("news:eu")?, EventType::MESSAGE, "1");
    /// hub.publish_deferred(&[message], 0, &mut wakes)?;
    /// wakes.drain(..).for_each(|waker| waker.wake());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn publish_deferred(
        &self,
        batch: &[Outgoing],
        now_us: u64,
        wakes: &mut Vec<Waker>,
    ) -> Result<Vec<Accepted>, KeyReused> {
        let mut log = self.log.lock();
        let mut repeats = Vec::new();
        for (index, message) in batch.iter().enumerate() {
            let Some(key) = &message.idempotency_key else {
                continue;
            };
            match log
                .keys
                .check(&message.topic, key, message.fingerprint(), now_us)
            {
                Seen::New => {
                    // The same key twice in one batch: the second repeats the
                    // first if it says the same.
                    let clash = batch[..index].iter().any(|m| {
                        m.idempotency_key.as_ref() == Some(key)
                            && m.topic == message.topic
                            && m.fingerprint() != message.fingerprint()
                    });
                    if clash {
                        return Err(KeyReused {
                            index,
                            original: None,
                        });
                    }
                }
                Seen::Repeat(id) => repeats.push((index, id)),
                Seen::Conflict(original) => {
                    return Err(KeyReused {
                        index,
                        original: Some(original),
                    });
                }
            }
        }
        // Publishers are serialised by the log lock, so the ids are known
        // now: encode outside the broker's lock.
        let start = self.broker.lock().position();
        let mut next = start.seq;
        let mut out = Vec::with_capacity(batch.len());
        let mut frames = Vec::with_capacity(batch.len());
        for (index, message) in batch.iter().enumerate() {
            if let Some(&(_, id)) = repeats.iter().find(|(i, _)| *i == index) {
                out.push(Accepted { id, repeat: true });
                continue;
            }
            let duplicate_in_batch = message.idempotency_key.as_ref().and_then(|key| {
                batch[..index]
                    .iter()
                    .zip(&out)
                    .find(|(m, _)| {
                        m.idempotency_key.as_ref() == Some(key) && m.topic == message.topic
                    })
                    .map(|(_, accepted)| accepted.id)
            });
            if let Some(id) = duplicate_in_batch {
                out.push(Accepted { id, repeat: true });
                continue;
            }
            next += 1;
            let id = MessageId::new(start.epoch, next);
            frames.push((index, Frame::message(id, message, now_us)));
            out.push(Accepted { id, repeat: false });
        }
        let mut broker = self.broker.lock();
        broker.defer_wakes();
        for (index, frame) in frames {
            let message = &batch[index];
            let published = broker.publish(message.topic.clone(), frame, message.exclude);
            debug_assert_eq!(published.id, out[index].id);
        }
        take_wakes(broker, wakes);
        for (message, accepted) in batch.iter().zip(&out) {
            if let (Some(key), false) = (&message.idempotency_key, accepted.repeat) {
                log.keys.remember(
                    message.topic.clone(),
                    key.clone(),
                    accepted.id,
                    message.fingerprint(),
                    now_us,
                );
            }
        }
        Ok(out)
    }

    /// Feeds entries read from a shared log, in log order. Each is judged
    /// by the follower: delivered, skipped as a duplicate or stale, or
    /// delivered after telling live streams `tidings.gap` (entries lost, or
    /// a new epoch). Stops at an entry whose chain is broken (see
    /// [`Fed::missing`]).
    pub fn feed(&self, entries: &[LogEntry<'_>], now_us: u64) -> Fed {
        let mut wakes = Vec::new();
        let fed = self.feed_deferred(entries, now_us, &mut wakes);
        wake_all(&mut wakes);
        fed
    }

    /// [`feed`](Self::feed), but the streams to wake are appended to
    /// `wakes` instead of woken (see [`publish_deferred`](Self::publish_deferred)).
    pub fn feed_deferred(
        &self,
        entries: &[LogEntry<'_>],
        now_us: u64,
        wakes: &mut Vec<Waker>,
    ) -> Fed {
        // Encode before locking: duplicates are rare, locks are shared.
        let frames: Vec<Frame> = entries
            .iter()
            .map(|e| Frame::message(e.id, e.message, e.published_us))
            .collect();
        let mut log = self.log.lock();
        let mut broker = self.broker.lock();
        broker.defer_wakes();
        let mut fed = Fed::default();
        for (index, (entry, frame)) in entries.iter().zip(frames).enumerate() {
            let verdict =
                log.follower
                    .observe(broker.position(), entry.id.epoch, entry.id.seq, entry.chain);
            match verdict {
                Verdict::Deliver => {}
                Verdict::Duplicate | Verdict::Stale => {
                    fed.consumed += 1;
                    continue;
                }
                Verdict::Missing { after, prev } => {
                    fed.missing = Some((index, after, prev));
                    fed.woken = take_wakes(broker, wakes);
                    return fed;
                }
                Verdict::AfterLoss { through } => {
                    announce_loss(&mut broker, through, GapReason::EntriesLost, now_us);
                    fed.gaps += 1;
                }
                Verdict::NewEpoch { epoch, floor } => {
                    begin_epoch(&mut broker, epoch, floor, now_us);
                    fed.gaps += 1;
                }
            }
            let message = entry.message;
            if let Ok(published) =
                broker.publish_at(entry.id, message.topic.clone(), frame, message.exclude)
            {
                fed.delivered += 1;
                fed.queued += published.delivered;
            }
            fed.consumed += 1;
        }
        fed.woken = take_wakes(broker, wakes);
        fed
    }

    /// The engine no longer holds the entries a [`Fed::missing`] asked for:
    /// tell live streams and go on.
    pub fn give_up(&self, topic: &Topic, prev: u64, now_us: u64) {
        let mut log = self.log.lock();
        let mut broker = self.broker.lock();
        if let Verdict::AfterLoss { through } = log.follower.give_up(topic, prev) {
            let position = broker.position();
            if through > position.seq {
                announce_loss(&mut broker, through, GapReason::EntriesLost, now_us);
            } else {
                // Later messages of other topics were delivered already:
                // tell the streams of this topic.
                let notice = Frame::gap(position, GapReason::EntriesLost, None, now_us);
                broker.announce_topic_loss(topic, through, notice);
            }
        }
    }

    /// Take this just before asking the log for its [`LogState`], and pass
    /// it to [`resync`](Self::resync) with the answer: publishes
    /// acknowledged while the question was in flight may be newer than the
    /// answer and must not be mistaken for entries the log lost.
    ///
    /// ```
    /// # use tidings_core::{hub::{Hub, HubConfig}, message::Epoch, log::{LogState, Resync}};
    /// let epoch = Epoch::from_random(7);
    /// let hub: tidings_core::hub::SyncHub = Hub::new(HubConfig::default(), epoch, 0);
    /// let ticket = hub.resync_ticket();
    /// let state = LogState { epoch, head: 0, oldest: None }; // asked from the log
    /// assert_eq!(hub.resync(state, ticket, 0), Resync::Continue);
    /// ```
    pub fn resync_ticket(&self) -> ResyncTicket {
        self.log.lock().follower.ticket()
    }

    /// The newest sequence number seen on `topic`'s chain, if followed.
    pub fn chain(&self, topic: &Topic) -> Option<u64> {
        self.log.lock().follower.chain(topic)
    }

    /// Stops following the per-topic chains of the topics `keep` refuses
    /// (no stream here needs them any more, or a driver re-read them from
    /// the log): the next entry of such a topic starts its chain again.
    pub fn forget_chains(&self, keep: impl FnMut(&Topic) -> bool) {
        self.log.lock().follower.retain_chains(keep);
    }

    /// Judges the log's state after a (re)connect and applies it: lost
    /// entries and a new epoch are announced to live streams here. The
    /// driver then reads after [`position`](Self::position) (or, for
    /// `NewEpoch`, from the new epoch's oldest entry), or for `WentBack`
    /// makes the engine start a new epoch and resyncs again.
    pub fn resync(&self, state: LogState, ticket: ResyncTicket, now_us: u64) -> Resync {
        let mut log = self.log.lock();
        let mut broker = self.broker.lock();
        let decision = log.follower.resync(broker.position(), state, ticket);
        match decision {
            Resync::Lost { through } => {
                announce_loss(&mut broker, through, GapReason::EntriesLost, now_us);
            }
            Resync::NewEpoch { epoch, floor } => begin_epoch(&mut broker, epoch, floor, now_us),
            Resync::Continue | Resync::WentBack { .. } => {}
        }
        decision
    }

    /// Records that a publisher was told `id` is accepted (cluster mode).
    pub fn note_acked(&self, id: MessageId) {
        self.log.lock().follower.note_acked(id);
    }
}

fn announce_loss(broker: &mut Broker<Frame>, through: u64, reason: GapReason, now_us: u64) {
    let at = MessageId::new(broker.epoch(), through);
    broker.announce_loss(through, Frame::gap(at, reason, None, now_us));
}

fn begin_epoch(broker: &mut Broker<Frame>, epoch: Epoch, floor: u64, now_us: u64) {
    let at = MessageId::new(epoch, floor);
    let notice = Frame::gap(at, GapReason::EngineRestarted, None, now_us);
    broker.begin_epoch(epoch, floor, notice);
}
