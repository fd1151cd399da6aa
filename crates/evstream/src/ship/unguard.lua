-- evstream unguard: the last command of a batch's MULTI/EXEC (see guard.lua). Puts parked
-- streams back; when nothing was parked, moves the producer's mark, but only forward and only
-- from where this batch continues (the value the guard checked): a guard that failed or could
-- not park must never let a retried batch set the mark back.
--
-- KEYS as guard.lua's. ARGV[1] the batch's last sequence, ARGV[2] the mark's TTL (ms),
-- ARGV[3] and ARGV[4] the guard's ARGV[1] and ARGV[2].
--
-- Returns {status, mark}: 0 = put parked streams back (the guard refused the batch);
-- 1 = the batch applied: moved the mark from `mark` to ARGV[1]; 2 = nothing was parked, yet
-- the mark (`mark`) is not where the batch continues: the guard failed or could not park, so
-- the batch's XADDs applied unguarded; the mark is left alone (the shipper removes them).
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
local expected = tonumber(ARGV[3])
local mark = redis.call('GET', KEYS[3])
local mark_value
if mark then
  mark_value = tonumber(mark)
elseif ARGV[4] == '1' then
  mark_value = expected
else
  mark_value = 0
end
if parked then
  return {0, mark or ''}
end
if mark_value == expected or (ARGV[4] == '1' and mark_value < expected) then
  redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
  return {1, mark or ''}
end
return {2, mark or ''}
