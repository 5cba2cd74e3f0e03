//! Presence in a Redis cluster deployment, beside the shared stream.
//!
//! Keys, under `PREFIX` = `<--redis-stream-key>:presence`, per topic `T`:
//!
//! - `PREFIX:since:T`: sorted set, connection id → join time (ms). The
//!   listing order (oldest first, then by id) and the paging cursor.
//! - `PREFIX:exp:T`: sorted set, connection id → expiry (ms, Redis
//!   clock). An entry is live while its expiry is ahead; counts come
//!   from it (`ZCOUNT`).
//! - `PREFIX:info:T`: hash, connection id → the listed record (JSON).
//! - `PREFIX:topics`: sorted set, topic → earliest expiry among its
//!   entries (or earlier: refreshes do not move it): where a sweep looks.
//!
//! Every change is one script, so entries are whole, and a sweep removes
//! each expired entry once: exactly one instance tells its leave. Expiry
//! uses Redis's clock (`TIME`), so instances' clocks need not agree.

use std::{
    sync::LazyLock,
    time::{Duration, Instant},
};

use ::redis::{
    AsyncConnectionConfig, Client, RedisError, Script, Value, aio::MultiplexedConnection,
};
use tidings_core::topic::Topic;

use super::store::{Cursor, Expired, Member, Page, PresenceStore};
use crate::engine::{BoxFuture, EngineError};

/// Redis's clock in ms, as `now`.
const NOW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local p = ARGV[1]
";

/// `ARGV`: prefix, ttl ms, connection, since, record, topics...
const ADD: &str = r"
local exp = now + tonumber(ARGV[2])
local conn = ARGV[3]
for i = 6, #ARGV do
  local topic = ARGV[i]
  redis.call('ZADD', p .. ':since:' .. topic, ARGV[4], conn)
  redis.call('ZADD', p .. ':exp:' .. topic, exp, conn)
  redis.call('HSET', p .. ':info:' .. topic, conn, ARGV[5])
  redis.call('ZADD', p .. ':topics', 'LT', exp, topic)
end
return 1
";

/// `ARGV`: prefix, connection, topics...; answers 1 or 0 per topic.
const REMOVE: &str = r"
local conn = ARGV[2]
local out = {}
for i = 3, #ARGV do
  local topic = ARGV[i]
  out[#out + 1] = redis.call('ZREM', p .. ':exp:' .. topic, conn)
  redis.call('ZREM', p .. ':since:' .. topic, conn)
  redis.call('HDEL', p .. ':info:' .. topic, conn)
end
return out
";

/// `ARGV`: prefix, ttl ms, then (topic, connection, since, record) per
/// entry; answers the (0-based) entries that were missing and added back.
const REFRESH: &str = r"
local exp = now + tonumber(ARGV[2])
local out = {}
local n = 0
for i = 3, #ARGV, 4 do
  local topic, conn = ARGV[i], ARGV[i + 1]
  local ek = p .. ':exp:' .. topic
  if redis.call('ZSCORE', ek, conn) then
    redis.call('ZADD', ek, 'XX', exp, conn)
  else
    redis.call('ZADD', p .. ':since:' .. topic, ARGV[i + 2], conn)
    redis.call('ZADD', ek, exp, conn)
    redis.call('HSET', p .. ':info:' .. topic, conn, ARGV[i + 3])
    redis.call('ZADD', p .. ':topics', 'LT', exp, topic)
    out[#out + 1] = n
  end
  n = n + 1
end
return out
";

/// `ARGV`: prefix; removes up to 50 topics' worth of expired entries and
/// answers (topic, connection, since, record) per entry.
const SWEEP: &str = r"
local out = {}
local topics = redis.call('ZRANGEBYSCORE', p .. ':topics', '-inf', now, 'LIMIT', 0, 50)
for _, topic in ipairs(topics) do
  local ek, sk, ik = p .. ':exp:' .. topic, p .. ':since:' .. topic, p .. ':info:' .. topic
  local gone = redis.call('ZRANGEBYSCORE', ek, '-inf', now, 'LIMIT', 0, 500)
  for _, conn in ipairs(gone) do
    out[#out + 1] = topic
    out[#out + 1] = conn
    out[#out + 1] = redis.call('ZSCORE', sk, conn) or '0'
    out[#out + 1] = redis.call('HGET', ik, conn) or '{}'
    redis.call('ZREM', ek, conn)
    redis.call('ZREM', sk, conn)
    redis.call('HDEL', ik, conn)
  end
  local first = redis.call('ZRANGE', ek, 0, 0, 'WITHSCORES')
  if #first == 0 then
    redis.call('ZREM', p .. ':topics', topic)
  else
    redis.call('ZADD', p .. ':topics', first[2], topic)
  end
end
return out
";

/// `ARGV`: prefix, topic, cursor since ('' for none), cursor connection,
/// limit; answers total, more (0/1), then (connection, since, record)
/// per listed entry.
const LIST: &str = r"
local topic = ARGV[2]
local ek, sk, ik = p .. ':exp:' .. topic, p .. ':since:' .. topic, p .. ':info:' .. topic
local limit = tonumber(ARGV[5])
local total = redis.call('ZCOUNT', ek, '(' .. now, '+inf')
local min, after_since, after_conn = '-inf', nil, ARGV[4]
if ARGV[3] ~= '' then
  min = ARGV[3]
  after_since = tonumber(ARGV[3])
end
local out = {total, 0}
local listed = 0
local offset = 0
while true do
  local batch = redis.call('ZRANGEBYSCORE', sk, min, '+inf', 'WITHSCORES', 'LIMIT', offset, 256)
  if #batch == 0 then break end
  for j = 1, #batch, 2 do
    local conn, since = batch[j], batch[j + 1]
    if not (after_since and tonumber(since) == after_since and conn <= after_conn) then
      local e = redis.call('ZSCORE', ek, conn)
      if e and tonumber(e) > now then
        if listed == limit then
          out[2] = 1
          return out
        end
        out[#out + 1] = conn
        out[#out + 1] = since
        out[#out + 1] = redis.call('HGET', ik, conn) or '{}'
        listed = listed + 1
      end
    end
  end
  offset = offset + #batch / 2
end
return out
";

fn script(body: &str) -> Script {
    Script::new(&format!("{NOW}{body}"))
}

static ADD_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(ADD));
static REMOVE_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(REMOVE));
static REFRESH_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(REFRESH));
static SWEEP_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(SWEEP));
static LIST_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(LIST));

/// Most entries refreshed per script call.
const REFRESH_CHUNK: usize = 500;

/// The Redis [`PresenceStore`] (see the [module docs](self)).
pub struct RedisPresence {
    client: Client,
    prefix: String,
    con: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    failed_at: parking_lot::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for RedisPresence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPresence")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisPresence {
    /// A store on `client` with keys under `<stream_key>:presence`.
    pub fn new(client: Client, stream_key: &str) -> Self {
        Self {
            client,
            prefix: format!("{stream_key}:presence"),
            con: tokio::sync::Mutex::new(None),
            failed_at: parking_lot::Mutex::new(None),
        }
    }

    /// The prefix of every key this store writes.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    async fn connection(&self) -> Result<MultiplexedConnection, EngineError> {
        let mut slot = self.con.lock().await;
        if let Some(con) = &*slot {
            return Ok(con.clone());
        }
        if self
            .failed_at
            .lock()
            .is_some_and(|t| t.elapsed() < Duration::from_millis(250))
        {
            return Err(EngineError::new(
                "Redis (presence) did not answer a moment ago",
            ));
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(3)));
        match self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(con) => {
                *slot = Some(con.clone());
                Ok(con)
            }
            Err(e) => {
                *self.failed_at.lock() = Some(Instant::now());
                Err(EngineError::new(format!(
                    "presence: cannot connect to Redis: {e}"
                )))
            }
        }
    }

    async fn run(&self, invocation: ::redis::ScriptInvocation<'_>) -> Result<Value, EngineError> {
        let mut con = self.connection().await?;
        match invocation.invoke_async::<Value>(&mut con).await {
            Ok(value) => Ok(value),
            Err(e) => {
                self.discard(&e).await;
                Err(EngineError::new(format!("presence script failed: {e}")))
            }
        }
    }

    async fn discard(&self, e: &RedisError) {
        if e.is_io_error()
            || e.is_connection_dropped()
            || e.is_unrecoverable_error()
            || e.is_timeout()
        {
            *self.con.lock().await = None;
        }
    }
}

fn items(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) | Value::Set(items) => items,
        _ => Vec::new(),
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        Value::Double(d) => Some(format!("{d}")),
        _ => None,
    }
}

fn int(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        other => text(other)
            .and_then(|t| t.parse::<f64>().ok())
            .map(|f| f as u64),
    }
}

/// A member from (connection, since, record) as the scripts answer them.
fn member(conn: &Value, since: &Value, record: &Value) -> Option<Member> {
    Some(Member {
        connection: text(conn)?.parse().ok()?,
        since_ms: int(since)?,
        record: text(record)?,
    })
}

impl PresenceStore for RedisPresence {
    fn add<'a>(
        &'a self,
        topics: &'a [Topic],
        member: &'a Member,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            let mut invocation = ADD_SCRIPT.prepare_invoke();
            invocation
                .arg(&self.prefix)
                .arg(ttl.as_millis() as u64)
                .arg(member.connection.to_string())
                .arg(member.since_ms)
                .arg(&member.record);
            for topic in topics {
                invocation.arg(topic.as_str());
            }
            self.run(invocation).await.map(drop)
        })
    }

    fn remove<'a>(
        &'a self,
        topics: &'a [Topic],
        member: &'a Member,
    ) -> BoxFuture<'a, Result<Vec<bool>, EngineError>> {
        Box::pin(async move {
            let mut invocation = REMOVE_SCRIPT.prepare_invoke();
            invocation
                .arg(&self.prefix)
                .arg(member.connection.to_string());
            for topic in topics {
                invocation.arg(topic.as_str());
            }
            let reply = self.run(invocation).await?;
            Ok(items(reply).iter().map(|v| int(v) == Some(1)).collect())
        })
    }

    fn list<'a>(
        &'a self,
        topic: &'a Topic,
        after: Option<Cursor>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Page, EngineError>> {
        Box::pin(async move {
            let mut invocation = LIST_SCRIPT.prepare_invoke();
            invocation
                .arg(&self.prefix)
                .arg(topic.as_str())
                .arg(after.map_or_else(String::new, |c| c.since_ms.to_string()))
                .arg(after.map_or_else(String::new, |c| c.connection.to_string()))
                .arg(limit);
            let reply = items(self.run(invocation).await?);
            let (Some(total), Some(more)) =
                (reply.first().and_then(int), reply.get(1).and_then(int))
            else {
                return Err(EngineError::new("presence list: unexpected reply"));
            };
            let members: Vec<Member> = reply[2..]
                .chunks_exact(3)
                .filter_map(|c| member(&c[0], &c[1], &c[2]))
                .collect();
            Ok(Page {
                total: total as usize,
                next: if more == 1 {
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
            for (chunk_index, chunk) in entries.chunks(REFRESH_CHUNK).enumerate() {
                let mut invocation = REFRESH_SCRIPT.prepare_invoke();
                invocation.arg(&self.prefix).arg(ttl.as_millis() as u64);
                for (topic, member) in chunk {
                    invocation
                        .arg(topic.as_str())
                        .arg(member.connection.to_string())
                        .arg(member.since_ms)
                        .arg(&member.record);
                }
                let reply = self.run(invocation).await?;
                added_back.extend(
                    items(reply)
                        .iter()
                        .filter_map(int)
                        .map(|i| chunk_index * REFRESH_CHUNK + i as usize),
                );
            }
            Ok(added_back)
        })
    }

    fn sweep(&self) -> BoxFuture<'_, Result<Vec<Expired>, EngineError>> {
        Box::pin(async move {
            let mut invocation = SWEEP_SCRIPT.prepare_invoke();
            invocation.arg(&self.prefix);
            let reply = items(self.run(invocation).await?);
            Ok(reply
                .chunks_exact(4)
                .filter_map(|c| {
                    Some(Expired {
                        topic: Topic::new(&text(&c[0])?).ok()?,
                        member: member(&c[1], &c[2], &c[3])?,
                    })
                })
                .collect())
        })
    }

    fn expires(&self) -> bool {
        true
    }
}
