-- evstream commit: a consumer's acknowledgements and the effects they gate, atomically.
--
-- KEYS[1] the stream   KEYS[2] the group's counters hash
-- ARGV[1] the group
-- then the counter names: their number, the names;
-- then the counter profiles (the distinct sets of counter increments of the batch's
--   records, sent once instead of once per record): their number, and per profile the
--   number of increments followed by that many pairs (name number, increment);
-- then the records: their number, and per record its stream entry id ("" for the batch's
--   own effects, see below) and its profile number (0: no counters);
-- then, for each record that has effects, in record order: the record number, the number of
--   effects, and each effect as: argument count, "1" if its reply is wanted else "0", the
--   arguments.
--
-- A record's effects and counters are applied only if its XACK removed it from the group's
-- pending list: if another consumer (or an earlier, uncertain try of this very commit) acked
-- it first, they are skipped. That makes every effect happen exactly once however often an
-- entry is delivered, and the pending list itself is the dedupe state: nothing grows.
-- The record with the empty id applies if an entry of this commit was acked before it, or
-- if it is the first record.
--
-- The XACKs come one per entry (a bulk XACK only returns how many it removed, not which).
-- An effect that fails (e.g. WRONGTYPE) does not stop the commit: the entry stays acked, and
-- its error is returned so that the consumer can dead-letter a record of it.
--
-- Returns a flat array (nested tables cost Redis about a microsecond each to convert):
--   [1] one character per record: "1" applied, "0" skipped (already acked), "2" applied but
--       an effect failed;
--   then, per record with status "2", its error; then, per applied record in order, each
--   wanted reply as: -1 and the value, or (for an array reply) its length and its elements.
local stream, group = KEYS[1], ARGV[1]
local i = 2

local names = {}
local n_names = tonumber(ARGV[i])
for k = 1, n_names do names[k] = ARGV[i + k] end
i = i + 1 + n_names

local profiles = {}
local n_profiles = tonumber(ARGV[i])
i = i + 1
for p = 1, n_profiles do
  local n = tonumber(ARGV[i])
  local profile = {}
  for k = 1, n do
    profile[k] = {tonumber(ARGV[i + 2 * k - 1]), tonumber(ARGV[i + 2 * k])}
  end
  profiles[p] = profile
  i = i + 1 + 2 * n
end

local n_records = tonumber(ARGV[i])
i = i + 1
local last = #ARGV
-- The effects section follows the records; its groups come in record order, so each record's
-- effects run right after its XACK (an error that stopped the script half-way would leave
-- only the records before it acknowledged).
local e = i + 2 * n_records
local statuses, uses, errors, replies = {}, {}, {}, {}
local any_acked, skipped = false, 0
-- `unpack` of an effect too long for Lua's stack raises an error that `redis.pcall` cannot
-- catch: both run inside `pcall` so that such an effect fails alone.
local function run(from, to)
  return redis.pcall(unpack(ARGV, from, to))
end
for r = 1, n_records do
  local id, profile = ARGV[i], tonumber(ARGV[i + 1])
  i = i + 2
  local apply
  if id == '' then
    apply = any_acked or r == 1
  else
    apply = redis.call('XACK', stream, group, id) == 1
    if apply then any_acked = true else skipped = skipped + 1 end
  end
  if apply and profile > 0 then uses[profile] = (uses[profile] or 0) + 1 end
  local status = apply and '1' or '0'
  if e <= last and tonumber(ARGV[e]) == r then
    local n_effects = tonumber(ARGV[e + 1])
    e = e + 2
    for _ = 1, n_effects do
      local argc, wants_reply = tonumber(ARGV[e]), ARGV[e + 1] == '1'
      if status == '1' then
        local ok, reply = pcall(run, e + 2, e + 1 + argc)
        if not ok then reply = {err = tostring(reply)} end
        if type(reply) == 'table' and reply.err then
          status = '2'
          errors[#errors + 1] = ARGV[e + 2] .. ': ' .. reply.err
          if wants_reply then
            replies[#replies + 1] = -1
            replies[#replies + 1] = false
          end
        elseif wants_reply then
          if type(reply) == 'table' and reply.ok then
            replies[#replies + 1] = -1
            replies[#replies + 1] = reply.ok
          elseif type(reply) == 'table' then
            replies[#replies + 1] = #reply
            for k = 1, #reply do replies[#replies + 1] = reply[k] end
          else
            replies[#replies + 1] = -1
            replies[#replies + 1] = reply
          end
        end
      elseif status == '2' and wants_reply then
        -- Keep one reply per wanted effect of an applied record.
        replies[#replies + 1] = -1
        replies[#replies + 1] = false
      end
      e = e + 2 + argc
    end
  end
  statuses[r] = status
end

local totals = {}
for p, count in pairs(uses) do
  for _, increment in ipairs(profiles[p]) do
    local name = names[increment[1]]
    totals[name] = (totals[name] or 0) + count * increment[2]
  end
end
if skipped > 0 then
  totals['duplicates_skipped'] = (totals['duplicates_skipped'] or 0) + skipped
end
-- A counter that cannot take its increment (not an integer any more, overflow) is left
-- as it is rather than stopping the commit after its acknowledgements.
for name, total in pairs(totals) do
  if total ~= 0 then redis.pcall('HINCRBY', KEYS[2], name, total) end
end
local out = {table.concat(statuses)}
for k = 1, #errors do out[#out + 1] = errors[k] end
for k = 1, #replies do out[#out + 1] = replies[k] end
return out
