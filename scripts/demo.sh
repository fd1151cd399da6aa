#!/usr/bin/env bash
# Builds evstream in release mode and runs `evstream demo` (extra arguments are passed on).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

need redis-server redis-server
need cargo cargo
cargo build --release --locked -p evstream-cli
exec target/release/evstream demo "$@"
