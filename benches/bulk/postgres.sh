#!/usr/bin/env bash
# PostgreSQL -> zstd Parquet: tidex against ConnectorX + pyarrow, with psql's
# binary COPY to /dev/null as the floor.
#
#   bash benches/bulk/postgres.sh                 # 5,000,000 rows
#   BENCH_SCALE=small bash benches/bulk/postgres.sh   # 400,000 rows
#
# Environment: BENCH_SCALE, BENCH_ROWS, BENCH_REPS (default 3),
# BENCH_ZSTD_LEVEL (default 1), BENCH_PG (default
# postgres://postgres@127.0.0.1:5432/test), TIDEX_BIN (skips the build).
# The table tidex_bench.people is (re)generated in the server when its row
# count differs from the one asked for.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

case "${BENCH_SCALE:-full}" in
    small) default_rows=400000 ;;
    full) default_rows=5000000 ;;
    *) echo "postgres.sh: BENCH_SCALE must be small or full" >&2; exit 2 ;;
esac
rows="${BENCH_ROWS:-$default_rows}"
pg="${BENCH_PG:-postgres://postgres@127.0.0.1:5432/test}"

venv="$root/benches/.venv"
[[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
if ! "$venv/bin/python" -c 'import connectorx, pyarrow' 2>/dev/null; then
    echo "postgres.sh: installing connectorx, pyarrow into $venv" >&2
    "$venv/bin/python" -m pip install --quiet connectorx pyarrow
fi
[[ -x /usr/bin/time ]] || apt-get install -y -qq time >/dev/null

if [[ -n "${TIDEX_BIN:-}" ]]; then
    tidex="$(command -v "$TIDEX_BIN")"
else
    cargo build --release --bin tidex
    tidex="${CARGO_TARGET_DIR:-target}/release/tidex"
fi
tidex="$(cd "$(dirname "$tidex")" && pwd)/$(basename "$tidex")"

have="$(psql "$pg" -qAt -c "SELECT count(*) FROM tidex_bench.people" 2>/dev/null || echo 0)"
if [[ "$have" != "$rows" ]]; then
    echo "postgres.sh: generating tidex_bench.people ($rows rows)" >&2
    psql "$pg" -q -v ON_ERROR_STOP=1 -v rows="$rows" -f benches/bulk/pg_people.sql
fi

exec "$venv/bin/python" benches/bulk/compare_pg.py "$pg" tidex_bench.people "$tidex" \
    --reps "${BENCH_REPS:-3}" --zstd-level "${BENCH_ZSTD_LEVEL:-1}"
