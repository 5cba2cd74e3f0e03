//! The body of `GET /events`: pre-encoded frames, batched into one chunk
//! per wake-up.

use std::{
    convert::Infallible,
    future::Future,
    os::fd::RawFd,
    pin::Pin,
    sync::{Arc, atomic::Ordering::Relaxed},
    task::{Context, Poll, Waker},
    time::Duration,
};

use bytes::Bytes;
use futures_core::Stream;
use tidings_core::{
    broker::{RecvError, SharedMessage},
    message::{ConnectionId, Frame},
    sse::HEARTBEAT,
};

use super::{
    direct::{DirectHandle, SharedStream, Writes, write_parts},
    watchdog::{SlotGuard, StreamSlot},
};
use crate::{
    engine::{FrameSubscription, ReplayFeed, clock},
    limits::{ConnectionPermit, ReplayPermit},
    metrics::{DropReason, Metrics},
    presence::PresenceGuard,
};

/// Most messages taken from the subscription per chunk.
const DRAIN_BATCH: usize = 64;

/// Most chunks one direct write sends before it leaves the rest to the
/// task (messages that keep arriving while it writes).
const DIRECT_ROUNDS: usize = 4;

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
    /// `retry:`, `tidings.connected` and maybe `tidings.gap`, sent first
    /// (empty once sent).
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
/// watchdog closes the connection. Cleanup runs once, when the state drops.
///
/// Its state is shared with the waker it leaves with the broker, which
/// writes to the socket itself when it can (see [`super::direct`]).
pub(crate) struct EventStream {
    shared: Arc<SharedStream>,
    /// Left with the broker when the queue is empty, where direct writes
    /// may happen (else the task's own waker is).
    waker: Option<Waker>,
}

/// What the body's poll and a direct write work on (under the shared lock).
pub(crate) struct StreamState {
    parts: StreamParts,
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
    /// The lean writer's plain socket, while direct writes may use it.
    pub(super) socket: Option<RawFd>,
    /// A chunk (or a tail) handed to the writer is not written yet (the
    /// lean writer polls the body again only once it is).
    pub(super) in_flight: bool,
    /// What a direct write could not write: the writer's next bytes.
    pub(super) tail: Option<Box<[u8]>>,
}

impl EventStream {
    /// A stream of `parts`; with `direct`, its publishers may write it
    /// (see [`super::direct`]) once the lean writer attaches its socket.
    pub(crate) fn new(direct: bool, parts: StreamParts) -> Self {
        parts.metrics.streams.fetch_add(1, Relaxed);
        parts
            .metrics
            .patterns
            .fetch_add(parts.patterns as i64, Relaxed);
        let slot = parts.slot.slot.clone();
        let state = StreamState {
            parts,
            wait: None,
            last_chunk_us: 0,
            last_gap_us: u64::MAX,
            ending: None,
            finished: false,
            socket: None,
            in_flight: false,
            tail: None,
        };
        let shared = SharedStream::new(state, slot);
        Self {
            waker: direct.then(|| Waker::from(shared.clone())),
            shared,
        }
    }

    /// The lean writer's hold on this stream, if it may be written
    /// directly.
    pub(crate) fn direct_handle(&self) -> Option<DirectHandle> {
        self.waker.as_ref()?;
        Some(DirectHandle(self.shared.clone()))
    }
}

impl Stream for EventStream {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        match this.shared.state.lock().as_mut() {
            Some(state) => state.poll_next(cx, this.waker.as_ref()),
            None => Poll::Ready(None),
        }
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        // Dropped outside the lock: unsubscribing takes the broker's.
        let state = self.shared.state.lock().take();
        drop(state);
    }
}

impl StreamState {
    /// The body's poll; `direct` is the waker to leave with the broker
    /// where direct writes may happen (else the task's own).
    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        direct: Option<&Waker>,
    ) -> Poll<Option<Result<Bytes, Infallible>>> {
        let this = self;
        // Polled again: what it handed out last time is written.
        this.in_flight = false;
        if this.finished || this.ending.is_some() {
            this.finished = true;
            return Poll::Ready(None);
        }
        let slot = &this.parts.slot.slot;
        slot.polled(cx.waker());
        if this.tail.is_some() {
            // The writer finishes a direct write's chunk first.
            return Poll::Pending;
        }
        if slot.expired.load(Relaxed) {
            // The token ran out: say so and end. Queued messages are not
            // sent: the client resumes from its last id with a fresh token
            // and gets them then, under that token's rights.
            this.ending = Some(DropReason::Expired);
            let expired = this.parts.expired.clone();
            let chunk = match std::mem::take(&mut this.parts.preface) {
                preface if !preface.is_empty() => {
                    Bytes::from([&preface[..], &expired[..]].concat())
                }
                _ => expired,
            };
            return Poll::Ready(Some(Ok(chunk)));
        }

        // A live stream written to less than the write delay ago waits for
        // the rest of it; what arrives meanwhile stays in the subscription
        // (bounded and counted there) and goes out in one write. Without
        // one, a busy stream (its last two writes less than twice the busy
        // delay apart) waits the busy delay.
        let delay = this.delay();
        if let Some(left) = this.delay_left(delay) {
            wait_for(&mut this.wait, left, cx);
            return Poll::Pending;
        }

        // Buffers of the thread, not of the stream: idle streams keep none.
        let mut scratch = Scratch::take();
        let Scratch { batch, pieces } = &mut *scratch;
        let preface = std::mem::take(&mut this.parts.preface);
        if !preface.is_empty() {
            pieces.push(preface);
        }
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
            // The broker wakes this waker, which may write by itself.
            let mut broker_cx = Context::from_waker(direct.unwrap_or(cx.waker()));
            match this
                .parts
                .subscription
                .poll_recv_many(&mut broker_cx, batch, limit)
            {
                Poll::Ready(Ok(_)) | Poll::Pending => {}
                Poll::Ready(Err(RecvError::Lagged)) => this.ending = Some(DropReason::Lagged),
                Poll::Ready(Err(_)) => {
                    pieces.push(this.parts.farewell.clone());
                    this.ending = Some(DropReason::Shutdown);
                }
            }
            if let Some(replay) = &this.parts.replay {
                replay.pace().give_back(limit - batch.len().min(limit));
            }
        }
        // Only a drain can end a replay: a paced poll (limit 0) skips the
        // look, which takes the broker's lock.
        if limit > 0 && this.parts.replay.is_some() && !this.parts.subscription.is_replaying() {
            this.parts.replay = None; // Caught up: live now.
        }
        if !batch.is_empty() {
            this.record_batch(batch, clock::now_us());
            pieces.extend(batch.drain(..).map(|m| m.payload().bytes.clone()));
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
        this.wrote_chunk(delay);
        this.in_flight = true;
        Poll::Ready(Some(Ok(chunk)))
    }

    /// True once the stream sends live messages only (its replay is done).
    fn is_live(&self) -> bool {
        self.parts.replay.is_none() && self.parts.replay_feed.is_none()
    }

    /// The least time between two writes now: the write delay, else the
    /// busy delay for a busy stream, else zero.
    fn delay(&self) -> Duration {
        if self.is_busy() {
            self.parts.busy_write_delay
        } else {
            self.parts.write_delay
        }
    }

    /// True, without a write delay, for a stream whose last two writes
    /// were closer than twice the busy delay.
    fn is_busy(&self) -> bool {
        self.parts.write_delay.is_zero()
            && self.last_gap_us < 2 * self.parts.busy_write_delay.as_micros() as u64
    }

    /// How long a live stream must still wait before its next write (no
    /// clock read for streams without a delay).
    fn delay_left(&self, delay: Duration) -> Option<Duration> {
        (!delay.is_zero())
            .then(|| self.delay_left_at(delay, clock::now_us()))
            .flatten()
    }

    /// [`delay_left`](Self::delay_left) at `now` (µs, [`clock::now_us`]).
    fn delay_left_at(&self, delay: Duration, now: u64) -> Option<Duration> {
        if delay.is_zero() || !self.is_live() || self.last_chunk_us == 0 {
            return None;
        }
        let since = Duration::from_micros(now.saturating_sub(self.last_chunk_us));
        (since < delay).then(|| delay - since)
    }

    /// Counts the messages of `batch` as delivered at `now`.
    fn record_batch(&self, batch: &[SharedMessage<Frame>], now: u64) {
        let metrics = &self.parts.metrics;
        metrics.record_latencies(
            batch
                .iter()
                .map(|m| Duration::from_micros(now.saturating_sub(m.payload().published_us))),
        );
        metrics.delivered.fetch_add(batch.len() as u64, Relaxed);
    }

    /// True when a delay may apply, so writes are timed.
    fn keeps_time(&self, delay: Duration) -> bool {
        !delay.is_zero() || !self.parts.busy_write_delay.is_zero()
    }

    /// Notes that a chunk went out (for the watchdog and the delays).
    fn wrote_chunk(&mut self, delay: Duration) {
        let now = if self.keeps_time(delay) {
            clock::now_us()
        } else {
            0
        };
        self.wrote_chunk_at(delay, now);
    }

    /// [`wrote_chunk`](Self::wrote_chunk) at `now` (µs, [`clock::now_us`]).
    fn wrote_chunk_at(&mut self, delay: Duration, now: u64) {
        self.parts.slot.slot.wrote.store(true, Relaxed);
        if self.keeps_time(delay) {
            let now = now.max(1);
            if self.last_chunk_us != 0 {
                self.last_gap_us = now.saturating_sub(self.last_chunk_us);
            }
            self.last_chunk_us = now;
        }
    }

    /// A direct write (see [`super::direct`]): drains what waits and
    /// writes it to the attached socket as chunks, until the queue is
    /// empty (`waker` is then left with the broker: true). False when the
    /// task must run instead: the stream is not idle and live, it is busy
    /// or a delay is due, the subscription lagged or closed, or the socket
    /// did not take a whole chunk (its rest is the writer's next bytes).
    ///
    /// With [`Writes::Calm`] (a publish of one message), a busy stream is
    /// left to its task even once its delay has passed: the task runs a
    /// little later than a publisher would write, with more messages
    /// waiting by then (written at once, 100 streams of one busy topic
    /// took 20-25 % fewer deliveries a second at 20-45 % more CPU each).
    pub(super) fn write_direct(
        &mut self,
        waker: &Waker,
        slot: &StreamSlot,
        writes: Writes,
    ) -> bool {
        let Some(fd) = self.socket else {
            return false;
        };
        let idle = !self.in_flight && self.tail.is_none() && self.parts.preface.is_empty();
        if !idle || self.finished || self.ending.is_some() || !self.is_live() {
            return false;
        }
        if slot.expired.load(Relaxed) {
            return false;
        }
        let mut scratch = Scratch::take();
        let batch = &mut scratch.batch;
        for _ in 0..DIRECT_ROUNDS {
            let now = clock::now_us();
            let delay = self.delay();
            let busy = self.is_busy() && writes == Writes::Calm;
            if busy || self.delay_left_at(delay, now).is_some() {
                return false; // The task waits, then writes what piled up.
            }
            batch.clear();
            let subscription = &mut self.parts.subscription;
            let listening = match subscription.recv_many_then_listen(waker, batch, DRAIN_BATCH) {
                // Never an empty chunk: in chunked coding it ends the body.
                Ok((0, listening)) => return listening,
                Ok((_, listening)) => listening,
                Err(_) => return false,
            };
            self.record_batch(batch, now);
            let mut size = [0u8; 18];
            let len = batch.iter().map(|m| m.payload().bytes.len()).sum();
            let size_len = crate::conn::chunk_size_line(len, &mut size);
            let frames = batch.iter().map(|m| &m.payload().bytes[..]);
            let chunk = std::iter::once(&size[..size_len])
                .chain(frames)
                .chain(std::iter::once(&b"\r\n"[..]));
            let rest = write_parts(fd, chunk);
            batch.clear();
            self.parts.metrics.direct_writes.fetch_add(1, Relaxed);
            self.wrote_chunk_at(delay, now);
            if !rest.is_empty() {
                self.parts.metrics.direct_short_writes.fetch_add(1, Relaxed);
                self.tail = Some(rest.into_boxed_slice());
                return false;
            }
            if listening {
                return true; // The next message wakes this waker again.
            }
        }
        false
    }
}

/// Buffers for one poll or one direct write, kept by the thread (a poll
/// never runs inside another, and a direct write never inside a poll): a
/// stream keeps none between writes. Given back, emptied, when dropped.
#[derive(Default)]
struct Scratch {
    batch: Vec<SharedMessage<Frame>>,
    pieces: Vec<Bytes>,
}

thread_local! {
    static SCRATCH: std::cell::Cell<Scratch> = std::cell::Cell::new(Scratch::default());
}

impl Scratch {
    /// The thread's buffers (fresh ones if they are in use).
    fn take() -> ScratchGuard {
        ScratchGuard(SCRATCH.take())
    }
}

/// [`Scratch`] on loan from the thread.
struct ScratchGuard(Scratch);

impl std::ops::Deref for ScratchGuard {
    type Target = Scratch;
    fn deref(&self) -> &Scratch {
        &self.0
    }
}

impl std::ops::DerefMut for ScratchGuard {
    fn deref_mut(&mut self) -> &mut Scratch {
        &mut self.0
    }
}

impl Drop for ScratchGuard {
    fn drop(&mut self) {
        self.0.batch.clear();
        self.0.pieces.clear();
        SCRATCH.set(std::mem::take(&mut self.0));
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

impl Drop for StreamState {
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
