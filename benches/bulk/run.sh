#!/usr/bin/env bash
# The bulk-transfer suite: tidex against its peers, side by side, on the same
# deterministic data, in one command.
#
#   bash benches/bulk/run.sh                      # 5,000,000 rows (~600 MB of CSV)
#   BENCH_SCALE=small bash benches/bulk/run.sh    # 400,000 rows (~50 MB)
#   BENCH_ONLY=csv,pg bash benches/bulk/run.sh    # some scenarios only
#
# Scenarios (BENCH_ONLY keys, run in this order):
#   csv      CSV -> zstd Parquet: tidex, DuckDB, Polars, pyarrow
#   pg       PostgreSQL -> zstd Parquet: tidex, ConnectorX + pyarrow, DuckDB's
#            postgres scanner (if PyPI has it for the duckdb in use);
#            floor: psql binary COPY to /dev/null
#   mariadb  MariaDB -> zstd Parquet: tidex, ConnectorX + pyarrow;
#            floor: mariadb --quick streaming the table to /dev/null
#   pg-load  Parquet -> PostgreSQL table: tidex (mode=truncate-insert) vs
#            psql \copy of the same records as CSV
#   blobs    a tree of mixed files -> hashed, compressed, encrypted copy:
#            benches/bulk/blobs.sh (skipped, with a line saying so, if absent)
#
# Environment:
#   BENCH_SCALE       small | full (default full)
#   BENCH_ROWS        row count; overrides the scale's
#   BENCH_REPS        interleaved runs per tool, median reported (default 5 full, 3 small)
#   BENCH_ZSTD_LEVEL  zstd level every Parquet writer uses (default 1)
#   BENCH_ONLY        comma-separated scenarios (default all)
#   BENCH_PG          default postgres://postgres@127.0.0.1:5432/test
#   BENCH_MYSQL       default mysql://root@127.0.0.1:3306/test
#   BENCH_MB          size of the blob tree in MB (default 1000 full, 50 small);
#                     blobs.sh gets BENCH_DIR=benches/data/blobs as its work directory
#   TIDEX_BIN         tidex binary to measure; skips the cargo build
#
# Data: benches/gen_people.py writes the CSV (seeded: the same bytes every
# time); the Parquet input of pg-load is the same records written by pyarrow
# with explicit types; the CSV is loaded into bench.people (PostgreSQL) and
# test.bench_people (MariaDB, LOAD DATA LOCAL INFILE) when those tables do not
# already hold exactly it. All of it lives in benches/data/ (git-ignored); the
# peers live in their own virtualenv, benches/.venv.
#
# Checks: every output is compared with the CSV after the last rep: row
# count, sum(id), sum(dept_code), characters of each text column, sum(amount)
# and the count of timestamps; a PostgreSQL target also with an
# order-independent md5 hash of all its rows. A tool that writes less fails
# its check and gets no ratio. Floors discard their output and are not checked.
#
# Output: the tables on stdout and in benches/results/DATE-HOST.md, the chart
# of tidex's ratios in benches/results/DATE-HOST.svg (DATE-HOST-small.* at the
# small scale, git-ignored: a quick check, not a result). Exit status 1 if any
# tool failed or wrote wrong data, 2 if the suite could not set up.
#
# Contract for an external scenario script (blobs.sh, and any later one):
#   - run as `bash SCRIPT` from the repository root with TIDEX_BIN (absolute
#     path), BENCH_SCALE, BENCH_REPS, BENCH_ZSTD_LEVEL and BENCH_MB set; it
#     times and checks its tools itself (GNU time, interleaved reps, median);
#   - stdout lines starting with these words are read, all others ignored
#     (progress belongs on stderr, a markdown table on stdout is harmless):
#       INPUT<TAB>description of what one run reads
#       RESULT<TAB>role[:group]<TAB>tool<TAB>median_s<TAB>bytes<TAB>rows<TAB>peak_rss_kib<TAB>check
#       NOTE<TAB>a line for the report
#     role: tidex | peer | floor; tools of one group are compared with each
#     other (e.g. tidex:aes against peer:aes, tidex:sm4 against peer:sm4);
#     bytes and rows: the input one run processes (rows: files, or 0); the
#     first RESULT line's are used for MB/s and rows/s; check: ok | FAILED: why
#     | n/a: why not available (median_s, peak_rss_kib "-"); a floor's check is
#     anything not starting with FAILED;
#   - exit 0; a non-zero exit is reported as a failure of the scenario.
#   For example, blobs.sh prints after its own table:
#     RESULT	floor:aes	cp -r	1.92	1000000000	412	3400	ok
#     RESULT	peer:aes	tar | zstd -1 | openssl enc -aes-256-ctr	6.10	1000000000	412	9800	ok
#     RESULT	tidex:aes	tidex --encrypt aes-256-gcm	2.40	1000000000	412	150000	ok
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
die() { echo "run.sh: $*" >&2; exit 2; }

scale="${BENCH_SCALE:-full}"
case "$scale" in
    small) default_rows=400000; default_reps=3 ;;
    full) default_rows=5000000; default_reps=5 ;;
    *) die "BENCH_SCALE must be small or full, not '$scale'" ;;
esac
rows="${BENCH_ROWS:-$default_rows}"
reps="${BENCH_REPS:-$default_reps}"
level="${BENCH_ZSTD_LEVEL:-1}"
only="${BENCH_ONLY:-csv,pg,mariadb,pg-load,blobs}"
[[ "$rows" =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROWS must be a positive integer, not '$rows'"

needs() { [[ ",$only," == *",$1,"* ]]; }
for tool in python3 psql mariadb; do
    case "$tool" in
        psql) needs pg || needs pg-load || continue ;;
        mariadb) needs mariadb || continue ;;
    esac
    command -v "$tool" >/dev/null || die "needs $tool on PATH"
done

# GNU time measures each tool's peak memory.
if [[ ! -x /usr/bin/time ]]; then
    echo "run.sh: installing GNU time" >&2
    apt-get install -y -qq time >/dev/null || die "could not install GNU time (apt-get install time)"
fi

# Peer tools live in a private virtualenv so the system Python is left alone
# and every machine measures the same way.
venv="$root/benches/.venv"
if [[ ! -x "$venv/bin/python" ]]; then
    echo "run.sh: creating $venv" >&2
    python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import polars, duckdb, pyarrow, connectorx' 2>/dev/null; then
    echo "run.sh: installing polars, duckdb, pyarrow, connectorx into $venv" >&2
    "$venv/bin/python" -m pip install --quiet polars duckdb pyarrow connectorx
fi

if [[ -n "${TIDEX_BIN:-}" ]]; then
    tidex="$TIDEX_BIN"
else
    cargo build --release --bin tidex
    tidex="${CARGO_TARGET_DIR:-target}/release/tidex"
fi
# Resolve a bare name through PATH, then make the path absolute so it means
# the same binary whatever directory it is started from.
resolved="$(command -v "$tidex")" && [[ -x "$resolved" ]] || die "no tidex binary at $tidex"
tidex="$(cd "$(dirname "$resolved")" && pwd)/$(basename "$resolved")"

mkdir -p benches/data
csv="$root/benches/data/people-$rows.csv"
parquet="$root/benches/data/people-$rows.parquet"
if [[ ! -f "$csv" ]]; then
    echo "run.sh: generating $csv ($rows rows)" >&2
    # Written under a temporary name so an interrupted run never leaves a
    # truncated file that later runs would take as complete.
    python3 benches/gen_people.py "$rows" "$csv.partial"
    mv "$csv.partial" "$csv"
fi
if needs pg-load && [[ ! -f "$parquet" ]]; then
    echo "run.sh: writing $parquet" >&2
    "$venv/bin/python" benches/bulk/to_parquet.py "$csv" "$parquet.partial" --zstd-level "$level"
    mv "$parquet.partial" "$parquet"
fi

exec "$venv/bin/python" benches/bulk/suite.py --csv "$csv" --parquet "$parquet" --tidex "$tidex" \
    --scale "$scale" --reps "$reps" --zstd-level "$level" --only "$only" \
    --pg "${BENCH_PG:-postgres://postgres@127.0.0.1:5432/test}" \
    --mysql "${BENCH_MYSQL:-mysql://root@127.0.0.1:3306/test}"
