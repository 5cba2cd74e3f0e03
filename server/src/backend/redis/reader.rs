//! The instance's one reader of the shared stream, and the cluster's health.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use ::redis::{AsyncConnectionConfig, Client, RedisError, Value, aio::MultiplexedConnection};
use parking_lot::Mutex;
use tidings_core::broker::MessageId;
use tokio_util::sync::CancellationToken;

use super::{
    RedisSettings, ensure_floor,
    entry::{BadReply, Entry, parse_entries, parse_xread},
};
use crate::backend::Fanout;

/// Whether Redis answers, as last seen by the reader or a publish.
#[derive(Debug, Default)]
pub(super) struct Health {
    /// Why Redis is considered unavailable; `None` while it answers.
    down: Mutex<Option<String>>,
    connects: AtomicU64,
    /// Times the reader lost its connection: a publisher connection made
    /// before the last loss is presumed dead too (Redis restarted).
    losses: AtomicU64,
    /// `XREAD` round trips answered (with entries or after blocking).
    pub(super) polls: AtomicU64,
    /// Entries read from the stream and fed to the fan-out.
    pub(super) read: AtomicU64,
    /// Publishes Redis did not take.
    pub(super) publish_failures: AtomicU64,
    /// Reconnections that found entries after the last one read gone.
    pub(super) possibly_missed: AtomicU64,
}

impl Health {
    pub(super) fn down(&self, why: String) {
        *self.down.lock() = Some(why);
    }

    fn up(&self) {
        let mut down = self.down.lock();
        if down.is_some() {
            *down = None;
            drop(down);
            tracing::info!("Redis answers again; cluster mode resumed");
        }
    }

    pub(super) fn check(&self) -> Result<(), String> {
        match &*self.down.lock() {
            None => Ok(()),
            Some(why) => Err(why.clone()),
        }
    }

    pub(super) fn connects(&self) -> u64 {
        self.connects.load(Relaxed)
    }

    pub(super) fn losses(&self) -> u64 {
        self.losses.load(Relaxed)
    }
}

/// Reads the stream after a position and feeds every entry, in order, into
/// the fan-out; reconnects with backoff whenever Redis goes away.
pub(super) struct Reader {
    pub client: Client,
    pub fanout: Arc<Fanout>,
    pub health: Arc<Health>,
    pub settings: RedisSettings,
}

/// Reconnection delays: doubling from 50 ms to 2 s, with jitter so that
/// instances do not reconnect in lockstep.
struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(50);
    const MAX: Duration = Duration::from_secs(2);

    fn new() -> Self {
        Self { next: Self::FIRST }
    }

    fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    fn next(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        delay.mul_f64(rand::random_range(0.75..1.25))
    }
}

impl Reader {
    /// Runs until `stop`, reading entries after `from`.
    pub(super) async fn run(self, mut from: MessageId, stop: CancellationToken) {
        let mut backoff = Backoff::new();
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
            let mut con = tokio::select! {
                _ = stop.cancelled() => return,
                con = self.connect(from) => match con {
                    Ok(con) => con,
                    Err(e) => {
                        self.health.down(format!("cannot connect: {e}"));
                        tracing::debug!(error = %e, "stream reader cannot connect to Redis");
                        continue;
                    }
                },
            };
            self.health.connects.fetch_add(1, Relaxed);
            // Connected and the floor check answered: Redis serves again.
            self.health.up();
            loop {
                let reply = tokio::select! {
                    _ = stop.cancelled() => return,
                    reply = self.read(&mut con, from) => reply,
                };
                match reply {
                    Ok(reply) => match self.feed(&reply, from) {
                        Ok(read_to) => {
                            from = read_to;
                            self.health.polls.fetch_add(1, Relaxed);
                            self.health.up();
                            backoff.reset();
                        }
                        Err(e) => {
                            // Reading it again would get the same answer:
                            // say so, and retry no faster than the backoff.
                            self.health.down(e.to_string());
                            tracing::error!(error = %e, after = %from, "cannot read the Redis stream");
                            break;
                        }
                    },
                    Err(e) => {
                        self.health.losses.fetch_add(1, Relaxed);
                        self.health.down(format!("stream read failed: {e}"));
                        tracing::warn!(error = %e, after = %from, "lost the Redis stream; reconnecting");
                        break;
                    }
                }
            }
        }
    }

    async fn connect(&self, from: MessageId) -> Result<MultiplexedConnection, RedisError> {
        // The response timeout must outlast the blocking read.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(self.settings.block + Duration::from_secs(3)));
        let mut con = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let seen = self.fanout.broker().lock().last_id().max(Some(from));
        ensure_floor(&mut con, &self.settings.stream_key, seen).await?;
        self.check_trimmed(&mut con, from).await?;
        Ok(con)
    }

    /// Reports when entries after `from` may have been removed before this
    /// instance read them: `from` itself is gone and the oldest entry left
    /// is newer (the stream's bound trimmed past it while this instance was
    /// away, or Redis restarted and lost what it had not read yet). Its
    /// clients miss those entries and nothing can bring them back.
    pub(super) async fn check_trimmed(
        &self,
        con: &mut MultiplexedConnection,
        from: MessageId,
    ) -> Result<(), RedisError> {
        if from == MessageId::ZERO {
            return Ok(());
        }
        let key = &self.settings.stream_key;
        let from_text = from.to_string();
        let (at_from, oldest): (Value, Value) = ::redis::pipe()
            .cmd("XRANGE")
            .arg(key)
            .arg(&from_text)
            .arg(&from_text)
            .cmd("XRANGE")
            .arg(key)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query_async(con)
            .await?;
        let still_there = parse_entries(&at_from).is_ok_and(|e| !e.is_empty());
        let oldest = parse_entries(&oldest)
            .ok()
            .and_then(|e| e.first().map(Entry::id));
        if let Some(oldest) = oldest.filter(|o| !still_there && *o > from) {
            self.health.possibly_missed.fetch_add(1, Relaxed);
            // A client resuming from before the lost entries must hear of
            // it: its replay from this instance would look complete.
            self.fanout.broker().lock().forget_through(oldest);
            tracing::warn!(
                after = %from,
                oldest = %oldest,
                "entries after the last one this instance read may be gone from the Redis stream (trimmed while it was away, or lost by a Redis restart); clients resuming from before them get tidings.gap, clients that were live miss them. Raise --redis-history or give Redis persistence"
            );
        }
        Ok(())
    }

    async fn read(
        &self,
        con: &mut MultiplexedConnection,
        from: MessageId,
    ) -> Result<Value, RedisError> {
        ::redis::cmd("XREAD")
            .arg("COUNT")
            .arg(self.settings.read_count.max(1))
            .arg("BLOCK")
            .arg(self.settings.block.as_millis().max(1) as u64)
            .arg("STREAMS")
            .arg(&self.settings.stream_key)
            .arg(from.to_string())
            .query_async(con)
            .await
    }

    /// Feeds a reply's entries in order; returns the new position.
    fn feed(&self, reply: &Value, mut from: MessageId) -> Result<MessageId, BadReply> {
        let entries = parse_xread(reply, &self.settings.stream_key)?;
        for entry in entries {
            let id = entry.id();
            if id <= from {
                continue; // Never expected from XREAD; never fed twice.
            }
            from = id;
            self.health.read.fetch_add(1, Relaxed);
            match entry {
                Entry::Message(id, message, accepted_us) => {
                    let published_at = accepted_at(accepted_us);
                    if let Err(e) = self.fanout.publish_with_id_at(id, &message, published_at) {
                        tracing::error!(error = %e, "dropped a stream entry the broker refused");
                    }
                }
                Entry::Foreign(id, why) => {
                    tracing::warn!(%id, why, "skipping a stream entry not written by Tidings");
                }
            }
        }
        Ok(from)
    }
}

/// The instant a publish was accepted, from its wall-clock time in the
/// entry (taken on whichever instance accepted it): the latency metric then
/// includes the trip through Redis. Clocks of other hosts may disagree, so
/// anything not within the last minute counts as now.
fn accepted_at(accepted_us: Option<u64>) -> Instant {
    let now = Instant::now();
    let Some(accepted_us) = accepted_us else {
        return now;
    };
    let now_us = super::unix_micros();
    now_us
        .checked_sub(accepted_us)
        .map(Duration::from_micros)
        .filter(|age| *age <= Duration::from_secs(60))
        .and_then(|age| now.checked_sub(age))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acceptance_time_comes_from_the_entry_within_a_minute() {
        let now_us = crate::backend::unix_millis() * 1000;
        assert!(accepted_at(Some(now_us - 5_000_000)).elapsed() >= Duration::from_secs(5));
        // An hour old or in the future (clock skew): counted from now.
        assert!(accepted_at(Some(now_us - 3_600_000_000)).elapsed() < Duration::from_secs(60));
        assert!(accepted_at(Some(now_us + 3_600_000_000)).elapsed() < Duration::from_secs(60));
        assert!(accepted_at(None).elapsed() < Duration::from_secs(60));
    }
}
