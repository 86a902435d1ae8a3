-- Mark a batch of jobs done, keep them for inspection within bounds, count them.
-- Only jobs still claimed by this worker are touched, so retrying a batch whose
-- reply was lost counts nothing twice, and a job a peer recovered (and now
-- runs) is left alone.
-- KEYS[1] worker's running set, KEYS[2] done zset, KEYS[3] stats hash
-- ARGV[1] job key prefix, ARGV[2] retention ms, ARGV[3] max kept done jobs,
-- ARGV[4] minute slots in the stats ring, ARGV[5..] ids
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local retention = tonumber(ARGV[2])
local keep = tonumber(ARGV[3])
local n = 0
local done = {}
for i = 5, #ARGV do
  local id = ARGV[i]
  local key = ARGV[1] .. id
  if redis.call('SREM', KEYS[1], id) == 1 then
    if retention <= 0 or keep <= 0 then
      redis.call('DEL', key, key .. ':log')
    -- HSET adds all three fields only to a hash that was gone: the job was
    -- discarded by an operator while it ran, so leave no trace behind
    elseif redis.call('HSET', key, 'state', 'done', 'updated', now, 'finished', now) == 3 then
      redis.call('DEL', key)
    else
      redis.call('PEXPIRE', key, retention)
      redis.call('PEXPIRE', key .. ':log', retention)
      done[#done + 1] = now
      done[#done + 1] = id
    end
    n = n + 1
  end
end
if #done > 0 then
  redis.call('ZADD', KEYS[2], unpack(done))
end
if n > 0 then
  redis.call('HINCRBY', KEYS[3], 'completed', n)
  -- the per-minute ring: slot = minute mod slots, each slot tagged with its
  -- minute so a slot left from an earlier lap reads as zero
  local minute = math.floor(now / 60000)
  local slot = minute % tonumber(ARGV[4])
  if tonumber(redis.call('HGET', KEYS[3], 'm:' .. slot)) ~= minute then
    redis.call('HSET', KEYS[3], 'm:' .. slot, minute, 'c:' .. slot, 0, 'f:' .. slot, 0)
  end
  redis.call('HINCRBY', KEYS[3], 'c:' .. slot, n)
end
if retention > 0 and keep > 0 then
  -- the hashes of jobs past retention expire by themselves
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - retention)
  local excess = math.min(redis.call('ZCARD', KEYS[2]) - keep, 1000)
  if excess > 0 then
    local old = redis.call('ZRANGE', KEYS[2], 0, excess - 1)
    for i = 1, #old do
      redis.call('DEL', ARGV[1] .. old[i], ARGV[1] .. old[i] .. ':log')
    end
    redis.call('ZREMRANGEBYRANK', KEYS[2], 0, excess - 1)
  end
end
return n
