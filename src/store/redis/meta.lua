-- Shared head of the history scripts. KEYS[1] is the topic's stream, KEYS[2] its meta hash
-- (e = epoch, o = top offset), KEYS[3] the instance's epoch (<prefix>:inbox_epoch, shared with
-- the inboxes: it is missing exactly when the instance lost its data); ARGV[1] a fresh candidate
-- for it drawn in Rust (Lua's randomness is deterministic).
-- A missing meta hash means the stream was never written or its data was lost (Redis restarted
-- without it, FLUSHALL — then the instance's epoch is new too). Its epoch is derived from the
-- instance's epoch and the topic: reads report it without writing the stream (read-only clients
-- must not grow Redis), and the first append keeps it.
local function instance_epoch()
  local e = redis.call('GET', KEYS[3])
  if e then return e end
  redis.call('SET', KEYS[3], ARGV[1])
  return ARGV[1]
end

-- The stream's {epoch, top}; with `create`, a missing stream is written (empty).
local function meta(create)
  local m = redis.call('HMGET', KEYS[2], 'e', 'o')
  if m[1] then
    return m[1], tonumber(m[2]) or 0
  end
  local e = string.sub(redis.sha1hex(instance_epoch() .. '\255' .. KEYS[2]), 1, 8)
  if create then
    redis.call('DEL', KEYS[1])
    redis.call('HSET', KEYS[2], 'e', e, 'o', 0)
  end
  return e, 0
end
