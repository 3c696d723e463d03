--[[
  Records that a chunk of a precompute run finished, counting it once.
  Input:
    KEYS[1] run meta hash
    KEYS[2] run done set (chunk indexes)
    ARGV[1] chunk index
    ARGV[2] rows in the chunk
    ARGV[3] predictions newly written
    ARGV[4] keys skipped (already present)
  Output: how many chunks are done. A retried or duplicated chunk changes nothing.
]]
if redis.call("SADD", KEYS[2], ARGV[1]) == 1 then
  redis.call("HINCRBY", KEYS[1], "rows", ARGV[2])
  redis.call("HINCRBY", KEYS[1], "written", ARGV[3])
  redis.call("HINCRBY", KEYS[1], "skipped", ARGV[4])
end
return redis.call("SCARD", KEYS[2])
