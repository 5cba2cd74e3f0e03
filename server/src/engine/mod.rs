//! Engines: where publishes go and how messages reach this instance's hub.
//!
//! The decisions live in `tidings-core`: the [`Hub`] numbers messages (as
//! the log itself) or follows a shared log ([`tidings_core::log::Follower`])
//! and tells streams `tidings.gap` when continuity cannot be proven. An
//! [`Engine`] only moves bytes and time in and out of it:
//!
//! - [`MemoryEngine`] (one process): a publish goes straight into the hub,
//!   which is the log.
//! - [`RedisEngine`] (several instances): a publish is appended to a Redis
//!   stream by a script that numbers it; one reader per instance feeds what
//!   it reads, in order, into the hub, and reports reconnects so the
//!   follower can check nothing was lost.

pub mod clock;
mod memory;
pub mod nats;
pub mod redis;

use std::{fmt, future::Future, pin::Pin, sync::Arc};

pub use self::nats::{NatsEngine, NatsStartError};
pub use self::redis::{RedisEngine, RedisSettings, RedisStartError};
use bytes::Bytes;
pub use memory::MemoryEngine;
pub use tidings_core::hub::{Accepted, KeyReused};
use tidings_core::{
    broker::{Placement, Subscribed},
    hub::SyncHub,
    message::{ConnectionId, Outgoing},
    topic::Pattern,
};

/// The hub every engine feeds; streams subscribe to it.
pub type Hub = SyncHub;

/// A stream's subscription to the hub; dropping it unsubscribes.
pub type FrameSubscription = tidings_core::hub::FrameSubscription<parking_lot::RawMutex>;

/// A boxed, sendable future (keeps [`Engine`] object-safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a publish was not accepted.
#[derive(Debug)]
#[non_exhaustive]
pub enum PublishError {
    /// The engine could not be asked: nothing was published (503).
    Unavailable(EngineError),
    /// The engine did not confirm in time, or the connection broke after
    /// the publish was sent: it may have been published (503). A retry
    /// with the same idempotency key is safe.
    Uncertain(EngineError),
    /// An idempotency key was already used for a different message (409).
    KeyReused(KeyReused),
}

impl fmt::Display for PublishError {
    /// The text for the publisher: what happened and what to do, without
    /// internal addresses (those are in [`EngineError::detail`], for logs).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unavailable(_) => f.write_str(
                "the message engine is unavailable, so nothing was published; retry later",
            ),
            Self::Uncertain(_) => f.write_str(
                "the message engine did not confirm the publish in time, so it may or may not have been published; retry with the same Idempotency-Key to publish it exactly once",
            ),
            Self::KeyReused(reused) => reused.fmt(f),
        }
    }
}

impl std::error::Error for PublishError {}

/// What went wrong inside an engine, for logs and `/healthz` detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineError {
    /// What failed, with addresses and OS errors: for the operator's log,
    /// never for clients.
    pub detail: String,
}

impl EngineError {
    /// An error with `detail`.
    pub fn new(detail: impl Into<String>) -> Self {
        Self {
            detail: detail.into(),
        }
    }
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for EngineError {}

/// A stream's subscription as an engine opened it.
#[derive(Debug)]
pub struct Opened {
    /// Live (and locally replayed) frames; dropping it unsubscribes.
    pub subscription: FrameSubscription,
    /// Where the stream starts (`position` for its first frame), whether it
    /// must be told `tidings.gap`, how many messages were replayed.
    pub subscribed: Subscribed,
    /// Frames replayed from the engine's log, sent after `tidings.connected`
    /// (and `tidings.gap`) and before anything from `subscription`.
    pub replay: Bytes,
    /// The rest of a replay longer than a stream's queue, page by page:
    /// sent after `replay` and before anything from `subscription`.
    pub replay_feed: Option<ReplayFeed>,
}

/// Pages of frames replayed from an engine's log, read by an engine task
/// while the stream sends them (at most one page waits). An error ends the
/// stream: its client resumes from the last id it got.
#[derive(Debug)]
pub struct ReplayFeed(tokio::sync::mpsc::Receiver<Result<ReplayPage, EngineError>>);

/// One page of a [`ReplayFeed`]: SSE frames and how many messages they hold
/// (at most [`ReplayFeed::PAGE`]).
pub(crate) type ReplayPage = (Bytes, usize);

/// The engine's end of a [`ReplayFeed`].
pub(crate) type ReplayFeeder = tokio::sync::mpsc::Sender<Result<ReplayPage, EngineError>>;

impl ReplayFeed {
    /// Most messages in one page: what the stream takes from the replay
    /// pace before it asks for the next.
    pub(crate) const PAGE: usize = 64;

    /// A feed and its feeder.
    pub(crate) fn channel() -> (ReplayFeeder, Self) {
        let (feeder, feed) = tokio::sync::mpsc::channel(1);
        (feeder, Self(feed))
    }

    /// The next page; `None` once the replay is complete.
    pub(crate) fn poll_page(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<ReplayPage, EngineError>>> {
        self.0.poll_recv(cx)
    }
}

/// Moves messages between publishers, the shared log (if any) and this
/// instance's [`Hub`]. See the [module docs](self).
pub trait Engine: Send + Sync + 'static {
    /// The hub that streams subscribe to.
    fn hub(&self) -> &Arc<Hub>;

    /// Accepts `batch` for delivery on every instance, in order and
    /// all-or-nothing, and returns the ids; repeated idempotency keys
    /// answer the original ids.
    fn publish(&self, batch: Vec<Outgoing>) -> BoxFuture<'_, Result<Vec<Accepted>, PublishError>>;

    /// Resolves a [`Placement::Ahead`] (a resume id ahead of this
    /// instance): waited for if the log has produced it, a gap otherwise.
    /// One process is the log, so an id ahead of it cannot exist.
    fn confirm_ahead(&self, placement: Placement) -> BoxFuture<'_, Result<Placement, EngineError>> {
        let head = self.hub().position().seq;
        Box::pin(async move { Ok(placement.confirm_ahead(head)) })
    }

    /// Where presence entries live: in this process (the default, for
    /// engines of one process), or beside the engine's shared log so that
    /// every instance lists every instance's streams.
    fn presence_store(&self) -> Arc<dyn crate::presence::PresenceStore> {
        Arc::new(crate::presence::MemoryPresence::new())
    }

    /// Opens a stream's subscription to `patterns`, resuming after the
    /// client's `resume` id if any: the hub places the id (one ahead of this
    /// instance is confirmed with [`confirm_ahead`](Self::confirm_ahead))
    /// and replays what it retains. An engine whose instances do not hold
    /// every message (NATS) sets up its live interest first and replays
    /// from its log.
    fn subscribe<'a>(
        &'a self,
        patterns: &'a [Pattern],
        resume: Option<&'a str>,
        connection: Option<ConnectionId>,
    ) -> BoxFuture<'a, Result<Opened, EngineError>> {
        Box::pin(async move {
            let hub = self.hub();
            let mut placement = hub.place(resume);
            if let Placement::Ahead(_) = placement {
                placement = self.confirm_ahead(placement).await?;
            }
            let (subscription, subscribed) = hub.subscribe(patterns, placement, connection);
            Ok(Opened {
                subscription,
                subscribed,
                replay: Bytes::new(),
                replay_feed: None,
            })
        })
    }

    /// True when every delivery of the engine wakes streams through
    /// [`wake_streams`](crate::stream::direct) with no hub lock held (the
    /// memory engine's publishes, the Redis reader's feeds), so that a
    /// waiting stream may be written by whoever delivers to it. Streams of
    /// other engines keep their task's waker: an indirection that never
    /// writes would only cost their wakes.
    fn direct_writes(&self) -> bool {
        false
    }

    /// `Ok` when the engine can serve (for `/healthz`).
    fn ready(&self) -> Result<(), EngineError> {
        Ok(())
    }

    /// Appends the engine's own metrics (Prometheus text) to `out`.
    fn render_metrics(&self, _out: &mut String) {}

    /// Called once on shutdown after new work is refused; resolves when
    /// in-flight work is done.
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}
