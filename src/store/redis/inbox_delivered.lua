-- Counts deliveries. ARGV: 2 user, 3 offset, 4 times.
local id = at_offset(ARGV[2], ARGV[3])
if id and tonumber(ARGV[4]) > 0 then
  local k = mkey(id)
  local s = redis.call('HGET', k, 's')
  if s == 'p' or s == 'd' then
    redis.call('HSET', k, 's', 'd')
    redis.call('HINCRBY', k, 'n', ARGV[4])
  end
end
return 0
