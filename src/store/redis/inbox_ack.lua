-- Acknowledges a message. ARGV: 2 user, 3 offset, 4 now ms. Returns {id, user, offset} or nil.
local id = at_offset(ARGV[2], ARGV[3])
if not id then return false end
return finish(id, 'a', ARGV[4]) or false
