-- Appends a batch of publications and publishes them to the cluster, atomically and in order:
-- one call for many publications, on one or more topics of this instance.
-- KEYS: 1 the instance's epoch; per topic j (1-based) 2j its stream, 2j + 1 its meta hash.
-- ARGV: 1 a fresh epoch candidate, 2 deadline (ms, Redis's clock): past it, the node stopped
--       waiting for this answer; 3 now ms; 4 the number of topics T; per topic j, from
--       5 + 4(j - 1): size (MAXLEN), ttl ms (0: none), its channel, the header of its cluster
--       message; then the publications in runs of consecutive publications of one topic j, per
--       run: its header (j * 1024 + count) * 2 + long, when long (a run of one publication
--       whose event is longer than a part holds) that whole event, then the run's parts of the
--       cluster message joined (per publication: u16 event length, event, u32 data length or
--       0xFFFFFFFF for none, data, u64 connection to exclude — all big-endian). The script
--       reads each publication's event and data out of its part: everything a publication
--       carries travels once, in one argument per run (Redis turns every argument into a Lua
--       string, hashing all of its bytes).
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
local pcall, byte, sub, format = redis.pcall, string.byte, string.sub, string.format
-- An offset's entry id (`<offset>-0`) is its decimal digits but the last (`pre`, formatted
-- once per ten offsets) joined to one of these: string.format per publication costs more.
local last = {'0-0', '1-0', '2-0', '3-0', '4-0', '5-0', '6-0', '7-0', '8-0', '9-0'}
local epoch, top, low, first, parts = {}, {}, {}, {}, {}
local done, err = 0, ''
local p, nargs = 5 + 4 * topics, #ARGV
while p <= nargs do
  local h = tonumber(ARGV[p])
  local long = h % 2
  h = (h - long) / 2
  local count = h % 1024
  local j = (h - count) / 1024
  local ev = long == 1 and ARGV[p + 1]
  local run = ARGV[p + 1 + long]
  p = p + 2 + long
  local sk = KEYS[2 * j]
  if not epoch[j] then
    local mk = KEYS[2 * j + 1]
    -- A step that may fail is a pcall: the loop stops there with everything before it
    -- applied, and each touched topic's meta is still written below.
    local m = pcall('HMGET', mk, 'e', 'o', 'l')
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
  local n = top[j]
  local pre = format('%d', (n + 1 - (n + 1) % 10) / 10)
  if pre == '0' then pre = '' end
  local at = 1
  for _ = 1, count do
    n = n + 1
    local r = n % 10
    if r == 0 then pre = format('%d', n / 10) end
    local id = pre .. last[r + 1]
    local e1, e2 = byte(run, at, at + 1)
    local e = at + 2 + e1 * 256 + e2
    local d1, d2, d3, d4 = byte(run, e, e + 3)
    local event = ev or sub(run, at + 2, e - 1)
    local x, y
    -- XADD first: should it fail, no offset was consumed (scripts are not rolled back). The
    -- data length 0xFFFFFFFF is none (a data is at most 0xFFFFFFFE bytes).
    if d1 == 255 and d2 == 255 and d3 == 255 and d4 == 255 then
      x = pcall('XADD', sk, id, 'e', event, 't', now)
      y = e + 12
    else
      y = e + 12 + ((d1 * 256 + d2) * 256 + d3) * 256 + d4
      x = pcall('XADD', sk, id, 'e', event, 't', now, 'd', sub(run, e + 4, y - 9))
    end
    if x.err then
      n = n - 1
      err = x.err
      break
    end
    at = y
    done = done + 1
  end
  top[j] = n
  -- What of the run was appended goes into its topic's message (usually all of it).
  local got = parts[j]
  if at > #run then
    got[#got + 1] = run
  elseif at > 1 then
    got[#got + 1] = sub(run, 1, at - 1)
  end
  if err ~= '' then break end
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
      local body = #parts[j] == 1 and parts[j][1] or table.concat(parts[j])
      redis.pcall('PUBLISH', ARGV[a + 2], ARGV[a + 3] .. string.char(#pos) .. pos .. body)
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
