//! Presence: which streams are subscribed to a topic, on every instance,
//! and opt-in `tidings.join` / `tidings.leave` events.
//!
//! - **Who is listed under a topic `T`**: every stream that subscribed to
//!   `T` itself (an exact topic in `GET /events?topic=T`). A stream
//!   subscribed through a pattern (`quiz:>`) is not listed under each
//!   topic it matches: it is a watcher of a namespace, not a member of a
//!   room, and listing it would make every `/presence` scan every pattern.
//! - **Entries** live in a [`PresenceStore`] that the engine chooses
//!   ([`Engine::presence_store`](crate::engine::Engine::presence_store)):
//!   [`MemoryPresence`] for one process, [`RedisPresence`] beside the
//!   shared stream in cluster mode. Each instance refreshes its own every
//!   third of `--presence-ttl`; entries of a killed instance expire and the
//!   first instance to sweep them tells their leaves.
//! - **NATS mode** keeps entries in a NATS KV bucket beside the stream
//!   (`engine::nats::NatsPresence`): one key per entry
//!   `<hex(topic)>.<connection>`, refreshed and swept with revision-checked
//!   writes and deletes, so that one instance tells each leave.
//! - **Events travel through the engine**, as messages on the topic's
//!   server-owned twin `$presence:T` (type `tidings.join` or
//!   `tidings.leave`): ordered with the topic's messages on every
//!   instance, numbered, and replayed on resume like any message (a client
//!   that reconnects catches up on who came and went, or gets
//!   `tidings.gap`). A stream receives them only if it asked
//!   (`presence=1`: it is then also subscribed to `$presence:` + each of
//!   its patterns); wildcards in a pattern's first segment never match
//!   `$...` topics, so no other stream sees them.
//!
//! ```
//! use tidings_core::topic::Pattern;
//! use tidings_server::presence::events_pattern;
//!
//! let watch = events_pattern(&Pattern::new("quiz:room1")?).unwrap();
//! assert_eq!(watch.as_str(), "$presence:quiz:room1");
//! # Ok::<(), tidings_core::topic::TopicError>(())
//! ```

mod memory;
mod redis;
mod store;

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use parking_lot::Mutex;
use tidings_core::{
    message::{ConnectionId, EventType, Outgoing},
    topic::{Pattern, Topic},
};
use tokio::task::JoinHandle;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use memory::MemoryPresence;
pub use redis::RedisPresence;
pub use store::{BadCursor, Cursor, Expired, Member, Page, PresenceStore};

use crate::{engine::Engine, metrics::write_metric};

/// Prefix of the server-owned topic where a topic's joins and leaves travel.
pub const EVENTS_PREFIX: &str = "$presence:";
/// Largest `tidings.info` claim (compact JSON) a token may carry.
pub const MAX_TOKEN_INFO_BYTES: usize = 1024;
/// Largest `presenceInfo` an anonymous client may send (bytes as sent).
pub const MAX_CLIENT_INFO_BYTES: usize = 256;
/// Clients listed per `GET /presence` answer when `limit` is not given.
pub const DEFAULT_PAGE: usize = 100;
/// Most joins or leaves published in one engine call.
const EVENTS_PER_PUBLISH: usize = 100;

/// The `$presence:` twin of `pattern`, which a `presence=1` stream also
/// subscribes to; `None` when the pattern is too long to have one.
pub fn events_pattern(pattern: &Pattern) -> Option<Pattern> {
    Pattern::new(&format!("{EVENTS_PREFIX}{pattern}")).ok()
}

/// The `$presence:` twin of `topic`, where its joins and leaves are
/// published; `None` when the topic is too long to have one.
pub fn events_topic(topic: &Topic) -> Option<Topic> {
    Topic::new(&format!("{EVENTS_PREFIX}{topic}")).ok()
}

/// Checks an anonymous client's `presenceInfo`: a JSON object of at most
/// [`MAX_CLIENT_INFO_BYTES`]; answers it as compact JSON.
///
/// ```
/// use tidings_server::presence::client_info;
///
/// assert_eq!(client_info(r#"{ "name": "Ann" }"#).unwrap(), r#"{"name":"Ann"}"#);
/// assert!(client_info("[1]").is_err());
/// assert!(client_info(&format!(r#"{{"name":"{}"}}"#, "a".repeat(300))).is_err());
/// ```
pub fn client_info(text: &str) -> Result<String, String> {
    if text.len() > MAX_CLIENT_INFO_BYTES {
        return Err(format!(
            "`presenceInfo` is {} bytes; at most {MAX_CLIENT_INFO_BYTES} are accepted",
            text.len()
        ));
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(value @ serde_json::Value::Object(_)) => Ok(value.to_string()),
        Ok(_) => Err(r#"`presenceInfo` must be a JSON object, like {"name":"Ann"}"#.into()),
        Err(e) => Err(format!("`presenceInfo` is not JSON: {e}")),
    }
}

/// The listed record of a stream: `info` is compact JSON object text.
fn record(connection: ConnectionId, info: &str, since_ms: u64, verified: bool) -> String {
    format!(
        r#"{{"connectionId":"{connection}","info":{info},"since":{since_ms},"verified":{verified}}}"#
    )
}

/// The data of a join or leave: the record with the topic first.
fn event_data(topic: &Topic, member: &Member) -> String {
    let topic = serde_json::Value::from(topic.as_str()).to_string();
    format!(r#"{{"topic":{topic},{}"#, &member.record[1..])
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// This instance's presence: adds and removes its streams' entries, tells
/// joins and leaves, refreshes its entries and sweeps expired ones.
pub struct Presence {
    store: Arc<dyn PresenceStore>,
    engine: Arc<dyn Engine>,
    ttl: Duration,
    /// This instance's entries whose add succeeded, for refreshes.
    own: Mutex<HashMap<ConnectionId, (Vec<Topic>, Member)>>,
    /// Held by a refresh and by a removal, so that a refresh never adds
    /// back an entry removed while it ran.
    refreshing: tokio::sync::Mutex<()>,
    tasks: TaskTracker,
    stop: CancellationToken,
    counts: Counts,
}

/// What `/metrics` says about presence on this instance.
#[derive(Debug, Default)]
struct Counts {
    joins: AtomicU64,
    leaves: AtomicU64,
    expired: AtomicU64,
    /// Store or engine calls that failed (each is logged as a warning).
    failures: AtomicU64,
}

impl std::fmt::Debug for Presence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presence")
            .field("ttl", &self.ttl)
            .field("own", &self.own.lock().len())
            .finish_non_exhaustive()
    }
}

impl Presence {
    /// Presence over `store`, telling joins and leaves through `engine`;
    /// entries live `ttl` without a refresh (when the store expires them).
    pub fn new(store: Arc<dyn PresenceStore>, engine: Arc<dyn Engine>, ttl: Duration) -> Arc<Self> {
        Arc::new(Self {
            store,
            engine,
            ttl: ttl.max(Duration::from_millis(300)),
            own: Mutex::default(),
            refreshing: tokio::sync::Mutex::new(()),
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
            counts: Counts::default(),
        })
    }

    /// The store (for `GET /presence`).
    pub fn store(&self) -> &Arc<dyn PresenceStore> {
        &self.store
    }

    /// Starts refreshing this instance's entries and sweeping expired ones
    /// (only for stores that expire entries).
    pub fn start(self: &Arc<Self>) {
        if !self.store.expires() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let refresh_every = this.ttl / 3;
            let sweep_every =
                (this.ttl / 10).clamp(Duration::from_millis(100), Duration::from_secs(1));
            let mut refresh = tokio::time::interval(refresh_every);
            let mut sweep = tokio::time::interval(sweep_every);
            refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = this.stop.cancelled() => break,
                    _ = refresh.tick() => this.refresh().await,
                    _ = sweep.tick() => this.sweep().await,
                }
            }
        });
    }

    async fn refresh(&self) {
        let _held = self.refreshing.lock().await;
        let entries: Vec<(Topic, Member)> = self
            .own
            .lock()
            .values()
            .flat_map(|(topics, member)| topics.iter().map(|t| (t.clone(), member.clone())))
            .collect();
        if entries.is_empty() {
            return;
        }
        match self.store.refresh(&entries, self.ttl).await {
            Ok(added_back) if !added_back.is_empty() => {
                tracing::info!(
                    entries = added_back.len(),
                    "presence entries were missing from the engine; added them back"
                );
                let events = added_back
                    .iter()
                    .filter_map(|&i| entries.get(i))
                    .map(|(topic, member)| (topic, member));
                self.publish(EventType::JOIN, events).await;
            }
            Ok(_) => {}
            Err(e) => {
                self.counts.failures.fetch_add(1, Relaxed);
                tracing::warn!(error = %e, "cannot refresh presence entries")
            }
        }
    }

    async fn sweep(&self) {
        match self.store.sweep().await {
            Ok(expired) if !expired.is_empty() => {
                tracing::info!(
                    entries = expired.len(),
                    "presence entries expired (an instance stopped refreshing them)"
                );
                self.counts.expired.fetch_add(expired.len() as u64, Relaxed);
                self.publish(
                    EventType::LEAVE,
                    expired.iter().map(|e| (&e.topic, &e.member)),
                )
                .await;
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "cannot sweep presence entries"),
        }
    }

    /// Publishes a join or leave per `(topic, member)`.
    async fn publish<'a>(
        &self,
        kind: EventType,
        events: impl Iterator<Item = (&'a Topic, &'a Member)>,
    ) {
        let messages: Vec<Outgoing> = events
            .filter_map(|(topic, member)| {
                let twin = events_topic(topic)?;
                Some(Outgoing::new(twin, kind.clone(), event_data(topic, member)))
            })
            .collect();
        let told = if kind == EventType::JOIN {
            &self.counts.joins
        } else {
            &self.counts.leaves
        };
        for chunk in messages.chunks(EVENTS_PER_PUBLISH) {
            match self.engine.publish(chunk.to_vec()).await {
                Ok(_) => {
                    told.fetch_add(chunk.len() as u64, Relaxed);
                }
                Err(e) => {
                    self.counts.failures.fetch_add(1, Relaxed);
                    tracing::warn!(error = %e, kind = %kind, "cannot publish presence events");
                }
            }
        }
    }

    /// Lists `connection` under `topics` (with `info`, compact JSON object
    /// text) until the returned guard drops; tells their joins, then
    /// their leaves. `None` when there is no topic to be listed under.
    pub(crate) fn enter(
        self: &Arc<Self>,
        topics: Vec<Topic>,
        connection: ConnectionId,
        info: &str,
        verified: bool,
    ) -> Option<PresenceGuard> {
        if topics.is_empty() {
            return None;
        }
        let since_ms = now_ms();
        let member = Member {
            connection,
            since_ms,
            record: record(connection, info, since_ms, verified),
        };
        let this = self.clone();
        let (t, m) = (topics.clone(), member.clone());
        let (told, published) = tokio::sync::oneshot::channel();
        let joined = self.tasks.spawn(async move {
            if let Err(e) = this.store.add(&t, &m, this.ttl).await {
                this.counts.failures.fetch_add(1, Relaxed);
                tracing::warn!(error = %e, %connection, "cannot add a presence entry; the stream is not listed");
                return false;
            }
            this.own.lock().insert(connection, (t.clone(), m.clone()));
            this.publish(EventType::JOIN, t.iter().map(|topic| (topic, &m)))
                .await;
            let _ = told.send(());
            true
        });
        Some(PresenceGuard {
            presence: self.clone(),
            topics,
            member,
            joined: Some(joined),
            published: Some(published),
        })
    }

    async fn leave(&self, topics: Vec<Topic>, member: Member, joined: JoinHandle<bool>) {
        if !joined.await.unwrap_or(false) {
            return;
        }
        let removed = {
            let _held = self.refreshing.lock().await;
            self.own.lock().remove(&member.connection);
            self.store.remove(&topics, &member).await
        };
        match removed {
            Ok(removed) => {
                let gone = topics
                    .iter()
                    .zip(removed)
                    .filter(|(_, r)| *r)
                    .map(|(t, _)| (t, &member));
                self.publish(EventType::LEAVE, gone).await;
            }
            Err(e) => {
                self.counts.failures.fetch_add(1, Relaxed);
                tracing::warn!(error = %e, connection = %member.connection, "cannot remove a presence entry; it expires instead")
            }
        }
    }

    /// Appends presence's metrics (Prometheus text) to `out`.
    pub fn render_metrics(&self, out: &mut String) {
        let listed: usize = self
            .own
            .lock()
            .values()
            .map(|(topics, _)| topics.len())
            .sum();
        write_metric(
            out,
            "gauge",
            "tidings_presence_entries",
            "Presence entries of this instance's streams (one per stream and topic).",
            listed,
        );
        let c = &self.counts;
        let counters = [
            (
                "tidings_presence_joins_total",
                "tidings.join events this instance published.",
                &c.joins,
            ),
            (
                "tidings_presence_leaves_total",
                "tidings.leave events this instance published (expired entries included).",
                &c.leaves,
            ),
            (
                "tidings_presence_expired_total",
                "Entries this instance found expired (their instance stopped refreshing them).",
                &c.expired,
            ),
            (
                "tidings_presence_failures_total",
                "Presence store or publish calls that failed (each is logged).",
                &c.failures,
            ),
        ];
        for (name, help, value) in counters {
            write_metric(out, "counter", name, help, value.load(Relaxed));
        }
    }

    /// Stops refreshing and sweeping, and waits for joins and leaves in
    /// flight (streams closed by the shutdown tell their leaves).
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Keeps a stream listed; dropping it removes the entries and tells the
/// leaves (after the joins).
#[derive(Debug)]
pub(crate) struct PresenceGuard {
    presence: Arc<Presence>,
    topics: Vec<Topic>,
    member: Member,
    joined: Option<JoinHandle<bool>>,
    published: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl PresenceGuard {
    /// Waits (at most `patience`) until the stream is listed and its joins
    /// are in the log, so that whatever the client does once connected
    /// comes after its join for every watcher.
    pub(crate) async fn joined(&mut self, patience: Duration) {
        if let Some(published) = self.published.take() {
            let _ = tokio::time::timeout(patience, published).await;
        }
    }
}

impl Drop for PresenceGuard {
    fn drop(&mut self) {
        let Some(joined) = self.joined.take() else {
            return;
        };
        let presence = self.presence.clone();
        let topics = std::mem::take(&mut self.topics);
        let member = self.member.clone();
        if tokio::runtime::Handle::try_current().is_ok() {
            self.presence
                .tasks
                .spawn(async move { presence.leave(topics, member, joined).await });
        }
    }
}
