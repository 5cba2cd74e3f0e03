//! The Lua scripts that keep the shared stream's numbering.
//!
//! Keys: `KEY` is the stream; `KEY:meta` is a hash with the log's `epoch`
//! (base 36 text), `n` (the last sequence number given) and `start` (the
//! stream id before the epoch's first entry); `KEY:idem:LEN:TOPIC:K` holds
//! `ID FINGERPRINT` of a publish made with idempotency key `K` on `TOPIC`,
//! for the idempotency window.
//!
//! Every script first makes sure the log has an epoch: when the meta hash
//! or the stream itself is missing (Redis restarted without its data, the
//! key was deleted), it starts a new epoch with the caller's candidate, so
//! sequence numbers restart under a name no client has seen: ids of the
//! old log get `tidings.gap`, never another message.
//!
//! Scripts run atomically in Redis: a batch is numbered and appended all
//! together or not at all, and an idempotency key is checked and set in
//! the same step as the append.

use std::sync::LazyLock;

use ::redis::Script;

/// Makes sure the log has an epoch (see the module docs). `KEYS[1]` stream,
/// `KEYS[2]` meta; `ARGV[1]` candidate epoch.
const ENSURE_EPOCH: &str = r"
local stream, meta = KEYS[1], KEYS[2]
local function new_epoch(epoch)
  local start = redis.call('XADD', stream, '*', 'tidings', 'epoch', 'e', epoch)
  redis.call('XDEL', stream, start)
  redis.call('HSET', meta, 'epoch', epoch, 'n', 0, 'start', start)
  return epoch
end
local epoch = redis.call('HGET', meta, 'epoch')
if (not epoch) or redis.call('EXISTS', stream) == 0 then
  epoch = new_epoch(ARGV[1])
end
";

/// The log's state: `{epoch, n, start, oldest}` where `oldest` is the
/// sequence number of the oldest entry of this epoch still in the stream
/// (`-1` if none).
const STATE: &str = r"
local oldest = -1
local n = tonumber(redis.call('HGET', meta, 'n'))
local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
if #first == 1 then
  local f = first[1][2]
  local e, seq
  for i = 1, #f, 2 do
    if f[i] == 'm' then
      e, seq = string.match(f[i + 1], '^(%S+) (%d+) ')
    elseif f[i] == 'e' then e = f[i + 1] elseif f[i] == 'n' then seq = f[i + 1] end
  end
  if e == epoch and seq then
    oldest = tonumber(seq)
  elseif n > 0 then
    -- An older epoch's or a foreign entry comes first: nothing of this
    -- epoch was trimmed yet.
    oldest = 1
  end
end
return {epoch, n, redis.call('HGET', meta, 'start'), oldest}
";

/// Starts a new epoch if the log is still in `ARGV[2]` (an instance found
/// it holds less than it saw). Returns the epoch now.
const BUMP: &str = r"
if epoch == ARGV[2] then
  epoch = new_epoch(ARGV[1])
end
return epoch
";

/// Appends a batch. `ARGV`: 1 candidate epoch, 2 MAXLEN, 3 acceptance time
/// (µs), 4 idempotency window (ms), 5 count, 6 entry format (`1`: a field
/// per part, `2`: one field, see `entry.rs`), then per message: topic,
/// type, data, exclude, idempotency key, fingerprint (`''` when absent).
///
/// Returns `{'ok', id1, repeat1, id2, repeat2, ...}` (`repeat` 1 when the
/// key answered an earlier publish), or `{'conflict', index, original id}`
/// when a key was used for a different message (nothing is appended).
const PUBLISH: &str = r"
local count = tonumber(ARGV[5])
local function idem_key(topic, key)
  return stream .. ':idem:' .. #topic .. ':' .. topic .. ':' .. key
end
local function split(v)
  local sp = string.find(v, ' ', 1, true)
  return string.sub(v, 1, sp - 1), string.sub(v, sp + 1)
end
local in_batch = {}
for i = 0, count - 1 do
  local b = 7 + i * 6
  local key, fp = ARGV[b + 4], ARGV[b + 5]
  if key ~= '' then
    local k = idem_key(ARGV[b], key)
    local prev = redis.call('GET', k)
    if prev then
      local id, prev_fp = split(prev)
      if prev_fp ~= fp then return {'conflict', i, id} end
    elseif in_batch[k] and in_batch[k] ~= fp then
      return {'conflict', i, ''}
    end
    in_batch[k] = in_batch[k] or fp
  end
end
local out = {'ok'}
local made = {}
local n = tonumber(redis.call('HGET', meta, 'n'))
local taken = n
for i = 0, count - 1 do
  local b = 7 + i * 6
  local topic, exclude, key, fp = ARGV[b], ARGV[b + 3], ARGV[b + 4], ARGV[b + 5]
  local k = nil
  if key ~= '' then k = idem_key(topic, key) end
  local prev = k and (made[k] or redis.call('GET', k))
  if prev then
    local id = split(prev)
    table.insert(out, id)
    table.insert(out, 1)
  else
    n = n + 1
    local seq = string.format('%d', n)
    if ARGV[6] == '1' then
      local fields = {stream, 'MAXLEN', '~', ARGV[2], '*', 'e', epoch, 'n', seq,
        'topic', topic, 'type', ARGV[b + 1], 'data', ARGV[b + 2], 'at', ARGV[3]}
      if exclude ~= '' then
        table.insert(fields, 'exclude')
        table.insert(fields, exclude)
      end
      redis.call('XADD', unpack(fields))
    else
      if exclude == '' then exclude = '-' end
      redis.call('XADD', stream, 'MAXLEN', '~', ARGV[2], '*', 'm',
        epoch .. ' ' .. seq .. ' ' .. ARGV[3] .. ' ' .. exclude .. ' ' .. topic .. ' ' .. ARGV[b + 1] .. '\n' .. ARGV[b + 2])
    end
    local id = epoch .. '-' .. seq
    if k then
      made[k] = id .. ' ' .. fp
      redis.call('SET', k, made[k], 'PX', ARGV[4])
    end
    table.insert(out, id)
    table.insert(out, 0)
  end
end
if n ~= taken then
  redis.call('HSET', meta, 'n', string.format('%d', n))
end
return out
";

/// `{epoch, n, start, oldest}`; see [`STATE`].
pub(super) static STATE_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{ENSURE_EPOCH}{STATE}")));

/// Starts a new epoch if the log is still in the given one; see [`BUMP`].
pub(super) static BUMP_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{ENSURE_EPOCH}{BUMP}")));

/// Numbers and appends a batch; see [`PUBLISH`].
pub(super) static PUBLISH_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{ENSURE_EPOCH}{PUBLISH}")));

/// The meta hash's key for a stream key.
pub(super) fn meta_key(stream: &str) -> String {
    format!("{stream}:meta")
}
