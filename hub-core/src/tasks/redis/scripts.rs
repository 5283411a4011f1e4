//! The Lua scripts that change tasks. Each runs atomically in Redis, so a change, its fence
//! check and its event are one step: two processes can never both win a race, and the event
//! sequence has no gap. Records stay opaque JSON to Lua (a Lua round trip would alter payloads:
//! `[]` would come back as `{}`); the fence fields sit beside them in the task's hash.
//!
//! Fence fields: `state`, `owner` (the worker running it, empty while queued), `attempt`, `v`
//! (the owner's write counter: an older write arriving late is dropped) and `msg` (the queue
//! entry that delivers the current attempt). A queue entry carries the id, the attempt, the
//! exclusive key and the record as queued, so a worker starts and ends a task without reading
//! it first.

use redis::Script;

const TERMINAL: &str = r"
local function terminal(state)
  return state == 'SUCCESS' or state == 'FAILURE' or state == 'REVOKED'
end
";

/// KEYS: task, queue, events, event seq, index, queue set, exclusive lock (the task key when
/// none), timeline. ARGV: id, record, queue, index score (queue time, µs), event cap, has key,
/// task key prefix, key, queue new to the caller (then it is added to the queue set), timeline
/// entry.
/// Returns `{1, seq}`, or `{0, holder id}` when the key is held.
const ENQUEUE: &str = r"
if ARGV[6] == '1' then
  local holder = redis.call('GET', KEYS[7])
  if holder and holder ~= ARGV[1] then
    local state = redis.call('HGET', ARGV[7] .. holder, 'state')
    if state and not terminal(state) then
      return {0, holder}
    end
  end
  redis.call('SET', KEYS[7], ARGV[1])
end
local msg = redis.call('XADD', KEYS[2], '*', 'id', ARGV[1], 'attempt', '1', 'key', ARGV[8],
  'record', ARGV[2])
redis.call('HSET', KEYS[1], 'state', 'PENDING', 'owner', '', 'attempt', '1', 'v', '0',
  'msg', msg, 'queue', ARGV[3], 'key', ARGV[8], 'record', ARGV[2])
redis.call('ZADD', KEYS[5], ARGV[4], ARGV[1])
redis.call('RPUSH', KEYS[8], ARGV[10])
if ARGV[9] == '1' then
  redis.call('SADD', KEYS[6], ARGV[3])
end
local seq = redis.call('INCR', KEYS[4])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], seq .. '-0', 'task', ARGV[2])
return {1, tostring(seq)}
";

/// KEYS: task, events, event seq, queue, exclusive lock (or the task key), kind counts,
/// this minute's counts, revokes, timeline, samples, the worker that ran it (or the task key).
/// ARGV: expected owner, expected attempt, expect PENDING, new state, record, new owner,
/// version, event cap, terminal, expiry ms, id, kind, runtime ms, has key, timeline entry,
/// timeline cap, and for a terminal write: its sample, finish time ms, samples cutoff ms,
/// runtime bucket field and wait bucket field ('' when it never started), wait ms, the
/// worker's outcome field ('' for none). Returns the event's seq; 0 when this owner's write of that version (or
/// a later one) is already stored (a retry whose answer was lost, or a late duplicate);
/// -1 when the task is gone; -2 when the fence refuses.
const TRANSITION: &str = r"
local h = redis.call('HMGET', KEYS[1], 'state', 'owner', 'attempt', 'v', 'msg')
if not h[1] then return -1 end
if h[3] ~= ARGV[2] then return -2 end
-- A write of this owner already stored: a late duplicate, or a retry whose answer was lost.
if ARGV[6] ~= '' and h[2] == ARGV[6] and tonumber(h[4]) >= tonumber(ARGV[7]) then return 0 end
if terminal(h[1]) or h[2] ~= ARGV[1] then return -2 end
if ARGV[3] == '1' and h[1] ~= 'PENDING' then return -2 end
if tonumber(h[4]) >= tonumber(ARGV[7]) then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[4], 'owner', ARGV[6], 'v', ARGV[7], 'record', ARGV[5])
redis.call('RPUSH', KEYS[9], ARGV[15])
redis.call('LTRIM', KEYS[9], -tonumber(ARGV[16]), -1)
if ARGV[9] == '1' then
  if h[5] then
    redis.call('XACK', KEYS[4], 'workers', h[5])
    redis.call('XDEL', KEYS[4], h[5])
  end
  if ARGV[14] == '1' and redis.call('GET', KEYS[5]) == ARGV[11] then
    redis.call('DEL', KEYS[5])
  end
  if ARGV[4] == 'REVOKED' then
    redis.call('HDEL', KEYS[8], ARGV[11])
  end
  redis.call('HINCRBY', KEYS[6], ARGV[12] .. '|' .. ARGV[4], 1)
  redis.call('HINCRBY', KEYS[6], ARGV[12] .. '|runtime_ms', ARGV[13])
  redis.call('HINCRBY', KEYS[7], ARGV[4], 1)
  redis.call('EXPIRE', KEYS[7], 90000)
  redis.call('ZADD', KEYS[10], ARGV[18], ARGV[17])
  if ARGV[20] ~= '' then
    redis.call('HINCRBY', KEYS[6], ARGV[20], 1)
    redis.call('HINCRBY', KEYS[6], ARGV[21], 1)
    redis.call('HINCRBY', KEYS[6], ARGV[12] .. '|wait_ms', ARGV[22])
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[10], '-inf', '(' .. ARGV[19])
  if ARGV[23] ~= '' and redis.call('EXISTS', KEYS[11]) == 1 then
    redis.call('HINCRBY', KEYS[11], ARGV[23], 1)
  end
  if tonumber(ARGV[10]) > 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[10])
    redis.call('PEXPIRE', KEYS[9], ARGV[10])
  end
end
local seq = redis.call('INCR', KEYS[3])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[8], seq .. '-0', 'task', ARGV[5])
return seq
";

/// Queues a task again with a fresh delivery (the old one is acknowledged and deleted): a
/// lost worker's task for its next attempt, or a task reserved but never started handed back.
/// KEYS: task, queue, events, event seq, timeline. ARGV: expected owner, expected attempt,
/// expect PENDING, new attempt, record, event cap, id, publish an event, timeline entry,
/// timeline cap. Returns the event's seq (0
/// without one); -1 when the task is gone; -2 when the fence refuses.
const REQUEUE: &str = r"
local h = redis.call('HMGET', KEYS[1], 'state', 'owner', 'attempt', 'msg', 'key')
if not h[1] then return -1 end
if terminal(h[1]) or h[2] ~= ARGV[1] or h[3] ~= ARGV[2] then return -2 end
if ARGV[3] == '1' and h[1] ~= 'PENDING' then return -2 end
if h[4] then
  redis.call('XACK', KEYS[2], 'workers', h[4])
  redis.call('XDEL', KEYS[2], h[4])
end
local msg = redis.call('XADD', KEYS[2], '*', 'id', ARGV[7], 'attempt', ARGV[4],
  'key', h[5] or '', 'record', ARGV[5])
redis.call('HSET', KEYS[1], 'state', 'PENDING', 'owner', '', 'attempt', ARGV[4], 'v', '0',
  'msg', msg, 'record', ARGV[5])
redis.call('RPUSH', KEYS[5], ARGV[9])
redis.call('LTRIM', KEYS[5], -tonumber(ARGV[10]), -1)
if ARGV[8] == '1' then
  local seq = redis.call('INCR', KEYS[4])
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], seq .. '-0', 'task', ARGV[5])
  return seq
end
return 0
";

/// The scripts, loaded once per backend (Redis caches them by hash; after a Redis restart the
/// client loads them again).
pub(super) struct Scripts {
    pub(super) enqueue: Script,
    pub(super) transition: Script,
    pub(super) requeue: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        let with_helpers = |body: &str| Script::new(&format!("{TERMINAL}{body}"));
        Scripts {
            enqueue: with_helpers(ENQUEUE),
            transition: with_helpers(TRANSITION),
            requeue: with_helpers(REQUEUE),
        }
    }
}
