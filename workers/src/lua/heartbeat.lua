-- Record that a worker is alive, stamped with the Redis clock: the reaper
-- compares heartbeats with the same clock, so a worker whose own clock runs
-- behind is not taken for dead. (The queue registry is another slot in a
-- cluster: the caller adds the queue to it with a command of its own.)
-- KEYS[1] workers zset, KEYS[2] worker info hash
-- ARGV[1] worker, ARGV[2] info hash TTL ms, ARGV[3..] info field, value pairs
-- Returns the heartbeat time (ms since the epoch, Redis clock).
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
redis.call('HSET', KEYS[2], 'heartbeat', now)
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return now
