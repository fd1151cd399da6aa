#!/usr/bin/env bash
# Peers in one run, against one fresh private redis-server (no persistence), with the same
# ~400-byte payload and envelope fields: (a) redis-benchmark -P 64 doing the same XADD (the
# ceiling), (b) a naive Rust loop awaiting one XADD per event (examples/naive_xadd.rs),
# (c) Python's redis client with a pipeline of 256, (d) evstream bench (ring → shipper →
# stream, no duplicates, every event read back). Prints events/s and each one's ratio to (a).
#
# Usage: scripts/bench-compare.sh [EVENTS] [PAYLOAD_BYTES]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need redis-server redis-server
need redis-benchmark redis-tools
need python3 python3
python3 -c "import redis" >/dev/null 2>&1 ||
    python3 -m pip install --quiet "redis>=5,<8" >&2 ||
    python3 -m pip install --quiet --break-system-packages "redis>=5,<8" >&2
events=${1:-1000000}
payload=${2:-400}
naive_events=$(( events < 200000 ? events : 200000 ))

cargo build --release --locked -p evstream-cli --bin evstream --example naive_xadd >&2
start_private_redis
fresh() { redis-cli -p "$port" flushall >/dev/null; }

data=$(python3 -c "import json,sys; n=int(sys.argv[1]); print(json.dumps({'n':1,'pad':'x'*(n-len(json.dumps({'n':1,'pad':''},separators=(',',':'))))},separators=(',',':')))" "$payload")

ceiling=$(redis-benchmark -p "$port" -P 64 -n "$events" -q \
    XADD baseline MAXLEN '~' 1000000 '*' \
    event_id 019ac0f5-3a1e-7b2c-9d41-5e0f8a7b6c3d event_type BenchEvent version v1 \
    correlation_id "" timestamp_ns 1764130000123456789 \
    producer_id 019ac0f5-0000-7000-8000-000000000001 sequence 123456 data "$data" \
    | tr '\r' '\n' | grep -oE '[0-9.]+ requests per second' | tail -1 | cut -d' ' -f1)
fresh

naive=$(target/release/examples/naive_xadd "redis://127.0.0.1:$port" "$naive_events" "$payload")
fresh

python=$(python3 - "$port" "$events" "$data" <<'PY'
import sys, time, uuid, redis
port, events, data = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
r = redis.Redis(port=port)
start = time.perf_counter()
for first in range(0, events, 256):
    p = r.pipeline(transaction=False)
    for n in range(first, min(events, first + 256)):
        p.xadd("python", {"event_id": str(uuid.uuid4()), "event_type": "BenchEvent",
                          "version": "v1", "correlation_id": "", "timestamp_ns": 1764130000123456789 + n,
                          "producer_id": "python", "sequence": n + 1, "data": data})
    p.execute()
print(round(events / (time.perf_counter() - start)))
PY
)
fresh

result=$(target/release/evstream --redis-url "redis://127.0.0.1:$port" bench \
    --events "$events" --payload-bytes "$payload" --json)
ours=$(echo "$result" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["lost"]==0 and d["duplicates"]==0 and d["corrupt"]==0, d; print(round(d["throughput_eps"]))')

python3 - "$ceiling" "$naive" "$python" "$ours" "$events" "$naive_events" "$payload" <<'PY'
import sys
ceiling, naive, python, ours = map(float, sys.argv[1:5])
events, naive_events, payload = sys.argv[5:8]
print(f"{events} events of {payload}-byte data (naive loop: {naive_events}), one private redis-server")
print(f"{'peer':<58} {'events/s':>10} {'ratio':>6}")
for name, rate in [
    ("(a) redis-benchmark -P 64, same XADD (ceiling)", ceiling),
    ("(b) naive Rust loop, one awaited XADD per event", naive),
    ("(c) Python redis, pipelines of 256", python),
    ("(d) evstream bench (no loss, no duplicates, read back)", ours),
]:
    print(f"{name:<58} {rate:>10,.0f} {rate / ceiling:>6.2f}")
PY
