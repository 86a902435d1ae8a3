-- Mark a batch of jobs done, keep them for inspection within bounds, count them.
-- Only jobs still claimed by this worker are touched, so retrying a batch whose
-- reply was lost counts nothing twice, and a job a peer recovered (and now
-- runs) is left alone.
-- A batch costs a fixed number of commands, none per job: a done job's hash
-- is not written (it still says `running`; its id and finish time in the done
-- set say it is done, see `Queue::job`) and gets no TTL. Instead the done set
-- is trimmed here, by age and by count, and the hashes and attempt logs of
-- the ids trimmed off it are deleted with them, in one DEL. Called with no ids,
-- it only trims: the upkeep does so on every heartbeat, so age applies on an
-- idle queue too.
-- KEYS[1] worker's running set, KEYS[2] done zset, KEYS[3] stats hash
-- ARGV[1] job key prefix, ARGV[2] retention ms, ARGV[3] max kept done jobs,
-- ARGV[4] minute slots in the stats ring, ARGV[5] most ids trimmed per call,
-- ARGV[6..] ids (as many as ARGV[5] at most: Lua's unpack takes ~8,000 values)
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
-- numbers handed to redis.call are formatted with "%.17g" each time: format once
local now_s = string.format('%d', now)
local prefix = ARGV[1]
local retention = tonumber(ARGV[2])
local keep = tonumber(ARGV[3])
local kept = retention > 0 and keep > 0

local ids = {}
if #ARGV >= 6 then
  local held = redis.call('SMISMEMBER', KEYS[1], unpack(ARGV, 6))
  for i = 1, #held do
    if held[i] == 1 then ids[#ids + 1] = ARGV[i + 5] end
  end
end
local n = #ids

if n > 0 then
  redis.call('SREM', KEYS[1], unpack(ids))
  if kept then
    local members = {}
    for i = 1, n do
      members[2 * i - 1] = now_s
      members[2 * i] = ids[i]
    end
    redis.call('ZADD', KEYS[2], unpack(members))
  else
    local keys = {}
    for i = 1, n do
      keys[2 * i - 1] = prefix .. ids[i]
      keys[2 * i] = prefix .. ids[i] .. ':log'
    end
    redis.call('DEL', unpack(keys))
  end
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

if kept then
  -- the oldest ids go first, whether past retention or past the count (both
  -- are the lowest scores), a bounded number per call; ZCARD and ZCOUNT are
  -- O(1) and O(log n), so a big done set costs no more per call
  local limit = tonumber(ARGV[5])
  local old = redis.call('ZCARD', KEYS[2]) - keep
  if old < limit then
    local aged = redis.call('ZCOUNT', KEYS[2], '-inf', string.format('%d', now - retention))
    if aged > old then old = aged end
  end
  old = math.min(old, limit)
  if old > 0 then
    local gone = redis.call('ZRANGE', KEYS[2], 0, old - 1)
    local keys = {}
    for i = 1, #gone do
      keys[2 * i - 1] = prefix .. gone[i]
      keys[2 * i] = prefix .. gone[i] .. ':log'
    end
    redis.call('DEL', unpack(keys))
    redis.call('ZREMRANGEBYRANK', KEYS[2], 0, old - 1)
  end
end
return n
