#!/usr/bin/env bash
# Publish latency through the C ABI, from C++ and from Rust, under the same conditions: a
# ~400-byte OrderCreated JSON, 1,000,000 timed calls in bursts of 50,000, the shipper shipping
# into a private redis-server. Prints one JSON line per row.
#   scripts/bench-cpp.sh [calls]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need redis-server redis-server
need g++ g++
calls=${1:-1000000}

cargo build --release --locked -p evstream-ffi >&2
work=$(mktemp -d)
trap 'redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
    --daemonize yes --logfile "$work/redis.log"
until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.1; done

g++ -std=c++17 -O2 -Iinclude examples/cpp/latency.cpp target/release/libevstream_ffi.a \
    -lpthread -ldl -lm -lrt -lutil -o "$work/latency"
echo "{\"row\":\"c++ evstream::Publisher::publish (C ABI)\",$("$work/latency" "redis://127.0.0.1:$port" "$calls" | cut -c2-)"
redis-cli -p "$port" flushall >/dev/null
echo "{\"row\":\"c++ evstream::Publisher::on_order_created (typed, C ABI)\",$("$work/latency" "redis://127.0.0.1:$port" "$calls" typed | cut -c2-)"
redis-cli -p "$port" flushall >/dev/null
cargo bench --locked -p evstream-ffi --bench ffi_latency -- \
    --redis-url "redis://127.0.0.1:$port" --calls "$calls"
