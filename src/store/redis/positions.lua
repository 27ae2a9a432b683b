-- The positions of several streams at once (the nodes' periodic position check): KEYS[1] the
-- instance's epoch, then each stream's meta hash. An unknown stream is not written.
-- Returns {epoch_1, top_1, epoch_2, top_2, ...} in the order of the keys.
local out = {}
for i = 2, #KEYS do
  local e, top = meta(nil, KEYS[i], KEYS[1], false)
  out[#out + 1] = e
  out[#out + 1] = top
end
return out
