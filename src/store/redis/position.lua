-- The stream's position (an unknown stream is not written). Returns {epoch, top offset}.
local epoch, top = meta(KEYS[1], KEYS[2], KEYS[3], false)
return {epoch, top}
