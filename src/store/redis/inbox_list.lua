-- A user's live messages in offset order. ARGV: 2 user, 3 a candidate inbox epoch.
-- Returns {inbox epoch part, {{id, {offset, created, expiry, attempts, event, topic, data}}, ...}}.
local out = {}
for _, id in ipairs(redis.call('ZRANGE', P .. 'ib:' .. ARGV[2], 0, -1)) do
  out[#out + 1] = {id, redis.call('HMGET', mkey(id), 'o', 'c', 'x', 'n', 'e', 'tp', 'd')}
end
return {inbox_epoch(ARGV[3]), out}
