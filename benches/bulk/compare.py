#!/usr/bin/env python3
"""CSV -> zstd Parquet: tidex against polars, duckdb and pyarrow.

    python compare.py CSV TIDEX_BIN [--reps N] [--zstd-level L]

Run it with the Python of benches/.venv (benches/bulk/run.sh does): the peer
tools are imported from there. Each tool converts the same CSV REPS times,
each time in a fresh child process, so wall time includes start-up and the
peak RSS (from GNU time) belongs to that tool alone. After a tool's last rep
its output is checked against the CSV: row count, sum of `id` and sum of
`dept_code`. The markdown table goes to stdout and to
benches/results/csv-parquet-DATE-HOST.md; the exit status is 1 if any tool
failed or wrote wrong data.
"""
import argparse
import datetime
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as ds

ROOT = Path(__file__).resolve().parents[2]
GNU_TIME = shutil.which("time", path="/usr/bin:/bin") or "/usr/bin/time"
OUT_DIR = ROOT / "benches" / "data" / "out"
RESULTS_DIR = ROOT / "benches" / "results"

# The peers run as `python -c SCRIPT CSV OUT LEVEL`: paths travel in argv,
# never spliced into code.
POLARS = """
import sys
import polars as pl
src, out, level = sys.argv[1], sys.argv[2], int(sys.argv[3])
pl.scan_csv(src).sink_parquet(out, compression="zstd", compression_level=level)
"""

DUCKDB = """
import sys
import duckdb
src, out, level = sys.argv[1], sys.argv[2], int(sys.argv[3])
def lit(s):
    return "'" + s.replace("'", "''") + "'"
duckdb.sql(
    f"COPY (SELECT * FROM read_csv({lit(src)})) TO {lit(out)} "
    f"(FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL {level})"
)
"""

# Every write_batch call closes a row group, so pyarrow's 1 MiB default block
# would give row groups of ~9,000 rows: 16 MiB blocks (~140,000 rows) keep its
# row groups, and so its compression and speed, comparable to the others.
PYARROW = """
import sys
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
src, out, level = sys.argv[1], sys.argv[2], int(sys.argv[3])
reader = pacsv.open_csv(src, read_options=pacsv.ReadOptions(block_size=16 << 20))
with pq.ParquetWriter(out, reader.schema, compression="zstd", compression_level=level) as w:
    for batch in reader:
        w.write_batch(batch)
"""


def tool_commands(tidex, csv, level, state_dir):
    """Each tool's argv, as a function of its output path."""
    py = sys.executable
    csv = str(csv)
    return {
        "tidex": lambda out: [
            tidex, "copy", csv, str(out),
            "--compression", "zstd", "--compression-level", str(level),
            "--restart", "--no-progress", "--state", str(state_dir / "state.db"),
        ],
        "polars": lambda out: [py, "-c", POLARS, csv, str(out), str(level)],
        "duckdb": lambda out: [py, "-c", DUCKDB, csv, str(out), str(level)],
        "pyarrow": lambda out: [py, "-c", PYARROW, csv, str(out), str(level)],
    }


def remove(path):
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def measure(argv, log):
    """Run argv to completion; return (exit code, wall seconds, peak RSS KiB).

    The peak RSS comes from GNU time, which starts the tool from its own
    small process: a child forked straight from this script would count the
    script's resident pages (the reference data it holds) as its own.
    """
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss_file:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [GNU_TIME, "-f", "%M", "-o", rss_file.name, *argv],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
        )
        proc.wait()
        wall = time.perf_counter() - t0
        text = rss_file.read().strip().splitlines()
    rss = int(text[-1]) if text and text[-1].isdigit() else 0
    return proc.returncode, wall, rss


def csv_reference(csv):
    """Row count and the two checksums, read from the CSV itself.

    This also pulls the file into the page cache before any tool is timed,
    so no tool pays for the first cold read.
    """
    table = pacsv.read_csv(csv, convert_options=pacsv.ConvertOptions(include_columns=["id", "dept_code"]))
    return table.num_rows, column_sum(table["id"]), column_sum(table["dept_code"])


def column_sum(column):
    return pc.sum(pc.cast(column, pa.int64())).as_py() or 0


def verify(out, reference):
    """None if the Parquet output at `out` matches the CSV, else why not."""
    rows, id_sum, dept_sum = reference
    try:
        table = ds.dataset(out, format="parquet").to_table(columns=["id", "dept_code"])
    except Exception as e:  # noqa: BLE001 - any unreadable output is a failed check
        return f"unreadable output: {e}"
    got = (table.num_rows, column_sum(table["id"]), column_sum(table["dept_code"]))
    if got[0] != rows:
        return f"{got[0]} rows, expected {rows}"
    if got[1] != id_sum:
        return f"sum(id) {got[1]}, expected {id_sum}"
    if got[2] != dept_sum:
        return f"sum(dept_code) {got[2]}, expected {dept_sum}"
    return None


def run_tool(name, command, reps, reference, work):
    """All reps of one tool; returns its result row as a dict."""
    out = OUT_DIR / f"{name}.parquet"
    walls, rss = [], []
    for rep in range(1, reps + 1):
        remove(out)
        # A fresh state store each rep: tidex then starts as on a first run,
        # with no history or checkpoints carried over from the last rep.
        remove(work / "state.db")
        # Flush the previous rep's writes so their writeback does not land
        # in this rep's timing (the same for every tool).
        os.sync()
        log_path = work / f"{name}.log"
        with open(log_path, "wb") as log:
            code, wall, maxrss = measure(command(out), log)
        if code != 0:
            tail = log_path.read_text(errors="replace")[-2000:]
            print(f"{name} rep {rep}/{reps}: exit {code}\n{tail}", file=sys.stderr)
            return {"tool": name, "completed": False, "failure": f"exit {code}", "walls": walls, "rss": rss}
        walls.append(wall)
        rss.append(maxrss)
        print(f"{name} rep {rep}/{reps}: {wall:.2f} s, {maxrss / 1024:.0f} MiB", file=sys.stderr)
    return {"tool": name, "completed": True, "failure": verify(out, reference), "walls": walls, "rss": rss}


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def versions(tidex):
    try:
        out = subprocess.run([tidex, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        out = "tidex (unknown version)"
    try:
        commit = subprocess.run(
            ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, check=True, cwd=ROOT
        ).stdout.strip()
        out += f" ({commit})"
    except (OSError, subprocess.CalledProcessError):
        pass
    peers = ", ".join(f"{p} {metadata.version(p)}" for p in ("polars", "duckdb", "pyarrow"))
    return f"{out}; {peers}"


def table(results, csv_bytes, rows):
    """The markdown table plus the two summary lines."""
    ok = {r["tool"]: statistics.median(r["walls"]) for r in results if r["failure"] is None}
    tidex = ok.get("tidex")
    lines = [
        "| tool | median wall s | MB/s | rows/s | peak RSS MiB | tidex speedup | check |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        check = "ok" if r["failure"] is None else f"FAILED: {r['failure']}"
        # A tool that wrote wrong data still shows its timings, marked FAILED;
        # one that crashed has none worth showing.
        if r["completed"]:
            med = statistics.median(r["walls"])
            speedup = f"{med / tidex:.2f}x" if tidex else "n/a"
            lines.append(
                f"| {r['tool']} | {med:.2f} | {csv_bytes / 1e6 / med:.0f} | {rows / med:,.0f} "
                f"| {max(r['rss']) / 1024:.0f} | {speedup} | {check} |"
            )
        else:
            lines.append(f"| {r['tool']} | - | - | - | - | - | {check} |")
    peers = {t: m for t, m in ok.items() if t != "tidex"}
    lines.append("")
    if tidex and peers:
        best = min(peers, key=peers.get)
        lines.append(f"tidex vs fastest peer: {peers[best] / tidex:.2f}x ({best})")
    else:
        lines.append("tidex vs fastest peer: n/a")
    lines.append(f"tidex vs polars: {ok['polars'] / tidex:.2f}x" if tidex and "polars" in ok else "tidex vs polars: n/a")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", type=Path)
    ap.add_argument("tidex")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--zstd-level", type=int, default=1)
    a = ap.parse_args()
    if a.reps < 1:
        ap.error("--reps must be at least 1")

    csv = a.csv.resolve()
    csv_bytes = csv.stat().st_size
    reference = csv_reference(csv)
    rows = reference[0]
    print(f"{csv.name}: {rows:,} rows, {csv_bytes / 1e6:.1f} MB, zstd level {a.zstd_level}, "
          f"{a.reps} rep(s) per tool", file=sys.stderr)

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="tidex-bench-") as tmp:
        work = Path(tmp)
        for name, command in tool_commands(a.tidex, csv, a.zstd_level, work).items():
            results.append(run_tool(name, command, a.reps, reference, work))

    body = table(results, csv_bytes, rows)
    print(body)

    nproc = len(os.sched_getaffinity(0))
    host = socket.gethostname()
    today = datetime.date.today().isoformat()
    header = "\n".join([
        f"# CSV -> zstd Parquet, {today}, {host}",
        "",
        f"- input: {csv.name}, {rows:,} rows, {csv_bytes / 1e6:.1f} MB",
        f"- zstd level {a.zstd_level}, {a.reps} rep(s) per tool, median wall time reported",
        f"- {nproc} CPUs (nproc), {cpu_model()}",
        f"- {versions(a.tidex)}",
        "- wall time includes process start-up and imports; page cache holds the CSV "
        "and writes are flushed (sync) before every rep; peak RSS from GNU time, "
        "max over reps; MB = 10^6 bytes",
        "- tidex speedup = tool's median / tidex's median (above 1: tidex is faster)",
        "",
    ])
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    report = RESULTS_DIR / f"csv-parquet-{today}-{host}.md"
    report.write_text(header + "\n" + body + "\n")
    print(f"wrote {report.relative_to(ROOT)}", file=sys.stderr)

    return 1 if any(r["failure"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
