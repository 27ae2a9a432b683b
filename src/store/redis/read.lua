-- A history read, consistent with the position it reports (one script).
-- ARGV: 2 after, 3 limit, 4 cutoff ms (entries appended before it are skipped; 0: none).
-- Appends trim approximately: entries older than `l` (the oldest offset exact trimming would
-- have kept, in the meta hash) may still be there and are treated as trimmed.
-- Returns {epoch, top, complete (1/0), entries newest first as XREVRANGE gives them}.
-- Mirrors the memory store's ReadAcc: candidates are judged newest first; an entry older than
-- the cutoff is skipped, and once `limit` are taken any further candidate stops the read; both
-- make the answer incomplete.
local epoch, top = meta(KEYS[1], KEYS[2], KEYS[3], false)
local after = tonumber(ARGV[2])
if top == 0 then
  -- Never written (or lost): nothing to serve, and nothing written.
  return {epoch, 0, after == 0 and 1 or 0, {}}
end
local limit = tonumber(ARGV[3])
local cutoff = tonumber(ARGV[4])
local first = top + 1
local head = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
if head[1] then
  first = tonumber(string.match(head[1][1], '^(%d+)')) or first
end
local low = tonumber(redis.call('HGET', KEYS[2], 'l'))
if low then
  first = math.max(first, low)
end
local complete = after <= top and after + 1 >= first
local out = {}
local max = '+'
local min = string.format('%d-0', math.max(after + 1, first))
local chunk = math.min(limit + 1, 1000)
local done = false
while not done do
  local batch = redis.call('XREVRANGE', KEYS[1], max, min, 'COUNT', chunk)
  for i = 1, #batch do
    local f = batch[i][2]
    local t = 0
    for j = 1, #f, 2 do
      if f[j] == 't' then t = tonumber(f[j + 1]) or 0 end
    end
    if t < cutoff then
      complete = false
    elseif #out >= limit then
      complete = false
      done = true
      break
    else
      out[#out + 1] = batch[i]
    end
  end
  if #batch < chunk then
    done = true
  else
    max = '(' .. batch[#batch][1]
  end
end
return {epoch, top, complete and 1 or 0, out}
