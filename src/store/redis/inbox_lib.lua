-- Shared head of the inbox scripts. ARGV[1] is the key prefix ("<prefix>:"); keys are built here
-- from it (standalone Redis: several instances are spread by ringhub, not Redis Cluster).
-- A message is the hash <prefix>:msg:<id> (u user, o offset, s status, n attempts, c created ms,
-- x expiry ms, e event, tp topic, d data); s is p(ending), d(elivered), a(cked), x (expired) or
-- r (dropped). Live messages are in their user's <prefix>:ib:<user> (score: offset) and in the
-- instance's <prefix>:live (score: created ms); final ones in <prefix>:finals (score: when).
local P = ARGV[1]

local function mkey(id)
  return P .. 'msg:' .. id
end

-- Moves a live message to a final status at time `at`; returns {id, user, offset}, or nil when
-- it is unknown or already final.
local function finish(id, status, at)
  local k = mkey(id)
  redis.call('ZREM', P .. 'live', id)
  local m = redis.call('HMGET', k, 's', 'u', 'o')
  if not m[1] or m[1] == 'a' or m[1] == 'x' or m[1] == 'r' then
    return nil
  end
  redis.call('ZREM', P .. 'ib:' .. m[2], id)
  redis.call('HSET', k, 's', status)
  redis.call('HDEL', k, 'tp', 'e', 'd', 'x')
  redis.call('ZADD', P .. 'finals', at, id)
  return {id, m[2], m[3]}
end

-- The id of the live message at `offset` in `user`'s inbox, or nil.
local function at_offset(user, offset)
  local r = redis.call('ZRANGE', P .. 'ib:' .. user, offset, offset, 'BYSCORE', 'LIMIT', 0, 1)
  return r[1]
end

-- This instance's part of the inbox epoch (<prefix>:inbox_epoch), set to `candidate` when
-- missing: the instance lost its data, so inbox offsets restart and clients must learn it.
local function inbox_epoch(candidate)
  local e = redis.call('GET', P .. 'inbox_epoch')
  if e then return e end
  redis.call('SET', P .. 'inbox_epoch', candidate)
  return candidate
end
