--[[
  Records that a chunk of a precompute run finished, counting it once.
  Input:
    KEYS[1] run meta hash
    KEYS[2] run done set (chunk indexes)
    ARGV[1] chunk index
    ARGV[2] rows in the chunk (distinct keys)
  Its writes were counted as they were made, into "written" and "cw:<index>" (see
  RunStore.writtenCounters), by every attempt of the chunk: the rest of its keys were there
  before the run, and are counted as skipped.
  Output: how many chunks are done. A retried or duplicated chunk changes nothing.
]]
if redis.call("SADD", KEYS[2], ARGV[1]) == 1 then
  local field = "cw:" .. ARGV[1]
  local written = tonumber(redis.call("HGET", KEYS[1], field) or "0")
  redis.call("HINCRBY", KEYS[1], "rows", ARGV[2])
  redis.call("HINCRBY", KEYS[1], "skipped", math.max(0, tonumber(ARGV[2]) - written))
  redis.call("HDEL", KEYS[1], field)
end
return redis.call("SCARD", KEYS[2])
