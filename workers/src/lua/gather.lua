-- Gathers the new items of a delivery into one job: an item is new when one
-- of its dedup keys was not seen within its TTL; the keys and the job are
-- written together, so an item counts as seen exactly when a job standing
-- for it exists. One job for many items makes a webhook batch cost one
-- HSET and one push, not one of each per record; the worker that runs it
-- fans it out. A single new item is queued as itself, with no gathering.
-- KEYS[1] pending list (every key the script touches shares the queue's
-- hash tag; the caller registers the queue name)
-- ARGV[1] job key prefix, ARGV[2] seen key prefix, ARGV[3] max attempts,
-- ARGV[4] seen TTL ms, ARGV[5] queue key prefix, ARGV[6] the job's id
-- (minted for this call), ARGV[7] group ('' for none; see make_ready),
-- ARGV[8] and ARGV[9] what goes before and after the new items' payloads
-- (joined by ',') in the gathered payload, ARGV[10..] pairs: dedup keys
-- joined by \31, the item's payload
-- Returns { job id or '', how many items were new }.
local prefix, id, group = ARGV[1], ARGV[6], ARGV[7]
local new = {}
for i = 10, #ARGV, 2 do
  local fresh = false
  for key in string.gmatch(ARGV[i], '[^\31]+') do
    if redis.call('SET', ARGV[2] .. key, id, 'NX', 'PX', ARGV[4]) then fresh = true end
  end
  if fresh then new[#new + 1] = ARGV[i + 1] end
end
if #new == 0 then return { '', 0 } end
local payload = new[1]
if #new > 1 then payload = ARGV[8] .. table.concat(new, ',') .. ARGV[9] end
local t = redis.call('TIME')
local now = string.format('%d', t[1] * 1000 + math.floor(t[2] / 1000))
if group ~= '' then
  redis.call('HSET', prefix .. id, 'max', ARGV[3], 'created', now, 'payload', payload, 'group', group)
else
  redis.call('HSET', prefix .. id, 'max', ARGV[3], 'created', now, 'payload', payload)
end
make_ready(KEYS[1], ARGV[5], id, group, false)
return { id, #new }
