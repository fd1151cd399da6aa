#!/usr/bin/env bash
# Consumer-group throughput, four ways, in one run on one fresh private redis-server (no
# persistence), each reading the same stream of simulated order flow through its own group:
#   1. the ceiling: a raw-socket client doing only XREADGROUP COUNT 256 + one bulk XACK per
#      batch, two reads in flight, next to no client work (examples/group_ceiling.rs): what
#      this Redis can serve at all;
#   2. a Python loop with redis-py doing only XREADGROUP COUNT 256 + XACK (the baseline);
#   3. `evstream consume --handler ack-only` (the runtime alone: decode, exactly-once commit);
#   4. `evstream consume` (IntelliSense: pairing, latencies, results written to Redis,
#      its metrics on /metrics);
#   5. the same with `--metrics-addr off` (no recorder: the metrics calls do nothing), for
#      what IntelliSense's metrics cost.
#
# Usage: scripts/bench-consume.sh [EVENTS]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need redis-server redis-server
python3 -c 'import redis' 2>/dev/null ||
    python3 -m pip install --quiet "redis>=5,<8" >&2 ||
    python3 -m pip install --quiet --break-system-packages "redis>=5,<8" >&2
events=${1:-300000}

cargo build --release --locked -p evstream-cli --bin evstream --example group_ceiling >&2
start_private_redis
url="redis://127.0.0.1:$port"

# The demo's simulated market: quotes, orders, fills (some partial), cancels, rejects.
rate=100000
seconds=$(python3 -c "print(max(1, round($events / $rate, 1)))")
target/release/evstream --redis-url "$url" demo --duration "${seconds}s" --rate "$rate" --json >/dev/null
length=$(redis-cli -p "$port" xlen events)
echo "stream: $length events" >&2

# `demo` ran its own IntelliSense consumers (group intellisense_group): every group below is new.
read -r _ ceiling_eps < <(target/release/examples/group_ceiling "127.0.0.1:$port" events ceiling 256)
python_eps=$(python3 - "$port" <<'PY'
import sys, time, redis
r = redis.Redis(port=int(sys.argv[1]))
r.xgroup_create("events", "python", id="0")
done, start = 0, None
while True:
    reply = r.xreadgroup("python", "c1", {"events": ">"}, count=256)
    if not reply or not reply[0][1]:
        break
    start = start or time.perf_counter()
    ids = [entry_id for entry_id, _ in reply[0][1]]
    r.xack("events", "python", *ids)
    done += len(ids)
print(round(done / (time.perf_counter() - start)))
PY
)
consume() {
    target/release/evstream --redis-url "$url" consume --group "$1" --consumer c1 \
        --handler "$2" --exit-when-idle 1s --json "${@:3}" |
        python3 -c 'import json,sys; s=json.load(sys.stdin); print(round(s["events_per_s"]), s["processed"])'
}
read -r ack_eps ack_n < <(consume ackonly ack-only)
read -r is_eps is_n < <(consume intellisense_bench intellisense)
read -r quiet_eps quiet_n < <(consume intellisense_quiet intellisense --metrics-addr off)
# The benchmarked IntelliSense group must have computed what the demo's own consumers did.
report() {
    target/release/evstream --redis-url "$url" report --group "$1" --json |
        python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["processed"], r["duplicates_skipped"], r["orders"], r["fills"])'
}
# Cancels and rejects are acknowledged unhandled by IntelliSense: counted as skipped.
skipped() { redis-cli -p "$port" hget "events:consume:$1" skipped; }
read -r bench_processed bench_duplicates bench_orders bench_fills < <(report intellisense_bench)
read -r _ _ demo_orders demo_fills < <(report intellisense_group)
echo "IntelliSense results: $bench_processed processed, $bench_duplicates duplicates skipped, $bench_orders orders, $bench_fills fills (the demo's own group: $demo_orders orders, $demo_fills fills)"
bench_skipped=$(skipped intellisense_bench)
if [ "$((bench_processed + ${bench_skipped:-0}))" != "$length" ] || [ "$bench_duplicates" != 0 ] ||
    [ "$bench_orders" != "$demo_orders" ] || [ "$bench_fills" != "$demo_fills" ]; then
    echo "the benchmarked consumer's results differ from the demo's: the figures below are void" >&2
    exit 1
fi
python3 - "$length" "$ceiling_eps" "$python_eps" "$ack_eps" "$ack_n" "$is_eps" "$is_n" "$quiet_eps" "$quiet_n" <<'PY'
import sys
length, ceiling, py, ack, ack_n, isense, is_n, quiet, quiet_n = map(int, sys.argv[1:])
print(f"events in stream                       {length:>10,}")
print(f"ceiling: raw XREADGROUP + bulk XACK    {ceiling:>10,}/s")
print(f"python redis-py XREADGROUP+XACK        {py:>10,}/s  ({py / ceiling:.2f} of the ceiling)")
print(f"evstream consume --handler ack-only    {ack:>10,}/s  ({ack / py:.2f}x python, {ack / ceiling:.2f} of the ceiling, {ack_n:,} processed)")
print(f"evstream consume (IntelliSense)        {isense:>10,}/s  ({isense / py:.2f}x python, {isense / ceiling:.2f} of the ceiling, {is_n:,} processed)")
print(f"  the same, --metrics-addr off         {quiet:>10,}/s  (with metrics: {isense / quiet:.2f} of this, {quiet_n:,} processed)")
PY
