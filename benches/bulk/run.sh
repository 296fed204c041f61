#!/usr/bin/env bash
# CSV -> zstd Parquet: tidex against polars, duckdb and pyarrow on one input.
#
#   bash benches/bulk/run.sh                 # 5,000,000 rows (~600 MB)
#   BENCH_SCALE=small bash benches/bulk/run.sh   # 400,000 rows (~50 MB)
#
# Environment:
#   BENCH_SCALE       small | full (default full)
#   BENCH_ROWS        row count; overrides BENCH_SCALE
#   BENCH_REPS        runs per tool; the median is reported (default 3)
#   BENCH_ZSTD_LEVEL  zstd level every tool writes with (default 1)
#   TIDEX_BIN         tidex binary to measure; skips the cargo build
#
# The table goes to stdout and to benches/results/csv-parquet-DATE-HOST.md.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

case "${BENCH_SCALE:-full}" in
    small) default_rows=400000 ;;
    full) default_rows=5000000 ;;
    *) echo "run.sh: BENCH_SCALE must be small or full, not '${BENCH_SCALE}'" >&2; exit 2 ;;
esac
rows="${BENCH_ROWS:-$default_rows}"
reps="${BENCH_REPS:-3}"
level="${BENCH_ZSTD_LEVEL:-1}"

# Peer tools live in a private virtualenv so the system Python is left alone
# and every machine measures the same way.
venv="$root/benches/.venv"
if [[ ! -x "$venv/bin/python" ]]; then
    echo "run.sh: creating $venv" >&2
    python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import polars, duckdb, pyarrow' 2>/dev/null; then
    echo "run.sh: installing polars, duckdb, pyarrow into $venv" >&2
    "$venv/bin/python" -m pip install --quiet polars duckdb pyarrow
fi

# GNU time measures each tool's peak memory.
if [[ ! -x /usr/bin/time ]]; then
    echo "run.sh: installing GNU time" >&2
    apt-get install -y -qq time >/dev/null
fi

if [[ -n "${TIDEX_BIN:-}" ]]; then
    tidex="$TIDEX_BIN"
else
    cargo build --release --bin tidex
    tidex="${CARGO_TARGET_DIR:-target}/release/tidex"
fi
# Resolve a bare name through PATH, then make the path absolute so it means
# the same binary whatever directory it is started from.
if ! resolved="$(command -v "$tidex")" || [[ ! -x "$resolved" ]]; then
    echo "run.sh: no tidex binary at $tidex" >&2
    exit 2
fi
tidex="$(cd "$(dirname "$resolved")" && pwd)/$(basename "$resolved")"

mkdir -p benches/data
csv="benches/data/people-$rows.csv"
if [[ ! -f "$csv" ]]; then
    echo "run.sh: generating $csv ($rows rows)" >&2
    # Written under a temporary name so an interrupted run never leaves a
    # truncated file that later runs would take as complete.
    python3 benches/gen_people.py "$rows" "$csv.partial"
    mv "$csv.partial" "$csv"
fi

exec "$venv/bin/python" benches/bulk/compare.py "$csv" "$tidex" --reps "$reps" --zstd-level "$level"
