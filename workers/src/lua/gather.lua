-- Gathers the new items of a delivery into one job: an item is new when one
-- of its dedup keys was not seen within the window; the keys and the job
-- are written together, so an item counts as seen exactly when a job
-- standing for it exists. One job for many items makes a webhook batch
-- cost one HSET and one push, not one of each per record; the worker that
-- runs it fans it out. A single new item is queued as itself.
-- Seen keys are members of one set per window of time (`{seen prefix}{n}`,
-- n = now / window): a key is looked up in this window's set and the one
-- before and added to this one, so it is remembered for at least a window
-- and at most two. Three set commands per call instead of one SET per key
-- (with its own expiry) keep a 100-event batch's Redis time low; the set
-- from two windows back is unlinked (freed off Redis' main thread), and
-- each set also expires as a backstop for a queue gone quiet.
-- KEYS[1] pending list (every key the script touches shares the queue's
-- hash tag; the caller registers the queue name)
-- ARGV[1] job key prefix, ARGV[2] seen set prefix, ARGV[3] max attempts,
-- ARGV[4] window ms, ARGV[5] queue key prefix, ARGV[6] the job's id
-- (minted for this call), ARGV[7] group ('' for none; see make_ready),
-- ARGV[8] and ARGV[9] what goes before and after the new items' payloads
-- (joined by ',') in the gathered payload, ARGV[10..] pairs: dedup keys
-- joined by \31, the item's payload
-- Returns { job id or '', how many items were new }.
local prefix, id, group = ARGV[1], ARGV[6], ARGV[7]
local window = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local n = math.floor(now / window)
local function set_of(k) return ARGV[2] .. string.format('%d', k) end
local this, before = set_of(n), set_of(n - 1)

-- every key, and the item (its ARGV index) it belongs to
local keys, owner = {}, {}
for i = 10, #ARGV, 2 do
  local k = ARGV[i]
  if string.find(k, '\31', 1, true) then
    for key in string.gmatch(k, '[^\31]+') do
      keys[#keys + 1] = key
      owner[#keys] = i
    end
  else
    keys[#keys + 1] = k
    owner[#keys] = i
  end
end

-- SMISMEMBER / SADD over `list`, a thousand at a time (Lua's unpack is bounded)
local function each_chunk(cmd, set, list, out)
  for from = 1, #list, 1000 do
    local r = redis.call(cmd, set, unpack(list, from, math.min(from + 999, #list)))
    if out then
      for j = 1, #r do out[#out + 1] = r[j] end
    end
  end
end
local in_before, in_this = {}, {}
each_chunk('SMISMEMBER', before, keys, in_before)
each_chunk('SMISMEMBER', this, keys, in_this)

local fresh, added, is_new = {}, {}, {}
for j = 1, #keys do
  local k = keys[j]
  if in_before[j] == 0 and in_this[j] == 0 and not added[k] then
    added[k] = true
    fresh[#fresh + 1] = k
    is_new[owner[j]] = true
  end
end
local new = {}
for i = 10, #ARGV, 2 do
  if is_new[i] then new[#new + 1] = ARGV[i + 1] end
end
if #new == 0 then return { '', 0 } end

each_chunk('SADD', this, fresh, nil)
redis.call('PEXPIREAT', this, (n + 3) * window)
redis.call('UNLINK', set_of(n - 2))

local payload = new[1]
if #new > 1 then payload = ARGV[8] .. table.concat(new, ',') .. ARGV[9] end
local now_s = string.format('%d', now)
if group ~= '' then
  redis.call('HSET', prefix .. id, 'max', ARGV[3], 'created', now_s, 'payload', payload, 'group', group)
else
  redis.call('HSET', prefix .. id, 'max', ARGV[3], 'created', now_s, 'payload', payload)
end
make_ready(KEYS[1], ARGV[5], id, group, false)
return { id, #new }
