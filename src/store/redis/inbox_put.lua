-- Stores a durable message. ARGV: 2 user, 3 instances, 4 this instance, 5 now ms, 6 expiry ms,
-- 7 max messages, 8 event, 9 '1' with a topic, 10 topic, 11 '1' with data, 12 data,
-- 13 a candidate inbox epoch, 14 the id counter's start when it is missing.
-- The id is <prefix>:mid's next value * instances + this instance: unique cluster-wide, and
-- `id % instances` names the instance that holds it.
-- Returns {id, offset, inbox epoch part, dropped...}, each dropped message as {id, user, offset}.
local epoch = inbox_epoch(ARGV[13])
local user = ARGV[2]
local ib = P .. 'ib:' .. user
local off = redis.call('INCR', P .. 'io:' .. user)
if redis.call('EXISTS', P .. 'mid') == 0 then
  -- A new instance, or one that lost its data: the ids it handed out before are never reused
  -- (ARGV[14] is first_message_id of the current time, see the Rust side).
  redis.call('SET', P .. 'mid', ARGV[14])
end
local n = redis.call('INCR', P .. 'mid')
local id = string.format('%d', n * tonumber(ARGV[3]) + tonumber(ARGV[4]))
local k = mkey(id)
redis.call('HSET', k, 'u', user, 'o', off, 's', 'p', 'n', 0, 'c', ARGV[5], 'x', ARGV[6],
  'e', ARGV[8])
if ARGV[9] == '1' then redis.call('HSET', k, 'tp', ARGV[10]) end
if ARGV[11] == '1' then redis.call('HSET', k, 'd', ARGV[12]) end
redis.call('ZADD', ib, off, id)
redis.call('ZADD', P .. 'live', ARGV[5], id)
local out = {id, off, epoch}
local excess = redis.call('ZCARD', ib) - tonumber(ARGV[7])
if excess > 0 then
  for _, old in ipairs(redis.call('ZRANGE', ib, 0, excess - 1)) do
    local c = finish(old, 'r', ARGV[5])
    if c then out[#out + 1] = c end
  end
end
return out
