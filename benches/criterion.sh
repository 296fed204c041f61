#!/usr/bin/env bash
# The criterion benches of the hot kernels (engine: AES/SM4-GCM, BLAKE3,
# zstd, encrypt and dedupe stages; connectors: CSV parse, Parquet encode,
# PostgreSQL binary COPY decode), with saved baselines so that a regression
# shows as a number.
#
#   bash benches/criterion.sh save main        # record baseline "main"
#   bash benches/criterion.sh compare main     # this tree against "main"
#   bash benches/criterion.sh run              # no baseline
#   bash benches/criterion.sh compare main --quick          # extra arguments go
#   bash benches/criterion.sh save main dedupe_index        # to criterion
#
# Which is, for each bench:
#   cargo bench -p tidex-engine --bench kernels -- --save-baseline main
#   cargo bench -p tidex-engine --bench kernels -- --baseline main
# and the same with -p tidex-connectors. Baselines live under
# ${CARGO_TARGET_DIR:-target}/criterion/; `compare` ends with every
# benchmark's change against the baseline (criterion's "change:" lines:
# time, then throughput, with the p-value) and exits 1 if one regressed.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

usage() { echo "usage: bash benches/criterion.sh save NAME | compare NAME | run [CRITERION ARGS...]" >&2; exit 2; }
[[ $# -ge 1 ]] || usage
action="$1"; shift
case "$action" in
    save|compare) [[ $# -ge 1 && "$1" != -* ]] || usage; name="$1"; shift ;;
    run) name="" ;;
    *) usage ;;
esac
case "$action" in
    save) flags=(--save-baseline "$name") ;;
    compare) flags=(--baseline "$name") ;;
    run) flags=() ;;
esac

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
for pkg in tidex-engine tidex-connectors; do
    echo "criterion.sh: cargo bench -p $pkg --bench kernels -- ${flags[*]} $*" >&2
    cargo bench -p "$pkg" --bench kernels -- "${flags[@]}" "$@" 2>&1 | tee -a "$log"
done

if [[ "$action" == compare ]]; then
    echo
    echo "Changes against baseline '$name':"
    # Criterion prints a benchmark's id (alone on its line when long), then
    # "change:" followed by time and thrpt lines (benches with a throughput)
    # or "change: [...]" inline, then its verdict.
    awk '
        /^[^ ][^:]*$/ { bench = $0; next }
        /^[^ ].* +time: +\[/ { bench = $0; sub(/ +time:.*/, "", bench); next }
        /^ +change: *$/ { pending = 2; next }
        pending > 0 && /^ +(time|thrpt):/ { sub(/^ +/, ""); printf "  %-55s %s\n", bench, $0; pending--; next }
        /^ +change: \[/ { sub(/^ +change: /, ""); printf "  %-55s time:   %s\n", bench, $0; next }
        /Performance has regressed/ { printf "  %-55s REGRESSED\n", bench; bad = 1 }
        END { exit bad }
' "$log" || { echo "criterion.sh: at least one benchmark regressed" >&2; exit 1; }
fi
