//! Readiness (quorum-aware) and the engine's metrics in NATS mode.

use std::{
    fmt::Write as _,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Stream, StreamHead};
use crate::metrics::write_metric;

/// Upper bounds (seconds) of the publish-acknowledgement histogram.
const ACK_BUCKETS: [f64; 10] = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0, 5.0];

/// Whether the stream can take publishes, as the probe last saw it, and
/// the engine's counters.
#[derive(Debug, Default)]
pub struct NatsHealth {
    /// Why the engine is not ready; `None` while it is.
    down: Mutex<Option<String>>,
    /// The stream leader last seen.
    leader: Mutex<Option<String>>,
    /// Wakes whoever must rescan after a leader change (a leader that died
    /// between storing and republishing leaves messages no live reader saw).
    pub leader_changed: Notify,
    /// Leader changes seen.
    pub leader_changes: AtomicU64,
    /// Messages acknowledged by the stream (new ones).
    pub acks: AtomicU64,
    /// Publishes answered as duplicates of an idempotency key.
    pub duplicates: AtomicU64,
    /// Publishes the stream did not acknowledge.
    pub publish_failures: AtomicU64,
    /// Messages fetched to repair a broken per-subject chain or after a
    /// reconnect (the core subscriptions lost them).
    pub refetches: AtomicU64,
    /// Loss checks run (the probe found the stream moved past what this
    /// instance checked; each walks the subscribed patterns).
    pub loss_checks: AtomicU64,
    /// Republished messages received.
    pub received: AtomicU64,
    /// Highest sequence received live.
    pub received_seq: AtomicU64,
    /// The stream's last sequence at the last probe.
    pub head_seq: AtomicU64,
    ack_buckets: [AtomicU64; ACK_BUCKETS.len() + 1],
    ack_sum_nanos: AtomicU64,
}

impl NatsHealth {
    /// `Ok` when ready (for `/healthz`).
    pub fn check(&self) -> Result<(), String> {
        match &*self.down.lock() {
            None => Ok(()),
            Some(why) => Err(why.clone()),
        }
    }

    /// Marks the engine unavailable (also from a failed publish).
    pub fn down(&self, why: String) {
        *self.down.lock() = Some(why);
    }

    /// Records what a probe saw.
    pub fn observe(&self, head: &StreamHead) {
        self.head_seq.fetch_max(head.last_seq, Relaxed);
        {
            let mut leader = self.leader.lock();
            if head.leader.is_some() && *leader != head.leader {
                if leader.is_some() {
                    self.leader_changes.fetch_add(1, Relaxed);
                    self.leader_changed.notify_waiters();
                }
                leader.clone_from(&head.leader);
            }
        }
        if head.has_quorum() {
            let mut down = self.down.lock();
            if down.take().is_some() {
                tracing::info!("the NATS stream has a leader and quorum again");
            }
        } else {
            let state = if head.leader.is_some() {
                "a leader but no quorum"
            } else {
                "no leader"
            };
            self.down(format!(
                "the stream has {state} ({} of {} replicas current)",
                head.current, head.replicas
            ));
        }
    }

    /// Records the time one publish waited for its acknowledgement.
    pub fn record_ack(&self, waited: Duration) {
        let secs = waited.as_secs_f64();
        let bucket = ACK_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(ACK_BUCKETS.len());
        self.ack_buckets[bucket].fetch_add(1, Relaxed);
        self.ack_sum_nanos
            .fetch_add(waited.as_nanos().min(u128::from(u64::MAX)) as u64, Relaxed);
    }

    /// Appends the metrics (Prometheus text) to `out`.
    pub fn render(&self, out: &mut String) {
        let mut one = |kind: &str, name: &str, help: &str, value: u64| {
            write_metric(out, kind, name, help, value);
        };
        one(
            "gauge",
            "tidings_nats_up",
            "1 while the stream has a leader and quorum.",
            u64::from(self.check().is_ok()),
        );
        one(
            "counter",
            "tidings_nats_acks_total",
            "Messages the stream acknowledged as new.",
            self.acks.load(Relaxed),
        );
        one(
            "counter",
            "tidings_nats_duplicates_total",
            "Publishes answered with the original id of their idempotency key.",
            self.duplicates.load(Relaxed),
        );
        one(
            "counter",
            "tidings_nats_publish_failures_total",
            "Publishes the stream did not acknowledge (answered 503).",
            self.publish_failures.load(Relaxed),
        );
        one(
            "counter",
            "tidings_nats_refetches_total",
            "Messages fetched from the stream because live delivery missed them.",
            self.refetches.load(Relaxed),
        );
        one(
            "counter",
            "tidings_nats_loss_checks_total",
            "Loss checks: walks of the subscribed patterns for messages the live path lost (at most one a second).",
            self.loss_checks.load(Relaxed),
        );
        one(
            "counter",
            "tidings_nats_received_total",
            "Republished messages received live.",
            self.received.load(Relaxed),
        );
        one(
            "counter",
            "tidings_nats_leader_changes_total",
            "Stream leader changes seen.",
            self.leader_changes.load(Relaxed),
        );
        let head = self.head_seq.load(Relaxed);
        let seen = self.received_seq.load(Relaxed);
        one(
            "gauge",
            "tidings_nats_stream_last_seq",
            "The stream's last sequence at the last probe.",
            head,
        );
        one(
            "gauge",
            "tidings_nats_live_lag",
            "Stream sequences between the last probe's head and the newest message received live (only this instance's subjects arrive, so it is an upper bound).",
            head.saturating_sub(seen),
        );
        let _ = writeln!(
            out,
            "# HELP tidings_nats_publish_ack_seconds Time a publish waited for its acknowledgement.\n# TYPE tidings_nats_publish_ack_seconds histogram"
        );
        let mut cumulative = 0;
        for (i, bound) in ACK_BUCKETS.iter().enumerate() {
            cumulative += self.ack_buckets[i].load(Relaxed);
            let _ = writeln!(
                out,
                "tidings_nats_publish_ack_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.ack_buckets[ACK_BUCKETS.len()].load(Relaxed);
        let _ = writeln!(
            out,
            "tidings_nats_publish_ack_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
        );
        let _ = writeln!(
            out,
            "tidings_nats_publish_ack_seconds_sum {}\ntidings_nats_publish_ack_seconds_count {cumulative}",
            self.ack_sum_nanos.load(Relaxed) as f64 / 1e9
        );
    }
}

/// Probes the stream every `interval` until `stop`: the instance is ready
/// while the stream has a leader and a majority of current replicas, and
/// the probe answers within `interval` (stream info alone answers without
/// quorum on 2.9; its cluster section does not lie).
pub async fn run_probe(
    stream: Stream,
    health: std::sync::Arc<NatsHealth>,
    interval: Duration,
    stop: CancellationToken,
) {
    loop {
        let probe = tokio::time::timeout(interval.max(Duration::from_millis(100)), stream.head());
        tokio::select! {
            _ = stop.cancelled() => return,
            result = probe => match result {
                Ok(Ok(head)) => health.observe(&head),
                Ok(Err(e)) => health.down(format!("stream info failed: {e}")),
                Err(_) => health.down(format!("stream info did not answer within {interval:?}")),
            },
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
