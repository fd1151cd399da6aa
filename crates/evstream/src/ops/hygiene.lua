-- Removes the consumers of one group that have been idle longer than ARGV[2] ms and hold
-- no pending entries, atomically: no XREADGROUP can hand them an entry between the check and
-- the XGROUP DELCONSUMER (which would drop that entry from the pending list).
-- KEYS[1] stream; ARGV[1] group; ARGV[2] idle threshold in ms.
-- Returns the names removed.
local removed = {}
local consumers = redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
local threshold = tonumber(ARGV[2])
for _, consumer in ipairs(consumers) do
    local fields = {}
    for i = 1, #consumer, 2 do
        fields[consumer[i]] = consumer[i + 1]
    end
    if tonumber(fields['pending']) == 0 and tonumber(fields['idle']) > threshold then
        redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], fields['name'])
        removed[#removed + 1] = fields['name']
    end
end
return removed
