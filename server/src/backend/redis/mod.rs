//! Cluster mode: many instances share messages and history through a Redis
//! stream.
//!
//! The stream (`XADD key MAXLEN ~ N * topic T type Y data D [exclude C]`)
//! is the deployment's one ordered log, and an entry's Redis id *is* the
//! message's SSE id, so a `Last-Event-ID` means the same thing on every
//! instance:
//!
//! - **Publish** appends the batch in one `MULTI`/`EXEC` (it keeps its
//!   order and is all-or-nothing) and answers with the ids once Redis has
//!   them; when Redis cannot be reached the publish fails (503), it is
//!   never dropped silently. Nothing is delivered locally at this point.
//! - **One reader per instance** (never a Redis connection per client)
//!   loops `XREAD BLOCK`, and feeds every entry, in stream order, into the
//!   instance's [`Fanout`] with [`Fanout::publish_with_id`]: each entry is
//!   encoded to SSE once per instance, every instance delivers in the same
//!   order, and `exclude` (a connection id) is resolved by the instance that
//!   holds that connection.
//! - **At start** the newest `N` entries are loaded into the local history,
//!   so a client that moves to a freshly started instance resumes from its
//!   `Last-Event-ID` with no loss and no duplicate; ids older than what was
//!   loaded resume with a gap. The broker runs with
//!   [`ResumeAhead::Await`]: a client coming from an instance that has read
//!   further than this one waits for the entries after its id instead of
//!   getting them twice or a false gap.
//! - **Redis goes away**: publishes answer 503, `/healthz` answers 503,
//!   open streams stay open (heartbeats come from the instance), the reader
//!   reconnects with backoff and continues after the last entry it fed.
//!
//! Ids after a Redis restart: auto ids are `<redis ms clock>-<seq>`, so an
//! empty stream after a restart still produces ids above everything read
//! before. In case the clock went back too, every new connection (reader or
//! publisher) first recreates a missing stream with its last-generated id
//! set to the newest id this instance has seen, so new ids stay above it.
//! What remains: Redis lost its data *and* its clock went back *and* an
//! instance that had seen less publishes first.
//!
//! Limits, on purpose:
//! - A publish that times out (Redis slow, not down) answers 503, yet Redis
//!   may have appended it: a client that retries may publish it twice.
//! - An instance that stops reading for longer than the stream's bound
//!   lasts (`--redis-history` entries), or whose Redis restarts without
//!   persistence before it read everything, cannot get those entries back.
//!   It notices on reconnect (`tidings_redis_possibly_missed_total`, a
//!   warning in the log); its clients are not told with a gap.
//! - A resume id further ahead of Redis's clock than a minute cannot have
//!   been generated: such a client starts live with a gap instead of
//!   waiting for it.

mod entry;
mod reader;

use std::{
    fmt::Write as _,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use ::redis::{
    AsyncConnectionConfig, Client, RedisError, Value,
    aio::{ConnectionLike, MultiplexedConnection},
};
use tidings_core::{
    broker::{BrokerConfig, MessageId, ResumeAhead, Subscribed},
    topic::Pattern,
};
use tokio::{sync::Mutex, task::JoinHandle};
use tokio_util::sync::{CancellationToken, DropGuard};

use self::{
    entry::{Entry, parse_entries, parse_id, xadd},
    reader::{Health, Reader},
};
use super::{
    Backend, BackendError, BoxFuture, ConnectionId, Fanout, FrameSubscription, Outgoing,
    unix_millis,
};

/// Default key of the shared stream.
pub const DEFAULT_STREAM_KEY: &str = "tidings:events";
/// Default bound of the shared stream (entries, approximate).
pub const DEFAULT_HISTORY: usize = 100_000;
/// How far ahead of Redis's clock a resume id may be before it counts as
/// impossible (clock drift since start, ms).
const MAX_CLOCK_SKEW_MS: u64 = 60_000;
/// Entries per reply when an instance loads the history at start.
const PRELOAD_PAGE: usize = 5_000;
/// After a failed connection attempt, publishes fail at once for this
/// long instead of each trying again.
const RECONNECT_QUIET: Duration = Duration::from_millis(250);
/// A publisher connection unused for this long is pinged before use.
const IDLE_CHECK: Duration = Duration::from_millis(500);

/// Cluster settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// Key of the shared stream; instances that share it form one
    /// deployment.
    pub stream_key: String,
    /// Entries the stream keeps (`MAXLEN ~`) and each instance loads into
    /// its history at start.
    pub history: usize,
    /// How long one `XREAD` blocks before it is issued again.
    pub block: Duration,
    /// Most entries one `XREAD` returns.
    pub read_count: usize,
    /// How long a publish waits for Redis before answering 503.
    pub publish_timeout: Duration,
}

impl RedisSettings {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            stream_key: DEFAULT_STREAM_KEY.to_owned(),
            history: DEFAULT_HISTORY,
            block: Duration::from_secs(2),
            read_count: 1000,
            publish_timeout: Duration::from_secs(3),
        }
    }
}

/// Why cluster mode could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisStartError {
    /// The URL is not a Redis URL.
    #[error("`--redis` is not a usable Redis URL ({0}); expected redis://HOST:PORT")]
    BadUrl(RedisError),
    /// Redis did not answer at start.
    #[error(
        "cannot reach Redis at {addr} for cluster mode: {source}; start Redis or check --redis"
    )]
    Unreachable {
        /// Host and port (without credentials).
        addr: String,
        /// What failed.
        source: RedisError,
    },
    /// The stream key holds something that is not a Tidings stream.
    #[error(
        "cannot load the history from Redis key `{key}`: {reason}; choose another --redis-stream-key"
    )]
    BadStream {
        /// The key.
        key: String,
        /// What was wrong.
        reason: String,
    },
}

/// The cluster backend. See the [module docs](self).
pub struct RedisBackend {
    fanout: Arc<Fanout>,
    client: Client,
    settings: RedisSettings,
    /// Where publishes go, with the reader's loss count when it was made;
    /// `None` after a failure until the next publish reconnects.
    publisher: Mutex<Option<(u64, MultiplexedConnection)>>,
    /// When the publisher connection last answered (ms after `started`).
    publisher_used_ms: AtomicU64,
    /// When connecting the publisher last failed (ms after `started`; 0:
    /// it did not).
    connect_failed_ms: AtomicU64,
    started: Instant,
    health: Arc<Health>,
    /// Redis's clock minus ours at start (ms), to tell whether an id could
    /// have been generated yet.
    clock_offset_ms: i64,
    reader: std::sync::Mutex<Option<JoinHandle<()>>>,
    stop: CancellationToken,
    _stop_on_drop: DropGuard,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("redis", &self.addr())
            .field("stream_key", &self.settings.stream_key)
            .field("health", &self.health)
            .finish_non_exhaustive()
    }
}

impl RedisBackend {
    /// Connects, loads the newest [`history`](RedisSettings::history)
    /// entries into a new fan-out (with `config`, switched to
    /// [`ResumeAhead::Await`]) and starts the reader. Fails when Redis does
    /// not answer.
    pub async fn connect(
        mut settings: RedisSettings,
        config: BrokerConfig,
    ) -> Result<Self, RedisStartError> {
        // `MAXLEN ~ 0` would leave nothing to resume from.
        settings.history = settings.history.max(1);
        let client = Client::open(settings.url.as_str()).map_err(RedisStartError::BadUrl)?;
        let addr = client.get_connection_info().addr().to_string();
        let unreachable = |source| RedisStartError::Unreachable {
            addr: addr.clone(),
            source,
        };
        let mut con = client
            .get_multiplexed_async_connection_with_config(&publisher_config(&settings))
            .await
            .map_err(unreachable)?;
        let preload = load_history(&mut con, &settings)
            .await
            .map_err(|e| match e {
                LoadError::Redis(source) => unreachable(source),
                LoadError::Reply(reason) => RedisStartError::BadStream {
                    key: settings.stream_key.clone(),
                    reason,
                },
            })?;

        let fanout = Arc::new(Fanout::new(
            config.resume_ahead(ResumeAhead::Await),
            preload.first,
        ));
        let mut loaded = 0;
        for entry in &preload.entries {
            // History, not live: its latency is not this instance's.
            if let Entry::Message(id, message, _) = entry {
                if fanout.publish_with_id(*id, message).is_ok() {
                    loaded += 1;
                }
            }
        }
        tracing::info!(
            redis = %addr,
            stream = %settings.stream_key,
            loaded,
            first = %preload.first,
            "cluster mode: history loaded from the Redis stream"
        );

        let health = Arc::new(Health::default());
        let stop = CancellationToken::new();
        let reader = Reader {
            client: client.clone(),
            fanout: fanout.clone(),
            health: health.clone(),
            settings: settings.clone(),
        };
        let task = tokio::spawn(reader.run(preload.read_from, stop.clone()));
        Ok(Self {
            fanout,
            client,
            settings,
            publisher: Mutex::new(Some((0, con))),
            publisher_used_ms: AtomicU64::new(0),
            connect_failed_ms: AtomicU64::new(0),
            started: Instant::now(),
            health,
            clock_offset_ms: preload.clock_offset_ms,
            reader: std::sync::Mutex::new(Some(task)),
            _stop_on_drop: stop.clone().drop_guard(),
            stop,
        })
    }

    /// Host and port of Redis (no credentials).
    pub fn addr(&self) -> String {
        self.client.get_connection_info().addr().to_string()
    }

    /// The cluster settings in force.
    pub fn settings(&self) -> &RedisSettings {
        &self.settings
    }

    /// Redis's clock now, as estimated from its `TIME` at start.
    fn redis_now_ms(&self) -> u64 {
        unix_millis().saturating_add_signed(self.clock_offset_ms)
    }

    /// Times the reader has (re)connected to Redis since start.
    pub fn reader_connects(&self) -> u64 {
        self.health.connects()
    }

    async fn publisher(&self) -> Result<MultiplexedConnection, RedisError> {
        let mut slot = self.publisher.lock().await;
        let losses = self.health.losses();
        match &mut *slot {
            Some((made, con)) if *made == losses => {
                // Redis may close connections idle for its `timeout`: after
                // a quiet while, check before trusting it with a publish
                // (retrying a failed publish could append it twice).
                if self.idle_for() < IDLE_CHECK {
                    return Ok(con.clone());
                }
                let ping: Result<String, _> = ::redis::cmd("PING").query_async(con).await;
                if ping.is_ok() {
                    self.mark_used();
                    return Ok(con.clone());
                }
                *slot = None;
            }
            // The reader lost Redis since this connection was made: Redis
            // went away, so this one is most likely dead too. A publish
            // must not fail on it once Redis is back.
            _ => *slot = None,
        }
        // While Redis does not answer, publishes queue up on this lock: let
        // one attempt speak for all of them for a moment instead of each
        // waiting out its own connection timeout in turn.
        let failed = self.connect_failed_ms.load(Relaxed);
        let now_ms = self.started.elapsed().as_millis() as u64;
        if failed > 0 && now_ms.saturating_sub(failed) < RECONNECT_QUIET.as_millis() as u64 {
            return Err(RedisError::from((
                ::redis::ErrorKind::Io,
                "Redis did not answer a moment ago",
            )));
        }
        let con = async {
            let mut con = self
                .client
                .get_multiplexed_async_connection_with_config(&publisher_config(&self.settings))
                .await?;
            let seen = self.fanout.broker().lock().last_id();
            ensure_floor(&mut con, &self.settings.stream_key, seen).await?;
            Ok::<_, RedisError>(con)
        }
        .await;
        let con = match con {
            Ok(con) => con,
            Err(e) => {
                let now = (self.started.elapsed().as_millis() as u64).max(1);
                self.connect_failed_ms.store(now, Relaxed);
                return Err(e);
            }
        };
        self.connect_failed_ms.store(0, Relaxed);
        *slot = Some((losses, con.clone()));
        self.mark_used();
        Ok(con)
    }

    /// Time since the publisher connection last answered.
    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.publisher_used_ms.load(Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    fn mark_used(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.publisher_used_ms.fetch_max(now, Relaxed);
    }

    async fn append(&self, batch: &[Outgoing]) -> Result<Vec<MessageId>, RedisError> {
        let mut con = self.publisher().await?;
        let accepted_us = unix_micros();
        let mut pipe = ::redis::pipe();
        if batch.len() > 1 {
            pipe.atomic();
        }
        for message in batch {
            pipe.add_command(xadd(
                &self.settings.stream_key,
                self.settings.history,
                message,
                accepted_us,
            ));
        }
        let reply: Vec<Value> = match pipe.query_async(&mut con).await {
            Ok(reply) => {
                self.mark_used();
                reply
            }
            Err(e) => {
                // Whatever broke, start the next publish on a new connection.
                *self.publisher.lock().await = None;
                return Err(e);
            }
        };
        reply
            .iter()
            .map(|id| {
                parse_id(id).map_err(|e| {
                    RedisError::from((::redis::ErrorKind::UnexpectedReturnType, "XADD", e.0))
                })
            })
            .collect()
    }
}

impl Backend for RedisBackend {
    fn publish(&self, batch: Vec<Outgoing>) -> BoxFuture<'_, Result<Vec<MessageId>, BackendError>> {
        Box::pin(async move {
            if batch.is_empty() {
                return Ok(Vec::new());
            }
            match self.append(&batch).await {
                Ok(ids) => Ok(ids),
                Err(e) => {
                    self.health.publish_failures.fetch_add(1, Relaxed);
                    tracing::warn!(error = %e, count = batch.len(), "publish to Redis failed");
                    if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                        self.health.down(format!("publish failed: {e}"));
                    }
                    let outcome = if e.is_timeout() {
                        "Redis may still have taken it, so a retry may publish it twice"
                    } else {
                        "nothing was published, retry later"
                    };
                    Err(BackendError(format!(
                        "the cluster's Redis ({}) did not take it: {e}; {outcome}",
                        self.addr()
                    )))
                }
            }
        })
    }

    fn fanout(&self) -> &Arc<Fanout> {
        &self.fanout
    }

    fn subscribe(
        &self,
        patterns: Vec<Pattern>,
        resume: Option<MessageId>,
        connection: ConnectionId,
    ) -> BoxFuture<'_, Result<(FrameSubscription, Subscribed), BackendError>> {
        // A resume id ahead of this instance waits for the entries after it
        // (another instance has read further). But an id Redis cannot have
        // generated yet (a garbage or foreign id) would silence the stream
        // for good: start live and report a gap instead.
        let impossible = resume.is_some_and(|id| id.time > self.redis_now_ms() + MAX_CLOCK_SKEW_MS);
        let result = if impossible {
            let (subscription, mut subscribed) = self.fanout.subscribe(&patterns, None, connection);
            subscribed.gap = true;
            (subscription, subscribed)
        } else {
            self.fanout.subscribe(&patterns, resume, connection)
        };
        Box::pin(async move { Ok(result) })
    }

    fn ready(&self) -> Result<(), BackendError> {
        self.health
            .check()
            .map_err(|why| BackendError(format!("Redis ({}) unavailable: {why}", self.addr())))
    }

    fn render_metrics(&self, out: &mut String) {
        let h = &self.health;
        let up = u64::from(h.check().is_ok());
        let mut metric = |kind: &str, name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "gauge",
            "tidings_redis_up",
            "1 while the cluster's Redis answers.",
            up,
        );
        metric(
            "counter",
            "tidings_redis_reader_connects_total",
            "Times the stream reader (re)connected to Redis.",
            h.connects(),
        );
        metric(
            "counter",
            "tidings_redis_entries_read_total",
            "Entries read from the shared stream.",
            h.read.load(Relaxed),
        );
        metric(
            "counter",
            "tidings_redis_publish_failures_total",
            "Publishes answered 503 because Redis did not take them.",
            h.publish_failures.load(Relaxed),
        );
        metric(
            "counter",
            "tidings_redis_possibly_missed_total",
            "Reconnections that found entries after the last one read gone (trimmed or lost).",
            h.possibly_missed.load(Relaxed),
        );
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        self.stop.cancel();
        let task = self.reader.lock().unwrap_or_else(|e| e.into_inner()).take();
        Box::pin(async move {
            if let Some(task) = task {
                let _ = task.await;
            }
        })
    }
}

fn publisher_config(settings: &RedisSettings) -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(settings.publish_timeout))
}

/// What a starting instance loads.
struct Preload {
    /// Oldest first.
    entries: Vec<Entry>,
    /// The smallest id the broker will see.
    first: MessageId,
    /// Where the reader continues.
    read_from: MessageId,
    /// Redis's clock minus ours (ms).
    clock_offset_ms: i64,
}

enum LoadError {
    Redis(RedisError),
    Reply(String),
}

async fn load_history(
    con: &mut impl ConnectionLike,
    settings: &RedisSettings,
) -> Result<Preload, LoadError> {
    let classify = |e: RedisError| {
        if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
            LoadError::Redis(e)
        } else {
            // Redis answered, with an error about the key (WRONGTYPE).
            LoadError::Reply(e.to_string())
        }
    };
    // Newest first, in pages, so a large history never makes one huge
    // reply. The first page shares a transaction with the clock reading, so
    // no entry can land in between (it would be below `first`).
    // One entry more than kept: it is not loaded, but a client that read
    // it misses nothing, so it is the floor rather than a gap.
    let wanted = settings.history + 1;
    let page = wanted.min(PRELOAD_PAGE);
    let (time, range): (Value, Value) = ::redis::pipe()
        .atomic()
        .cmd("TIME")
        .cmd("XREVRANGE")
        .arg(&settings.stream_key)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(page)
        .query_async(con)
        .await
        .map_err(classify)?;
    let mut entries = parse_entries(&range).map_err(|e| LoadError::Reply(e.to_string()))?;
    let mut last_page = entries.len();
    while last_page == page && entries.len() < wanted {
        let oldest = entries.last().map_or(MessageId::ZERO, Entry::id);
        let count = page.min(wanted - entries.len());
        let range: Value = ::redis::cmd("XREVRANGE")
            .arg(&settings.stream_key)
            .arg(format!("({oldest}"))
            .arg("-")
            .arg("COUNT")
            .arg(count)
            .query_async(con)
            .await
            .map_err(classify)?;
        let older = parse_entries(&range).map_err(|e| LoadError::Reply(e.to_string()))?;
        last_page = if older.len() == count { page } else { 0 };
        entries.extend(older);
    }
    entries.reverse();
    let floor = (entries.len() == wanted).then(|| entries.remove(0).id());
    let redis_now = redis_time_ms(&time).map_err(LoadError::Reply)?;
    let clock_offset_ms = redis_now as i64 - unix_millis() as i64;
    Ok(match (entries.first(), entries.last()) {
        (Some(oldest), Some(newest)) => Preload {
            first: floor.unwrap_or(oldest.id()),
            read_from: newest.id(),
            entries,
            clock_offset_ms,
        },
        // Nothing retained: everything from now on is new, and a resume id
        // from before now cannot be served.
        _ => Preload {
            entries,
            first: MessageId::new(redis_now, 0),
            read_from: MessageId::ZERO,
            clock_offset_ms,
        },
    })
}

/// Microseconds since the Unix epoch.
fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn redis_time_ms(value: &Value) -> Result<u64, String> {
    let parts: Vec<u64> = ::redis::from_redis_value_ref(value)
        .map_err(|e| format!("TIME answered {value:?}: {e}"))?;
    match parts[..] {
        [secs, micros] => Ok(secs * 1000 + micros / 1000),
        _ => Err(format!("TIME answered {value:?}")),
    }
}

/// Recreates a missing stream with its last-generated id at `seen`, so
/// that ids Redis generates next are above everything this instance has
/// read (Redis restarted empty, maybe with its clock behind).
async fn ensure_floor(
    con: &mut impl ConnectionLike,
    key: &str,
    seen: Option<MessageId>,
) -> Result<(), RedisError> {
    const SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('XADD', KEYS[1], ARGV[1], 'tidings', 'floor')
  redis.call('XDEL', KEYS[1], ARGV[1])
  return 1
end
return 0";
    let Some(seen) = seen.filter(|id| *id > MessageId::ZERO) else {
        return Ok(());
    };
    let created: i64 = ::redis::cmd("EVAL")
        .arg(SCRIPT)
        .arg(1)
        .arg(key)
        .arg(seen.to_string())
        .query_async(con)
        .await?;
    if created == 1 {
        tracing::warn!(
            stream = key,
            after = %seen,
            "the Redis stream was missing (Redis restarted without its data?); recreated it so new ids stay above the ones already delivered"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests;
