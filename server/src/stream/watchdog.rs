//! One task for every stream's timers: heartbeats and stuck-client drops.
//!
//! A timer per stream would wake thousands of tasks; instead the watchdog
//! walks the registered streams on a coarse tick, marks heartbeats due
//! (waking only streams that wrote nothing since the last round) and closes
//! connections whose socket has refused writes for longer than the write
//! timeout.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    time::Duration,
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
    io: Option<Arc<IoState>>,
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

    /// Registers a stream whose connection is `io` (if known).
    pub(crate) fn register(self: &Arc<Self>, io: Option<Arc<IoState>>) -> SlotGuard {
        let slot = Arc::new(StreamSlot {
            io,
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

    /// One round: close stuck connections; if `heartbeat`, mark heartbeats due.
    fn sweep(&self, heartbeat: bool) {
        let now = monotonic_millis();
        let timeout = self.write_timeout.as_millis() as u64;
        for (_, slot) in self.lock().iter() {
            if let Some(io) = &slot.io {
                if io.blocked_for(now) >= timeout && !slot.timed_out.swap(true, Relaxed) {
                    io.kill.cancel();
                }
            }
            if heartbeat && !slot.wrote.swap(false, Relaxed) {
                slot.heartbeat_due.store(true, Relaxed);
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
