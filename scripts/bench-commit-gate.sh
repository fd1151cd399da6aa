#!/usr/bin/env bash
# What the exactly-once gate of the commit script costs Redis, per entry, against the
# alternatives (see BENCHMARKS.md, "The exactly-once gate"): 100,000 entries shaped like
# evstream's (8 fields, ~100-byte data) read with XREADGROUP COUNT 256 and acknowledged
# batch by batch, four ways, each on a fresh stream of a private redis-server:
#   per-entry   a script doing one XACK per entry (commit.lua's gate: it learns which
#               entries this call removed from the pending list)
#   xpending    a script asking XPENDING for the batch's range, then one XACK for the
#               entries still pending (the gate done the other way round)
#   bulk-script a script doing one XACK for the whole batch (no gate: only a count comes back)
#   bulk        a plain XACK command for the whole batch (no script, no gate)
# Figures are Redis's own time (INFO commandstats), so the client's speed does not enter.
#
# Usage: scripts/bench-commit-gate.sh [ENTRIES]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need redis-server redis-server
python3 -c 'import redis' 2>/dev/null ||
    python3 -m pip install --quiet "redis>=5,<8" >&2 ||
    python3 -m pip install --quiet --break-system-packages "redis>=5,<8" >&2

start_private_redis

python3 - "$port" "${1:-100000}" <<'PY'
import sys, redis
port, entries = int(sys.argv[1]), int(sys.argv[2])
r = redis.Redis(port=port)
scripts = {
    "per-entry": """
local n = 0
for i = 1, #ARGV do n = n + redis.call('XACK', KEYS[1], 'g', ARGV[i]) end
return n""",
    "xpending": """
local p = redis.call('XPENDING', KEYS[1], 'g', ARGV[1], ARGV[#ARGV], #ARGV)
local pending = {}
for i = 1, #p do pending[p[i][1]] = true end
local ids = {}
for i = 1, #ARGV do if pending[ARGV[i]] then ids[#ids + 1] = ARGV[i] end end
return redis.call('XACK', KEYS[1], 'g', unpack(ids))""",
    "bulk-script": "return redis.call('XACK', KEYS[1], 'g', unpack(ARGV))",
    "bulk": None,
}
fields = {"event_id": "0" * 36, "event_type": "OrderFilled", "version": "1",
          "timestamp_ns": "1" * 19, "correlation_id": "c" * 20, "producer": "engine-1",
          "sequence": "123456", "data": "x" * 100}
results = {}
for name, script in scripts.items():
    r.flushall()
    pipe = r.pipeline(transaction=False)
    for _ in range(entries):
        pipe.xadd("s", fields)
    pipe.execute()
    r.xgroup_create("s", "g", id="0")
    sha = script and r.script_load(script)
    r.config_resetstat()
    while True:
        reply = r.xreadgroup("g", "c", {"s": ">"}, count=256)
        if not reply or not reply[0][1]:
            break
        ids = [entry_id for entry_id, _ in reply[0][1]]
        acked = r.evalsha(sha, 1, "s", *ids) if sha else r.xack("s", "g", *ids)
        assert acked == len(ids), (name, acked, len(ids))
    stats = r.info("commandstats")
    ack = stats["cmdstat_evalsha" if sha else "cmdstat_xack"]["usec"] / entries
    read = stats["cmdstat_xreadgroup"]["usec"] / entries
    results[name] = (ack, read)
base = results["per-entry"][0]
for name, (ack, read) in results.items():
    print(f"{name:12} acknowledging {ack:5.2f} µs/entry ({ack / base:4.2f} of per-entry)"
          f"   XREADGROUP {read:5.2f} µs/entry")
PY
