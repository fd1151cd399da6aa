-- evstream dead-letter replay: one dead letter back into its stream, atomically.
--
-- KEYS[1] the dead-letter stream   KEYS[2] the stream   ARGV[1] the dead letter's entry id
--
-- Appends the dead letter's original fields (every field but the dlq_* ones, in their order)
-- to the stream and deletes it, in one step: a dead letter is replayed once however many
-- replays run at the same time, and is never lost between the two. A consumer's dead letter
-- goes back for its group only: the entry gets `replay_for_group` = its `dlq_group`, and the
-- other groups, which processed the original entry, acknowledge it without handling it. A
-- shipper's dead letter never reached the stream: it goes back for every group.
--
-- The same refusals are checked by `DeadLetter::not_replayable` (ops/dlq.rs) before this runs.
--
-- Returns {'replayed', <new stream entry id>}, {'gone'} (no such dead letter: replayed or
-- trimmed meanwhile) or {'refused', <why>}.
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then return {'gone'} end
if found[1][1] ~= ARGV[1] then
  return {'refused', ARGV[1] .. ' is not a whole entry id (<ms>-<seq>)'}
end
local fields = found[1][2]
local original, has, dlq = {}, {}, {}
for i = 1, #fields, 2 do
  local name, value = fields[i], fields[i + 1]
  if string.sub(name, 1, 4) == 'dlq_' then
    dlq[name] = value
  elseif name ~= 'replay_for_group' then
    original[#original + 1] = name
    original[#original + 1] = value
    has[name] = true
  end
end
if dlq['dlq_reason'] == 'effect_failed' then
  return {'refused', 'effect_failed: the entry was processed and acknowledged, only one of ' ..
    'its effects failed; replaying it would apply the others again'}
end
if dlq['dlq_data_bytes'] or dlq['dlq_fields_dropped'] then
  return {'refused', 'fields were left out of this dead letter (too large or too many): ' ..
    'the original entry cannot be rebuilt from it'}
end
for _, name in ipairs({'event_id', 'event_type', 'version', 'timestamp_ns', 'producer_id',
                       'sequence', 'data'}) do
  if not has[name] then
    return {'refused', 'it has no ' .. name .. ' field: the entry would fail again'}
  end
end
if dlq['dlq_reason'] == 'invalid_json' then
  return {'refused', 'its data is not JSON: it would be dead-lettered again'}
end
if dlq['dlq_stage'] == 'consume' then
  local group = dlq['dlq_group']
  if not group or group == '' then
    return {'refused', 'it names no dlq_group: the groups that processed the original ' ..
      'entry could not tell it apart'}
  end
  original[#original + 1] = 'replay_for_group'
  original[#original + 1] = group
end
-- The append first: if Redis refuses it (out of memory), the script stops with the dead
-- letter still there.
local id = redis.call('XADD', KEYS[2], '*', unpack(original))
redis.call('XDEL', KEYS[1], ARGV[1])
return {'replayed', id}
