#!/usr/bin/env bash
# End-to-end shipping throughput next to Redis's own ceiling, in one run on one fresh private
# redis-server (no persistence): `redis-benchmark -P 64` appending the same ~400-byte envelope
# with XADD, then `evstream bench` (ring → shipper → stream, no-duplicate mechanism on, every
# event read back and checked). Prints both figures and their ratio.
#
# Usage: scripts/bench-ship.sh [EVENTS] [PAYLOAD_BYTES]
#   APPEND=script|transaction picks ship.append, BATCH=N ship.batch_max (defaults: the
#   configuration's).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need redis-server redis-server
need redis-benchmark redis-tools
events=${1:-1000000}
payload=${2:-400}

cargo build --release --locked -p evstream-cli >&2
start_private_redis

data=$(python3 -c "import json,sys; n=int(sys.argv[1]); print(json.dumps({'n':1,'pad':'x'*(n-len(json.dumps({'n':1,'pad':''},separators=(',',':'))))},separators=(',',':')))" "$payload")
baseline=$(redis-benchmark -p "$port" -P 64 -n "$events" -q \
    XADD baseline MAXLEN '~' 1000000 '*' \
    event_id 019ac0f5-3a1e-7b2c-9d41-5e0f8a7b6c3d event_type BenchEvent version v1 \
    correlation_id "" timestamp_ns 1764130000123456789 \
    producer_id 019ac0f5-0000-7000-8000-000000000001 sequence 123456 data "$data" \
    | tr '\r' '\n' | grep -oE '[0-9.]+ requests per second' | tail -1 | cut -d' ' -f1)
redis-cli -p "$port" flushall >/dev/null

config_args=()
if [ -n "${APPEND:-}${BATCH:-}" ]; then
    { echo "[ship]"
      [ -z "${APPEND:-}" ] || echo "append = \"$APPEND\""
      [ -z "${BATCH:-}" ] || echo "batch_max = $BATCH"
    } > "$dir/evstream.toml"
    config_args=(--config "$dir/evstream.toml")
fi
result=$(target/release/evstream "${config_args[@]}" --redis-url "redis://127.0.0.1:$port" bench \
    --events "$events" --payload-bytes "$payload" --json)
ours=$(echo "$result" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["throughput_eps"]))')
echo "$result"
python3 - "$baseline" "$ours" <<'PY'
import sys
baseline, ours = float(sys.argv[1]), float(sys.argv[2])
print(f"redis-benchmark -P 64 XADD: {baseline:,.0f}/s   evstream end to end: {ours:,.0f}/s   ratio {ours / baseline:.2f}")
PY
