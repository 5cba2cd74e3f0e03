//! Presence in NATS mode: one KV entry per (topic, stream) in a bucket of
//! the deployment (`<stream>_presence`, replicated like the stream).
//!
//! Key `<hex(topic)>.<connection>`, value `{"since","record","exp"}` with
//! `exp` in ms since the Unix epoch on the writer's clock (instances'
//! clocks must agree within a small part of `--presence-ttl`). An entry is
//! live while `exp` is ahead. Removing and sweeping delete with the
//! revision read (compare-and-set), so each expired entry is claimed, and
//! its leave told, by exactly one instance. A listing or a sweep reads the
//! topic's (or the bucket's) latest values with an ordered consumer: cost
//! grows with the entries read, fine for presence sizes, not for millions.

use std::time::Duration;

use async_nats::jetstream::{
    self,
    kv::{Operation, Store},
    stream::DirectGetErrorKind,
};
use futures_core::Stream as _;
use serde::{Deserialize, Serialize};
use tidings_core::topic::Topic;

use super::{Stream, open_bucket};
use crate::{
    engine::{BoxFuture, EngineError},
    presence::{Cursor, Expired, Member, Page, PresenceStore},
};

/// How long a listing or a sweep may read before it gives up.
const READ_PATIENCE: Duration = Duration::from_secs(5);

#[derive(Debug, Serialize, Deserialize)]
struct Value {
    since: u64,
    record: String,
    exp: u64,
}

/// The NATS KV [`PresenceStore`]: one KV entry per (topic, stream), see
/// `engine/nats/presence.rs`.
pub struct NatsPresence {
    store: Store,
    kv_stream: jetstream::stream::Stream,
    bucket: String,
}

impl std::fmt::Debug for NatsPresence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsPresence")
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    crate::engine::clock::unix_micros() / 1000
}

fn hex(topic: &Topic) -> String {
    topic.as_str().bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Topic> {
    if text.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect();
    Topic::new(std::str::from_utf8(&bytes?).ok()?).ok()
}

fn key(topic: &Topic, member: &Member) -> String {
    format!("{}.{}", hex(topic), member.connection)
}

fn failed(what: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::new(format!("presence in NATS KV: {what}: {e}"))
}

/// One live or expired entry read back.
struct Read {
    key: String,
    topic: Topic,
    member: Member,
    exp: u64,
    revision: u64,
}

impl NatsPresence {
    /// Opens (or creates) the bucket beside `stream`, with as many replicas
    /// as the stream has.
    pub async fn open(stream: &Stream, replicas: usize) -> Result<Self, String> {
        let bucket = format!(
            "{}_presence",
            stream
                .name()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                })
                .collect::<String>()
        );
        // Deletion markers and entries of instances that died without a
        // sweep go away after a day.
        let store = open_bucket(stream, &bucket, replicas, Duration::from_secs(86_400)).await?;
        let js = jetstream::new(stream.client().clone());
        let kv_stream = js
            .get_stream(format!("KV_{bucket}"))
            .await
            .map_err(|e| format!("cannot open the KV stream of `{bucket}`: {e}"))?;
        Ok(Self {
            store,
            kv_stream,
            bucket,
        })
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    fn value(member: &Member, ttl: Duration) -> bytes::Bytes {
        let value = Value {
            since: member.since_ms,
            record: member.record.clone(),
            exp: now_ms() + ttl.as_millis() as u64,
        };
        serde_json::to_vec(&value).unwrap_or_default().into()
    }

    /// The latest entries under `filter` (a key filter), deletions left out.
    async fn scan(&self, filter: &str) -> Result<Vec<Read>, EngineError> {
        // An empty filter would leave the watch waiting forever: look first.
        match self
            .kv_stream
            .direct_get_next_for_subject(format!("$KV.{}.{filter}", self.bucket), None)
            .await
        {
            Ok(_) => {}
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(failed("read", e)),
        }
        let read = async {
            let mut watch = Box::pin(
                self.store
                    .watch_with_history(filter)
                    .await
                    .map_err(|e| failed("watch", e))?,
            );
            let mut out = Vec::new();
            while let Some(entry) = std::future::poll_fn(|cx| watch.as_mut().poll_next(cx)).await {
                let entry = entry.map_err(|e| failed("watch", e))?;
                let last = entry.delta == 0;
                if entry.operation == Operation::Put {
                    if let Some(read) = parse(&entry.key, &entry.value, entry.revision) {
                        out.push(read);
                    }
                }
                if last {
                    break;
                }
            }
            Ok(out)
        };
        tokio::time::timeout(READ_PATIENCE, read)
            .await
            .map_err(|_| failed("read", "no answer within 5 s"))?
    }

    /// Deletes `key` if it is still at `revision`; false when another
    /// instance changed or deleted it first.
    async fn claim(&self, key: &str, revision: u64) -> bool {
        self.store
            .delete_expect_revision(key, Some(revision))
            .await
            .is_ok()
    }
}

fn parse(key: &str, value: &[u8], revision: u64) -> Option<Read> {
    let (topic, connection) = key.split_once('.')?;
    let value: Value = serde_json::from_slice(value).ok()?;
    Some(Read {
        key: key.to_owned(),
        topic: unhex(topic)?,
        member: Member {
            connection: connection.parse().ok()?,
            since_ms: value.since,
            record: value.record,
        },
        exp: value.exp,
        revision,
    })
}

impl PresenceStore for NatsPresence {
    fn add<'a>(
        &'a self,
        topics: &'a [Topic],
        member: &'a Member,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            for topic in topics {
                self.store
                    .put(key(topic, member), Self::value(member, ttl))
                    .await
                    .map_err(|e| failed("add", e))?;
            }
            Ok(())
        })
    }

    fn remove<'a>(
        &'a self,
        topics: &'a [Topic],
        member: &'a Member,
    ) -> BoxFuture<'a, Result<Vec<bool>, EngineError>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(topics.len());
            for topic in topics {
                let key = key(topic, member);
                let entry = self
                    .store
                    .entry(key.clone())
                    .await
                    .map_err(|e| failed("remove", e))?;
                let removed = match entry {
                    Some(entry) if entry.operation == Operation::Put => {
                        self.claim(&key, entry.revision).await
                    }
                    _ => false,
                };
                out.push(removed);
            }
            Ok(out)
        })
    }

    fn list<'a>(
        &'a self,
        topic: &'a Topic,
        after: Option<Cursor>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Page, EngineError>> {
        Box::pin(async move {
            let now = now_ms();
            let mut live: Vec<Member> = self
                .scan(&format!("{}.*", hex(topic)))
                .await?
                .into_iter()
                .filter(|r| r.exp > now)
                .map(|r| r.member)
                .collect();
            live.sort_by_key(Member::cursor);
            let total = live.len();
            let mut members: Vec<Member> = live
                .into_iter()
                .filter(|m| after.is_none_or(|a| m.cursor() > a))
                .take(limit + 1)
                .collect();
            let more = members.len() > limit;
            members.truncate(limit);
            Ok(Page {
                total,
                next: if more {
                    members.last().map(Member::cursor)
                } else {
                    None
                },
                members,
            })
        })
    }

    fn refresh<'a>(
        &'a self,
        entries: &'a [(Topic, Member)],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Vec<usize>, EngineError>> {
        Box::pin(async move {
            let mut added_back = Vec::new();
            for (index, (topic, member)) in entries.iter().enumerate() {
                let key = key(topic, member);
                let entry = self
                    .store
                    .entry(key.clone())
                    .await
                    .map_err(|e| failed("refresh", e))?;
                // Extended only if nobody swept it meanwhile (compare and
                // set on its revision); otherwise added back, and its join
                // is told again.
                let extended = match entry {
                    Some(entry) if entry.operation == Operation::Put => self
                        .store
                        .update(&key, Self::value(member, ttl), entry.revision)
                        .await
                        .is_ok(),
                    _ => false,
                };
                if !extended {
                    self.store
                        .put(&key, Self::value(member, ttl))
                        .await
                        .map_err(|e| failed("refresh", e))?;
                    added_back.push(index);
                }
            }
            Ok(added_back)
        })
    }

    fn sweep(&self) -> BoxFuture<'_, Result<Vec<Expired>, EngineError>> {
        Box::pin(async move {
            let now = now_ms();
            let mut expired = Vec::new();
            for read in self.scan(">").await? {
                if read.exp <= now && self.claim(&read.key, read.revision).await {
                    expired.push(Expired {
                        topic: read.topic,
                        member: read.member,
                    });
                }
            }
            Ok(expired)
        })
    }

    fn expires(&self) -> bool {
        true
    }
}
