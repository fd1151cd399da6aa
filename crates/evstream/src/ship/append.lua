-- evstream append: the idempotent, ordered append of one producer's batch.
--
-- KEYS[1] the stream, KEYS[2] its dead-letter stream, KEYS[3] the producer's high-water mark
-- ARGV[1] producer_id   ARGV[2] MAXLEN ~ bound (0: no trimming)   ARGV[3] high-water mark TTL (ms)
-- ARGV[4] "1" to accept a gap before this batch (and a missing mark)   ARGV[5] dlq_at_ns
-- then 8 values per event, in sequence order:
--   dead ("" or "<reason>\n<error>"), event_id, event_type, version, correlation_id,
--   timestamp_ns, sequence, data
--
-- Events whose sequence is at or below the high-water mark were appended before (a retry
-- after an uncertain outcome) and are skipped: no duplicates. A batch that does not continue
-- from the mark (an earlier batch is missing) is refused, so the stream keeps each producer's
-- order even when batches in flight fail out of order. Everything runs atomically.
--
-- Returns {status, mark_before, mark_after, added, dead, skipped, error}:
--   status 1 = handled, 0 = gap (nothing written), 2 = stopped at an entry neither stream
--   accepted (error says why; entries up to mark_after were handled).
local first = tonumber(ARGV[12])
local mark = redis.call('GET', KEYS[3])
if mark then
  mark = tonumber(mark)
elseif ARGV[4] == '1' then
  -- No mark (expired), and the shipper knows nothing earlier is coming: start here.
  mark = first - 1
else
  -- No mark: a new producer, whose sequences start at 1. A later batch that lands first
  -- (the first one failed) is refused like any gap, so it cannot hide the first one.
  mark = 0
end
if first > mark + 1 and ARGV[4] ~= '1' then
  return {0, mark, mark, 0, 0, 0, ''}
end
local before = mark
-- The mark is written back from the argument's text: Lua would print a number above 1e14 in
-- exponent notation.
local mark_text = nil
local added, dead, skipped = 0, 0, 0
local status, failure = 1, ''

local function dead_letter(i, reason, message)
  return redis.pcall('XADD', KEYS[2], '*',
    'event_id', ARGV[i + 1], 'event_type', ARGV[i + 2], 'version', ARGV[i + 3],
    'correlation_id', ARGV[i + 4], 'timestamp_ns', ARGV[i + 5], 'producer_id', ARGV[1],
    'sequence', ARGV[i + 6], 'data', ARGV[i + 7],
    'dlq_reason', reason, 'dlq_stage', 'ship', 'dlq_error', message, 'dlq_at_ns', ARGV[5])
end

for i = 6, #ARGV, 8 do
  local sequence = tonumber(ARGV[i + 6])
  if sequence <= mark then
    skipped = skipped + 1
  else
    local reply
    if ARGV[i] == '' then
      reply = redis.pcall('XADD', KEYS[1], '*',
        'event_id', ARGV[i + 1], 'event_type', ARGV[i + 2], 'version', ARGV[i + 3],
        'correlation_id', ARGV[i + 4], 'timestamp_ns', ARGV[i + 5], 'producer_id', ARGV[1],
        'sequence', ARGV[i + 6], 'data', ARGV[i + 7])
      if type(reply) == 'table' and reply.err then
        reply = dead_letter(i, 'redis_rejected', reply.err)
        if not (type(reply) == 'table' and reply.err) then dead = dead + 1 end
      else
        added = added + 1
      end
    else
      local newline = string.find(ARGV[i], '\n', 1, true)
      reply = dead_letter(i, string.sub(ARGV[i], 1, newline - 1), string.sub(ARGV[i], newline + 1))
      if not (type(reply) == 'table' and reply.err) then dead = dead + 1 end
    end
    if type(reply) == 'table' and reply.err then
      status, failure = 2, reply.err
      break
    end
    mark = sequence
    mark_text = ARGV[i + 6]
  end
end

if added > 0 and ARGV[2] ~= '0' then
  redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', ARGV[2])
end
if mark_text then
  redis.call('SET', KEYS[3], mark_text, 'PX', ARGV[3])
end
return {status, before, mark, added, dead, skipped, failure}
