-- Appends one publication and publishes it to the cluster, atomically.
-- ARGV: 2 size (MAXLEN), 3 ttl ms (0: none), 4 now ms, 5 event, 6 '1' when there is data,
--       7 data, 8 cluster payload without its position, 9 the topic's channel.
--       10 deadline (ms, Redis's clock): past it, the node stopped waiting for this answer.
-- Returns {epoch, offset}, or the error STALE when run after its deadline (nothing applied:
-- the publisher was, or will be, told the append failed).
local t = redis.call('TIME')
if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > tonumber(ARGV[10]) then
  return redis.error_reply('STALE the append reached Redis after its deadline: not applied')
end
local epoch, top = meta(true)
local off = top + 1
local id = string.format('%d-0', off)
-- XADD first: should it fail, no offset was consumed (scripts are not rolled back).
-- Approximate trimming ('~': whole radix-tree nodes, far cheaper than exact trimming on every
-- append); reads serve nothing below 'l' (set below), so the limit is exact there.
if ARGV[6] == '1' then
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], id, 'e', ARGV[5], 't', ARGV[4], 'd', ARGV[7])
else
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], id, 'e', ARGV[5], 't', ARGV[4])
end
-- 'l': the oldest offset still kept, as exact trimming would have left it (reads serve nothing
-- older; it only moves up, as trimmed entries never come back).
local low = math.max(tonumber(redis.call('HGET', KEYS[2], 'l')) or 1, off - tonumber(ARGV[2]) + 1)
redis.call('HSET', KEYS[2], 'o', off, 'l', low)
if ARGV[3] ~= '0' then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
redis.call('PUBLISH', ARGV[9], ARGV[8] .. epoch .. ':' .. string.format('%d', off))
return {epoch, off}
