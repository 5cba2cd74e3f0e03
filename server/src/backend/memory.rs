//! The one-process backend: publishes go straight into the fan-out.

use std::sync::Arc;

use tidings_core::broker::MessageId;

use super::{Backend, BackendError, BoxFuture, Fanout, Outgoing};

/// Publishes into the local [`Fanout`]; nothing leaves the process.
#[derive(Debug, Clone)]
pub struct MemoryBackend {
    fanout: Arc<Fanout>,
}

impl MemoryBackend {
    /// A backend over `fanout`.
    pub fn new(fanout: Arc<Fanout>) -> Self {
        Self { fanout }
    }
}

impl Backend for MemoryBackend {
    fn publish(&self, batch: Vec<Outgoing>) -> BoxFuture<'_, Result<Vec<MessageId>, BackendError>> {
        let ids = self.fanout.publish_batch(&batch);
        Box::pin(async move { Ok(ids) })
    }

    fn fanout(&self) -> &Arc<Fanout> {
        &self.fanout
    }
}
