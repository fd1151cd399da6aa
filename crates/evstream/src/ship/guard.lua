-- evstream guard: the first command of a batch's MULTI/EXEC. It decides whether the plain
-- XADDs queued after it may apply, and, when not, makes them fail: it parks the stream and
-- the dead-letter stream under other names and leaves strings in their place, so every XADD
-- of the batch fails with WRONGTYPE. `unguard.lua`, the last command of the same EXEC, puts
-- them back. Nothing outside the EXEC ever sees the parked state.
--
-- KEYS[1] the stream, KEYS[2] its dead-letter stream, KEYS[3] the producer's high-water mark,
-- KEYS[4], KEYS[5] where the two streams are parked
-- ARGV[1] the mark this batch continues from (its first sequence - 1)
-- ARGV[2] "1" to accept a gap before this batch (and a missing mark)
--
-- Returns {status, mark, detail}: 1 = go on; 0 = the mark is not ARGV[1] (a retry of a batch
-- that landed, or an earlier batch missing): parked; 2 = a key holds another type (detail
-- names it): parked.
local expected = tonumber(ARGV[1])
local mark = redis.call('GET', KEYS[3])
if mark then
  mark = tonumber(mark)
elseif ARGV[2] == '1' then
  mark = expected
else
  mark = 0
end
local status, detail = 1, ''
if not (mark == expected or (ARGV[2] == '1' and mark < expected)) then
  status = 0
else
  for i = 1, 2 do
    local kind = redis.call('TYPE', KEYS[i]).ok
    if kind ~= 'none' and kind ~= 'stream' then
      status, detail = 2, 'key ' .. KEYS[i] .. ' holds a ' .. kind .. ', not a stream'
    end
  end
end
if status ~= 1 then
  for i = 1, 2 do
    if redis.call('EXISTS', KEYS[i]) == 1 then
      redis.call('RENAME', KEYS[i], KEYS[i + 3])
    end
    redis.call('SET', KEYS[i], 'evstream-parked')
  end
end
return {status, mark, detail}
