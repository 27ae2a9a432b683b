-- Expires live messages created before the cutoff and forgets final statuses reached before
-- it, at most ARGV[4] of each; atomic on this instance, so whichever node runs it first reports
-- each expired message, and no other does. ARGV: 2 cutoff ms, 3 now ms, 4 max.
-- Returns {live examined, finals forgotten, {{id, user, offset}, ...}}.
local out = {}
local ids = redis.call('ZRANGE', P .. 'live', '-inf', '(' .. ARGV[2], 'BYSCORE', 'LIMIT', 0, ARGV[4])
for _, id in ipairs(ids) do
  local c = finish(id, 'x', ARGV[3])
  if c then out[#out + 1] = c end
end
local old = redis.call('ZRANGE', P .. 'finals', '-inf', '(' .. ARGV[2], 'BYSCORE', 'LIMIT', 0, ARGV[4])
for _, id in ipairs(old) do
  redis.call('DEL', mkey(id))
  redis.call('ZREM', P .. 'finals', id)
end
return {#ids, #old, out}
