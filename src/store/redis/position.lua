-- The stream's position (an unknown stream is not written). Returns {epoch, top offset}.
local epoch, top = meta(false)
return {epoch, top}
