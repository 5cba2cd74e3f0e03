//! The instance's one reader of the shared stream, and the cluster's health.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use ::redis::{AsyncConnectionConfig, Client, RedisError, Value, aio::MultiplexedConnection};
use parking_lot::Mutex;
use tidings_core::{
    hub::LogEntry,
    log::{Chain, Resync},
};
use tokio_util::sync::CancellationToken;

use super::{
    RedisSettings, StreamState,
    entry::{BadReply, Entry, StreamId, parse_xread},
    read_state,
    scripts::{BUMP_SCRIPT, meta_key},
};
use crate::{
    engine::{Hub, clock},
    stream::direct::Writes,
};

/// A read whose entries were queued for at least this many streams (each
/// entry counted once per stream) is followed by
/// the settings' `read_pause` before the next `XREAD`: meanwhile the
/// streams write what they were given and publishes pile up in the
/// stream, so the next read takes several together and each stream writes
/// them in one wake, where it would otherwise wake for each one or two.
/// Measured in the load bench (Redis, 1 message per POST, 16 in flight,
/// 1 ms): burst-1 (100 streams a message) +32-56 % deliveries/s at 27-38 %
/// less server CPU per delivery, topics-1 +11-18 %; p50 +1.0-1.7 ms. A
/// read that went to fewer (small fan-out, a quiet stream) is followed by
/// the next at once. Counted per message and stream, not per stream woken:
/// a stream still writing the last read's messages is not woken again, so
/// under a backlog a count of woken streams could fall short and the reader
/// would go back to reading one or two entries at a time.
const PAUSE_AFTER_QUEUED: usize = 32;

/// Whether Redis answers, as last seen by the reader, the prober or a
/// publish, and counters for metrics.
#[derive(Debug, Default)]
pub(super) struct Health {
    /// Why the reader cannot follow the stream; `None` while it does.
    reader_down: Mutex<Option<String>>,
    /// Why the last probe failed; `None` while Redis answers probes.
    probe_down: Mutex<Option<String>>,
    pub(super) connects: AtomicU64,
    /// `XREAD` round trips answered (with entries or after blocking).
    pub(super) polls: AtomicU64,
    /// Entries read from the stream and fed to the hub.
    pub(super) read: AtomicU64,
    /// Publishes refused because Redis could not be asked.
    pub(super) publish_unavailable: AtomicU64,
    /// Publishes whose outcome Redis did not confirm in time.
    pub(super) publish_uncertain: AtomicU64,
    /// Times entries were found lost (trimmed or gone before being read).
    pub(super) losses: AtomicU64,
    /// New epochs this instance moved to.
    pub(super) epochs: AtomicU64,
    /// Times the stream held less than this instance saw (restored from an
    /// older copy) and a new epoch was started.
    pub(super) went_back: AtomicU64,
}

impl Health {
    fn reader(&self, down: Option<String>) {
        let mut slot = self.reader_down.lock();
        if slot.is_some() && down.is_none() {
            tracing::info!("Redis answers the stream reader again; cluster mode resumed");
        }
        *slot = down;
    }

    pub(super) fn probe(&self, down: Option<String>) {
        let mut slot = self.probe_down.lock();
        if let (None, Some(why)) = (&*slot, &down) {
            tracing::warn!(reason = %why, "Redis does not answer; /healthz reports unavailable");
        }
        *slot = down;
    }

    /// `Err(why)` while Redis does not serve this instance.
    pub(super) fn check(&self) -> Result<(), String> {
        if let Some(why) = &*self.reader_down.lock() {
            return Err(why.clone());
        }
        match &*self.probe_down.lock() {
            None => Ok(()),
            Some(why) => Err(why.clone()),
        }
    }
}

/// Reads the stream after a position and feeds every entry, in order, into
/// the hub; on every (re)connect, lets the follower check what the stream
/// still holds.
pub(super) struct Reader {
    pub client: Client,
    pub hub: Arc<Hub>,
    pub health: Arc<Health>,
    pub settings: RedisSettings,
    /// The server's runtime (the reader runs on the engine's thread).
    pub runtime: tokio::runtime::Handle,
}

/// Reconnection delays: doubling from 50 ms to 2 s, with jitter so that
/// instances do not reconnect in lockstep.
struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(50);
    const MAX: Duration = Duration::from_secs(2);

    fn next(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        delay.mul_f64(rand::random_range(0.75..1.25))
    }
}

impl Reader {
    /// Runs until `stop`, reading entries after `cursor`.
    pub(super) async fn run(self, mut cursor: StreamId, stop: CancellationToken) {
        let mut backoff = Backoff {
            next: Backoff::FIRST,
        };
        let mut first = true;
        loop {
            if !first {
                let delay = backoff.next();
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            first = false;
            let connected = tokio::select! {
                _ = stop.cancelled() => return,
                connected = self.connect(&mut cursor) => connected,
            };
            let mut con = match connected {
                Ok(con) => con,
                Err(e) => {
                    self.health.reader(Some(format!("cannot connect: {e}")));
                    tracing::debug!(error = %e, "stream reader cannot connect to Redis");
                    continue;
                }
            };
            self.health.connects.fetch_add(1, Relaxed);
            self.health.reader(None);
            loop {
                let reply = tokio::select! {
                    _ = stop.cancelled() => return,
                    reply = self.read(&mut con, &cursor) => reply,
                };
                match reply {
                    Ok(reply) => match self.feed(&reply).inspect(|_| {
                        self.health.polls.fetch_add(1, Relaxed);
                    }) {
                        Ok(Some((read_to, queued))) => {
                            cursor = read_to;
                            backoff.next = Backoff::FIRST;
                            let pause = self.settings.read_pause;
                            if queued >= PAUSE_AFTER_QUEUED && !pause.is_zero() {
                                tokio::select! {
                                    _ = stop.cancelled() => return,
                                    _ = tokio::time::sleep(pause) => {}
                                }
                            }
                        }
                        Ok(None) => backoff.next = Backoff::FIRST,
                        Err(e) => {
                            // Reading it again would get the same answer:
                            // say so, and retry no faster than the backoff.
                            self.health.reader(Some(e.to_string()));
                            tracing::error!(error = %e, after = %cursor, "cannot read the Redis stream");
                            break;
                        }
                    },
                    Err(e) => {
                        self.health.reader(Some(format!("stream read failed: {e}")));
                        tracing::warn!(error = %e, after = %cursor, "lost the Redis stream; reconnecting");
                        break;
                    }
                }
            }
        }
    }

    /// Connects, then lets the follower judge what the stream holds now:
    /// entries lost while this instance was away are announced to its
    /// streams, a new epoch is begun (and read from its start), a stream
    /// that went back gets a new epoch.
    async fn connect(&self, cursor: &mut StreamId) -> Result<MultiplexedConnection, RedisError> {
        // The response timeout must outlast the blocking read.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(self.settings.block + Duration::from_secs(3)));
        let mut con = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let key = &self.settings.stream_key;
        loop {
            // Publishes acknowledged after the question may be newer than
            // the answer: the ticket keeps them from looking lost.
            let ticket = self.hub.resync_ticket();
            let state: StreamState = read_state(&mut con, key).await?;
            match self.hub.resync(state.log, ticket, clock::now_us()) {
                Resync::Continue => {}
                Resync::Lost { through } => {
                    self.health.losses.fetch_add(1, Relaxed);
                    tracing::warn!(
                        through = %tidings_core::message::MessageId::new(state.log.epoch, through),
                        "entries after the last one this instance read are gone from the Redis stream (trimmed while it was away); its streams were told with tidings.gap. Raise --redis-history or give Redis persistence"
                    );
                }
                Resync::NewEpoch { epoch, .. } => {
                    self.health.epochs.fetch_add(1, Relaxed);
                    *cursor = state.start;
                    tracing::warn!(
                        %epoch,
                        "the Redis stream started a new epoch (Redis lost its data or the key was recreated): this instance's streams were told with tidings.gap"
                    );
                }
                Resync::WentBack { head, seen } => {
                    self.health.went_back.fetch_add(1, Relaxed);
                    tracing::warn!(
                        head,
                        seen,
                        "the Redis stream holds less than this instance saw (restored from an older copy?): starting a new epoch so no id is reused"
                    );
                    let _: String = BUMP_SCRIPT
                        .key(key)
                        .key(meta_key(key))
                        .arg(clock::random_epoch().to_string())
                        .arg(state.log.epoch.to_string())
                        .invoke_async(&mut con)
                        .await?;
                    continue;
                }
            }
            return Ok(con);
        }
    }

    async fn read(
        &self,
        con: &mut MultiplexedConnection,
        cursor: &str,
    ) -> Result<Value, RedisError> {
        ::redis::cmd("XREAD")
            .arg("COUNT")
            .arg(self.settings.read_count.max(1))
            .arg("BLOCK")
            .arg(self.settings.block.as_millis().max(1) as u64)
            .arg("STREAMS")
            .arg(&self.settings.stream_key)
            .arg(cursor)
            .query_async(con)
            .await
    }

    /// Feeds a reply's entries in order; returns the new cursor, if any,
    /// and how many messages it queued for streams.
    fn feed(&self, reply: &Value) -> Result<Option<(StreamId, usize)>, BadReply> {
        let entries = parse_xread(reply, &self.settings.stream_key)?;
        let Some(last) = entries.last() else {
            return Ok(None);
        };
        let read_to = last.stream_id().to_owned();
        self.health.read.fetch_add(entries.len() as u64, Relaxed);
        let queued = feed(&self.hub, &self.health, &entries, Some(&self.runtime));
        Ok(Some((read_to, queued)))
    }
}

/// Feeds entries to the hub (skipping and logging foreign ones); returns
/// how many messages they queued for streams (one per entry and stream).
/// The streams are written here, on the engine's thread, where they can
/// take it (see [`crate::stream::direct`]): a wake of a stream's task from
/// this thread costs about what its write does, and the task's poll comes
/// on top; past the first 256, on `runtime` (the server's).
pub(super) fn feed(
    hub: &Hub,
    health: &Health,
    entries: &[Entry],
    runtime: Option<&tokio::runtime::Handle>,
) -> usize {
    let mut log_entries = Vec::with_capacity(entries.len());
    for entry in entries {
        match entry {
            Entry::Message {
                id,
                message,
                accepted_us,
                ..
            } => log_entries.push(LogEntry {
                id: *id,
                chain: Chain::Log,
                message,
                published_us: clock::from_unix_micros(*accepted_us),
            }),
            Entry::Foreign(at, why) => {
                tracing::warn!(%at, why, "skipping a stream entry not written by Tidings");
            }
        }
    }
    // A read's entries are a batch: busy streams are written here too.
    let fed = crate::stream::direct::waking(Writes::Any, runtime, |wakes| {
        hub.feed_deferred(&log_entries, clock::now_us(), wakes)
    });
    if fed.gaps > 0 {
        health.losses.fetch_add(fed.gaps as u64, Relaxed);
        tracing::warn!(
            position = %hub.position(),
            "entries were lost before this instance read them (trimmed under the reader, or a new epoch): its streams were told with tidings.gap"
        );
    }
    fed.queued
}
