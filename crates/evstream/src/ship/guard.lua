-- evstream guard: the first command of a batch's MULTI/EXEC. It decides whether the plain
-- XADDs queued after it may apply, and, when not, makes them fail: it parks the stream and
-- the dead-letter stream under other names and leaves strings in their place, so every XADD
-- of the batch fails with WRONGTYPE. `unguard.lua`, the last command of the same EXEC, puts
-- them back. Nothing outside the EXEC ever sees the parked state, unless an unguard failed:
-- then the next guard puts the streams back first.
--
-- A parked key is never overwritten: it may hold the real stream with its consumer groups.
-- When a batch must be refused and it cannot park (the ACL no longer grants what parking and
-- putting back need: status 3; a parked copy sits beside a live stream: status 4), it parks
-- nothing and says why; the batch's XADDs then apply, the unguard leaves the mark alone, and
-- the shipper deletes what they added and fails the batch loudly.
--
-- KEYS[1] the stream, KEYS[2] its dead-letter stream, KEYS[3] the producer's high-water mark,
-- KEYS[4], KEYS[5] where the two streams are parked
-- ARGV[1] the mark this batch continues from (its first sequence - 1)
-- ARGV[2] "1" to accept a gap before this batch (and a missing mark)
--
-- Returns {status, mark, detail, note}: 1 = go on; 0 = the mark is not ARGV[1] (a retry of a
-- batch that landed, or an earlier batch missing): parked; 2 = a key holds another type
-- (detail names it): parked; 3, 4 = must not go on but could not park (detail says why):
-- nothing parked. `note` reports a repair of what an earlier attempt left parked, or a parked
-- copy beside the live stream.
local PLACEHOLDER = 'evstream-parked'
local note = ''

local function is_placeholder(key)
  return redis.call('TYPE', key).ok == 'string' and redis.call('GET', key) == PLACEHOLDER
end

-- Whether this user may park KEYS[i] and put it back (an ACL can change while shippers run;
-- a script stopped half-way by a refused command keeps what it did before).
local function may_park(i)
  return redis.acl_check_cmd('RENAME', KEYS[i], KEYS[i + 3])
    and redis.acl_check_cmd('SET', KEYS[i], PLACEHOLDER)
    and redis.acl_check_cmd('DEL', KEYS[i])
    and redis.acl_check_cmd('RENAME', KEYS[i + 3], KEYS[i])
    and redis.acl_check_cmd('XDEL', KEYS[i], '0-1')
end

-- 1. What an earlier attempt left parked (its unguard failed) goes back first.
local blocked = ''
for i = 1, 2 do
  local placeholder = is_placeholder(KEYS[i])
  local parked = redis.call('EXISTS', KEYS[i + 3]) == 1
  if placeholder or parked then
    local live = not placeholder and redis.call('EXISTS', KEYS[i]) == 1
    if live then
      blocked = KEYS[i + 3] .. ' exists beside the live ' .. KEYS[i] .. ' (an earlier unguard '
        .. 'failed and ' .. KEYS[i] .. ' was recreated since); evstream never overwrites it: '
        .. 'move its entries into ' .. KEYS[i] .. ' or delete it'
      note = note .. blocked .. '; '
    elseif not may_park(i) then
      return {3, 0, KEYS[i] .. ' is parked at ' .. KEYS[i + 3] .. ' by an earlier attempt, and '
        .. 'this user may no longer put it back: grant the publisher +rename +del +set +xdel '
        .. 'on these keys (docs/security.md)', note}
    else
      if placeholder then
        redis.call('DEL', KEYS[i])
      end
      if parked then
        redis.call('RENAME', KEYS[i + 3], KEYS[i])
      end
      note = note .. 'put back ' .. KEYS[i] .. ', left parked by an earlier attempt whose '
        .. 'unguard failed; '
    end
  end
end

-- 2. The decision.
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
if status == 1 then
  return {status, mark, detail, note}
end

-- 3. Park, or say why not (before changing anything).
if blocked ~= '' then
  return {4, mark, blocked, note}
end
for i = 1, 2 do
  if not may_park(i) then
    return {3, mark, 'this user may not park ' .. KEYS[i] .. ' at ' .. KEYS[i + 3]
      .. ' and put it back: grant the publisher +rename +del +set +xdel on these keys '
      .. '(docs/security.md)', note}
  end
end
for i = 1, 2 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('RENAME', KEYS[i], KEYS[i + 3])
  end
  redis.call('SET', KEYS[i], PLACEHOLDER)
end
return {status, mark, detail, note}
