#!/usr/bin/env bash
# The archive read by outside readers, as an analyst would: publishes typed orders and a few
# dead letters into a private redis-server, archives them (`evstream archive --once`), then
# DuckDB (PyPI `duckdb`) counts the rows and distinct event ids and compares them with what
# was published, and every Python example of docs/history.md runs against the archive.
# Usage: scripts/check-archive.sh [EVENTS]   (default 100000; needs `cargo build` first,
# scripts/test.sh runs it after the tests)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
events=${1:-100000}
bin=${EVSTREAM_BIN:-target/debug/evstream}
[ -x "$bin" ] || cargo build --locked -p evstream-cli

# The readers, in a virtual environment of their own (pandas reads Parquet through pyarrow).
venv=target/analysts-venv
if ! "$venv/bin/python" -c "import duckdb, pandas, pyarrow, polars" >/dev/null 2>&1; then
    echo "==> installing DuckDB, pandas, pyarrow and Polars (PyPI) into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        duckdb==2.0.1 pandas==3.1.1 pyarrow==26.0.1 polars==2.1.0 >&2
fi

start_private_redis
url="redis://127.0.0.1:$port"
work=$(mktemp -d)
trap 'redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$dir" "$work"' EXIT
"$bin" bench --redis-url "$url" --event-kind orders --events "$events" --json >/dev/null
for i in 1 2 3; do
    redis-cli -p "$port" XADD events:dlq '*' event_type Bad data '{' dlq_reason invalid_json \
        dlq_stage ship n "$i" >/dev/null
done
"$bin" archive --redis-url "$url" --dir "$work/archive" --once
published=$(redis-cli -p "$port" XLEN events)

"$venv/bin/python" - "$work/archive" "$published" <<'PY'
import sys
import duckdb
archive, published = sys.argv[1], int(sys.argv[2])
rows, distinct = duckdb.sql(
    f"SELECT count(*), count(DISTINCT event_id) FROM read_parquet('{archive}/events/**/*.parquet')"
).fetchall()[0]
print(f"DuckDB: {rows} rows, {distinct} distinct event ids; {published} published")
assert rows == published == distinct, (rows, distinct, published)
reasons = duckdb.sql(
    f"SELECT extra->>'$.dlq_reason', count(*) FROM read_parquet('{archive}/dlq/**/*.parquet') GROUP BY ALL"
).fetchall()
assert reasons == [("invalid_json", 3)], reasons
PY

# Every ```python block of docs/history.md, run where the archive is `archive/`.
python3 - docs/history.md "$work/blocks" <<'PY'
import os, re, sys
text = open(sys.argv[1]).read()
blocks = re.findall(r"```python\n(.*?)```", text, re.S)
assert blocks, "no Python examples in docs/history.md"
os.makedirs(sys.argv[2])
for i, block in enumerate(blocks):
    open(os.path.join(sys.argv[2], f"example_{i}.py"), "w").write(block)
print(f"{len(blocks)} examples")
PY
for example in "$work"/blocks/example_*.py; do
    echo "==> docs/history.md: $(head -1 "$example")"
    (cd "$work" && "$OLDPWD/$venv/bin/python" "$example" >/dev/null)
done
echo "==> the archive reads back in DuckDB, pandas and Polars"
