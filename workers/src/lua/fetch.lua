-- Promote due scheduled jobs (a bounded batch, never an unbounded unpack), then
-- claim up to ARGV[2] ready jobs for this worker. Claiming counts the attempt.
-- KEYS[1] pending list, KEYS[2] scheduled zset, KEYS[3] this worker's running set
-- ARGV[1] job key prefix, ARGV[2] max jobs, ARGV[3] promote limit, ARGV[4] worker
-- Returns a flat array: id, payload, attempt, max attempts, repeated.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
for i = 1, #due do
  redis.call('RPUSH', KEYS[1], due[i])
  redis.call('ZREM', KEYS[2], due[i])
  redis.call('HSET', ARGV[1] .. due[i], 'state', 'pending')
end
local out = {}
for _ = 1, tonumber(ARGV[2]) do
  local id = redis.call('RPOP', KEYS[1])
  if not id then break end
  local key = ARGV[1] .. id
  local fields = redis.call('HMGET', key, 'payload', 'max')
  -- a job discarded while it waited has no hash any more: skip it
  if fields[1] then
    local attempt = redis.call('HINCRBY', key, 'attempts', 1)
    redis.call('HSET', key, 'state', 'running', 'worker', ARGV[4], 'updated', now)
    redis.call('SADD', KEYS[3], id)
    out[#out + 1] = id
    out[#out + 1] = fields[1]
    out[#out + 1] = tostring(attempt)
    out[#out + 1] = fields[2]
  end
end
return out
