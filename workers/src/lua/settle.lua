-- Settle one job that did not succeed: reschedule it, postpone it, park it
-- dead, or put it back unchanged (shutdown or lost lease).
-- Only a job still claimed by this worker is touched, so retrying a call whose
-- reply was lost changes nothing, and a job a peer recovered is left alone.
-- KEYS[1] worker's running set, KEYS[2] scheduled zset, KEYS[3] dead zset,
-- KEYS[4] pending list, KEYS[5] stats hash
-- ARGV[1] job key prefix, ARGV[2] id, ARGV[3] outcome, one of
--   retry    run again after ARGV[4] ms (the failed attempt stays counted)
--   postpone a dependency was unavailable: the attempt is given back
--   bury     dead-lettering failed: try it again later (the reason is kept)
--   dead     park in the dead set
--   requeue  back to pending, the interrupted attempt given back
-- ARGV[4] delay ms (retry) or least delay ms (postpone, bury), ARGV[5] error
-- text, ARGV[6] postpone backoff base ms, ARGV[7] its cap ms, ARGV[8] jitter
-- in [0, 1), ARGV[9] dead retention ms (0: no limit), ARGV[10] most dead jobs
-- kept (0: no limit), ARGV[11] minute slots in the stats ring, ARGV[12] queue
-- key prefix
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local id = ARGV[2]
local key = ARGV[1] .. id
if redis.call('SREM', KEYS[1], id) == 0 then return 0 end
if redis.call('EXISTS', key) == 0 then return 0 end

local function count_failed(stats)
  redis.call('HINCRBY', stats, 'failed', 1)
  local minute = math.floor(now / 60000)
  local slot = minute % tonumber(ARGV[11])
  if tonumber(redis.call('HGET', stats, 'm:' .. slot)) ~= minute then
    redis.call('HSET', stats, 'm:' .. slot, minute, 'c:' .. slot, 0, 'f:' .. slot, 0)
  end
  redis.call('HINCRBY', stats, 'f:' .. slot, 1)
end

local function forget(ids)
  for i = 1, #ids do
    redis.call('DEL', ARGV[1] .. ids[i], ARGV[1] .. ids[i] .. ':log')
    redis.call('ZREM', KEYS[3], ids[i])
  end
end

local outcome = ARGV[3]
if outcome == 'retry' then
  redis.call('HSET', key, 'state', 'scheduled', 'updated', now, 'error', ARGV[5], 'postponed', 0)
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), id)
  count_failed(KEYS[5])
elseif outcome == 'postpone' or outcome == 'bury' then
  -- capped exponential backoff on how often this job was put off in a row
  local p = redis.call('HINCRBY', key, 'postponed', 1)
  local step = math.min(tonumber(ARGV[6]) * 2 ^ math.min(p - 1, 30), tonumber(ARGV[7]))
  local delay = math.max(math.floor(step / 2 + step / 2 * tonumber(ARGV[8])), tonumber(ARGV[4]))
  if outcome == 'postpone' then
    redis.call('HINCRBY', key, 'attempts', -1)
    redis.call('HSET', key, 'error', ARGV[5])
  else
    redis.call('HSET', key, 'burying', ARGV[5])
  end
  redis.call('HSET', key, 'state', 'scheduled', 'updated', now)
  redis.call('ZADD', KEYS[2], now + delay, id)
elseif outcome == 'dead' then
  redis.call('HSET', key, 'state', 'dead', 'updated', now, 'error', ARGV[5], 'finished', now)
  redis.call('HDEL', key, 'burying')
  redis.call('ZADD', KEYS[3], now, id)
  count_failed(KEYS[5])
  redis.call('HINCRBY', KEYS[5], 'dead', 1)
  -- bounded retention, a bounded amount of work per death
  local retention = tonumber(ARGV[9])
  if retention > 0 then
    redis.call('PEXPIRE', key, retention)
    redis.call('PEXPIRE', key .. ':log', retention)
    forget(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now - retention, 'LIMIT', 0, 100))
  end
  local keep = tonumber(ARGV[10])
  if keep > 0 then
    local excess = math.min(redis.call('ZCARD', KEYS[3]) - keep, 100)
    if excess > 0 then forget(redis.call('ZRANGE', KEYS[3], 0, excess - 1)) end
  end
else
  -- the interrupted attempt is given back: a deploy must not use up retries
  -- (a claim made only to dead-letter the job took none)
  if redis.call('HGET', key, 'claim') ~= 'bury' then
    redis.call('HINCRBY', key, 'attempts', -1)
  end
  redis.call('HSET', key, 'state', 'pending', 'updated', now)
  make_ready(KEYS[4], ARGV[12], id, redis.call('HGET', key, 'group'), true)
end
return 1
