#!/usr/bin/env bash
# A tree of mixed files, compressed and encrypted: tidex against cp -r and
# tar | zstd -1 | openssl enc on the same ~1 GB.
#
#   bash benches/bulk/blobs.sh              # ~1000 MB
#   BENCH_MB=200 bash benches/bulk/blobs.sh # smaller
#
# Environment:
#   BENCH_MB     size of the generated tree in MB (default 1000)
#   BENCH_REPS   runs per tool, interleaved; the median is reported (default 3)
#   BENCH_DIR    work directory (default benches/.blobs-work; needs about
#                (1 + 4 x BENCH_REPS) x BENCH_MB free: every rep's outputs are
#                kept until the timed runs end, see below)
#   TIDEX_BIN    tidex binary to measure; skips the cargo build
#
# Every output is checked afterwards: tidex's by `tidex decrypt`, the tar
# pipeline's by openssl -d | zstd -d | tar -x, cp's as is; each restored tree
# must have the same SHA-256 for every file as the input. The table goes to
# stdout and to benches/results/blobs-DATE-vm.md.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
mb="${BENCH_MB:-1000}"
reps="${BENCH_REPS:-3}"
work="${BENCH_DIR:-$root/benches/.blobs-work}"

if [[ -n "${TIDEX_BIN:-}" ]]; then
    tidex="$TIDEX_BIN"
else
    cargo build --release --bin tidex
    tidex="${CARGO_TARGET_DIR:-target}/release/tidex"
fi
tidex="$(cd "$(dirname "$tidex")" && pwd)/$(basename "$tidex")"
for tool in zstd openssl tar /usr/bin/time python3 sha256sum; do
    command -v "$tool" >/dev/null || { echo "blobs.sh: needs $tool" >&2; exit 2; }
done

mkdir -p "$work"
cd "$work"
if [[ ! -f "data-$mb.done" ]]; then
    rm -rf data
    echo "blobs.sh: generating $mb MB of mixed files" >&2
    python3 "$root/benches/bulk/gen_blobs.py" data "$mb"
    touch "data-$mb.done"
fi
bytes=$(du -sb data | cut -f1)
files=$(find data -type f | wc -l)
openssl rand -hex 32 > aes.key
openssl rand -hex 16 > sm4.key

sm4=0
if openssl enc -list 2>/dev/null | grep -qw -- -sm4-ctr; then
    sm4=1
fi

tools=(cp tar-zstd-openssl-aes tidex-aes)
if [[ $sm4 == 1 ]]; then
    tools+=(tar-zstd-openssl-sm4 tidex-sm4)
fi

# cmd_for TOOL DIR: the command that writes TOOL's output under DIR.
cmd_for() {
    local o=$2
    case "$1" in
        cp) echo "cp -r data $o/cp" ;;
        tar-zstd-openssl-aes) echo "tar -cf - -C data . | zstd -1 -q -c | openssl enc -aes-256-ctr -pass pass:x -pbkdf2 -out $o/tar-aes.enc" ;;
        tar-zstd-openssl-sm4) echo "tar -cf - -C data . | zstd -1 -q -c | openssl enc -sm4-ctr -pass pass:x -pbkdf2 -out $o/tar-sm4.enc" ;;
        tidex-aes) echo "$tidex --state $o/aes.db copy data/ $o/tidex-aes/ --compress zstd:1 --encrypt aes-256-gcm --key aes.key --no-progress" ;;
        tidex-sm4) echo "$tidex --state $o/sm4.db copy data/ $o/tidex-sm4/ --compress zstd:1 --encrypt sm4-gcm --key sm4.key --no-progress" ;;
    esac
}

# Every rep writes into a directory of its own, and no output is deleted
# until the timed runs are over. On ext4 without a journal (this VM's root)
# a new inode skips every inode freed in the last minute (six while its
# inode table block is dirty), so each file created right after `rm -rf` of
# thousands of files pays for all of them: a harness artefact that cost the
# tools writing 4,000 files (cp, tidex) about a second and the one-file tar
# pipeline nothing.
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
rm -rf out state && mkdir -p out
sync
declare -A walls rss outbytes cpus
for rep in $(seq 1 "$reps"); do
    for t in "${tools[@]}"; do
        o="out/$rep-$t"
        mkdir -p "$o"
        sync
        # Read the tree through, so every tool starts with its input in the
        # page cache (some VMs hand idle page cache back to the host).
        find data -type f -exec cat {} + >/dev/null
        c="$(cmd_for "$t" "$o")"
        /usr/bin/time -f "%e %M %U %S" -o time.txt bash -c "$c" >/dev/null
        read -r wall kb user sys < time.txt
        walls[$t]+="$wall "
        cpus[$t]+="$(awk "BEGIN {print $user + $sys}") "
        rss[$t]=$(( ${rss[$t]:-0} > kb ? ${rss[$t]:-0} : kb ))
        outbytes[$t]=$(du -sb --exclude='*.db*' "$o" | cut -f1)
        echo "rep $rep $t: ${wall}s, ${kb} KiB peak" >&2
    done
done

# Check the last rep's outputs.
hashes() { (cd "$1" && find . -type f ! -name '_tidex_*' -print0 | sort -z | xargs -0 sha256sum); }
hashes data > want.txt
check() {
    local t=$1 o=$2
    rm -rf check && mkdir -p check
    case "$t" in
        cp) hashes "$o/cp" ;;
        tar-zstd-openssl-aes) openssl enc -d -aes-256-ctr -pass pass:x -pbkdf2 -in "$o/tar-aes.enc" | zstd -d -q | tar -xf - -C check && hashes check ;;
        tar-zstd-openssl-sm4) openssl enc -d -sm4-ctr -pass pass:x -pbkdf2 -in "$o/tar-sm4.enc" | zstd -d -q | tar -xf - -C check && hashes check ;;
        tidex-aes) rm -rf check && "$tidex" decrypt "$o/tidex-aes/" check/ --key aes.key >/dev/null && hashes check ;;
        tidex-sm4) rm -rf check && "$tidex" decrypt "$o/tidex-sm4/" check/ --key sm4.key >/dev/null && hashes check ;;
    esac
}
# The last rep's outputs are the ones checked.
declare -A ok
for t in "${tools[@]}"; do
    if check "$t" "out/$reps-$t" | cmp -s - want.txt; then ok[$t]=ok; else ok[$t]=MISMATCH; fi
done
rm -rf out state check

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
date_tag="$(date +%F)"
# A quick run (the suite's small scale) never replaces a full-scale result.
suffix=""
[[ "${BENCH_SCALE:-full}" == small ]] && suffix="-small"
result="$root/benches/results/blobs-$date_tag-vm$suffix.md"
{
    echo "# A tree of mixed files: copy, zstd-1, encrypt — $date_tag, vm"
    echo
    echo "- input: $files files, $(awk "BEGIN {printf \"%.1f\", $bytes/1e6}") MB (benches/bulk/gen_blobs.py $mb: 60% in 4 large files, 20% in 5 MB files, 20% in files under 100 kB; half text-like, half random)"
    echo "- $reps rep(s) per tool, interleaved, median wall time; outputs are not fsynced by any tool; sync before every rep, then the input tree is read through so it is in the page cache; every rep writes to a new directory and outputs are deleted only after the timed runs (freshly freed inodes slow file creation on ext4 without a journal)"
    echo "- $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(free -g | awk '/Mem:/ {print $2}') GiB; load average $load_before before the runs (other builds share the machine)"
    echo "- tidex $("$tidex" --version | cut -d' ' -f2) ($(git -C "$root" rev-parse --short HEAD)); $(zstd --version | head -1); $(openssl version)"
    echo "- the kernel groups CPU time by session (sched_autogroup_enabled = $(cat /proc/sys/kernel/sched_autogroup_enabled 2>/dev/null || echo '?')): with other builds running, this session's processes together get about one share of the CPUs, so extra threads add little wall-time speed here; CPU s shows the work each tool does"
    echo "- x tidex = tool's median / tidex's median for the same cipher (above 1: tidex is faster); cp -r is compared with tidex-aes"
    echo
    echo "| tool | command | median wall s | MB/s | CPU s (user+sys, median) | peak RSS MiB | output MB | x tidex | check |"
    echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    for t in "${tools[@]}"; do
        m=$(echo "${walls[$t]}" | median)
        case "$t" in
            *sm4*) ref=$(echo "${walls[tidex-sm4]}" | median) ;;
            *) ref=$(echo "${walls[tidex-aes]}" | median) ;;
        esac
        c="$(cmd_for "$t" out | sed "s|$tidex|tidex|")"
        printf '| %s | `%s` | %.2f | %.0f | %.2f | %d | %.1f | %.2fx | %s |\n' "$t" "$c" "$m" \
            "$(awk "BEGIN {print $bytes/1e6/$m}")" "$(echo "${cpus[$t]}" | median)" "$(( ${rss[$t]} / 1024 ))" \
            "$(awk "BEGIN {print ${outbytes[$t]}/1e6}")" "$(awk "BEGIN {print $m/$ref}")" "${ok[$t]}"
    done
    echo
    echo "Wall times per rep: "
    for t in "${tools[@]}"; do echo "- $t: ${walls[$t]}"; done
} | tee "$result"
echo "blobs.sh: wrote $result" >&2

# For benches/bulk/run.sh (the contract at its top): one RESULT line per tool.
printf 'INPUT\t%s files, %s MB of mixed files (gen_blobs.py %s)\n' "$files" "$(awk "BEGIN {printf \"%.1f\", $bytes/1e6}")" "$mb"
for t in "${tools[@]}"; do
    case "$t" in
        cp) role=floor:aes ;;
        tar-zstd-openssl-aes) role=peer:aes ;;
        tidex-aes) role=tidex:aes ;;
        tar-zstd-openssl-sm4) role=peer:sm4 ;;
        tidex-sm4) role=tidex:sm4 ;;
    esac
    check=${ok[$t]}
    [[ $check == ok ]] || check="FAILED: restored tree differs from the input"
    printf 'RESULT\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$role" "$t" "$(echo "${walls[$t]}" | median)" "$bytes" "$files" "${rss[$t]}" "$check"
done
