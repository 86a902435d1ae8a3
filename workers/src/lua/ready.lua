-- (Prepended to every script that makes jobs ready to claim.)
-- Fair groups: a job pushed with a group (say, the customer it works for)
-- waits in its group's list `{queue prefix}g:{group}`, not in `pending`;
-- the ring `{queue prefix}groups` lists each group that has jobs waiting,
-- once, and claims take the groups in turn, so one group's backlog never
-- holds back another group's job. `{queue prefix}grouped` counts the jobs
-- waiting in groups. Ungrouped jobs use `pending` as before.

-- Makes the jobs `ids` of one group ready, in order: onto the group's list
-- (the group joining the ring when it had nothing waiting) or, ungrouped,
-- onto `pending`. `urgent` puts them at the claim end (jobs given back),
-- else at the far end. One command for them all (at most a few thousand
-- ids: Lua's unpack is bounded).
local function make_ready_all(pending, qprefix, ids, group, urgent)
  if #ids == 0 then return end
  local push = 'LPUSH'
  if urgent then push = 'RPUSH' end
  if group and group ~= '' then
    local len = redis.call(push, qprefix .. 'g:' .. group, unpack(ids))
    if len == #ids then redis.call('LPUSH', qprefix .. 'groups', group) end
    redis.call('INCRBY', qprefix .. 'grouped', #ids)
  else
    redis.call(push, pending, unpack(ids))
  end
end

-- Makes job `id` ready (see make_ready_all).
local function make_ready(pending, qprefix, id, group, urgent)
  make_ready_all(pending, qprefix, { id }, group, urgent)
end
