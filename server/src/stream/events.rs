//! The body of `GET /events`: pre-encoded frames, batched into one chunk
//! per wake-up.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{Arc, atomic::Ordering::Relaxed},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures_core::Stream;
use tidings_core::{
    broker::{RecvError, SharedMessage},
    message::{ConnectionId, Frame},
    sse::HEARTBEAT,
};

use super::watchdog::SlotGuard;
use crate::{
    engine::{FrameSubscription, ReplayFeed, clock},
    limits::{ConnectionPermit, ReplayPermit},
    metrics::{DropReason, Metrics},
    presence::PresenceGuard,
};

/// Most messages taken from the subscription per chunk.
const DRAIN_BATCH: usize = 64;

/// Most messages per chunk with a write delay: all that waited (the
/// subscription's queue bounds them in count and bytes). At 64 a stream
/// written every 20 ms could not take more than 3,200 messages a second.
const DELAYED_DRAIN_BATCH: usize = usize::MAX;

/// Most messages per chunk while replaying history: finding a page costs
/// about the same whatever its length (a look at each matched topic), so
/// replay pages are larger. The queue's byte bound still caps each page.
const REPLAY_BATCH: usize = crate::limits::REPLAY_PAGE;

/// Everything a stream owns; all of it is released when the stream drops.
pub(crate) struct StreamParts {
    /// `retry:`, `tidings.connected` and maybe `tidings.gap`, sent first.
    pub preface: Bytes,
    /// Sent before closing on shutdown: a short `retry:`.
    pub farewell: Bytes,
    /// Sent before closing when the token expires: `tidings.expired`
    /// (empty for streams without a token, which never expire).
    pub expired: Bytes,
    pub subscription: FrameSubscription,
    pub connection: ConnectionId,
    pub patterns: usize,
    pub metrics: Arc<Metrics>,
    pub _permit: ConnectionPermit,
    /// Held while the subscription replays history; dropped once it is live.
    pub replay: Option<ReplayPermit>,
    /// The rest of a long replay from the engine's log, sent before
    /// anything from `subscription`.
    pub replay_feed: Option<ReplayFeed>,
    /// Least time between two writes once live (`--write-delay`).
    pub write_delay: Duration,
    /// Least time after a write that carried several messages, when
    /// `write_delay` is zero (`--busy-write-delay`).
    pub busy_write_delay: Duration,
    pub slot: SlotGuard,
    /// Keeps the stream listed in presence; dropping it tells the leave.
    pub _presence: Option<PresenceGuard>,
}

/// An SSE response body. Ends when the subscription lags (too slow) or
/// closes (shutdown); dropped by hyper when the client goes away or the
/// watchdog closes the connection. Cleanup runs once, in `Drop`.
pub(crate) struct EventStream {
    parts: StreamParts,
    preface: Option<Bytes>,
    batch: Vec<SharedMessage<Frame>>,
    pieces: Vec<Bytes>,
    /// Armed while a replay waits for the server-wide replay pace, or a
    /// live stream for its write delay.
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
    /// When the last chunk was handed out (µs, [`clock::now_us`]); kept
    /// only with a write delay or a busy write delay.
    last_chunk_us: u64,
    /// Microseconds between the last two chunks (`u64::MAX` before two).
    last_gap_us: u64,
    ending: Option<DropReason>,
    finished: bool,
}

impl EventStream {
    pub(crate) fn new(mut parts: StreamParts) -> Self {
        parts.metrics.streams.fetch_add(1, Relaxed);
        parts
            .metrics
            .patterns
            .fetch_add(parts.patterns as i64, Relaxed);
        Self {
            preface: Some(std::mem::take(&mut parts.preface)),
            parts,
            // Grown on first use: idle streams keep no buffers.
            batch: Vec::new(),
            pieces: Vec::new(),
            wait: None,
            last_chunk_us: 0,
            last_gap_us: u64::MAX,
            ending: None,
            finished: false,
        }
    }
}

impl Stream for EventStream {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.finished || this.ending.is_some() {
            this.finished = true;
            return Poll::Ready(None);
        }
        let slot = &this.parts.slot.slot;
        slot.polled(cx.waker());
        if slot.expired.load(Relaxed) {
            // The token ran out: say so and end. Queued messages are not
            // sent: the client resumes from its last id with a fresh token
            // and gets them then, under that token's rights.
            this.ending = Some(DropReason::Expired);
            let expired = this.parts.expired.clone();
            let chunk = match this.preface.take() {
                Some(preface) => Bytes::from([&preface[..], &expired[..]].concat()),
                None => expired,
            };
            return Poll::Ready(Some(Ok(chunk)));
        }

        // A live stream written to less than the write delay ago waits for
        // the rest of it; what arrives meanwhile stays in the subscription
        // (bounded and counted there) and goes out in one write. Without
        // one, a busy stream (its last two writes less than twice the busy
        // delay apart) waits the busy delay.
        let busy = this.parts.busy_write_delay;
        let delay = match this.parts.write_delay {
            none if none.is_zero() && this.last_gap_us < 2 * busy.as_micros() as u64 => busy,
            delay => delay,
        };
        let live = this.parts.replay.is_none() && this.parts.replay_feed.is_none();
        if !delay.is_zero() && live && this.last_chunk_us != 0 {
            let since = Duration::from_micros(clock::now_us().saturating_sub(this.last_chunk_us));
            if since < delay {
                wait_for(&mut this.wait, delay - since, cx);
                return Poll::Pending;
            }
        }

        let pieces = &mut this.pieces;
        pieces.clear();
        if let Some(preface) = this.preface.take() {
            pieces.push(preface);
        }
        this.batch.clear();
        // A replay fed from the engine's log comes first, page by page, each
        // drawn from the server-wide replay pace like a replay from history.
        let fed = match (&mut this.parts.replay_feed, &this.parts.replay) {
            (None, _) => None,
            (Some(feed), None) => Some(feed.poll_page(cx)),
            (Some(feed), Some(replay)) => {
                match replay.pace().take(pace_clock(), ReplayFeed::PAGE) {
                    Ok(granted) => {
                        let page = feed.poll_page(cx);
                        // What the page did not use (all of it while the
                        // feed is still reading) goes back to the pace.
                        let used = match &page {
                            Poll::Ready(Some(Ok((_, count)))) => granted.min(*count),
                            _ => 0,
                        };
                        replay.pace().give_back(granted - used);
                        Some(page)
                    }
                    Err(wait) => {
                        wait_for(&mut this.wait, wait, cx);
                        Some(Poll::Pending)
                    }
                }
            }
        };
        let feeding = match fed {
            None => false,
            Some(Poll::Ready(Some(Ok((page, _))))) => {
                pieces.push(page);
                true
            }
            Some(Poll::Ready(Some(Err(e)))) => {
                tracing::info!(connection = %this.parts.connection, error = %e, "a replay failed midway; the client resumes");
                this.ending = Some(DropReason::ReplayFailed);
                true
            }
            Some(Poll::Ready(None)) => {
                this.parts.replay_feed = None;
                false
            }
            Some(Poll::Pending) => true,
        };
        // A replay draws its pages from the server-wide replay pace; live
        // messages are never paced.
        let limit = match &this.parts.replay {
            _ if feeding => 0,
            None if delay.is_zero() => DRAIN_BATCH,
            None => DELAYED_DRAIN_BATCH,
            Some(replay) => match replay.pace().take(pace_clock(), REPLAY_BATCH) {
                Ok(granted) => granted,
                Err(wait) => {
                    wait_for(&mut this.wait, wait, cx);
                    0
                }
            },
        };
        if limit > 0 {
            match this
                .parts
                .subscription
                .poll_recv_many(cx, &mut this.batch, limit)
            {
                Poll::Ready(Ok(_)) | Poll::Pending => {}
                Poll::Ready(Err(RecvError::Lagged)) => this.ending = Some(DropReason::Lagged),
                Poll::Ready(Err(_)) => {
                    pieces.push(this.parts.farewell.clone());
                    this.ending = Some(DropReason::Shutdown);
                }
            }
            if let Some(replay) = &this.parts.replay {
                replay.pace().give_back(limit - this.batch.len().min(limit));
            }
        }
        // Only a drain can end a replay: a paced poll (limit 0) skips the
        // look, which takes the broker's lock.
        if limit > 0 && this.parts.replay.is_some() && !this.parts.subscription.is_replaying() {
            this.parts.replay = None; // Caught up: live now.
        }
        if !this.batch.is_empty() {
            let now = clock::now_us();
            this.parts
                .metrics
                .record_latencies(this.batch.iter().map(|m| {
                    std::time::Duration::from_micros(now.saturating_sub(m.payload().published_us))
                }));
            this.parts
                .metrics
                .delivered
                .fetch_add(this.batch.len() as u64, Relaxed);
            pieces.extend(this.batch.drain(..).map(|m| m.payload().bytes.clone()));
        }
        if slot.heartbeat_due.swap(false, Relaxed) && pieces.is_empty() {
            pieces.push(Bytes::from_static(HEARTBEAT));
        }
        let chunk = match pieces.len() {
            0 if this.ending.is_some() => {
                this.finished = true;
                return Poll::Ready(None);
            }
            0 => return Poll::Pending,
            1 => pieces.pop().unwrap_or_default(),
            _ => {
                // Frames that are ready together go out in one write.
                let mut joined = Vec::with_capacity(pieces.iter().map(Bytes::len).sum());
                for piece in pieces.iter() {
                    joined.extend_from_slice(piece);
                }
                Bytes::from(joined)
            }
        };
        slot.wrote.store(true, Relaxed);
        if !delay.is_zero() || !busy.is_zero() {
            let now = clock::now_us().max(1);
            if this.last_chunk_us != 0 {
                this.last_gap_us = now.saturating_sub(this.last_chunk_us);
            }
            this.last_chunk_us = now;
        }
        Poll::Ready(Some(Ok(chunk)))
    }
}

/// The clock the replay pace runs on (monotonic, process-wide).
fn pace_clock() -> Duration {
    Duration::from_micros(clock::now_us())
}

/// Arms `sleep` to wake the stream in `wait` (the pace's refill time, or
/// what is left of the write delay).
fn wait_for(
    sleep: &mut Option<Pin<Box<tokio::time::Sleep>>>,
    wait: Duration,
    cx: &mut Context<'_>,
) {
    let deadline = tokio::time::Instant::now() + wait;
    let sleep = match sleep {
        Some(sleep) => {
            sleep.as_mut().reset(deadline);
            sleep
        }
        None => sleep.insert(Box::pin(tokio::time::sleep_until(deadline))),
    };
    if sleep.as_mut().poll(cx).is_ready() {
        // Already due: come straight back rather than wait for nothing.
        cx.waker().wake_by_ref();
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        let metrics = &self.parts.metrics;
        let reason = if self.parts.slot.slot.timed_out.load(Relaxed) {
            DropReason::WriteTimeout
        } else {
            self.ending.unwrap_or(DropReason::Closed)
        };
        metrics.dropped(reason);
        metrics.streams.fetch_sub(1, Relaxed);
        metrics
            .patterns
            .fetch_sub(self.parts.patterns as i64, Relaxed);
        tracing::debug!(connection = %self.parts.connection, ?reason, "stream ended");
        // The subscription (and with it the `exclude` registration), the
        // connection permit and the watchdog slot are released as the
        // fields drop.
    }
}
