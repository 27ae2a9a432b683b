-- The stream's position, created if unknown. Returns {epoch, top offset}.
local epoch, top = meta()
return {epoch, top}
