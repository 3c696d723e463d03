-- A run's state change, atomic against any other: KEYS[1] the run's record; ARGV[1] the
-- new state, then field/value pairs to set with it. An ended run keeps its end ("ended");
-- a run publishing its table can no longer be cancelled ("finishing"); else "applied".
local current = redis.call('HGET', KEYS[1], 'state')
if current == 'completed' or current == 'failed' or current == 'cancelled' then
  return 'ended'
end
if ARGV[1] == 'cancelled' and current == 'finishing' then
  return 'finishing'
end
redis.call('HSET', KEYS[1], 'state', ARGV[1], unpack(ARGV, 2))
return 'applied'
