-- (Prepended to every script that makes jobs ready to claim.)
-- Fair groups: a job pushed with a group (say, the customer it works for)
-- waits in its group's list `{queue prefix}g:{group}`, not in `pending`;
-- the ring `{queue prefix}groups` lists each group that has jobs waiting,
-- once, and claims take the groups in turn, so one group's backlog never
-- holds back another group's job. `{queue prefix}grouped` counts the jobs
-- waiting in groups. Ungrouped jobs use `pending` as before.

-- Makes job `id` ready: onto its group's list (the group joining the ring
-- when it had nothing waiting) or, ungrouped, onto `pending`. `urgent`
-- puts it at the claim end (a job given back), else at the far end.
local function make_ready(pending, qprefix, id, group, urgent)
  if group and group ~= '' then
    local glist = qprefix .. 'g:' .. group
    local len
    if urgent then len = redis.call('RPUSH', glist, id) else len = redis.call('LPUSH', glist, id) end
    if len == 1 then redis.call('LPUSH', qprefix .. 'groups', group) end
    redis.call('INCR', qprefix .. 'grouped')
  elseif urgent then
    redis.call('RPUSH', pending, id)
  else
    redis.call('LPUSH', pending, id)
  end
end
