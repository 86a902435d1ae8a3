-- Enqueue jobs: store each hash, then make the job ready now or schedule it.
-- A job with dedup keys is created only if one of them was not seen within
-- its TTL; the keys and the job are written together, so an event counts as
-- seen exactly when a job standing for it exists.
-- KEYS[1] pending list, KEYS[2] scheduled zset (every key the script
-- touches shares the queue's hash tag; the caller registers the queue name)
-- ARGV[1] job key prefix, ARGV[2] seen key prefix, ARGV[3] max attempts,
-- ARGV[4] delay ms, ARGV[5] seen TTL ms, ARGV[6] queue key prefix, ARGV[7]
-- '1' when every id was minted for this call (none can exist yet), else '0',
-- ARGV[8..] quadruples: id, payload, dedup keys joined by \31 ('' for none),
-- group ('' for none; see make_ready)
-- Pushing an id that exists already does nothing (pushes are idempotent by id).
-- A job costs one command (HSET), and an EXISTS when its id may exist; the
-- ready or scheduled ids go in with one command per thousand (grouped ones:
-- per group and two thousand).
-- The hash leaves out what reads as its default or its key says: no `queue`,
-- no `state` when `pending`, no `attempts` (0), no `updated` (= `created`).
-- Returns, per job, its id, or false when its dedup key was already seen.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local delay = tonumber(ARGV[4])
-- numbers handed to redis.call are formatted with "%.17g" each time: format once
local now_s = string.format('%d', now)
local at_s = string.format('%d', now + delay)
local prefix, max, qprefix = ARGV[1], ARGV[3], ARGV[6]
local minted = ARGV[7] == '1'
-- the fields every job of this call has besides its payload and group
local fields = { 'max', max, 'created', now_s }
if delay > 0 then
  fields[#fields + 1] = 'state'
  fields[#fields + 1] = 'scheduled'
end
local n_fields = #fields

-- LPUSH / ZADD of the ids gathered so far (a bounded number: Lua's unpack
-- takes ~8,000 values); the same order as one LPUSH per job
local batch = {}
local function flush()
  if #batch == 0 then return end
  if delay > 0 then
    redis.call('ZADD', KEYS[2], unpack(batch))
  else
    redis.call('LPUSH', KEYS[1], unpack(batch))
  end
  batch = {}
end

-- Grouped ids, gathered per group and made ready together (make_ready_all)
local by_group, groups_seen = {}, {}
local function flush_group(group)
  make_ready_all(KEYS[1], qprefix, by_group[group], group, false)
  by_group[group] = {}
end

local out = {}
for i = 8, #ARGV, 4 do
  local id, payload, dedup, group = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local fresh = true
  if dedup ~= '' then
    -- the item's keys, separated by \31: it is new if any of them is
    fresh = false
    for key in string.gmatch(dedup, '[^\31]+') do
      if redis.call('SET', ARGV[2] .. key, id, 'NX', 'PX', ARGV[5]) then fresh = true end
    end
  end
  if fresh and not minted and redis.call('EXISTS', prefix .. id) == 1 then
    -- pushed before under this id (a retried push, the app's outbox relay):
    -- the job exists already and is left as it is
    out[#out + 1] = id
  elseif fresh then
    fields[n_fields + 1] = 'payload'
    fields[n_fields + 2] = payload
    local n = n_fields + 2
    if group ~= '' then
      fields[n + 1] = 'group'
      fields[n + 2] = group
      n = n + 2
    end
    redis.call('HSET', prefix .. id, unpack(fields, 1, n))
    if group ~= '' and delay == 0 then
      local ids = by_group[group]
      if not ids then
        ids = {}
        by_group[group] = ids
        groups_seen[#groups_seen + 1] = group
      end
      ids[#ids + 1] = id
      if #ids >= 2000 then flush_group(group) end
    else
      if delay > 0 then batch[#batch + 1] = at_s end
      batch[#batch + 1] = id
      if #batch >= 2000 then flush() end
    end
    out[#out + 1] = id
  else
    out[#out + 1] = false
  end
end
flush()
for _, group in ipairs(groups_seen) do flush_group(group) end
return out
