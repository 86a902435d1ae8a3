-- Enqueue one job: store its hash, then make it ready now or schedule it.
-- KEYS[1] pending list, KEYS[2] scheduled zset, KEYS[3] job hash
-- ARGV[1] id, ARGV[2] queue, ARGV[3] payload, ARGV[4] max attempts, ARGV[5] delay ms
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local delay = tonumber(ARGV[5])
local state = 'pending'
if delay > 0 then state = 'scheduled' end
redis.call('HSET', KEYS[3], 'queue', ARGV[2], 'payload', ARGV[3], 'state', state,
  'attempts', 0, 'max', ARGV[4], 'created', now, 'updated', now)
if delay > 0 then
  redis.call('ZADD', KEYS[2], now + delay, ARGV[1])
else
  redis.call('LPUSH', KEYS[1], ARGV[1])
end
return now
