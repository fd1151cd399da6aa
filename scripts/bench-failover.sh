#!/usr/bin/env bash
# Failover on the default settings, measured (issue 18): the Sentinel kill and the Redis
# Cluster kill of the regression tests, run again and again, with the figures they print.
#
#   Sentinel: a primary, two replicas and three sentinels (down-after-milliseconds 1000, as
#   docs/deployment.md recommends), 20,000 events/s with ship.min_replicas_ack = 1 and a
#   journal, kill -9 of the primary: promotion time, appends resumed after the promotion,
#   the longest gap between stream entries, entries and duplicates.
#   Cluster: three primaries and three replicas (cluster-node-timeout 1000), 6 partitions,
#   20,000 events/s, kill -9 of one primary: promotion, resume, the longest gap per partition.
#
# Usage: scripts/bench-failover.sh [SENTINEL_RUNS] [CLUSTER_RUNS]   (defaults: 5 and 3)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need redis-server redis-server
need redis-cli redis-tools
sentinel_runs=${1:-5}
cluster_runs=${2:-3}
cargo build --tests --locked -p evstream >&2
for run in $(seq "$sentinel_runs"); do
    echo "== Sentinel run $run"
    EVSTREAM_TEST_DOWN_AFTER_MS=1000 cargo test --locked -q -p evstream --test ship \
        issue_18_a_sentinel -- --nocapture 2>&1 | grep -E "^(failover|longest|test result)"
done
for run in $(seq "$cluster_runs"); do
    echo "== Cluster run $run"
    cargo test --locked -q -p evstream --test cluster issue_18 -- --nocapture 2>&1 |
        grep -E "^(cluster failover|longest|test result)"
done
