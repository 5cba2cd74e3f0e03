//! One task for every stream's timers: heartbeats, stuck-client drops and
//! token expiry.
//!
//! A timer per stream would wake thousands of tasks; instead the watchdog
//! walks the registered streams on a coarse tick (at most a second), marks
//! heartbeats due (waking only streams that wrote nothing since the last
//! round), marks streams whose token is no longer accepted as expired (the
//! stream then sends `tidings.expired` and ends), and closes streams that
//! cannot write for longer than the write timeout:
//!
//! - their socket refuses writes (HTTP/1, or an HTTP/2 connection whose
//!   client stopped reading altogether): the connection is closed;
//! - or the stream was woken for a heartbeat and its body has not been
//!   polled since. On HTTP/2 that is how a stuck stream shows: the client
//!   reads the connection but not this stream, its flow-control window
//!   stays shut, and hyper stops polling the body while the socket is fine.
//!   Only that stream is closed (`RST_STREAM`); the others on the
//!   connection go on.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use atomic_waker::AtomicWaker;
use slab::Slab;
use tokio_util::sync::CancellationToken;

use super::io::{IoState, monotonic_millis};

/// What the watchdog and a stream share.
#[derive(Debug, Default)]
pub(crate) struct StreamSlot {
    pub(crate) waker: AtomicWaker,
    pub(crate) heartbeat_due: AtomicBool,
    pub(crate) wrote: AtomicBool,
    /// Set when the watchdog closed the connection for a write timeout.
    pub(crate) timed_out: AtomicBool,
    /// Set (and the stream woken) once the token is no longer accepted.
    pub(crate) expired: AtomicBool,
    /// When the stream's token stops being accepted (ms since the Unix
    /// epoch); 0 for streams without a token, which never expire.
    expires_at_ms: u64,
    /// [`monotonic_millis`] when the watchdog woke the stream for a
    /// heartbeat and it had not run since; 0 once it runs.
    waiting_since: AtomicU64,
    io: Option<Arc<IoState>>,
}

impl StreamSlot {
    /// Called by the stream each time its body is polled: registers its
    /// waker and records that it makes progress.
    pub(crate) fn polled(&self, waker: &std::task::Waker) {
        self.waker.register(waker);
        if self.waiting_since.load(Relaxed) != 0 {
            self.waiting_since.store(0, Relaxed);
        }
    }

    /// Milliseconds since the stream was woken without running, at `now`.
    fn waiting_for(&self, now: u64) -> u64 {
        match self.waiting_since.load(Relaxed) {
            0 => 0,
            since => now.saturating_sub(since),
        }
    }
}

/// Streams to look after.
#[derive(Debug)]
pub(crate) struct Watchdog {
    slots: Mutex<Slab<Arc<StreamSlot>>>,
    heartbeat: Duration,
    write_timeout: Duration,
}

/// A registered stream; dropping it unregisters.
#[derive(Debug)]
pub(crate) struct SlotGuard {
    watchdog: Arc<Watchdog>,
    key: usize,
    pub(crate) slot: Arc<StreamSlot>,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.watchdog.lock().try_remove(self.key);
    }
}

impl Watchdog {
    pub(crate) fn new(heartbeat: Duration, write_timeout: Duration) -> Self {
        Self {
            slots: Mutex::default(),
            heartbeat,
            write_timeout,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slab<Arc<StreamSlot>>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a stream whose connection is `io` (if known) and whose
    /// token stops being accepted at `expires_at_ms` (ms since the Unix
    /// epoch; `None` without a token).
    pub(crate) fn register(
        self: &Arc<Self>,
        io: Option<Arc<IoState>>,
        expires_at_ms: Option<u64>,
    ) -> SlotGuard {
        let slot = Arc::new(StreamSlot {
            io,
            expires_at_ms: expires_at_ms.map_or(0, |ms| ms.max(1)),
            ..StreamSlot::default()
        });
        let key = self.lock().insert(slot.clone());
        SlotGuard {
            watchdog: self.clone(),
            key,
            slot,
        }
    }

    /// Streams registered now.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// One round: close stuck connections, expire streams whose token ran
    /// out; if `heartbeat`, mark heartbeats due.
    fn sweep(&self, heartbeat: bool) {
        let now = monotonic_millis();
        let timeout = self.write_timeout.as_millis() as u64;
        // Token expiry is wall-clock time, like the token's `exp`.
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        for (_, slot) in self.lock().iter() {
            if slot.expires_at_ms != 0
                && unix_ms >= slot.expires_at_ms
                && !slot.expired.swap(true, Relaxed)
            {
                slot.waker.wake();
            }
            if let Some(io) = &slot.io {
                let stuck = io.blocked_for(now).max(slot.waiting_for(now)) >= timeout;
                if stuck && !slot.timed_out.swap(true, Relaxed) {
                    io.kill_stuck(now, timeout);
                }
            }
            if heartbeat && !slot.wrote.swap(false, Relaxed) {
                slot.heartbeat_due.store(true, Relaxed);
                let _ = slot
                    .waiting_since
                    .compare_exchange(0, now, Relaxed, Relaxed);
                slot.waker.wake();
            }
        }
    }

    /// Ticks until `stop` is cancelled.
    pub(crate) async fn run(self: Arc<Self>, stop: CancellationToken) {
        let tick = self
            .heartbeat
            .min(self.write_timeout / 2)
            .min(Duration::from_secs(1))
            .max(Duration::from_millis(10));
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heartbeat = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                now = interval.tick() => {
                    let heartbeat = now.duration_since(last_heartbeat) >= self.heartbeat;
                    if heartbeat {
                        last_heartbeat = now;
                    }
                    self.sweep(heartbeat);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_streams_whose_token_ran_out_are_marked_expired() {
        let watchdog = Arc::new(Watchdog::new(
            Duration::from_secs(15),
            Duration::from_secs(30),
        ));
        let public = watchdog.register(None, None);
        let past = watchdog.register(None, Some(1));
        let future = watchdog.register(None, Some(u64::MAX));
        watchdog.sweep(false);
        assert!(!public.slot.expired.load(Relaxed));
        assert!(past.slot.expired.load(Relaxed));
        assert!(!future.slot.expired.load(Relaxed));
    }
}
