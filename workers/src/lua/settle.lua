-- Settle one job that did not succeed: reschedule it, park it dead, or put it
-- back unchanged (shutdown or lost lease).
-- KEYS[1] worker's running set, KEYS[2] scheduled zset, KEYS[3] dead zset,
-- KEYS[4] pending list, KEYS[5] stats hash
-- ARGV[1] job key prefix, ARGV[2] id, ARGV[3] outcome (retry|dead|requeue),
-- ARGV[4] delay ms, ARGV[5] error text
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local key = ARGV[1] .. ARGV[2]
redis.call('SREM', KEYS[1], ARGV[2])
if redis.call('EXISTS', key) == 0 then return 0 end
local outcome = ARGV[3]
if outcome == 'retry' then
  redis.call('HSET', key, 'state', 'scheduled', 'updated', now, 'error', ARGV[5])
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[2])
  redis.call('HINCRBY', KEYS[5], 'failed', 1)
  redis.call('HINCRBY', KEYS[5], 'failed:' .. math.floor(now / 60000), 1)
elseif outcome == 'dead' then
  redis.call('HSET', key, 'state', 'dead', 'updated', now, 'error', ARGV[5], 'finished', now)
  redis.call('ZADD', KEYS[3], now, ARGV[2])
  redis.call('HINCRBY', KEYS[5], 'failed', 1)
  redis.call('HINCRBY', KEYS[5], 'failed:' .. math.floor(now / 60000), 1)
  redis.call('HINCRBY', KEYS[5], 'dead', 1)
else
  -- the interrupted attempt is given back: a deploy must not use up retries
  redis.call('HINCRBY', key, 'attempts', -1)
  redis.call('HSET', key, 'state', 'pending', 'updated', now)
  redis.call('RPUSH', KEYS[4], ARGV[2])
end
return 1
