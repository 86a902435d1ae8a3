-- Send dead jobs back to the queue with a fresh set of attempts.
-- KEYS[1] dead zset, KEYS[2] pending list
-- ARGV[1] job key prefix, ARGV[2..] ids (none: every dead job of the queue)
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local ids = {}
if #ARGV >= 2 then
  for i = 2, #ARGV do ids[#ids + 1] = ARGV[i] end
else
  ids = redis.call('ZRANGE', KEYS[1], 0, -1)
end
local n = 0
for i = 1, #ids do
  if redis.call('ZREM', KEYS[1], ids[i]) == 1 then
    local key = ARGV[1] .. ids[i]
    if redis.call('EXISTS', key) == 1 then
      redis.call('HSET', key, 'state', 'pending', 'attempts', 0, 'updated', now)
      redis.call('HDEL', key, 'finished')
      redis.call('RPUSH', KEYS[2], ids[i])
      n = n + 1
    end
  end
end
return n
