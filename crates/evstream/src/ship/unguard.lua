-- evstream unguard: the last command of a batch's MULTI/EXEC (see guard.lua). Puts parked
-- streams back; when nothing was parked, the batch applied: moves the producer's mark.
--
-- KEYS as guard.lua's. ARGV[1] the batch's last sequence, ARGV[2] the mark's TTL (ms).
local parked = false
for i = 1, 2 do
  if redis.call('TYPE', KEYS[i]).ok == 'string' and redis.call('GET', KEYS[i]) == 'evstream-parked' then
    parked = true
    redis.call('DEL', KEYS[i])
    if redis.call('EXISTS', KEYS[i + 3]) == 1 then
      redis.call('RENAME', KEYS[i + 3], KEYS[i])
    end
  end
end
if not parked then
  redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
end
return parked and 0 or 1
