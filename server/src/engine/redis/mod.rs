//! Cluster mode: many instances share messages and history through a Redis
//! stream.
//!
//! The stream is the deployment's one ordered log. The decisions are the
//! core's ([`tidings_core::log::Follower`] inside the [`Hub`]); this
//! engine moves bytes:
//!
//! - **Publish** runs one script (`scripts.rs`) that numbers the batch in
//!   the log's epoch, appends it (`XADD ... MAXLEN ~ N`) and records its
//!   idempotency keys, atomically; the publisher is answered with the ids
//!   `EPOCH-SEQ` only once Redis has them. Publishes share one pipelined
//!   connection (no lock around a round trip) and never wait longer than
//!   the publish timeout.
//! - **One reader per instance** (never a Redis connection per client)
//!   loops `XREAD BLOCK` and feeds every entry, in stream order, into the
//!   hub: each entry is encoded to SSE once per instance, every instance
//!   delivers in the same order, and `exclude` is resolved by the instance
//!   that holds that connection. Sequence numbers follow each other, so the
//!   follower *proves* nothing was skipped; when entries were trimmed
//!   before this instance read them, its streams are told `tidings.gap`.
//! - **Every (re)connect** reads the log's state (epoch, last number,
//!   oldest entry) and lets the follower judge: a Redis that came back
//!   empty has a new epoch (streams are told, clients resuming from the
//!   old one are told), a stream restored from an older copy gets a new
//!   epoch so no id is ever reused.
//! - **At start** the newest `N` entries of the epoch are loaded into the
//!   local history, so a client that moves to a freshly started instance
//!   resumes from its `Last-Event-ID` with no loss and no duplicate. A
//!   resume id ahead of this instance is waited for only if Redis has
//!   produced it (its `n` says so); otherwise the stream gets a gap and
//!   goes live.
//! - **A thread of its own** runs the Redis connections (the publisher's
//!   and the reader's): their round trips never queue behind the stream
//!   tasks of the server's runtime, which a burst of deliveries fills.
//! - **Redis goes away or stalls**: a probe every 250 ms turns `/healthz`
//!   503 within a second; publishes answer 503 (with "may have been
//!   published" when it was sent but not confirmed: retry with the same
//!   idempotency key); open streams stay open and delivery resumes when
//!   Redis is back.

mod entry;
mod reader;
mod scripts;

use std::{
    fmt::Write as _,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use ::redis::{AsyncConnectionConfig, Client, RedisError, Value, aio::MultiplexedConnection};
use tidings_core::{
    broker::Placement,
    hub::HubConfig,
    log::{GapReason, LogState},
    message::{Epoch, MessageId, Outgoing},
};
use tokio::{runtime::Handle, task::JoinHandle};
use tokio_util::sync::{CancellationToken, DropGuard};

use self::{
    entry::{Entry, StreamId, parse_entries, text},
    reader::{Health, Reader},
    scripts::{PUBLISH_SCRIPT, STATE_SCRIPT, meta_key},
};
use super::{Accepted, BoxFuture, Engine, EngineError, Hub, KeyReused, PublishError, clock};
use crate::metrics::write_metric;

/// Default key of the shared stream.
pub const DEFAULT_STREAM_KEY: &str = "tidings:events";
/// Default bound of the shared stream (entries, approximate).
pub const DEFAULT_HISTORY: usize = 100_000;
/// Entries per reply when an instance loads the history at start.
const PRELOAD_PAGE: usize = 5_000;
/// After a failed connection attempt, publishes fail at once for this
/// long instead of each trying again.
const RECONNECT_QUIET: Duration = Duration::from_millis(250);
/// How often the probe asks Redis whether it answers.
const PROBE_EVERY: Duration = Duration::from_millis(250);
/// A probe not answered within this long marks Redis unavailable.
const PROBE_TIMEOUT: Duration = Duration::from_millis(750);

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
    /// Longest a publish waits for Redis before answering 503.
    pub publish_timeout: Duration,
    /// How long Redis remembers an idempotency key.
    pub idempotency_window: Duration,
    /// How this instance writes entries (every form is read).
    pub entry_format: EntryFormat,
    /// The pause after a read whose entries went to many streams, before the
    /// next `XREAD` (zero: none). See `reader.rs`.
    pub read_pause: Duration,
}

/// How an instance writes entries to the shared stream (see `entry.rs`).
/// Every instance reads both; builds from before 2026-12-03 read only
/// [`Fields`](Self::Fields), so a cluster that still runs one is upgraded
/// with `--redis-entry-format 1` until every instance runs this build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum EntryFormat {
    /// One field/value pair per part (`e`, `n`, `topic`, `type`, `data`,
    /// `at`, `exclude`): what earlier builds write and read.
    #[value(name = "1")]
    Fields,
    /// One field, `m` (a quarter of the values to store, send and parse).
    #[default]
    #[value(name = "2")]
    OneField,
}

impl EntryFormat {
    /// As the publish script takes it.
    fn script_arg(self) -> &'static str {
        match self {
            Self::Fields => "1",
            Self::OneField => "2",
        }
    }
}

/// `--redis-read-pause-ms`: the pause after a read that went to many
/// streams.
pub const DEFAULT_READ_PAUSE: Duration = Duration::from_millis(1);

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
            idempotency_window: Duration::from_secs(120),
            entry_format: EntryFormat::default(),
            read_pause: DEFAULT_READ_PAUSE,
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
    /// The engine's thread could not be started.
    #[error(
        "cannot start the thread for Redis connections: {0}; the system may be out of threads or memory"
    )]
    Thread(std::io::Error),
    /// The stream key holds something that is not a Tidings stream.
    #[error(
        "cannot use Redis key `{key}` as the shared stream: {reason}; choose another --redis-stream-key"
    )]
    BadStream {
        /// The key.
        key: String,
        /// What was wrong.
        reason: String,
    },
}

/// The log's state as the state script reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StreamState {
    log: LogState,
    /// Stream id before the epoch's first entry.
    start: StreamId,
}

/// Reads (and if need be starts) the log's epoch and state.
async fn read_state(con: &mut MultiplexedConnection, key: &str) -> Result<StreamState, RedisError> {
    let (epoch, head, start, oldest): (String, u64, String, i64) = STATE_SCRIPT
        .key(key)
        .key(meta_key(key))
        .arg(clock::random_epoch().to_string())
        .invoke_async(con)
        .await?;
    let epoch = epoch.parse::<Epoch>().map_err(|_| {
        RedisError::from((
            ::redis::ErrorKind::UnexpectedReturnType,
            "the stream's meta hash holds no Tidings epoch",
            epoch,
        ))
    })?;
    Ok(StreamState {
        log: LogState {
            epoch,
            head,
            oldest: u64::try_from(oldest).ok(),
        },
        start,
    })
}

/// Starts the thread that runs the engine's Redis connections (their
/// drivers and the reader) until `stop` (the engine dropped): a reply is read, and the publish
/// that waits for it woken, at once, instead of after every stream task
/// the server's runtime has queued (a delivery wakes them all).
fn start_io_thread(stop: CancellationToken) -> std::io::Result<Handle> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name("tidings-redis".into())
        .spawn(move || runtime.block_on(stop.cancelled()))?;
    Ok(handle)
}

/// Opens a connection on the engine's thread (`io`), so that its driver
/// runs there.
async fn open(
    io: &Handle,
    client: &Client,
    config: AsyncConnectionConfig,
) -> Result<MultiplexedConnection, RedisError> {
    let client = client.clone();
    io.spawn(async move {
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    })
    .await
    .unwrap_or_else(|_| {
        Err(RedisError::from((
            ::redis::ErrorKind::Io,
            "the thread for Redis connections has stopped",
        )))
    })
}

/// The publisher's connection and when connecting last failed.
#[derive(Default)]
struct Publisher {
    con: Option<(u64, MultiplexedConnection)>,
    generation: u64,
    failed_at: Option<Instant>,
}

/// A publish waiting to go out in a group.
struct Queued {
    batch: Vec<Outgoing>,
    done: tokio::sync::oneshot::Sender<Result<Vec<Accepted>, PublishError>>,
}

/// Publishes waiting for the group in flight to be answered.
#[derive(Default)]
struct Groups {
    queue: std::collections::VecDeque<Queued>,
    /// A task is sending groups (it empties `queue` before it ends).
    sending: bool,
}

/// Most messages one publish script carries when publishes are grouped.
const GROUP_MESSAGES: usize = 256;

/// The publisher's side of the engine: its connection, and the publishes
/// queued behind the group in flight.
struct Link {
    client: Client,
    settings: RedisSettings,
    meta_key: String,
    publisher: parking_lot::Mutex<Publisher>,
    /// The engine's thread (see [`start_io_thread`]).
    io: Handle,
    /// One connection attempt at a time; the others wait for its outcome.
    connecting: tokio::sync::Mutex<()>,
    groups: parking_lot::Mutex<Groups>,
    /// Publish scripts sent (one per group).
    scripts: AtomicU64,
}

/// The cluster engine. See the [module docs](self).
pub struct RedisEngine {
    hub: Arc<Hub>,
    link: Arc<Link>,
    health: Arc<Health>,
    published: AtomicU64,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
    stop: CancellationToken,
    _stop_on_drop: DropGuard,
    /// Ends the engine's thread.
    _io_on_drop: DropGuard,
}

impl std::fmt::Debug for RedisEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisEngine")
            .field("redis", &self.addr())
            .field("stream_key", &self.link.settings.stream_key)
            .field("health", &self.health)
            .finish_non_exhaustive()
    }
}

impl RedisEngine {
    /// Connects, loads the newest [`history`](RedisSettings::history)
    /// entries of the log's epoch into a new hub (with `config`), and
    /// starts the reader and the probe. Fails when Redis does not answer.
    pub async fn connect(
        mut settings: RedisSettings,
        config: HubConfig,
    ) -> Result<Self, RedisStartError> {
        // `MAXLEN ~ 0` would leave nothing to resume from.
        settings.history = settings.history.max(1);
        let client = Client::open(settings.url.as_str()).map_err(RedisStartError::BadUrl)?;
        let addr = client.get_connection_info().addr().to_string();
        let unreachable = |source| RedisStartError::Unreachable {
            addr: addr.clone(),
            source,
        };
        // The thread ends when the engine drops (publishes still work
        // after `shutdown`), or here if starting fails.
        let io_stop = CancellationToken::new();
        let io_on_drop = io_stop.clone().drop_guard();
        let io = start_io_thread(io_stop).map_err(RedisStartError::Thread)?;
        let mut con = open(&io, &client, publisher_config(&settings))
            .await
            .map_err(unreachable)?;
        let bad_stream = |e: RedisError| {
            if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
                unreachable(e)
            } else {
                // Redis answered, with an error about the key (WRONGTYPE).
                RedisStartError::BadStream {
                    key: settings.stream_key.clone(),
                    reason: e.to_string(),
                }
            }
        };
        let state = read_state(&mut con, &settings.stream_key)
            .await
            .map_err(bad_stream)?;
        let (entries, cursor) =
            load_history(&mut con, &settings, &state)
                .await
                .map_err(|e| match e {
                    LoadError::Redis(e) => bad_stream(e),
                    LoadError::Reply(reason) => RedisStartError::BadStream {
                        key: settings.stream_key.clone(),
                        reason,
                    },
                })?;
        let floor = entries.iter().find_map(|e| match e {
            Entry::Message { id, .. } => Some(id.seq - 1),
            Entry::Foreign(..) => None,
        });
        let hub = Arc::new(Hub::new(
            config,
            state.log.epoch,
            floor.unwrap_or(state.log.head),
        ));
        let health = Arc::new(Health::default());
        let _ = reader::feed(&hub, &health, &entries, None);
        tracing::info!(
            redis = %addr,
            stream = %settings.stream_key,
            loaded = entries.len(),
            position = %hub.position(),
            "cluster mode: history loaded from the Redis stream"
        );

        let stop = CancellationToken::new();
        let reader = Reader {
            client: client.clone(),
            hub: hub.clone(),
            health: health.clone(),
            settings: settings.clone(),
            runtime: Handle::current(),
        };
        let reader = io.spawn(reader.run(cursor, stop.clone()));
        let engine = Self {
            hub,
            link: Arc::new(Link {
                meta_key: meta_key(&settings.stream_key),
                client,
                settings,
                publisher: parking_lot::Mutex::new(Publisher {
                    con: Some((0, con)),
                    ..Publisher::default()
                }),
                io,
                connecting: tokio::sync::Mutex::new(()),
                groups: parking_lot::Mutex::default(),
                scripts: AtomicU64::new(0),
            }),
            health,
            published: AtomicU64::new(0),
            tasks: std::sync::Mutex::new(vec![reader]),
            _stop_on_drop: stop.clone().drop_guard(),
            _io_on_drop: io_on_drop,
            stop,
        };
        Ok(engine)
    }

    /// Starts the probe that keeps `/healthz` honest within a second (and
    /// the publisher connection warm: Redis may close idle ones).
    pub fn start_probe(self: &Arc<Self>) {
        let engine = Arc::downgrade(self);
        let stop = self.stop.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(PROBE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let Some(engine) = engine.upgrade() else {
                    return;
                };
                engine.probe().await;
            }
        });
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(task);
    }

    async fn probe(&self) {
        let outcome = tokio::time::timeout(PROBE_TIMEOUT, async {
            let (generation, mut con) = self.link.connection().await?;
            let pong: Result<String, RedisError> = ::redis::cmd("PING").query_async(&mut con).await;
            pong.inspect_err(|e| self.link.discard(generation, e))
        })
        .await;
        self.health.probe(match outcome {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(format!("Redis does not answer: {e}")),
            Err(_) => Some(format!(
                "Redis did not answer within {} ms",
                PROBE_TIMEOUT.as_millis()
            )),
        });
    }

    /// Host and port of Redis (no credentials).
    pub fn addr(&self) -> String {
        self.link.addr()
    }

    /// The cluster settings in force.
    pub fn settings(&self) -> &RedisSettings {
        &self.link.settings
    }

    /// Times the reader has (re)connected to Redis since start.
    pub fn reader_connects(&self) -> u64 {
        self.health.connects.load(Relaxed)
    }
}

impl Link {
    /// Host and port of Redis (no credentials).
    fn addr(&self) -> String {
        self.client.get_connection_info().addr().to_string()
    }

    /// The shared publisher connection, made when there is none. Never holds
    /// a lock across a round trip, except while connecting.
    async fn connection(&self) -> Result<(u64, MultiplexedConnection), RedisError> {
        if let Some((generation, con)) = &self.publisher.lock().con {
            return Ok((*generation, con.clone()));
        }
        let _connecting = self.connecting.lock().await;
        {
            let publisher = self.publisher.lock();
            if let Some((generation, con)) = &publisher.con {
                return Ok((*generation, con.clone()));
            }
            // While Redis does not answer, one attempt speaks for all the
            // publishes behind it for a moment.
            if publisher
                .failed_at
                .is_some_and(|t| t.elapsed() < RECONNECT_QUIET)
            {
                return Err(RedisError::from((
                    ::redis::ErrorKind::Io,
                    "Redis did not answer a moment ago",
                )));
            }
        }
        let made = open(&self.io, &self.client, publisher_config(&self.settings)).await;
        let mut publisher = self.publisher.lock();
        match made {
            Ok(con) => {
                publisher.generation += 1;
                publisher.failed_at = None;
                publisher.con = Some((publisher.generation, con.clone()));
                Ok((publisher.generation, con))
            }
            Err(e) => {
                publisher.failed_at = Some(Instant::now());
                Err(e)
            }
        }
    }

    /// Drops the publisher connection `generation` after `error` if the
    /// error says it is broken (the next publish makes a new one).
    fn discard(&self, generation: u64, error: &RedisError) {
        if error.is_io_error() || error.is_connection_dropped() || error.is_unrecoverable_error() {
            let mut publisher = self.publisher.lock();
            if publisher
                .con
                .as_ref()
                .is_some_and(|(g, _)| *g == generation)
            {
                publisher.con = None;
            }
        }
    }

    async fn append(&self, batch: &[Outgoing]) -> Result<Vec<Accepted>, PublishError> {
        let unavailable = |e: &dyn std::fmt::Display| {
            PublishError::Unavailable(EngineError::new(format!(
                "Redis at {} did not take the publish: {e}",
                self.addr()
            )))
        };
        let (generation, mut con) = self.connection().await.map_err(|e| unavailable(&e))?;
        let mut script = PUBLISH_SCRIPT.key(&self.settings.stream_key);
        script
            .key(&self.meta_key)
            .arg(clock::random_epoch().to_string())
            .arg(self.settings.history)
            .arg(clock::unix_micros())
            .arg(self.settings.idempotency_window.as_millis().max(1) as u64)
            .arg(batch.len())
            .arg(self.settings.entry_format.script_arg());
        for message in batch {
            script
                .arg(message.topic.as_str())
                .arg(message.event_type.as_str())
                .arg(&message.data)
                .arg(message.exclude.map(|c| c.to_string()).unwrap_or_default())
                .arg(message.idempotency_key.as_ref().map_or("", |k| k.as_str()))
                .arg(if message.idempotency_key.is_some() {
                    message.fingerprint().to_string()
                } else {
                    String::new()
                });
        }
        let reply: Value = match script.invoke_async(&mut con).await {
            Ok(reply) => reply,
            Err(e) => {
                self.discard(generation, &e);
                // Sent but the connection broke or timed out: Redis may have
                // run it. An error answer means the script did not run.
                return Err(
                    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
                        PublishError::Uncertain(EngineError::new(format!(
                            "Redis at {} did not confirm the publish: {e}",
                            self.addr()
                        )))
                    } else {
                        unavailable(&e)
                    },
                );
            }
        };
        parse_publish_reply(&reply, batch.len()).map_err(|e| match e {
            ReplyError::Conflict(reused) => PublishError::KeyReused(reused),
            ReplyError::Bad(why) => unavailable(&why),
        })
    }

    /// Queues `batch` behind the group in flight and waits for its ids:
    /// the publishes that arrive while one script is answered go out
    /// together in the next, so concurrent publishes share a round trip
    /// (and Redis one script run) instead of taking one each. Groups go
    /// out one at a time, in the order their publishes came.
    async fn publish_grouped(
        self: &Arc<Self>,
        batch: Vec<Outgoing>,
    ) -> Result<Vec<Accepted>, PublishError> {
        let (done, answer) = tokio::sync::oneshot::channel();
        let start = {
            let mut groups = self.groups.lock();
            groups.queue.push_back(Queued { batch, done });
            !std::mem::replace(&mut groups.sending, true)
        };
        if start {
            let link = self.clone();
            self.io.spawn(async move { link.send_groups().await });
        }
        answer.await.unwrap_or_else(|_| {
            Err(PublishError::Uncertain(EngineError::new(format!(
                "the publish to Redis at {} was cut off: the engine stopped",
                self.addr()
            ))))
        })
    }

    /// Sends the queued publishes, a group at a time, until none wait.
    async fn send_groups(&self) {
        loop {
            let mut group = {
                let mut groups = self.groups.lock();
                let mut group: Vec<Queued> = Vec::new();
                let mut messages = 0;
                while let Some(next) = groups.queue.front() {
                    if next.done.is_closed() {
                        // Its publisher gave up (timeout, client gone): it
                        // was never sent, so it is never published.
                        groups.queue.pop_front();
                        continue;
                    }
                    // A batch with idempotency keys goes alone: a reused
                    // key refuses its own batch, never its neighbours'.
                    let keyed = next.batch.iter().any(|m| m.idempotency_key.is_some());
                    if !group.is_empty() && (keyed || messages + next.batch.len() > GROUP_MESSAGES)
                    {
                        break;
                    }
                    let Some(next) = groups.queue.pop_front() else {
                        break;
                    };
                    messages += next.batch.len();
                    group.push(next);
                    if keyed {
                        break;
                    }
                }
                if group.is_empty() {
                    groups.sending = false;
                    return;
                }
                group
            };
            let mut sizes = Vec::with_capacity(group.len());
            let mut all = Vec::new();
            for queued in &mut group {
                sizes.push(queued.batch.len());
                all.append(&mut queued.batch);
            }
            self.scripts.fetch_add(1, Relaxed);
            let outcome = tokio::time::timeout(self.settings.publish_timeout, self.append(&all))
                .await
                .unwrap_or_else(|_| {
                    Err(PublishError::Uncertain(EngineError::new(format!(
                        "Redis at {} did not confirm the publish within {} ms",
                        self.addr(),
                        self.settings.publish_timeout.as_millis()
                    ))))
                });
            match outcome {
                Ok(accepted) => {
                    let mut accepted = accepted.into_iter();
                    for (queued, size) in group.into_iter().zip(sizes) {
                        let _ = queued.done.send(Ok(accepted.by_ref().take(size).collect()));
                    }
                }
                Err(e) => {
                    for queued in group {
                        let _ = queued.done.send(Err(match &e {
                            PublishError::Unavailable(e) => PublishError::Unavailable(e.clone()),
                            PublishError::Uncertain(e) => PublishError::Uncertain(e.clone()),
                            PublishError::KeyReused(reused) => PublishError::KeyReused(*reused),
                        }));
                    }
                }
            }
        }
    }
}

enum ReplyError {
    Conflict(KeyReused),
    Bad(String),
}

/// `{'ok', id, repeat, ...}` or `{'conflict', index, id}`.
fn parse_publish_reply(reply: &Value, count: usize) -> Result<Vec<Accepted>, ReplyError> {
    let bad = || ReplyError::Bad(format!("unexpected reply to the publish script: {reply:?}"));
    let items = entry::array(reply).ok_or_else(bad)?;
    fn word(v: &Value) -> Option<&str> {
        text(v).and_then(|t| std::str::from_utf8(t).ok())
    }
    match items.first().and_then(word) {
        Some("ok") if items.len() == 1 + 2 * count => items[1..]
            .chunks(2)
            .map(|pair| {
                let id = word(&pair[0])
                    .and_then(|t| t.parse::<MessageId>().ok())
                    .ok_or_else(bad)?;
                let repeat = matches!(pair[1], Value::Int(1));
                Ok(Accepted { id, repeat })
            })
            .collect(),
        Some("conflict") => {
            let index = match items.get(1) {
                Some(Value::Int(i)) => *i as usize,
                _ => return Err(bad()),
            };
            let original = items.get(2).and_then(word).and_then(|t| t.parse().ok());
            Err(ReplyError::Conflict(KeyReused { index, original }))
        }
        _ => Err(bad()),
    }
}

impl Engine for RedisEngine {
    fn presence_store(&self) -> Arc<dyn crate::presence::PresenceStore> {
        Arc::new(crate::presence::RedisPresence::new(
            self.link.client.clone(),
            &self.link.settings.stream_key,
        ))
    }

    fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The reader feeds the hub through `wake_streams`, on the engine's
    /// thread (see `reader::feed`).
    fn direct_writes(&self) -> bool {
        true
    }

    fn publish(&self, batch: Vec<Outgoing>) -> BoxFuture<'_, Result<Vec<Accepted>, PublishError>> {
        Box::pin(async move {
            if batch.is_empty() {
                return Ok(Vec::new());
            }
            let count = batch.len();
            let timeout = self.link.settings.publish_timeout;
            let outcome = tokio::time::timeout(timeout, self.link.publish_grouped(batch))
                .await
                .unwrap_or_else(|_| {
                    Err(PublishError::Uncertain(EngineError::new(format!(
                        "Redis at {} did not confirm the publish within {} ms",
                        self.addr(),
                        timeout.as_millis()
                    ))))
                });
            match &outcome {
                Ok(accepted) => {
                    if let Some(newest) = accepted.iter().rev().find(|a| !a.repeat).map(|a| a.id) {
                        self.hub.note_acked(newest);
                    }
                    self.published.fetch_add(accepted.len() as u64, Relaxed);
                }
                Err(PublishError::Unavailable(e)) => {
                    self.health.publish_unavailable.fetch_add(1, Relaxed);
                    tracing::warn!(error = %e, count, "publish refused: Redis unavailable");
                }
                Err(PublishError::Uncertain(e)) => {
                    self.health.publish_uncertain.fetch_add(1, Relaxed);
                    tracing::warn!(error = %e, count, "publish not confirmed by Redis");
                }
                Err(_) => {}
            }
            outcome
        })
    }

    fn confirm_ahead(&self, placement: Placement) -> BoxFuture<'_, Result<Placement, EngineError>> {
        Box::pin(async move {
            let Placement::Ahead(id) = placement else {
                return Ok(placement);
            };
            let asked = tokio::time::timeout(Duration::from_secs(1), async {
                let (generation, mut con) = self.link.connection().await?;
                let head: Result<(Option<String>, Option<u64>), RedisError> = ::redis::cmd("HMGET")
                    .arg(&self.link.meta_key)
                    .arg("epoch")
                    .arg("n")
                    .query_async(&mut con)
                    .await;
                head.inspect_err(|e| self.link.discard(generation, e))
            })
            .await;
            match asked {
                Ok(Ok((Some(epoch), Some(head)))) if epoch == id.epoch.to_string() => {
                    Ok(placement.confirm_ahead(head))
                }
                Ok(Ok(_)) => Ok(Placement::Unplaceable(GapReason::UnknownEpoch)),
                Ok(Err(e)) => Err(EngineError::new(format!(
                    "cannot ask Redis at {} where the log stands: {e}",
                    self.addr()
                ))),
                Err(_) => Err(EngineError::new(format!(
                    "Redis at {} did not say where the log stands within 1 s",
                    self.addr()
                ))),
            }
        })
    }

    fn ready(&self) -> Result<(), EngineError> {
        self.health
            .check()
            .map_err(|why| EngineError::new(format!("Redis at {} unavailable: {why}", self.addr())))
    }

    fn render_metrics(&self, out: &mut String) {
        let h = &self.health;
        let mut metric = |kind: &str, name: &str, help: &str, value: u64| {
            write_metric(out, kind, name, help, value);
        };
        metric(
            "gauge",
            "tidings_redis_up",
            "1 while the cluster's Redis answers.",
            u64::from(h.check().is_ok()),
        );
        metric(
            "counter",
            "tidings_redis_reader_connects_total",
            "Times the stream reader (re)connected to Redis.",
            h.connects.load(Relaxed),
        );
        metric(
            "counter",
            "tidings_redis_entries_read_total",
            "Entries read from the shared stream.",
            h.read.load(Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP tidings_redis_publish_failures_total Publishes answered 503: Redis could not be asked (unavailable) or did not confirm in time (uncertain).\n# TYPE tidings_redis_publish_failures_total counter\ntidings_redis_publish_failures_total{{kind=\"unavailable\"}} {}\ntidings_redis_publish_failures_total{{kind=\"uncertain\"}} {}",
            h.publish_unavailable.load(Relaxed),
            h.publish_uncertain.load(Relaxed)
        );
        let mut metric = |kind: &str, name: &str, help: &str, value: u64| {
            write_metric(out, kind, name, help, value);
        };
        metric(
            "counter",
            "tidings_redis_losses_total",
            "Times entries were found lost before this instance read them (streams were told with tidings.gap).",
            h.losses.load(Relaxed),
        );
        metric(
            "counter",
            "tidings_redis_epochs_total",
            "New epochs of the shared log this instance moved to (Redis lost its data).",
            h.epochs.load(Relaxed),
        );
        metric(
            "counter",
            "tidings_redis_went_back_total",
            "Times the stream held less than this instance saw, so a new epoch was started.",
            h.went_back.load(Relaxed),
        );
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        self.stop.cancel();
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        Box::pin(async move {
            for task in tasks {
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

enum LoadError {
    Redis(RedisError),
    Reply(String),
}

/// The newest `history` entries of the epoch, oldest first, and the stream
/// id to read after. Newest first, in pages, so a large history never
/// makes one huge reply.
async fn load_history(
    con: &mut MultiplexedConnection,
    settings: &RedisSettings,
    state: &StreamState,
) -> Result<(Vec<Entry>, StreamId), LoadError> {
    let key = &settings.stream_key;
    let stop_before = format!("({}", state.start);
    let mut entries: Vec<Entry> = Vec::new();
    let mut upper = "+".to_owned();
    let mut cursor = None;
    loop {
        let page = PRELOAD_PAGE.min(settings.history - entries.len());
        let range: Value = ::redis::cmd("XREVRANGE")
            .arg(key)
            .arg(&upper)
            .arg(&stop_before)
            .arg("COUNT")
            .arg(page)
            .query_async(con)
            .await
            .map_err(LoadError::Redis)?;
        let older = parse_entries(&range).map_err(|e| LoadError::Reply(e.to_string()))?;
        if cursor.is_none() {
            cursor = older.first().map(|e| e.stream_id().to_owned());
        }
        let Some(oldest) = older.last() else { break };
        upper = format!("({}", oldest.stream_id());
        let full = older.len() == page;
        // Stop at an entry of another epoch (an older log under the key).
        let mut other_epoch = false;
        for entry in older {
            if let Entry::Message { id, .. } = &entry {
                if id.epoch != state.log.epoch {
                    other_epoch = true;
                    break;
                }
            }
            entries.push(entry);
        }
        if other_epoch || !full || entries.len() >= settings.history {
            break;
        }
    }
    entries.reverse();
    Ok((entries, cursor.unwrap_or_else(|| state.start.clone())))
}

#[cfg(test)]
mod tests;
