-- Enqueue jobs: store each hash, then make the job ready now or schedule it.
-- A job with dedup keys is created only if one of them was not seen within
-- its TTL; the keys and the job are written together, so an event counts as
-- seen exactly when a job standing for it exists.
-- KEYS[1] pending list, KEYS[2] scheduled zset, KEYS[3] set of queue names
-- ARGV[1] job key prefix, ARGV[2] seen key prefix, ARGV[3] queue,
-- ARGV[4] max attempts, ARGV[5] delay ms, ARGV[6] seen TTL ms,
-- ARGV[7..] triples: id, payload, dedup keys joined by \31 ('' for none)
-- Pushing an id that exists already does nothing (pushes are idempotent by id).
-- Returns, per job, its id, or false when its dedup key was already seen.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local delay = tonumber(ARGV[5])
local state = 'pending'
if delay > 0 then state = 'scheduled' end
redis.call('SADD', KEYS[3], ARGV[3])
local out = {}
for i = 7, #ARGV, 3 do
  local id, payload, dedup = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local fresh = true
  if dedup ~= '' then
    -- the item's keys, separated by \31: it is new if any of them is
    fresh = false
    for key in string.gmatch(dedup, '[^\31]+') do
      if redis.call('SET', ARGV[2] .. key, id, 'NX', 'PX', ARGV[6]) then fresh = true end
    end
  end
  if fresh and redis.call('EXISTS', ARGV[1] .. id) == 1 then
    -- pushed before under this id (a retried push, the app's outbox relay):
    -- the job exists already and is left as it is
    out[#out + 1] = id
  elseif fresh then
    redis.call('HSET', ARGV[1] .. id, 'queue', ARGV[3], 'payload', payload, 'state', state,
      'attempts', 0, 'max', ARGV[4], 'created', now, 'updated', now)
    if delay > 0 then
      redis.call('ZADD', KEYS[2], now + delay, id)
    else
      redis.call('LPUSH', KEYS[1], id)
    end
    out[#out + 1] = id
  else
    out[#out + 1] = false
  end
end
return out
