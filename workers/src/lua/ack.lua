-- Mark a batch of jobs done, keep them for inspection within bounds, count them.
-- KEYS[1] worker's running set, KEYS[2] done zset, KEYS[3] stats hash
-- ARGV[1] job key prefix, ARGV[2] retention ms, ARGV[3] max kept done jobs, ARGV[4..] ids
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local retention = tonumber(ARGV[2])
local keep = tonumber(ARGV[3])
local n = 0
for i = 4, #ARGV do
  local id = ARGV[i]
  local key = ARGV[1] .. id
  redis.call('SREM', KEYS[1], id)
  if redis.call('EXISTS', key) == 0 then
    -- discarded by an operator while it ran: leave no trace behind
  elseif retention <= 0 or keep <= 0 then
    redis.call('DEL', key, key .. ':log')
  else
    redis.call('HSET', key, 'state', 'done', 'updated', now, 'finished', now)
    redis.call('PEXPIRE', key, retention)
    redis.call('PEXPIRE', key .. ':log', retention)
    redis.call('ZADD', KEYS[2], now, id)
  end
  n = n + 1
end
redis.call('HINCRBY', KEYS[3], 'completed', n)
redis.call('HINCRBY', KEYS[3], 'completed:' .. math.floor(now / 60000), n)
if retention > 0 and keep > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - retention)
  local excess = redis.call('ZCARD', KEYS[2]) - keep
  if excess > 0 then
    local old = redis.call('ZRANGE', KEYS[2], 0, excess - 1)
    for i = 1, #old do
      redis.call('DEL', ARGV[1] .. old[i], ARGV[1] .. old[i] .. ':log')
    end
    redis.call('ZREMRANGEBYRANK', KEYS[2], 0, excess - 1)
  end
end
return n
