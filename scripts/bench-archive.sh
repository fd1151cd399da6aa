#!/usr/bin/env bash
# Archive throughput next to ingest, and the bytes an event takes on disk next to the bytes
# it takes in Redis, in one run on one fresh private redis-server (no persistence):
#   1. for each event kind (typed orders, ~400-byte payloads): `evstream bench` publishes N
#      events (its end-to-end ingest rate), `MEMORY USAGE` of the stream, then
#      `evstream archive --once` archives them (events/s into Parquet, bytes on disk);
#   2. keeping up: the archiver follows the stream while `evstream bench` publishes N orders
#      at RATE events/s (default 100000, the soak's rate); how long after the last append the
#      archive holds everything.
# Usage: scripts/bench-archive.sh [EVENTS] [RATE]   (defaults 1000000 and 100000)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need redis-server redis-server
events=${1:-1000000}
rate=${2:-100000}
bin=target/release/evstream

cargo build --release --locked -p evstream-cli >&2
start_private_redis
url="redis://127.0.0.1:$port"
work=$(mktemp -d)
trap 'redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$dir" "$work"' EXIT
now() { python3 -c 'import time; print(time.time())'; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

for kind in orders payload; do
    redis-cli -p "$port" flushall >/dev/null
    ingest=$("$bin" --redis-url "$url" bench --events "$events" --event-kind "$kind" --json \
        2>/dev/null | field '["throughput_eps"]')
    length=$(redis-cli -p "$port" XLEN events)
    memory=$(redis-cli -p "$port" MEMORY USAGE events SAMPLES 0)
    start=$(now)
    report=$("$bin" --redis-url "$url" archive --dir "$work/$kind" --once --json 2>/dev/null)
    end=$(now)
    python3 - "$kind" "$ingest" "$length" "$memory" "$start" "$end" "$report" <<'PY'
import json, sys
kind, ingest, length, memory, start, end, report = sys.argv[1:]
length, memory, seconds = int(length), int(memory), float(end) - float(start)
report = json.loads(report)
assert report["events"] == length, (report, length)
print(f"{kind:8} ingest {float(ingest):>9,.0f} ev/s | archive {length / seconds:>9,.0f} ev/s "
      f"({seconds:.2f} s, {report['files']} files) | disk {report['bytes'] / length:6.1f} B/ev "
      f"| Redis {memory / length:6.1f} B/ev (MEMORY USAGE) | ratio {memory / report['bytes']:.1f}x")
PY
done

# Keeping up: archive while publishing at $rate events/s, files closed every 2 s (so that the time to
# hold everything measures the archiver, not archive.max_file_age_s).
redis-cli -p "$port" flushall >/dev/null
printf '[archive]\nmax_file_age_s = 2\n' > "$work/live.toml"
"$bin" --redis-url "$url" --config "$work/live.toml" archive --dir "$work/live" \
    --metrics-addr off >/dev/null 2>&1 &
archiver=$!
published_at=$( { "$bin" --redis-url "$url" bench --events "$events" --event-kind orders \
    --rate "$rate" --json 2>/dev/null | field '["throughput_eps"]'; } )
last=$(redis-cli -p "$port" XREVRANGE events + - COUNT 1 | head -1)
done_publishing=$(python3 -c "print(int('$last'.split('-')[0]) / 1000)")
until [ "$(redis-cli -p "$port" XINFO GROUPS events | grep -A1 -x last-delivered-id | tail -1)" = "$last" ]; do
    sleep 0.05
done
caught_up=$(now)
kill -TERM "$archiver"; wait "$archiver" || true
python3 - "$published_at" "$done_publishing" "$caught_up" "$events" <<'PY'
import sys
ingest, done, caught, events = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
print(f"live     ingest {ingest:>9,.0f} ev/s with the archiver following: the archive held all "
      f"{events:,} events {caught - done:.2f} s after the last one was appended "
      f"(archive.max_file_age_s = 2)")
PY
