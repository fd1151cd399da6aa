#!/usr/bin/env bash
# Shipping throughput over a partitioned stream on a Redis Cluster, in one run: a fresh
# cluster of three primaries with one replica each (loopback, no persistence), then
# `evstream bench` at each partition count (every event read back from every partition and
# checked). Prints a table of events/s, each count's ratio to one partition, and the Redis CPU
# seconds each primary spent on the run (shipping and the read-back audit).
#
# Usage: scripts/bench-cluster.sh [EVENTS] [PAYLOAD_BYTES] [PARTITIONS...]
#   defaults: 1000000 events of 400 bytes at 1, 3 and 6 partitions.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need redis-server redis-server
need redis-cli redis-tools
events=${1:-1000000}
payload=${2:-400}
shift $(( $# < 2 ? $# : 2 ))
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(1 3 6)

cargo build --release --locked -p evstream-cli >&2
dir=$(mktemp -d)
# Six distinct free ports whose cluster bus ports (10,000 higher) are free too; every socket
# is held until all six are chosen.
read -r -a ports < <(python3 -c '
import random, socket
held, ports = [], []
while len(ports) < 6:
    port = random.randrange(20000, 30000)
    try:
        for p in (port, port + 10000):
            s = socket.socket()
            s.bind(("127.0.0.1", p))
            held.append(s)
        ports.append(port)
    except OSError:
        pass
print(" ".join(map(str, ports)))')
stop() {
    for port in "${ports[@]}"; do redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true; done
    rm -rf "$dir"
}
trap stop EXIT
for port in "${ports[@]}"; do
    mkdir "$dir/$port"
    redis-server --port "$port" --bind 127.0.0.1 --dir "$dir/$port" --save "" --appendonly no \
        --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 1000 \
        --repl-diskless-sync-delay 0 --daemonize yes --logfile "$dir/$port/redis.log"
done
wait_for() { # wait_for SECONDS WHAT COMMAND...: retries COMMAND, fails after SECONDS
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || { echo "error: $what" >&2; exit 1; }
        sleep 0.1
    done
}
for port in "${ports[@]}"; do
    wait_for 10 "redis-server on port $port did not start (see $dir/$port/redis.log)" \
        redis-cli -p "$port" ping
done
nodes=()
for port in "${ports[@]}"; do nodes+=("127.0.0.1:$port"); done
redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >/dev/null
cluster_ok() { redis-cli -p "$1" cluster info | grep -q cluster_state:ok; }
for port in "${ports[@]}"; do
    wait_for 30 "node $port did not reach cluster_state:ok" cluster_ok "$port"
done
url="redis+cluster://$(IFS=,; echo "${nodes[*]}")"

# Redis CPU seconds (user + sys) of each primary so far, as "port:seconds".
primary_cpu() {
    for port in "${ports[@]}"; do
        redis-cli -p "$port" role | head -1 | grep -q master || continue
        redis-cli -p "$port" info cpu | tr -d '\r' | awk -F: -v port="$port" \
            '/^used_cpu_(user|sys):/ { s += $2 } END { printf "%s:%.2f ", port, s }'
    done
}

echo "partitions events/s ratio lost duplicates corrupt redis-cpu-s-per-primary"
base=""
run=0
for p in "${counts[@]}"; do
    run=$((run + 1))
    cpu_before=$(primary_cpu)
    result=$(target/release/evstream --redis-url "$url" --stream "bench$run" --partitions "$p" \
        bench --events "$events" --payload-bytes "$payload" --json)
    read -r eps lost dup corrupt < <(echo "$result" | python3 -c '
import json, sys
r = json.load(sys.stdin)
print(round(r["throughput_eps"]), r["lost"], r["duplicates"], r["corrupt"])')
    base=${base:-$eps}
    cpu=$(python3 -c '
import sys
before = dict(x.split(":") for x in sys.argv[1].split())
after = dict(x.split(":") for x in sys.argv[2].split())
print("/".join(f"{float(after[p]) - float(before.get(p, 0)):.1f}" for p in sorted(after)))' \
        "$cpu_before" "$(primary_cpu)")
    python3 -c "import sys; print(sys.argv[1], sys.argv[2], f'{int(sys.argv[2]) / int(sys.argv[3]):.2f}', *sys.argv[4:])" \
        "$p" "$eps" "$base" "$lost" "$dup" "$corrupt" "$cpu"
    for port in "${ports[@]}"; do redis-cli -p "$port" flushall >/dev/null 2>&1 || true; done
done
