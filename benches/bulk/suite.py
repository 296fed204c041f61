#!/usr/bin/env python3
"""The bulk-transfer suite: every scenario, tidex against its peers on the
same input. Run it through benches/bulk/run.sh, which builds tidex, makes the
virtualenv and the data, then starts this with the virtualenv's Python.

    python suite.py --csv CSV --parquet PARQUET --tidex BIN [--only csv,pg,...]

Scenarios (`--only` keys): csv, pg, mariadb, pg-load, blobs. See run.sh for
the environment, the checks, and the contract for external scenario scripts.
"""
import argparse
import datetime
import decimal
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as ds

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report  # noqa: E402
from harness import FLOOR, PEER, ROOT, TIDEX, Result, Scenario, Tool, run_interleaved  # noqa: E402

ALL = ["csv", "pg", "mariadb", "pg-load", "blobs"]
STRINGS = ["name", "phone", "id_card", "address"]

# The peers run as `python -c SCRIPT ARGS...`: paths and URLs travel in argv,
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

# ConnectorX reads into Arrow (partitioned on id, one partition per core),
# pyarrow writes the same zstd Parquet.
CONNECTORX = """
import sys
import connectorx as cx
import pyarrow.parquet as pq
url, table, out, level, parts = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
t = cx.read_sql(url, f"SELECT * FROM {table}", return_type="arrow",
                partition_on="id", partition_num=parts)
pq.write_table(t, out, compression="zstd", compression_level=level)
"""

DUCKDB_PG = """
import sys
import duckdb
ext, dsn, table, out, level = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
def lit(s):
    return "'" + s.replace("'", "''") + "'"
con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
con.execute(f"LOAD {lit(ext)}")
if table:
    con.execute(f"ATTACH {lit(dsn)} AS pg (TYPE postgres, READ_ONLY)")
    con.execute(f"COPY (SELECT * FROM pg.{table}) TO {lit(out)} "
                f"(FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL {level})")
"""


class SetupError(Exception):
    """A scenario's input could not be prepared; the suite stops."""


def sh(argv, **kw):
    """Runs a setup command; a failure stops the suite with its output."""
    p = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, **kw)
    if p.returncode != 0:
        raise SetupError(f"{' '.join(map(str, argv))[:300]}: exit {p.returncode}\n{p.stderr.strip()[-1500:]}")
    return p.stdout


# ---------------------------------------------------------------- checks


def csv_reference(csv):
    """What every output must hold, computed from the CSV itself: rows, sums
    of the integer columns, total characters of each text column, the exact
    sum of amount and the count of timestamps. Reading it also puts the CSV in
    the page cache before any tool is timed."""
    types = {c: pa.string() for c in STRINGS + ["created_at"]}
    types.update(id=pa.int64(), dept_code=pa.int64(), amount=pa.decimal128(18, 2))
    t = pacsv.read_csv(csv, convert_options=pacsv.ConvertOptions(column_types=types))
    ref = fingerprint(t)
    ref["amount"] = decimal.Decimal(pc.sum(t["amount"]).as_py() or 0)
    return ref


def fingerprint(t):
    def isum(c):
        return pc.sum(pc.cast(t[c], pa.int64())).as_py() or 0

    fp = {"rows": t.num_rows, "sum(id)": isum("id"), "sum(dept_code)": isum("dept_code")}
    for c in STRINGS:
        fp[f"chars({c})"] = pc.sum(pc.utf8_length(pc.cast(t[c], pa.string()))).as_py() or 0
    fp["amount"] = pc.sum(pc.cast(t["amount"], pa.float64())).as_py() or 0.0
    fp["count(created_at)"] = t.num_rows - t["created_at"].null_count
    return fp


def compare(got, ref):
    """None if the fingerprints agree, else the first difference."""
    for k, want in ref.items():
        have = got.get(k)
        if k == "amount":
            # Some tools keep amount as a float: compare within rounding.
            if abs(float(have) - float(want)) > 1e-9 * abs(float(want)) + 1:
                return f"sum(amount) {have}, expected {want}"
        elif have != want:
            return f"{k} {have}, expected {want}"
    return None


def parquet_check(path, ref):
    def check():
        try:
            t = ds.dataset(path, format="parquet").to_table(columns=list(ref_columns()))
        except Exception as e:  # noqa: BLE001 - any unreadable output is a failed check
            return f"unreadable output: {e}"
        return compare(fingerprint(t), ref)

    return check


def ref_columns():
    return ["id", "dept_code", *STRINGS, "amount", "created_at"]


# ---------------------------------------------------------------- databases


def psql(url, *args):
    return ["psql", url, "-qAtX", "-v", "ON_ERROR_STOP=1", *args]


PG_COLUMNS = """(
    id bigint PRIMARY KEY,
    name text NOT NULL,
    phone text,
    id_card text,
    dept_code integer,
    amount numeric(12,2),
    created_at timestamp,
    address text
)"""

# Order-independent content hash of every column: the sum of a 60-bit
# prefix of each row's md5 over its text form. Two tables of the same column
# types agree only if they hold the same rows.
PG_ROWS_HASH = ("sum(('x' || substr(md5(concat_ws('|', id, name, phone, id_card, dept_code, amount, "
                "created_at, address)), 1, 15))::bit(60)::bigint)")


def pg_fingerprint(url, table):
    q = (f"SELECT count(*), coalesce(sum(id), 0), coalesce(sum(dept_code), 0), "
         + ", ".join(f"coalesce(sum(char_length({c})), 0)" for c in STRINGS)
         + f", coalesce(sum(amount), 0), count(created_at), coalesce({PG_ROWS_HASH}, 0) FROM {table}")
    v = sh(psql(url, "-c", q)).strip().split("|")
    keys = ["rows", "sum(id)", "sum(dept_code)", *(f"chars({c})" for c in STRINGS), "amount",
            "count(created_at)", "rows hash"]
    fp = {k: (decimal.Decimal(x) if k == "amount" else int(x)) for k, x in zip(keys, v)}
    return fp


def pg_prepare_source(url, csv, ref):
    """bench.people loaded from the CSV, unless it already holds exactly it."""
    sh(psql(url, "-c", "CREATE SCHEMA IF NOT EXISTS bench"))
    exists = sh(psql(url, "-c", "SELECT to_regclass('bench.people') IS NOT NULL")).strip() == "t"
    if exists:
        fp = pg_fingerprint(url, "bench.people")
        if compare(fp, ref) is None:
            return fp
    print(f"suite: loading bench.people in PostgreSQL from {csv.name}", file=sys.stderr)
    sh(psql(url, "-c", f"DROP TABLE IF EXISTS bench.people; CREATE TABLE bench.people {PG_COLUMNS}",
            "-c", f"\\copy bench.people FROM '{csv}' WITH (FORMAT csv, HEADER true)",
            "-c", "VACUUM ANALYZE bench.people"))
    fp = pg_fingerprint(url, "bench.people")
    why = compare(fp, ref)
    if why:
        raise SetupError(f"bench.people does not match the CSV after loading: {why}")
    return fp


def pg_table_bytes(url, table):
    return int(sh(psql(url, "-c", f"SELECT pg_table_size('{table}')")).strip())


def mysql_cli(dsn):
    m = re.fullmatch(r"mysql://([^:@/]+)(?::([^@]*))?@([^:/]+)(?::(\d+))?/(\w+)", dsn)
    if not m:
        raise SetupError(f"BENCH_MYSQL must look like mysql://user[:password]@host[:port]/db, not {dsn}")
    user, pw, host, port, db = m.groups()
    argv = ["mariadb", f"-h{host}", f"-P{port or 3306}", f"-u{user}", db]
    if pw:
        argv.insert(1, f"-p{pw}")
    return argv


def mysql_prepare_source(dsn, csv, ref):
    """test.bench_people loaded from the CSV (LOAD DATA LOCAL INFILE), unless
    it already matches the CSV's reference."""
    cli = mysql_cli(dsn)
    q = ("SELECT count(*), coalesce(sum(id), 0), coalesce(sum(dept_code), 0), "
         + ", ".join(f"coalesce(sum(char_length({c})), 0)" for c in STRINGS)
         + ", coalesce(sum(amount), 0), count(created_at) FROM bench_people")

    def fp():
        v = sh(cli + ["-N", "-B", "-e", q]).strip().split("\t")
        keys = ["rows", "sum(id)", "sum(dept_code)", *(f"chars({c})" for c in STRINGS), "amount",
                "count(created_at)"]
        return {k: (decimal.Decimal(x) if k == "amount" else int(x)) for k, x in zip(keys, v)}

    exists = sh(cli + ["-N", "-B", "-e", "SHOW TABLES LIKE 'bench_people'"]).strip() == "bench_people"
    if exists and compare(fp(), ref) is None:
        return
    print(f"suite: loading bench_people in MariaDB from {csv.name}", file=sys.stderr)
    ddl = ("DROP TABLE IF EXISTS bench_people; CREATE TABLE bench_people ("
           "id BIGINT PRIMARY KEY, name VARCHAR(32) NOT NULL, phone VARCHAR(16), id_card CHAR(18), "
           "dept_code INT, amount DECIMAL(12,2), created_at DATETIME, address VARCHAR(200)"
           ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4")
    load = (f"LOAD DATA LOCAL INFILE '{csv}' INTO TABLE bench_people CHARACTER SET utf8mb4 "
            "FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' ESCAPED BY '' "
            "LINES TERMINATED BY '\\n' IGNORE 1 LINES; ANALYZE TABLE bench_people")
    sh(cli + ["--local-infile=1", "-e", ddl + "; " + load])
    why = compare(fp(), ref)
    if why:
        raise SetupError(f"bench_people does not match the CSV after loading: {why}")


# ---------------------------------------------------------------- duckdb's postgres scanner


def duckdb_postgres_extension(py, wheels: Path):
    """(path of the postgres extension built for the duckdb in use, None), or
    (None, why it is not available). Only PyPI is consulted: the package
    duckdb-extension-postgres pins the duckdb version it was built for."""
    duck = metadata.version("duckdb")
    try:
        import duckdb_extension_postgres  # noqa: F401

        pkg = Path(duckdb_extension_postgres.__file__).parent
    except ImportError:
        wheels.mkdir(parents=True, exist_ok=True)
        found = sorted(wheels.glob("duckdb_extension_postgres-*.whl"))
        if not found:
            p = subprocess.run([py, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(wheels),
                                "duckdb-extension-postgres"], capture_output=True, text=True)
            if p.returncode != 0:
                last = (p.stderr.strip().splitlines() or ["?"])[-1]
                return None, f"pip could not fetch duckdb-extension-postgres from PyPI: {last}"
            found = sorted(wheels.glob("duckdb_extension_postgres-*.whl"))
        whl = found[-1]
        with zipfile.ZipFile(whl) as z:
            meta = next(n for n in z.namelist() if n.endswith("/METADATA"))
            text = z.read(meta).decode()
        pin = re.search(r"^Requires-Dist: duckdb\s*==\s*([\w.]+)", text, re.M)
        if pin and pin.group(1) != duck:
            return None, (f"{whl.name.split('-py3')[0].replace('_', '-')} on PyPI is built for duckdb "
                          f"{pin.group(1)}; the suite uses duckdb {duck}")
        p = subprocess.run([py, "-m", "pip", "install", "--quiet", "--no-deps", str(whl)],
                           capture_output=True, text=True)
        if p.returncode != 0:
            return None, f"pip could not install {whl.name}: {p.stderr.strip()[-200:]}"
        found = subprocess.run([py, "-c", "import duckdb_extension_postgres, os; "
                                "print(os.path.dirname(duckdb_extension_postgres.__file__))"],
                               capture_output=True, text=True)
        pkg = Path(found.stdout.strip())
    exts = sorted(pkg.rglob("postgres*.duckdb_extension"))
    if not exts:
        return None, "duckdb-extension-postgres holds no postgres.duckdb_extension file"
    probe = subprocess.run([py, "-c", DUCKDB_PG, str(exts[-1]), "", "", "", "1"], capture_output=True, text=True)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        return None, f"duckdb {duck} cannot load {exts[-1].name}: {last[:200]}"
    return exts[-1], None


# ---------------------------------------------------------------- scenarios


class Ctx:
    def __init__(self, a):
        self.a = a
        self.py = sys.executable
        self.csv = a.csv.resolve()
        self.csv_bytes = self.csv.stat().st_size
        self.out = (ROOT / "benches" / "data" / "out").resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix="tidex-bench-"))
        self.level = str(a.zstd_level)
        self.parts = str(len(os.sched_getaffinity(0)))
        self._ref = None
        # Read before any scenario runs: the blob script rewrites its tracked
        # report, which would mark the checkout dirty by the time of the report.
        self.versions = versions(a.tidex)

    @property
    def ref(self):
        if self._ref is None:
            print(f"suite: reading {self.csv.name} for the reference checksums", file=sys.stderr)
            self._ref = csv_reference(self.csv)
        return self._ref

    def tidex(self, src, dst, *extra):
        # A fresh state store each rep (the harness removes it with the
        # output): tidex starts as on a first run, nothing carried over.
        return [self.a.tidex, "copy", src, dst, *extra, "--restart", "--no-progress",
                "--state", str(self.work / "state" / "state.db")]

    def zstd(self):
        return ["--compression", "zstd", "--compression-level", self.level]

    def data_desc(self):
        r = self.ref["rows"]
        return f"{r:,} people-like rows; the CSV form is {self.csv_bytes / 1e6:.1f} MB ({self.csv.name})"


def tidex_tool(ctx, argv, out, verify, inputs=()):
    state = ctx.work / "state"
    # The output and the state store both go before every rep.
    return Tool("tidex", TIDEX, argv, out=out, verify=verify, inputs=list(inputs),
                prepare=lambda: __import__("shutil").rmtree(state, ignore_errors=True))


def scenario_csv(ctx):
    ref, csv = ctx.ref, str(ctx.csv)
    o = {n: ctx.out / f"csv-{n}.parquet" for n in ("tidex", "duckdb", "polars", "pyarrow")}
    tools = [
        tidex_tool(ctx, ctx.tidex(csv, str(o["tidex"]), *ctx.zstd()), o["tidex"], parquet_check(o["tidex"], ref),
                   inputs=[ctx.csv]),
        Tool("duckdb", PEER, [ctx.py, "-c", DUCKDB, csv, str(o["duckdb"]), ctx.level], o["duckdb"],
             verify=parquet_check(o["duckdb"], ref), inputs=[ctx.csv]),
        Tool("polars", PEER, [ctx.py, "-c", POLARS, csv, str(o["polars"]), ctx.level], o["polars"],
             verify=parquet_check(o["polars"], ref), inputs=[ctx.csv]),
        Tool("pyarrow", PEER, [ctx.py, "-c", PYARROW, csv, str(o["pyarrow"]), ctx.level], o["pyarrow"],
             verify=parquet_check(o["pyarrow"], ref), inputs=[ctx.csv]),
    ]
    results = run_interleaved(tools, ctx.a.reps, ctx.work, "csv")
    return Scenario("csv", "CSV -> zstd Parquet", ctx.data_desc(), ctx.csv_bytes, ref["rows"], results, notes=[
        "tidex parses amount as decimal(18,2) and created_at as a timestamp; Polars and DuckDB infer "
        "their own types (a float, a string or a timestamp): every output is checked by row count, "
        "integer sums, characters per text column, sum(amount) and the count of created_at",
    ])


def scenario_pg(ctx):
    ref, url = ctx.ref, ctx.a.pg
    pg_prepare_source(url, ctx.csv, ref)
    table = "bench.people"
    o = {n: ctx.out / f"pg-{n}.parquet" for n in ("tidex", "cx", "duckdb")}
    ext, why = duckdb_postgres_extension(ctx.py, ROOT / "benches" / "data" / "wheels")
    dsn = libpq_dsn(url)
    tools = [
        Tool("psql binary COPY to /dev/null", FLOOR,
             psql(url, "-c", f"\\copy {table} TO '/dev/null' WITH (FORMAT binary)")),
        tidex_tool(ctx, ctx.tidex(f"{url}?table={table}", str(o["tidex"]), *ctx.zstd()), o["tidex"],
                   parquet_check(o["tidex"], ref)),
        Tool("connectorx + pyarrow", PEER,
             [ctx.py, "-c", CONNECTORX, url, table, str(o["cx"]), ctx.level, ctx.parts], o["cx"],
             verify=parquet_check(o["cx"], ref)),
        Tool("duckdb postgres scanner", PEER,
             [ctx.py, "-c", DUCKDB_PG, str(ext), dsn, table, str(o["duckdb"]), ctx.level] if ext else None,
             o["duckdb"], verify=parquet_check(o["duckdb"], ref), unavailable=why),
    ]
    results = run_interleaved(tools, ctx.a.reps, ctx.work, "pg")
    return Scenario("pg", "PostgreSQL -> zstd Parquet", ctx.data_desc() +
                    f"; table {table} ({pg_table_bytes(url, table) / 1e6:.0f} MB in PostgreSQL)",
                    ctx.csv_bytes, ref["rows"], results, notes=[
                        f"ConnectorX reads with {ctx.parts} partitions on id; peak RSS is the client's "
                        "(the server's own work is not in it)",
                    ])


def libpq_dsn(url):
    m = re.fullmatch(r"postgres(?:ql)?://([^:@/]+)(?::([^@]*))?@([^:/]+)(?::(\d+))?/(\w+)", url)
    if not m:
        raise SetupError(f"BENCH_PG must look like postgres://user[:password]@host[:port]/db, not {url}")
    user, pw, host, port, db = m.groups()
    return f"dbname={db} user={user} host={host} port={port or 5432}" + (f" password={pw}" if pw else "")


def scenario_mariadb(ctx):
    ref, dsn = ctx.ref, ctx.a.mysql
    mysql_prepare_source(dsn, ctx.csv, ref)
    o = {n: ctx.out / f"mariadb-{n}.parquet" for n in ("tidex", "cx")}
    tools = [
        Tool("mariadb --quick to /dev/null", FLOOR,
             ["bash", "-c", 'exec "$@" > /dev/null', "floor", *mysql_cli(dsn), "--quick", "-N", "-B",
              "-e", "SELECT * FROM bench_people"]),
        tidex_tool(ctx, ctx.tidex(f"{dsn}?table=bench_people", str(o["tidex"]), *ctx.zstd()), o["tidex"],
                   parquet_check(o["tidex"], ref)),
        Tool("connectorx + pyarrow", PEER,
             [ctx.py, "-c", CONNECTORX, dsn, "bench_people", str(o["cx"]), ctx.level, ctx.parts], o["cx"],
             verify=parquet_check(o["cx"], ref)),
    ]
    results = run_interleaved(tools, ctx.a.reps, ctx.work, "mariadb")
    return Scenario("mariadb", "MariaDB -> zstd Parquet", ctx.data_desc() + "; table test.bench_people (InnoDB)",
                    ctx.csv_bytes, ref["rows"], results, notes=[
                        "floor: the mariadb client streaming every row as text (--quick, no buffering) "
                        "to /dev/null; ConnectorX reads with " + ctx.parts + " partitions on id",
                    ])


def scenario_pg_load(ctx):
    ref, url = ctx.ref, ctx.a.pg
    source = pg_prepare_source(url, ctx.csv, ref)
    targets = {"tidex": "bench.people_load_tidex", "psql": "bench.people_load_psql"}
    for t in targets.values():
        sh(psql(url, "-c", f"DROP TABLE IF EXISTS {t}; CREATE TABLE {t} {PG_COLUMNS}"))

    def check(table):
        def f():
            got = pg_fingerprint(url, table)
            for k, want in source.items():
                if got[k] != want:
                    return f"{k} {got[k]}, expected {want} (as in bench.people)"
            return None

        return f

    parquet = str(ctx.a.parquet.resolve())
    tools = [
        tidex_tool(ctx, ctx.tidex(parquet, f"{url}?table={targets['tidex']}&mode=truncate-insert"), None,
                   check(targets["tidex"]), inputs=[ctx.a.parquet]),
        Tool("psql \\copy from CSV", PEER,
             psql(url, "-c", f"TRUNCATE {targets['psql']}",
                  "-c", f"\\copy {targets['psql']} FROM '{ctx.csv}' WITH (FORMAT csv, HEADER true)"),
             verify=check(targets["psql"]), inputs=[ctx.csv]),
    ]
    results = run_interleaved(tools, ctx.a.reps, ctx.work, "pg-load")
    for t in targets.values():
        sh(psql(url, "-c", f"DROP TABLE {t}"))
    return Scenario("pg-load", "Parquet -> PostgreSQL table", ctx.data_desc() +
                    f"; tidex reads {ctx.a.parquet.name} ({ctx.a.parquet.stat().st_size / 1e6:.1f} MB, zstd), "
                    "psql the CSV", ctx.csv_bytes, ref["rows"], results, notes=[
                        "both targets have the same columns and primary key; tidex truncates its table "
                        "itself (mode=truncate-insert), psql runs TRUNCATE then \\copy in one session; each "
                        "target is checked against bench.people: row count, sums, characters per column "
                        "and an order-independent md5 hash of every row",
                    ])


# ---------------------------------------------------------------- external scripts


def scenario_external(ctx, key, title, script, env_extra):
    """Runs a scenario script that follows the contract in run.sh."""
    path = ROOT / script
    if not path.exists():
        return Scenario(key, title, "", 0, 0, [], skipped=f"{script} does not exist in this tree")
    env = dict(os.environ, TIDEX_BIN=ctx.a.tidex, BENCH_REPS=str(ctx.a.reps), BENCH_SCALE=ctx.a.scale,
               BENCH_ZSTD_LEVEL=ctx.level, **env_extra)
    print(f"suite: running {script}", file=sys.stderr)
    p = subprocess.run(["bash", str(path)], stdout=subprocess.PIPE, stderr=None, text=True, cwd=ROOT, env=env)
    results, notes, desc, nbytes, nrows = [], [], "", 0, 0
    for line in p.stdout.splitlines():
        f = line.split("\t")
        if f[0] == "RESULT" and len(f) == 8:
            role, _, group = f[1].partition(":")
            _, _, tool, median, b, rows, rss, check = f
            if role not in (TIDEX, PEER, FLOOR):
                raise SetupError(f"{script}: unknown role {role!r} in {line!r}")
            r = Result(tool, role, check=check, group=group)
            if median not in ("", "-"):
                r.median_override = float(median)
                r.rss_kib = [int(rss)] if rss not in ("", "-") else []
            results.append(r)
            if not nbytes:
                nbytes, nrows = int(b or 0), int(rows or 0)
        elif f[0] == "RESULT":
            raise SetupError(f"{script}: a RESULT line needs 8 tab-separated fields: {line!r}")
        elif f[0] == "INPUT" and len(f) >= 2:
            desc = f[1]
        elif f[0] == "NOTE" and len(f) >= 2:
            notes.append(f[1])
    if p.returncode != 0:
        notes.append(f"{script} exited with status {p.returncode}")
        if not results:
            return Scenario(key, title, desc, 0, 0, [Result(script, TIDEX, check=f"FAILED: exit {p.returncode}")],
                            notes)
    if not results:
        return Scenario(key, title, desc, 0, 0,
                        [Result(script, TIDEX, check="FAILED: printed no RESULT lines (see run.sh)")], notes)
    return Scenario(key, title, desc, nbytes, nrows, results, notes)


def scenario_blobs(ctx):
    mb = {"small": "50", "full": "1000"}[ctx.a.scale]
    return scenario_external(ctx, "blobs", "blob tree -> hashed, compressed, encrypted copy",
                             "benches/bulk/blobs.sh", {"BENCH_MB": os.environ.get("BENCH_MB", mb),
                                                       "BENCH_DIR": str(ROOT / "benches" / "data" / "blobs")})


SCENARIOS = {
    "csv": scenario_csv,
    "pg": scenario_pg,
    "mariadb": scenario_mariadb,
    "pg-load": scenario_pg_load,
    "blobs": scenario_blobs,
}

# ---------------------------------------------------------------- report


def cpu_model():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def mem_gib():
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal"):
            return int(line.split()[1]) / (1 << 20)
    return 0


def versions(tidex):
    v = subprocess.run([tidex, "--version"], capture_output=True, text=True).stdout.strip() or "tidex ?"
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    peers = []
    for p in ("duckdb", "polars", "pyarrow", "connectorx"):
        try:
            peers.append(f"{p} {metadata.version(p)}")
        except metadata.PackageNotFoundError:
            pass
    tools = []
    for argv in (["psql", "--version"], ["mariadb", "--version"]):
        try:
            tools.append(subprocess.run(argv, capture_output=True, text=True).stdout.strip())
        except OSError:
            pass
    return f"{v} ({commit}); " + ", ".join(peers) + "; " + "; ".join(tools)


def write_report(ctx, scenarios):
    today = datetime.date.today().isoformat()
    host = socket.gethostname()
    results_dir = ROOT / "benches" / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    # Small-scale runs are quick checks, not results: they get their own
    # (git-ignored) names and never replace a full-scale report. A run of
    # some scenarios only (BENCH_ONLY) is named after them, for the same reason.
    only = [k.strip() for k in ctx.a.only.split(",") if k.strip()]
    stem = f"{today}-{host}"
    if sorted(only) != sorted(ALL):
        stem += "-" + "-".join(only)
    if ctx.a.scale == "small":
        stem += "-small"
    md_path, svg_path = results_dir / f"{stem}.md", results_dir / f"{stem}.svg"
    body = []
    for s in scenarios:
        body.append(f"## {s.title}")
        body.append("")
        if s.skipped:
            body.append(f"skipped: {s.skipped}")
            body.append("")
            continue
        if s.input_desc:
            body.append(f"Input: {s.input_desc}.")
            body.append("")
        body.append(report.table(s))
        body.append("")
        for n in s.notes:
            body.append(f"- {n}")
        reps = [f"{r.name}: " + " ".join(f"{w:.2f}" for w in r.walls) for r in s.results if r.walls]
        if reps:
            body.append("- wall seconds per rep, in run order: " + "; ".join(reps))
        if s.notes or reps:
            body.append("")
    header = [
        f"# Bulk-transfer suite, {today}, {host}",
        "",
        f"- scale {ctx.a.scale}: {ctx.data_desc()}",
        f"- zstd level {ctx.level} for every Parquet writer; {ctx.a.reps} interleaved rep(s) per tool, "
        "median wall time reported",
        f"- {len(os.sched_getaffinity(0))} CPUs (nproc), {cpu_model()}, {mem_gib():.0f} GiB; "
        "PostgreSQL and MariaDB on the same machine",
        f"- {ctx.versions}",
        "- wall time includes process start-up and imports; before every rep writes are flushed (sync) "
        "and the tool's input files are read through, so they are in the page cache; peak RSS from "
        "GNU time (max over reps, the client process only); "
        "MB = 10^6 bytes of the CSV form of the data, the same records in every table scenario",
        "- vs best peer = fastest peer's median / this tool's median (above 1: faster than every peer); "
        "x floor = median / the floor's median (the floor reads the source and throws it away)",
        "",
        "## Targets",
        "",
        report.targets(scenarios),
        "",
        f"![tidex ratios]({svg_path.name})",
        "",
    ]
    text = "\n".join(header + body)
    md_path.write_text(text)
    svg_path.write_text(report.svg_chart(scenarios))
    return text, md_path, svg_path


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", type=Path, required=True)
    ap.add_argument("--parquet", type=Path, required=True, help="the same records as zstd Parquet (pg-load input)")
    ap.add_argument("--tidex", required=True)
    ap.add_argument("--scale", choices=["small", "full"], required=True)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--zstd-level", type=int, default=1)
    ap.add_argument("--only", default=",".join(ALL))
    ap.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432/test")
    ap.add_argument("--mysql", default="mysql://root@127.0.0.1:3306/test")
    a = ap.parse_args()
    if a.reps < 1:
        ap.error("--reps must be at least 1")
    only = [k.strip() for k in a.only.split(",") if k.strip()]
    unknown = [k for k in only if k not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(ALL)}")

    ctx = Ctx(a)
    scenarios = []
    try:
        for key in only:
            s = SCENARIOS[key](ctx)
            if s.skipped:
                print(f"{key}: skipped: {s.skipped}", file=sys.stderr)
            scenarios.append(s)
    except SetupError as e:
        print(f"suite: {e}", file=sys.stderr)
        return 2
    finally:
        __import__("shutil").rmtree(ctx.work, ignore_errors=True)

    text, md_path, svg_path = write_report(ctx, scenarios)
    print(text)
    print(f"wrote {md_path.relative_to(ROOT)} and {svg_path.relative_to(ROOT)}", file=sys.stderr)
    failed = [f"{s.key}: {r.name}" for s in scenarios for r in s.results if r.failed]
    if failed:
        print("FAILED: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
