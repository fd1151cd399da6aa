#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing, then format, lints, tests,
# the Prometheus rules and Grafana dashboard, the loom models and (when the toolchain has it)
# Miri on the ring.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

need redis-server redis-server
need cargo cargo
need python3 python3
# The C ABI's tests build the C++ examples with the system compiler, directly and with CMake.
need g++ g++
need cmake cmake --no-install-recommends
# `evstream top` is tested in a real terminal: a tmux pane, driven and read back.
need tmux tmux
# The interop test reads the stream with Python's redis client, as a consumer in another
# language would.
if ! python3 -c "import redis" >/dev/null 2>&1; then
    echo "==> installing the Python redis client (PyPI: redis)" >&2
    python3 -m pip install --quiet "redis>=5,<8" >&2 ||
        python3 -m pip install --quiet --break-system-packages "redis>=5,<8" >&2
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> include/evstream.h matches the C ABI (cbindgen)"
# The header is generated from crates/ffi/src/lib.rs and checked in; a change of the ABI
# without regenerating it fails here. Regenerate with the command in crates/ffi/cbindgen.toml.
CBINDGEN_VERSION=0.29.2
if [ "$(cbindgen --version 2>/dev/null)" != "cbindgen $CBINDGEN_VERSION" ]; then
    echo "==> installing cbindgen $CBINDGEN_VERSION (crates.io)" >&2
    cargo install --quiet --locked cbindgen --version "$CBINDGEN_VERSION" >&2
fi
mkdir -p target
cbindgen --quiet --config crates/ffi/cbindgen.toml --crate evstream-ffi \
    --output target/evstream.h.generated
diff -u include/evstream.h target/evstream.h.generated ||
    { echo "error: include/evstream.h is out of date; regenerate it (crates/ffi/cbindgen.toml)" >&2; exit 1; }

echo "==> cargo test"
cargo test --workspace --locked

echo "==> the Python package (crates/python, docs/python.md): pip install in a fresh venv, pytest"
# A fresh venv every run, the package installed the way a user installs it (pip builds it with
# maturin, fetched from PyPI as its build backend), so a missing build step fails here.
python3 -c "import ensurepip" >/dev/null 2>&1 ||
    { echo "error: Python's venv is missing: install the Debian package python3-venv" >&2; exit 1; }
rm -rf target/python-venv
python3 -m venv target/python-venv
target/python-venv/bin/pip install --quiet --disable-pip-version-check \
    "pytest==8.3.4" "redis==5.2.1"
target/python-venv/bin/pip install --quiet --disable-pip-version-check ./crates/python
target/python-venv/bin/python -m pytest -q -p no:cacheprovider crates/python/tests

echo "==> the archive read by DuckDB, pandas and Polars (docs/history.md)"
scripts/check-archive.sh

echo "==> promtool check rules"
# promtool comes with Debian's prometheus package; on a host running systemd, Debian also
# starts the server (:9090): `systemctl disable --now prometheus` if it is not wanted there.
need promtool prometheus --no-install-recommends
promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts_test.yml
python3 -m json.tool deploy/grafana/evstream.json >/dev/null

echo "==> supply chain (cargo deny: licenses, bans, sources)"
# Advisories need the RustSec database from GitHub, out of this CI's reach: docs/security.md.
CARGO_DENY_VERSION=0.20.2
if [ "$(cargo deny --version 2>/dev/null)" != "cargo-deny $CARGO_DENY_VERSION" ]; then
    echo "==> installing cargo-deny $CARGO_DENY_VERSION (crates.io)" >&2
    cargo install --quiet --locked cargo-deny --version "$CARGO_DENY_VERSION" >&2
fi
cargo deny --log-level error check licenses bans sources

echo "==> loom models of the ring"
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
    cargo test -p evstream-ring --test loom --profile loom --locked

echo "==> Miri on the ring"
if ! cargo +nightly miri --version >/dev/null 2>&1; then
    timeout 120 rustup component add --toolchain nightly miri rust-src >/dev/null 2>&1 || true
fi
if cargo +nightly miri --version >/dev/null 2>&1; then
    MIRIFLAGS="-Zmiri-many-seeds=0..4" CARGO_TARGET_DIR=target/miri \
        cargo +nightly miri test -p evstream-ring --lib
else
    echo "skipped: no nightly toolchain with Miri here (rustup component add --toolchain nightly miri)"
fi
echo "==> all checks passed"
