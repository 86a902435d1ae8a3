-- Send dead jobs back to the queue with a fresh set of attempts and stalls.
-- KEYS[1] dead zset, KEYS[2] pending list
-- ARGV[1] job key prefix, ARGV[2] batch size when no ids are given,
-- ARGV[3] queue key prefix, ARGV[4..] ids (none: the oldest ARGV[2] dead
-- jobs of the queue)
-- Returns { ids taken from the dead set, jobs sent back }.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local ids = {}
if #ARGV >= 4 then
  for i = 4, #ARGV do ids[#ids + 1] = ARGV[i] end
else
  ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)
end
local taken, n = 0, 0
for i = 1, #ids do
  if redis.call('ZREM', KEYS[1], ids[i]) == 1 then
    taken = taken + 1
    local key = ARGV[1] .. ids[i]
    if redis.call('EXISTS', key) == 1 then
      -- a dead job's record expires with the dead retention; a live one must not
      redis.call('PERSIST', key)
      redis.call('PERSIST', key .. ':log')
      redis.call('HSET', key, 'state', 'pending', 'attempts', 0, 'stalls', 0, 'postponed', 0,
        'updated', now)
      redis.call('HDEL', key, 'finished', 'burying')
      make_ready(KEYS[2], ARGV[3], ids[i], redis.call('HGET', key, 'group'), true)
      n = n + 1
    end
  end
end
return { taken, n }
