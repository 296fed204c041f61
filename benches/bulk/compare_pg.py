#!/usr/bin/env python3
"""PostgreSQL -> zstd Parquet: tidex against ConnectorX + pyarrow, with the
server's own binary COPY to /dev/null (psql) as the floor.

    python compare_pg.py PG_URL TABLE TIDEX_BIN [--reps N] [--zstd-level L] [--partitions P]

Run it with the Python of benches/.venv (benches/bulk/postgres.sh does).
Reps are interleaved (floor, tidex, connectorx, floor, ...) so a noisy
machine slows every tool alike. Each output is checked against the table:
row count, sum(id) and sum(dept_code). The table goes to stdout and to
benches/results/pg-parquet-DATE-HOST.md; exit status 1 if a tool failed.
"""
import argparse
import datetime
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import OUT_DIR, RESULTS_DIR, ROOT, cpu_model, measure, remove  # noqa: E402

CONNECTORX = """
import sys
import connectorx as cx
import pyarrow.parquet as pq
url, table, out, level, parts = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
t = cx.read_sql(url, f"SELECT * FROM {table}", return_type="arrow",
                partition_on="id", partition_num=parts)
pq.write_table(t, out, compression="zstd", compression_level=level)
"""


def psql_args(url):
    return ["psql", url, "-qAt", "-v", "ON_ERROR_STOP=1"]


def reference(url, table):
    out = subprocess.run(
        psql_args(url) + ["-c", f"SELECT count(*), sum(id), sum(dept_code), pg_relation_size('{table}') FROM {table}"],
        capture_output=True, text=True, check=True,
    ).stdout.strip().split("|")
    return int(out[0]), int(out[1]), int(out[2]), int(out[3])


def verify(out, ref):
    rows, id_sum, dept_sum, _ = ref
    try:
        t = ds.dataset(out, format="parquet").to_table(columns=["id", "dept_code"])
    except Exception as e:  # noqa: BLE001
        return f"unreadable output: {e}"
    s = lambda c: pc.sum(pc.cast(t[c], pa.int64())).as_py() or 0  # noqa: E731
    got = (t.num_rows, s("id"), s("dept_code"))
    if got != (rows, id_sum, dept_sum):
        return f"got rows/sum(id)/sum(dept_code) {got}, expected {(rows, id_sum, dept_sum)}"
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url")
    ap.add_argument("table")
    ap.add_argument("tidex")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--zstd-level", type=int, default=1)
    ap.add_argument("--partitions", type=int, default=2)
    a = ap.parse_args()
    ref = reference(a.url, a.table)
    rows, rel_bytes = ref[0], ref[3]
    py = sys.executable
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tidex-bench-pg-") as tmp:
        work = Path(tmp)
        tools = {
            "psql COPY binary to /dev/null (floor)": (
                psql_args(a.url) + ["-c", f"\\copy {a.table} TO '/dev/null' WITH (FORMAT binary)"], None),
            "tidex": ([a.tidex, "copy", f"{a.url}?table={a.table}", str(OUT_DIR / "pg-tidex.parquet"),
                       "--compression", "zstd", "--compression-level", str(a.zstd_level),
                       "--restart", "--no-progress", "--state", str(work / "state.db")],
                      OUT_DIR / "pg-tidex.parquet"),
            "connectorx + pyarrow": ([py, "-c", CONNECTORX, a.url, a.table, str(OUT_DIR / "pg-cx.parquet"),
                                      str(a.zstd_level), str(a.partitions)], OUT_DIR / "pg-cx.parquet"),
        }
        results = {name: {"walls": [], "rss": [], "failure": None} for name in tools}
        for rep in range(1, a.reps + 1):
            for name, (argv, out) in tools.items():
                r = results[name]
                if r["failure"]:
                    continue
                if out:
                    remove(out)
                remove(work / "state.db")
                os.sync()
                log_path = work / "log"
                with open(log_path, "wb") as log:
                    code, wall, rss = measure(argv, log)
                if code != 0:
                    r["failure"] = f"exit {code}: {log_path.read_text(errors='replace')[-500:]}"
                    print(f"{name}: {r['failure']}", file=sys.stderr)
                    continue
                r["walls"].append(wall)
                r["rss"].append(rss)
                print(f"{name} rep {rep}/{a.reps}: {wall:.2f} s, {rss / 1024:.0f} MiB", file=sys.stderr)
                if rep == a.reps and out:
                    r["failure"] = verify(out, ref)
    floor = statistics.median(results["psql COPY binary to /dev/null (floor)"]["walls"] or [float("nan")])
    lines = [
        "| tool | median wall s | MB/s (table) | rows/s | peak RSS MiB | x floor | check |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, r in results.items():
        if not r["walls"]:
            lines.append(f"| {name} | - | - | - | - | - | FAILED: {r['failure']} |")
            continue
        med = statistics.median(r["walls"])
        check = "ok" if r["failure"] is None else f"FAILED: {r['failure']}"
        lines.append(f"| {name} | {med:.2f} | {rel_bytes / 1e6 / med:.0f} | {rows / med:,.0f} | "
                     f"{max(r['rss']) / 1024:.0f} | {med / floor:.2f} | {check} |")
    body = "\n".join(lines)
    print(body)
    today = datetime.date.today().isoformat()
    host = socket.gethostname()
    try:
        commit = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True,
                                text=True, cwd=ROOT).stdout.strip()
    except OSError:
        commit = "?"
    header = "\n".join([
        f"# PostgreSQL -> zstd Parquet, {today}, {host}",
        "",
        f"- table {a.table}: {rows:,} rows, {rel_bytes / 1e6:.0f} MB on disk (in the server's cache)",
        f"- zstd level {a.zstd_level}; {a.reps} interleaved reps, median wall time; "
        f"ConnectorX with {a.partitions} partitions on id",
        f"- {len(os.sched_getaffinity(0))} CPUs, {cpu_model()}; PostgreSQL on the same machine",
        f"- tidex {commit}; connectorx {metadata.version('connectorx')}, pyarrow {metadata.version('pyarrow')}",
        "- peak RSS from GNU time (client process only); x floor = median / psql binary COPY median",
        "",
    ])
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    report = RESULTS_DIR / f"pg-parquet-{today}-{host}.md"
    report.write_text(header + "\n" + body + "\n")
    print(f"wrote {report.relative_to(ROOT)}", file=sys.stderr)
    return 1 if any(r["failure"] for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
