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
"$bin" --redis-url "$url" bench --events "$events" --event-kind orders --rate "$rate" --json \
    > "$work/bench.json" 2>/dev/null &
bench=$!
# Every 0.2 s while it runs (its read-back audit included): the time, the newest entry and
# the newest archived one.
while kill -0 "$bench" 2>/dev/null; do
    echo "$(date +%s.%N)" \
         "$(redis-cli -p "$port" XREVRANGE events + - COUNT 1 | head -1)" \
         "$(redis-cli -p "$port" XINFO GROUPS events 2>/dev/null | grep -A1 -x last-delivered-id | tail -1)"
    sleep 0.2
done > "$work/samples"
wait "$bench"
published_at=$(field '["throughput_eps"]' < "$work/bench.json")
last=$(redis-cli -p "$port" XREVRANGE events + - COUNT 1 | head -1)
done_publishing=$(python3 -c "print(int('$last'.split('-')[0]) / 1000)")
kill -TERM "$archiver"; wait "$archiver" || true
python3 - "$published_at" "$done_publishing" "$last" "$events" "$work/samples" <<'PY'
import sys
ingest, done, last, events = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3], int(sys.argv[4])
ms = lambda entry_id: int(entry_id.split("-")[0])
behind, caught = [], None
for line in open(sys.argv[5]):
    parts = line.split()
    if len(parts) != 3:
        continue
    at, newest, archived = float(parts[0]), parts[1], parts[2]
    if ms(newest) / 1000 <= done:
        behind.append((ms(newest) - ms(archived)) / 1000)
    if archived == last and caught is None:
        caught = at
assert caught is not None, "the archive never held the last entry while the bench ran"
worst = max(behind[len(behind) // 4:] or [0])  # after the first quarter (start-up)
print(f"live     ingest {ingest:>9,.0f} ev/s with the archiver following: while publishing, the "
      f"archive was at most {worst:.1f} s behind the newest entry (after the first quarter); it "
      f"held all {events:,} events {caught - done:.2f} s after the last one was appended "
      f"(archive.max_file_age_s = 2)")
PY
