//! Server metrics in the Prometheus text format.
//!
//! A small registry of atomics per server (not a process-global recorder),
//! so several servers in one test process keep separate numbers.

use std::{
    fmt::Write as _,
    sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed},
    time::Duration,
};

/// Appends one metric without labels (`# HELP`, `# TYPE`, value) in the
/// Prometheus text format; `kind` is `"gauge"` or `"counter"`.
///
/// ```
/// let mut out = String::new();
/// tidings_server::metrics::write_metric(&mut out, "gauge", "tidings_up", "1 when up.", 1);
/// assert_eq!(out, "# HELP tidings_up 1 when up.\n# TYPE tidings_up gauge\ntidings_up 1\n");
/// ```
pub fn write_metric(
    out: &mut String,
    kind: &str,
    name: &str,
    help: &str,
    value: impl std::fmt::Display,
) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

/// Why a stream was dropped by the server or ended by the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The subscriber's queue overflowed (too slow).
    Lagged,
    /// Pending bytes could not be written within the write timeout.
    WriteTimeout,
    /// The client went away (or a write failed).
    Closed,
    /// The server is shutting down.
    Shutdown,
    /// The stream's token expired (`tidings.expired` was sent).
    Expired,
    /// A replay read page by page from the engine's log failed midway
    /// (the client resumes from the last id it got).
    ReplayFailed,
}

impl DropReason {
    const ALL: [DropReason; 6] = [
        Self::Lagged,
        Self::WriteTimeout,
        Self::Closed,
        Self::Shutdown,
        Self::Expired,
        Self::ReplayFailed,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Lagged => "lagged",
            Self::WriteTimeout => "write_timeout",
            Self::Closed => "closed",
            Self::Shutdown => "shutdown",
            Self::Expired => "expired",
            Self::ReplayFailed => "replay_failed",
        }
    }
}

/// Upper bounds (seconds) of the publish-to-write latency histogram.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The server's counters and gauges.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Open event streams.
    pub streams: AtomicI64,
    /// Patterns subscribed across open streams.
    pub patterns: AtomicI64,
    /// Messages accepted by `POST /publish`.
    pub published: AtomicU64,
    /// Messages written to streams (one per subscriber).
    pub delivered: AtomicU64,
    /// Chunks written to streams by the publisher itself (direct writes).
    pub direct_writes: AtomicU64,
    /// Direct writes the socket took only part of (the stream's writer
    /// sent the rest).
    pub direct_short_writes: AtomicU64,
    /// Requests refused with an error, total.
    pub rejected: AtomicU64,
    /// Open TCP connections being served (any kind).
    pub tcp_connections: AtomicI64,
    /// Open event streams written by the lean HTTP/1.1 writer (the others
    /// by hyper: HTTP/2, TLS's HTTP/1.1 too, `--stream-writer hyper`).
    pub lean_streams: AtomicI64,
    /// TCP connections refused over the caps (answered 429/503, or closed
    /// at accept).
    pub tcp_refused: AtomicU64,
    drops: [AtomicU64; DropReason::ALL.len()],
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_sum_nanos: AtomicU64,
}

impl Metrics {
    /// Counts a dropped stream.
    pub fn dropped(&self, reason: DropReason) {
        self.drops[reason as usize].fetch_add(1, Relaxed);
    }

    /// Streams dropped for `reason` so far.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize].load(Relaxed)
    }

    /// Records publish-to-write latencies of one written chunk.
    pub fn record_latencies(&self, latencies: impl Iterator<Item = Duration>) {
        let mut counts = [0u64; LATENCY_BUCKETS.len() + 1];
        let mut sum = 0u64;
        let mut any = false;
        for latency in latencies {
            let secs = latency.as_secs_f64();
            let bucket = LATENCY_BUCKETS
                .iter()
                .position(|&bound| secs <= bound)
                .unwrap_or(LATENCY_BUCKETS.len());
            counts[bucket] += 1;
            sum = sum.saturating_add(latency.as_nanos() as u64);
            any = true;
        }
        if !any {
            return;
        }
        for (slot, n) in self.latency_buckets.iter().zip(counts) {
            if n > 0 {
                slot.fetch_add(n, Relaxed);
            }
        }
        self.latency_sum_nanos.fetch_add(sum, Relaxed);
    }

    /// Renders everything in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        let gauges = [
            (
                "tidings_connections",
                "Open event streams.",
                self.streams.load(Relaxed),
            ),
            (
                "tidings_tcp_connections",
                "Open TCP connections being served (streams, requests, idle keep-alive).",
                self.tcp_connections.load(Relaxed),
            ),
            (
                "tidings_lean_streams",
                "Open event streams written by the lean HTTP/1.1 writer (the rest by hyper).",
                self.lean_streams.load(Relaxed),
            ),
            (
                "tidings_subscriptions",
                "Topics and patterns subscribed by open streams.",
                self.patterns.load(Relaxed),
            ),
        ];
        for (name, help, value) in gauges {
            write_metric(&mut out, "gauge", name, help, value);
        }
        let counters = [
            (
                "tidings_messages_published_total",
                "Messages accepted for delivery.",
                self.published.load(Relaxed),
            ),
            (
                "tidings_messages_delivered_total",
                "Messages written to streams (one per subscriber).",
                self.delivered.load(Relaxed),
            ),
            (
                "tidings_direct_writes_total",
                "Chunks written to lean streams by their publisher, without waking the stream's task.",
                self.direct_writes.load(Relaxed),
            ),
            (
                "tidings_direct_short_writes_total",
                "Direct writes the socket took only part of: the stream's writer sent the rest (clients reading slowly).",
                self.direct_short_writes.load(Relaxed),
            ),
            (
                "tidings_requests_rejected_total",
                "Requests answered with an error.",
                self.rejected.load(Relaxed),
            ),
            (
                "tidings_tcp_refused_total",
                "TCP connections refused over the connection caps.",
                self.tcp_refused.load(Relaxed),
            ),
        ];
        for (name, help, value) in counters {
            write_metric(&mut out, "counter", name, help, value);
        }
        let _ = writeln!(
            out,
            "# HELP tidings_stream_drops_total Streams ended, by reason.\n# TYPE tidings_stream_drops_total counter"
        );
        for reason in DropReason::ALL {
            let _ = writeln!(
                out,
                "tidings_stream_drops_total{{reason=\"{}\"}} {}",
                reason.label(),
                self.drops(reason)
            );
        }
        let name = "tidings_publish_to_write_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time from accepting a publish to handing its frame to a stream.\n# TYPE {name} histogram"
        );
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += self.latency_buckets[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.latency_buckets[LATENCY_BUCKETS.len()].load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.latency_sum_nanos.load(Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_counts_everything() {
        let m = Metrics::default();
        m.record_latencies(
            [
                Duration::from_micros(50),
                Duration::from_millis(2),
                Duration::from_secs(9),
            ]
            .into_iter(),
        );
        m.dropped(DropReason::Lagged);
        let text = m.render();
        assert!(text.contains("tidings_publish_to_write_seconds_bucket{le=\"0.0001\"} 1\n"));
        assert!(text.contains("tidings_publish_to_write_seconds_bucket{le=\"0.0025\"} 2\n"));
        assert!(text.contains("tidings_publish_to_write_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("tidings_publish_to_write_seconds_count 3\n"));
        assert!(text.contains("tidings_stream_drops_total{reason=\"lagged\"} 1\n"));
    }
}
