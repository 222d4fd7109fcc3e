"""Scale benchmarks: ``whatif --max-workers 8``, ``findings`` and ``report --format html``
as CLI processes over a cached store of N runs (:mod:`bench.bigstore`), each against the
raw SQL computing the same figures (:mod:`bench.raw_sql`) in a process that imports only
DuckDB. Each prints both wall times, their ratio, both peak RSS (``ru_maxrss`` of the
child, from ``os.wait4`` in a small launcher: :func:`child`) and the load average before
and after; beside them, the raw SQL again under the commands' DuckDB ``memory_limit`` (a
second line, never instead).
Targets (issue 11): within 2x of the raw SQL and under 1 GB peak RSS at 1M runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.bigstore import big_store
from cliffwatch.analytics.bulk_read import MEMORY_LIMIT  # the second raw-SQL line's bound

TARGET_RATIO = 2.0
TARGET_RSS_MB = 1024.0
DEFAULT_RUNS = 1_000_000
QUICK_RUNS = 100_000

ROOT = Path(__file__).resolve().parents[1]

Result = list[tuple[str, str]]


_LAUNCHER = """
import os, sys, time
out = int(sys.argv[1])
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.close(out)
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    except OSError as exc:
        sys.stderr.write(f"{sys.argv[2]}: {exc}\\n")
    os._exit(127)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - t0
os.write(out, f"{wall} {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}".encode())
"""
"""A small interpreter that starts the command and reports its wall time, peak RSS and exit
code: a process forked from the bench (hundreds of MB after the in-process benchmarks)
starts with the bench's resident set as its ``ru_maxrss`` (Linux keeps the high-water mark
across ``exec``), so every command measured straight from the bench showed at least the
bench's own peak. Forked from this launcher, the command starts from a few MB."""


def child(command: list[str]) -> tuple[float, float, int, str]:
    """Run ``command`` to its end: ``(wall_s, peak_rss_mb, exit_code, stderr_tail)``; the
    wall time and ``ru_maxrss`` are the command's own, measured by :data:`_LAUNCHER` (its
    start is not counted). Raises RuntimeError when the launcher reports nothing."""
    read, write = os.pipe()
    with tempfile.TemporaryFile() as err:
        # Every run computes: a result kept on disk by an earlier run (analytics/result_cache)
        # would turn the second command into a file read.
        env = {**os.environ, "CLIFFWATCH_RESULT_CACHE": "off"}
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(write), *command],
                stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT, env=env, pass_fds=(write,))
        finally:
            os.close(write)
        with os.fdopen(read, "rb") as report:
            measured = report.read().decode().split()
        proc.wait()
        err.seek(0)
        tail = err.read().decode(errors="replace").strip().splitlines()[-1:] or [""]
    if len(measured) != 3:
        raise RuntimeError(f"could not start {command[0]}: {tail[0][:120]}")
    wall, maxrss_kb, code = float(measured[0]), int(measured[1]), int(measured[2])
    return wall, maxrss_kb / 1024.0, code, tail[0][:120]


def _cliffwatch() -> list[str]:
    script = Path(sys.executable).parent / "cliffwatch"
    return [str(script)] if script.exists() else [
        sys.executable, "-c", "from cliffwatch.cli import main; main()"]


def _load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def _store_rows(db: Path) -> tuple[int, int]:
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    runs = con.sql("SELECT count(*) FROM runs").fetchall()[0][0]
    spans = con.sql("SELECT count(*) FROM spans").fetchall()[0][0]
    con.close()
    return runs, spans


def bench_command(name: str, args: list[str], tmp: Path, runs: int) -> Result:
    """One command against its raw SQL over the store of ``runs`` runs."""
    db, build_s = big_store(runs)
    n_runs, n_spans = _store_rows(db)
    built = "cached" if build_s is None else f"built in {build_s:.0f} s"
    load_before = _load()
    ours, ours_rss, rc, err = child([*_cliffwatch(), *args, "--db", str(db)])
    raw, raw_rss, raw_rc, raw_err = child([sys.executable, "-m", "bench.raw_sql", name,
                                           str(db)])
    bounded, bounded_rss, bounded_rc, bounded_err = child(
        [sys.executable, "-m", "bench.raw_sql", name, str(db), MEMORY_LIMIT])
    start, start_rss, _, _ = child([*_cliffwatch(), "--help"])
    ratio = ours / raw if raw > 0 else float("inf")
    bounded_ratio = ours / bounded if bounded > 0 else float("inf")
    met = ratio <= TARGET_RATIO and ours_rss < TARGET_RSS_MB and rc == 0
    return [
        ("store", f"{n_runs:,} runs, {n_spans:,} spans ({db.name}, {built})"),
        ("command", " ".join(["cliffwatch", *args])),
        ("command wall / peak RSS", f"{ours:.1f} s / {ours_rss:,.0f} MB (exit {rc}"
                                    f"{': ' + err if err else ''})"),
        ("raw SQL wall / peak RSS", f"{raw:.1f} s / {raw_rss:,.0f} MB (exit {raw_rc}"
                                    f"{': ' + raw_err if raw_rc else ''})"),
        ("ratio command / raw SQL", f"{ratio:.2f}x"),
        (f"raw SQL, memory_limit {MEMORY_LIMIT}",
         f"{bounded:.1f} s / {bounded_rss:,.0f} MB (exit {bounded_rc}"
         f"{': ' + bounded_err if bounded_rc else ''}); command / it {bounded_ratio:.2f}x"),
        ("of which process start (--help)", f"{start:.1f} s / {start_rss:,.0f} MB"),
        (f"target <= {TARGET_RATIO:g}x and < {TARGET_RSS_MB:,.0f} MB", "met" if met else "NOT met"),
        ("load average 1/5/15 (before, after)",
         f"{load_before}, {_load()} on {os.cpu_count()} CPUs"),
    ]


def scale_benchmarks(runs: int | None):  # type: ignore[no-untyped-def]
    """``{name: bench(tmp, quick)}`` for ``bench/__main__.py``; ``runs`` None: the
    default size (:data:`QUICK_RUNS` with ``--quick``)."""

    def size(quick: bool) -> int:
        return runs or (QUICK_RUNS if quick else DEFAULT_RUNS)

    def whatif(tmp: Path, quick: bool) -> Result:
        return bench_command("whatif", ["whatif", "--max-workers", "8", "--format", "json"],
                             tmp, size(quick))

    def findings(tmp: Path, quick: bool) -> Result:
        return bench_command("findings", ["findings", "--format", "json"], tmp, size(quick))

    def report(tmp: Path, quick: bool) -> Result:
        return bench_command("report", ["report", "--format", "html", "-o",
                                        str(tmp / "report.html")], tmp, size(quick))

    return {"whatif_scale": whatif, "findings_scale": findings, "report_scale": report}
