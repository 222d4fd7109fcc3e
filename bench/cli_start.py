"""``cli_percentiles``: ``cliffwatch percentiles`` as a process (start, imports, store open,
query, render) against the raw ``quantile_cont`` in a process that imports only DuckDB, over
the same synthetic store of N runs (:func:`bench.bigstore.synthetic_runs_store`). Prints the
median wall and CPU time (user + sys, ``os.wait4`` of the child) of each, their ratios, the
largest difference between the two processes' P50/P95/P99 and the load average. Issue 11
measured 3.2x, 1.2-1.3 s of which was process start (importing litellm)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.bigstore import synthetic_runs_store

Result = list[tuple[str, str]]

RAW_PERCENTILES = """
import json, sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
rows = con.sql("SELECT task_class, count(*), quantile_cont(cost_usd, [0.5, 0.95, 0.99])"
               " FROM runs GROUP BY 1 ORDER BY 1").fetchall()
print(json.dumps([{"task_class": c, "runs": n, "q": q} for c, n, q in rows]))
"""
"""The figures ``cliffwatch percentiles`` prints, as bare SQL in a DuckDB-only process."""


def _timed(command: list[str]) -> tuple[float, float, str]:
    """Run ``command`` to its end: ``(wall_s, cpu_s, stdout)``; a non-zero exit raises."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(command, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            raise RuntimeError(f"{command[:3]} failed: {err.read().decode(errors='replace')}")
        out.seek(0)
        return wall, usage.ru_utime + usage.ru_stime, out.read().decode()


def _median_runs(command: list[str], repeats: int) -> tuple[float, float, str]:
    _timed(command)  # warm the file cache; not counted
    runs = [_timed(command) for _ in range(repeats)]
    return (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs),
            runs[-1][2])


def bench_cli_percentiles(tmp: Path, quick: bool) -> Result:
    n_runs, repeats = (100_000, 3) if quick else (1_000_000, 5)
    path = tmp / "cli_pct.duckdb"
    synthetic_runs_store(path, n_runs)
    script = Path(sys.executable).parent / "cliffwatch"
    cliffwatch = ([str(script)] if script.exists() else
                  [sys.executable, "-c", "from cliffwatch.cli import main; main()"])
    load_before = os.getloadavg()
    ours_wall, ours_cpu, ours_out = _median_runs(
        [*cliffwatch, "percentiles", "--format", "json", "--db", str(path)], repeats)
    raw_wall, raw_cpu, raw_out = _median_runs(
        [sys.executable, "-c", RAW_PERCENTILES, str(path)], repeats)
    bare_wall, bare_cpu, _ = _median_runs([sys.executable, "-c", "import duckdb"], repeats)
    ours = {r["task_class"]: (r["runs"], [r["p50_usd"], r["p95_usd"], r["p99_usd"]])
            for r in json.loads(ours_out)}
    raw = {r["task_class"]: (r["runs"], r["q"]) for r in json.loads(raw_out)}
    same_runs = {k: v[0] for k, v in ours.items()} == {k: v[0] for k, v in raw.items()}
    worst = max(abs(a - b) for k, (_, q) in raw.items() for a, b in zip(q, ours[k][1],
                                                                          strict=True))
    load_after = os.getloadavg()
    return [
        ("runs", f"{n_runs:,} in 8 classes (synthetic runs rows)"),
        (f"cliffwatch percentiles (median of {repeats})",
         f"{ours_wall:.2f} s wall, {ours_cpu:.2f} s CPU"),
        ("raw quantile_cont, DuckDB-only process", f"{raw_wall:.2f} s wall, {raw_cpu:.2f} s CPU"),
        ("ratio wall / CPU", f"{ours_wall / raw_wall:.1f}x / {ours_cpu / raw_cpu:.1f}x"),
        ("python -c 'import duckdb' alone", f"{bare_wall:.2f} s wall, {bare_cpu:.2f} s CPU"),
        ("same run counts; max |P50/P95/P99 diff|", f"{same_runs}; {worst:.2e} USD"),
        ("load average 1/5/15 min (before, after)",
         f"{'/'.join(f'{x:.2f}' for x in load_before)}, "
         f"{'/'.join(f'{x:.2f}' for x in load_after)} on {os.cpu_count()} CPUs"),
    ]
