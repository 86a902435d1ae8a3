-- A failed attempt the retry layer runs again in place (a short backoff, slept
-- in the worker): log it, keep its error, and count it in the queue's stats
-- as settle.lua counts a failed attempt settled in Redis, so the failed
-- totals and the failure rate see every failed attempt. A job discarded while
-- it ran is left without a trace.
-- KEYS[1] job hash, KEYS[2] its attempt log, KEYS[3] stats hash
-- ARGV[1] attempt record (JSON), ARGV[2] error text, ARGV[3] log entries
-- kept, ARGV[4] minute slots in the stats ring
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[3]), -1)
redis.call('HSET', KEYS[1], 'error', ARGV[2])
redis.call('HINCRBY', KEYS[3], 'failed', 1)
local minute = math.floor(now / 60000)
local slot = minute % tonumber(ARGV[4])
if tonumber(redis.call('HGET', KEYS[3], 'm:' .. slot)) ~= minute then
  redis.call('HSET', KEYS[3], 'm:' .. slot, minute, 'c:' .. slot, 0, 'f:' .. slot, 0)
end
redis.call('HINCRBY', KEYS[3], 'f:' .. slot, 1)
return 1
