-- Shared head of the history scripts. A topic's stream `sk` and meta hash `mk` (e = epoch,
-- o = top offset, l = lowest offset served), and the instance's epoch `ek`
-- (<prefix>:inbox_epoch, shared with the inboxes: it is missing exactly when the instance lost
-- its data); ARGV[1] is always a fresh candidate for it drawn in Rust (Lua's randomness is
-- deterministic).
-- A missing meta hash means the stream was never written or its data was lost (Redis restarted
-- without it, FLUSHALL — then the instance's epoch is new too). Its epoch is derived from the
-- instance's epoch and the topic: reads report it without writing the stream (read-only clients
-- must not grow Redis), and the first append keeps it.
local function instance_epoch(ek)
  local e = redis.call('GET', ek)
  if e then return e end
  redis.call('SET', ek, ARGV[1])
  return ARGV[1]
end

-- The stream's {epoch, top}; with `create`, a missing stream is written (empty).
local function meta(sk, mk, ek, create)
  local m = redis.call('HMGET', mk, 'e', 'o')
  if m[1] then
    return m[1], tonumber(m[2]) or 0
  end
  local e = string.sub(redis.sha1hex(instance_epoch(ek) .. '\255' .. mk), 1, 8)
  if create then
    redis.call('DEL', sk)
    redis.call('HSET', mk, 'e', e, 'o', 0)
  end
  return e, 0
end
