-- A lease on a named resource, owned by a token.
-- KEYS[1] the lease key; ARGV[1] token, ARGV[2] op (acquire|renew|release), ARGV[3] ttl ms
local op = ARGV[2]
if op == 'acquire' then
  if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[3]) then return 1 end
  return 0
end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if op == 'renew' then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
else
  redis.call('DEL', KEYS[1])
end
return 1
