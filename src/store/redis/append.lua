-- Appends a batch of publications and publishes them to the cluster, atomically and in order:
-- one call for many publications, on one or more topics of this instance.
-- KEYS: 1 the instance's epoch; per topic j (1-based) 2j its stream, 2j + 1 its meta hash.
-- ARGV: 1 a fresh epoch candidate, 2 deadline (ms, Redis's clock): past it, the node stopped
--       waiting for this answer; 3 now ms; 4 the number of topics T; per topic j, from
--       5 + 4(j - 1): size (MAXLEN), ttl ms (0: none), its channel, the header of its cluster
--       message; then 4 per publication: 2j (+ 1 when it has data), event, data, its part of
--       the cluster message.
-- Per topic, one PUBLISH at the end carries every publication of the call that was appended:
-- header, the length of `<epoch>:<first offset>` as one byte, that position, then the parts in
-- offset order (wire kind 'B'). A publication that was not appended is in no message.
-- Returns {n, err, epoch_1, first_1, ..., epoch_T, first_T}: the first n publications were
-- applied; when n is short, err says why publication n + 1 failed (none after it was tried).
-- Topic j's applied publications got consecutive offsets from first_j, in order (epoch ''
-- when none was tried). Or the error STALE when run after its deadline (nothing applied: the
-- publishers were, or will be, told the appends failed).
local t = redis.call('TIME')
if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > tonumber(ARGV[2]) then
  return redis.error_reply('STALE the append reached Redis after its deadline: not applied')
end
local now = ARGV[3]
local topics = tonumber(ARGV[4])
local base = 5 + 4 * topics
local epoch, top, low, first, parts = {}, {}, {}, {}, {}
local done, err = 0, ''
for p = base, #ARGV - 3, 4 do
  local h = tonumber(ARGV[p])
  local j = math.floor(h / 2)
  local sk = KEYS[2 * j]
  if not epoch[j] then
    local mk = KEYS[2 * j + 1]
    -- A step that may fail is a pcall: the loop stops there with everything before it
    -- applied, and each touched topic's meta is still written below.
    local m = redis.pcall('HMGET', mk, 'e', 'o', 'l')
    if m.err then
      err = m.err
      break
    end
    if m[1] then
      epoch[j], top[j], low[j] = m[1], tonumber(m[2]) or 0, tonumber(m[3]) or 1
    else
      epoch[j], top[j] = meta(sk, mk, KEYS[1], true)
      low[j] = 1
    end
    first[j] = top[j] + 1
    parts[j] = {}
  end
  local id = string.format('%d-0', top[j] + 1)
  -- XADD first: should it fail, no offset was consumed (scripts are not rolled back).
  local r
  if h % 2 == 1 then
    r = redis.pcall('XADD', sk, id, 'e', ARGV[p + 1], 't', now, 'd', ARGV[p + 2])
  else
    r = redis.pcall('XADD', sk, id, 'e', ARGV[p + 1], 't', now)
  end
  if type(r) == 'table' and r.err then
    err = r.err
    break
  end
  top[j] = top[j] + 1
  local b = parts[j]
  b[#b + 1] = ARGV[p + 3]
  done = done + 1
end
-- Once per topic: the cluster message of what was appended (PUBLISH does not fail on a valid
-- channel; were it to, the appends stand and the nodes catch up by the position check), its
-- top, 'l' (the oldest offset still kept as exact trimming would have left
-- it: reads serve nothing older; it only moves up), approximate trimming ('~': whole radix-tree
-- nodes, far cheaper than exact trimming), the TTL.
local out = {done, err}
for j = 1, topics do
  if epoch[j] then
    local a = 4 * j + 1
    if #parts[j] > 0 then
      local pos = epoch[j] .. ':' .. string.format('%d', first[j])
      redis.pcall('PUBLISH', ARGV[a + 2], ARGV[a + 3] .. string.char(#pos) .. pos .. table.concat(parts[j]))
    end
    local size = tonumber(ARGV[a])
    local ttl = ARGV[a + 1]
    local l = math.max(low[j], top[j] - size + 1)
    redis.call('HSET', KEYS[2 * j + 1], 'o', top[j], 'l', l)
    redis.pcall('XTRIM', KEYS[2 * j], 'MAXLEN', '~', size)
    if ttl ~= '0' then
      redis.call('PEXPIRE', KEYS[2 * j], ttl)
    end
    out[#out + 1] = epoch[j]
    out[#out + 1] = first[j]
  else
    out[#out + 1] = ''
    out[#out + 1] = 0
  end
end
return out
