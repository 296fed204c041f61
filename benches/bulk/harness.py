"""What every scenario of the bulk suite shares: timing a command under GNU
time, interleaved repetitions, the median, and the result rows.

A tool is measured as a fresh process each repetition, started by GNU time,
so its wall time includes start-up and imports and its peak RSS is its own
(a child forked straight from the driver would count the driver's pages).
Repetitions are interleaved (A B C, A B C, ...) so that a noisy machine slows
every tool alike; before each one the tool's previous output is removed,
dirty pages are flushed (sync), so no tool pays for another's writeback, and
the tool's input files are read through, so each starts with its input in the
page cache. (Some VMs hand idle page cache back to the host within minutes:
the input read once at the start of a run was then partly back on disk for
later reps, and the tool that met the holes stalled on the disk.)
"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parents[2]
GNU_TIME = "/usr/bin/time"

# Roles: tidex is measured against the fastest peer; a floor is what the
# source alone costs (the data read and thrown away), so no tool can beat it.
TIDEX, PEER, FLOOR = "tidex", "peer", "floor"


@dataclass
class Tool:
    """One contender in a scenario."""

    name: str
    role: str
    # argv to run, or None when the tool is not available (see `unavailable`).
    argv: Optional[list] = None
    # Output to remove before every rep (a file or a directory).
    out: Optional[Path] = None
    # Runs before every rep, untimed (e.g. TRUNCATE a target table).
    prepare: Optional[Callable[[], None]] = None
    # Checks the last rep's output: None if right, else what is wrong.
    verify: Optional[Callable[[], Optional[str]]] = None
    # Why the tool cannot run here; it is reported, never faked.
    unavailable: Optional[str] = None
    # Ratios are computed within a group (e.g. per cipher); "" is the default.
    group: str = ""
    # Files the tool reads, put in the page cache before every rep (see `warm`).
    inputs: list = field(default_factory=list)


@dataclass
class Result:
    """A tool's measurements in one scenario."""

    name: str
    role: str
    walls: list = field(default_factory=list)
    rss_kib: list = field(default_factory=list)
    # "ok", "floor (output discarded)", "FAILED: ..." or "n/a: ..."
    check: str = "ok"
    group: str = ""
    # Set when an external script reports a median directly.
    median_override: Optional[float] = None

    @property
    def median(self) -> Optional[float]:
        if self.median_override is not None:
            return self.median_override
        return statistics.median(self.walls) if self.walls else None

    @property
    def peak_rss_kib(self) -> Optional[int]:
        return max(self.rss_kib) if self.rss_kib else None

    @property
    def valid(self) -> bool:
        """Timings that count: the tool ran every rep and its output was right."""
        return self.median is not None and (self.check == "ok" or self.role == FLOOR and not self.failed)

    @property
    def failed(self) -> bool:
        return self.check.startswith("FAILED")


@dataclass
class Scenario:
    """A scenario's results, as the report shows them."""

    key: str
    title: str
    input_desc: str
    # Bytes and rows per run, for MB/s and rows/s (0: not applicable).
    bytes: int
    rows: int
    results: list
    notes: list = field(default_factory=list)
    skipped: Optional[str] = None


def remove(path: Optional[Path]):
    if path is None:
        return
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def warm(paths):
    """Reads every file in paths to the end, so that it is in the page cache."""
    buf = bytearray(8 << 20)
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_WILLNEED)
            while f.readinto(buf):
                pass


def measure(argv, log, env=None):
    """Runs argv to completion; returns (exit code, wall seconds, peak RSS KiB)."""
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss_file:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [GNU_TIME, "-f", "%M", "-o", rss_file.name, *argv],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
        )
        proc.wait()
        wall = time.perf_counter() - t0
        lines = rss_file.read().strip().splitlines()
    rss = int(lines[-1]) if lines and lines[-1].isdigit() else 0
    return proc.returncode, wall, rss


def run_interleaved(tools, reps, log_dir: Path, label: str):
    """All reps of every available tool, interleaved; the last rep's output is
    then verified. Returns one Result per tool, in the order given."""
    results = {t.name: Result(t.name, t.role, group=t.group) for t in tools}
    for t in tools:
        if t.unavailable:
            results[t.name].check = f"n/a: {t.unavailable}"
    live = [t for t in tools if not t.unavailable]
    for rep in range(1, reps + 1):
        for t in live:
            r = results[t.name]
            if r.failed:
                continue
            remove(t.out)
            if t.prepare:
                t.prepare()
            os.sync()
            warm(t.inputs)
            log_path = log_dir / f"{label}-{safe(t.name)}.log"
            with open(log_path, "wb") as log:
                code, wall, rss = measure(t.argv, log)
            if code != 0:
                tail = log_path.read_text(errors="replace").strip()[-600:]
                r.check = f"FAILED: exit {code}"
                print(f"[{label}] {t.name} rep {rep}/{reps}: exit {code}\n{tail}", file=sys.stderr)
                continue
            r.walls.append(wall)
            r.rss_kib.append(rss)
            print(f"[{label}] {t.name} rep {rep}/{reps}: {wall:.2f} s, {rss / 1024:.0f} MiB", file=sys.stderr)
    for t in live:
        r = results[t.name]
        if r.failed:
            continue
        if t.role == FLOOR:
            r.check = "floor (output discarded)"
        elif t.verify is None:
            raise RuntimeError(f"{label}: tool {t.name} has no output check")
        else:
            why = t.verify()
            r.check = "ok" if why is None else f"FAILED: {why}"
            if why:
                print(f"[{label}] {t.name}: output check failed: {why}", file=sys.stderr)
    return [results[t.name] for t in tools]


def safe(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")
