-- Shared head of the history scripts. KEYS[1] is the topic's stream, KEYS[2] its meta hash
-- (e = epoch, o = top offset), ARGV[1] a fresh candidate epoch drawn in Rust (Lua's randomness
-- is deterministic). A missing meta hash means the stream never existed or its data was lost
-- (Redis restarted without it, FLUSHALL): continuity cannot be proven, so the stream starts
-- again, empty, with the candidate epoch.
local function meta()
  local m = redis.call('HMGET', KEYS[2], 'e', 'o')
  if m[1] then
    return m[1], tonumber(m[2]) or 0
  end
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'e', ARGV[1], 'o', 0)
  return ARGV[1], 0
end
