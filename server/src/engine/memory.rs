//! The one-process engine: the hub is the log.

use std::sync::Arc;

use tidings_core::{hub::HubConfig, message::Outgoing};

use super::{Accepted, BoxFuture, Engine, Hub, PublishError, clock};
use crate::stream::direct::Writes;

/// Publishes into the local [`Hub`], which numbers messages in a fresh
/// epoch per process start: ids from before a restart get `tidings.gap`.
#[derive(Debug, Clone)]
pub struct MemoryEngine {
    hub: Arc<Hub>,
}

impl MemoryEngine {
    /// An engine over a new hub configured by `config`.
    pub fn new(config: HubConfig) -> Self {
        Self {
            hub: Arc::new(Hub::new(config, clock::random_epoch(), 0)),
        }
    }
}

impl Engine for MemoryEngine {
    fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    fn direct_writes(&self) -> bool {
        true
    }

    fn publish(&self, batch: Vec<Outgoing>) -> BoxFuture<'_, Result<Vec<Accepted>, PublishError>> {
        let result = crate::stream::direct::waking(Writes::Calm, None, |wakes| {
            self.hub.publish_deferred(&batch, clock::now_us(), wakes)
        })
        .map_err(PublishError::KeyReused);
        Box::pin(async move { result })
    }
}
