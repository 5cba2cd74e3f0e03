//! Where publishes go and where subscriptions come from.
//!
//! The [`Fanout`] is the local delivery engine: the core broker holding
//! pre-encoded SSE frames, shared by every stream of this process. A
//! [`Backend`] decides how a publish reaches it:
//!
//! - [`MemoryBackend`] (one process): a publish goes straight into the
//!   fan-out, which assigns the id.
//! - [`RedisBackend`] (cluster) appends the publish to a shared log and
//!   answers with the log's id; one reader per process then feeds every
//!   entry, in log order, into its own fan-out with
//!   [`Fanout::publish_with_id`].

mod fanout;
mod memory;
pub mod nats;
pub mod redis;

use std::{future::Future, pin::Pin, sync::Arc};

pub use self::redis::{RedisBackend, RedisSettings, RedisStartError};
pub use fanout::{ConnectionId, Fanout, Frame, FrameSubscription, encode, unix_millis};
pub use memory::MemoryBackend;
use tidings_core::{
    broker::{MessageId, Subscribed},
    topic::{Pattern, Topic},
};

/// A boxed, sendable future (keeps [`Backend`] object-safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One validated message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Where it goes.
    pub topic: Topic,
    /// The SSE event type (`message` by default).
    pub event_type: String,
    /// The data as compact, single-line JSON.
    pub data: String,
    /// A connection that must not receive it (as given by the publisher;
    /// it may belong to another instance).
    pub exclude: Option<String>,
}

/// A publish that could not be accepted for delivery (answered with 503).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BackendError(pub String);

/// Publishes messages and opens subscriptions. See the [module docs](self).
pub trait Backend: Send + Sync + 'static {
    /// Accepts `batch` for delivery on every instance, in order, and returns
    /// the ids, or fails without a partial silent loss.
    fn publish(&self, batch: Vec<Outgoing>) -> BoxFuture<'_, Result<Vec<MessageId>, BackendError>>;

    /// The local fan-out that streams read from.
    fn fanout(&self) -> &Arc<Fanout>;

    /// Opens a subscription for `connection`, replaying after `resume`.
    fn subscribe(
        &self,
        patterns: Vec<Pattern>,
        resume: Option<MessageId>,
        connection: ConnectionId,
    ) -> BoxFuture<'_, Result<(FrameSubscription, Subscribed), BackendError>> {
        let result = self.fanout().subscribe(&patterns, resume, connection);
        Box::pin(async move { Ok(result) })
    }

    /// `Ok` when the backend can serve (for `/healthz`).
    fn ready(&self) -> Result<(), BackendError> {
        Ok(())
    }

    /// Appends the backend's own metrics (Prometheus text) to `out`.
    fn render_metrics(&self, _out: &mut String) {}

    /// Called once on shutdown after new work is refused; resolves when
    /// in-flight work is done.
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}
