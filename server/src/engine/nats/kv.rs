//! Cluster-wide state in NATS KV (for presence and the like in NATS mode).
//!
//! async-nats 0.46's `create_key_value` cannot talk to NATS 2.9 (it first
//! reads the account info, whose 2.9 reply it cannot parse; see
//! docs/nats.md), so a missing bucket is created here as the stream the
//! client would have made, then opened with `get_key_value`.

use std::time::Duration;

use async_nats::jetstream::{
    self,
    kv::Store,
    stream::{Config, DiscardPolicy, StorageType},
};

use super::Stream;

/// Opens the KV bucket `bucket` (created when missing with `replicas`
/// replicas; keys expire `max_age` after their last write, so a crashed
/// instance's entries go away on their own). Bucket names are letters,
/// digits, `-` and `_`.
pub async fn open_bucket(
    stream: &Stream,
    bucket: &str,
    replicas: usize,
    max_age: Duration,
) -> Result<Store, String> {
    let js = jetstream::new(stream.client().clone());
    if let Ok(store) = js.get_key_value(bucket).await {
        return Ok(store);
    }
    let config = Config {
        name: format!("KV_{bucket}"),
        description: Some("Tidings cluster state".into()),
        subjects: vec![format!("$KV.{bucket}.>")],
        num_replicas: replicas.max(1),
        max_messages_per_subject: 1,
        max_age,
        storage: StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: DiscardPolicy::New,
        ..Default::default()
    };
    if let Err(e) = js.create_stream(config).await {
        // Another instance may have created it meanwhile.
        if js.get_key_value(bucket).await.is_err() {
            return Err(format!("cannot create the KV bucket `{bucket}`: {e}"));
        }
    }
    js.get_key_value(bucket)
        .await
        .map_err(|e| format!("cannot open the KV bucket `{bucket}`: {e}"))
}
