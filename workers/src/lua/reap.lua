-- Give the jobs of workers that stopped heart-beating back to the queue.
-- KEYS[1] workers zset (name -> last heartbeat ms), KEYS[2] pending list
-- ARGV[1] queue key prefix, ARGV[2] job key prefix, ARGV[3] heartbeat age ms
-- that counts as dead, ARGV[4] the calling worker (never reaps itself)
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]))
local n = 0
for i = 1, #gone do
  local w = gone[i]
  if w ~= ARGV[4] then
    local running = ARGV[1] .. 'running:' .. w
    local ids = redis.call('SMEMBERS', running)
    for j = 1, #ids do
      local key = ARGV[2] .. ids[j]
      if redis.call('EXISTS', key) == 1 then
        redis.call('HSET', key, 'state', 'pending', 'updated', now, 'error', 'worker ' .. w .. ' stopped while running it')
        redis.call('RPUSH', KEYS[2], ids[j])
        n = n + 1
      end
    end
    redis.call('DEL', running)
    redis.call('ZREM', KEYS[1], w)
  end
end
return n
