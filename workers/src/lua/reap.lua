-- Give the jobs of workers that stopped heart-beating back to the queue, each
-- with a line in its attempt log. A worker that died running one job names
-- it: the job gets one more stall (and the attempt stays counted), so a job
-- that kills its worker every time is dead-lettered by a later claim
-- instead of cycling forever. A worker that died running several names
-- none of them: no stall is counted, the attempt is given back, and they
-- all go to the suspect lane, where each runs alone (see fetch.lua), so the
-- next crash names the culprit and its bystanders are not buried with it.
-- KEYS[1] workers zset (name -> last heartbeat, Redis clock), KEYS[2] the
-- suspect lane (a list)
-- ARGV[1] queue key prefix, ARGV[2] job key prefix, ARGV[3] heartbeat age ms
-- that counts as dead, ARGV[4] the calling worker, ARGV[5] mode: 'peers'
-- (reap silent peers, never the caller) or 'own' (the caller's previous life
-- left claims behind: recover them), ARGV[6] attempt log length kept
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local gone
if ARGV[5] == 'own' then
  gone = { ARGV[4] }
else
  -- a bounded batch of dead workers per call; the rest wait for the next beat
  gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]), 'LIMIT', 0, 10)
end
local keep_log = tonumber(ARGV[6])
local n = 0
for i = 1, #gone do
  local w = gone[i]
  if ARGV[5] == 'own' or w ~= ARGV[4] then
    local running = ARGV[1] .. 'running:' .. w
    local ids = redis.call('SMEMBERS', running)
    local named = #ids == 1
    local err = 'worker ' .. w .. ' stopped while running it'
    if not named then
      err = err .. ' and ' .. (#ids - 1) .. ' other jobs: it runs alone next'
    end
    for j = 1, #ids do
      local key = ARGV[2] .. ids[j]
      -- `updated` is the claim's time: nothing else writes it while a job runs
      local f = redis.call('HMGET', key, 'payload', 'attempts', 'updated', 'group')
      if f[1] then
        local started = tonumber(f[3]) or now
        if named then
          redis.call('HINCRBY', key, 'stalls', 1)
        elseif (tonumber(f[2]) or 0) > 0 then
          -- not named: the attempt it lost is given back, so bystanders of
          -- crashes never run out of attempts (each runs alone next)
          redis.call('HINCRBY', key, 'attempts', -1)
        end
        redis.call('HSET', key, 'state', 'pending', 'updated', now, 'error', err)
        redis.call('RPUSH', key .. ':log', string.format(
          '{"attempt":%d,"worker":%s,"startedMs":%d,"durationMs":%d,"error":%s}',
          tonumber(f[2]) or 0, cjson.encode(w), started, math.max(now - started, 0),
          cjson.encode(err)))
        redis.call('LTRIM', key .. ':log', -keep_log, -1)
        -- into the suspect lane, at its claim end (given back)
        redis.call('RPUSH', KEYS[2], ids[j])
        n = n + 1
      end
    end
    redis.call('DEL', running, running .. ':alone')
    if redis.call('GET', ARGV[1] .. 'lane') == w then redis.call('DEL', ARGV[1] .. 'lane') end
    if ARGV[5] ~= 'own' then redis.call('ZREM', KEYS[1], w) end
  end
end
return n
