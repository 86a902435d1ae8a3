-- Promote due scheduled jobs (a bounded batch, never an unbounded unpack), then
-- claim up to ARGV[2] ready jobs for this worker.
-- Claiming to run counts the attempt. A job that must not run again is claimed
-- without counting one and returned with the reason it is to be dead-lettered:
-- its attempts are used up or it stalled ARGV[5] times (both only after a
-- worker died while running it), or an earlier dead-lettering failed (the
-- reason it recorded in `burying`).
-- A claimed job costs two commands (HMGET, HSET); the rest is per batch.
-- Jobs of groups (see make_ready) are claimed in turns, one group after
-- another; half a batch at most goes to ungrouped jobs while groups wait.
-- KEYS[1] pending list, KEYS[2] scheduled zset, KEYS[3] this worker's running set
-- ARGV[1] job key prefix, ARGV[2] max jobs (at most 1000), ARGV[3] promote
-- limit (at most 1000), ARGV[4] worker, ARGV[5] max stalls, ARGV[6] queue
-- key prefix, ARGV[7] how long the suspect lane stays held unrenewed (ms)
-- Returns a flat array: id, payload, attempt (integer), max attempts
-- (integer), bury reason ('' to run it), repeated.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
-- numbers handed to redis.call are formatted with "%.17g" each time: format once
local now_s = string.format('%d', now)
local prefix = ARGV[1]
local worker = ARGV[4]
local max_stalls = tonumber(ARGV[5])
local qprefix = ARGV[6]
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now_s, 'LIMIT', 0, tonumber(ARGV[3]))
if #due > 0 then
  redis.call('ZREM', KEYS[2], unpack(due))
  local plain = {}
  for i = 1, #due do
    local key = prefix .. due[i]
    local group = redis.call('HGET', key, 'group')
    redis.call('HSET', key, 'state', 'pending')
    if group then
      make_ready(KEYS[1], qprefix, due[i], group, true)
    else
      plain[#plain + 1] = due[i]
    end
  end
  -- the same order as one RPUSH each: the latest due is claimed first
  if #plain > 0 then redis.call('RPUSH', KEYS[1], unpack(plain)) end
end
local out = {}
local claimed = {}
local want = tonumber(ARGV[2])
if want < 1 then return out end

-- The suspect lane. A job given back by a dead worker that ran others too
-- is a suspect (see reap.lua): one worker at a time holds the lane, claims
-- nothing new until its own running jobs are done, then runs the suspects
-- one by one, each alone, so the next crash names the one job that caused
-- it. `{queue prefix}lane` names the holder for ARGV[7] ms, renewed by
-- each of its claims; KEYS[3]..':alone' is the suspect it runs alone.
local alone_key = KEYS[3] .. ':alone'
local alone = redis.call('GET', alone_key)
if alone then
  if redis.call('SISMEMBER', KEYS[3], alone) == 1 then return out end
  redis.call('DEL', alone_key)
end
local suspects = qprefix .. 'suspects'
local lane = qprefix .. 'lane'
local holder = redis.call('GET', lane)
local ids = {}
if redis.call('LLEN', suspects) > 0 and (not holder or holder == worker) then
  redis.call('SET', lane, worker, 'PX', tonumber(ARGV[7]))
  -- drain first: a suspect never shares the worker with another job
  if redis.call('SCARD', KEYS[3]) > 0 then return out end
  local id = redis.call('RPOP', suspects)
  redis.call('SET', alone_key, id)
  ids[1] = id
  want = 0
elseif holder == worker then
  redis.call('DEL', lane)
end

-- Up to `k` jobs of the groups, one group's turn after another; a group
-- alone in the ring gives all it has in one RPOP.
local function from_groups(k, ids)
  local ring = qprefix .. 'groups'
  local taken, turns = 0, 0
  while taken < k and turns < 2 * k + 10 do
    turns = turns + 1
    local group = redis.call('RPOP', ring)
    if not group then break end
    local glist = qprefix .. 'g:' .. group
    local n = 1
    if redis.call('LLEN', ring) == 0 then n = k - taken end
    local got = redis.call('RPOP', glist, n)
    if got then
      for _, id in ipairs(got) do ids[#ids + 1] = id end
      taken = taken + #got
    end
    if redis.call('LLEN', glist) > 0 then redis.call('LPUSH', ring, group) end
  end
  if taken > 0 then redis.call('DECRBY', qprefix .. 'grouped', taken) end
end

-- one RPOP for the ungrouped part of the batch (Redis 6.2+)
if want > 0 then
  local plain = redis.call('RPOP', KEYS[1], math.ceil(want / 2)) or {}
  for _, id in ipairs(plain) do ids[#ids + 1] = id end
  from_groups(want - #ids, ids)
end
if #ids < want then
  local more = redis.call('RPOP', KEYS[1], want - #ids) or {}
  for _, id in ipairs(more) do ids[#ids + 1] = id end
end
if #ids == 0 then return out end
for _, id in ipairs(ids) do
  local key = prefix .. id
  local f = redis.call('HMGET', key, 'payload', 'max', 'attempts', 'stalls', 'burying', 'claim')
  -- a job discarded while it waited has no hash any more: skip it
  if f[1] then
    local max = math.max(tonumber(f[2]) or 1, 1)
    local attempt = tonumber(f[3]) or 0
    local reason = f[5] or ''
    if reason == '' and (attempt >= max or (tonumber(f[4]) or 0) >= max_stalls) then
      reason = 'worker died while running it'
    end
    -- `claim` is 'bury' while the current claim only dead-letters the job and
    -- took no attempt, so giving it back (settle.lua 'requeue') returns an
    -- attempt only if one was taken; a run claim clears it (absent = 'run')
    if reason == '' then
      attempt = attempt + 1
      -- '%d' is an integer format; a number handed as it is gets '%.17g'
      local attempt_s = string.format('%d', attempt)
      if f[6] == 'bury' then
        redis.call('HSET', key, 'attempts', attempt_s, 'state', 'running', 'worker', worker,
          'updated', now_s, 'claim', 'run')
      else
        redis.call('HSET', key, 'attempts', attempt_s, 'state', 'running', 'worker', worker,
          'updated', now_s)
      end
    else
      redis.call('HSET', key, 'claim', 'bury', 'state', 'running', 'worker', worker,
        'updated', now_s)
    end
    claimed[#claimed + 1] = id
    out[#out + 1] = id
    out[#out + 1] = f[1]
    -- integers in the reply: no formatting on either side
    out[#out + 1] = attempt
    out[#out + 1] = max
    out[#out + 1] = reason
  end
end
if #claimed > 0 then
  redis.call('SADD', KEYS[3], unpack(claimed))
end
return out
