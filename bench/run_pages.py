"""The Runs, Compare and per-run percentile queries over a store of N runs (default 1M):
``python -m bench.run_pages [N]``.

Synthetic ``runs`` rows (:func:`bench.bigstore.synthetic_runs_store`) go straight into the
table the pages read, then 2% become cap breaches; each query is timed once, from disk,
as the dashboard runs it (one page of 50 rows and a count; never every run).
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from bench.bigstore import synthetic_runs_store
from cliffwatch.analytics.run_measures import run_measure_percentiles
from cliffwatch.analytics.run_table import RunQuery, count_runs, runs_page
from cliffwatch.analytics.store_access import read_store
from cliffwatch.analytics.window import Window
from cliffwatch.analytics.window_compare import compare_windows
from cliffwatch.telemetry.store import open_store

_VARY = """
    UPDATE runs SET
        duration_ms = 1000 + (i % 977) * 37,
        status = CASE WHEN i % 50 = 0 THEN 'rejected' ELSE 'ok' END,
        breach = CASE WHEN i % 50 = 0 THEN 'cap' END,
        input_tokens = 1000 + i % 313, output_tokens = 200 + i % 1009
    FROM (SELECT run_id AS id, row_number() OVER (ORDER BY run_id) - 1 AS i FROM runs) AS n
    WHERE runs.run_id = n.id
"""
"""Varies the synthetic runs for the pages' filters: every 50th run a rejected cap breach,
durations and tokens spread."""


def _timed(label: str, call: Callable[[], object]) -> None:
    t0 = time.perf_counter()
    call()
    print(f"  {label:<52} {1000 * (time.perf_counter() - t0):8.0f} ms", flush=True)


def main(n: int) -> None:
    """Fill a temporary store with ``n`` runs and print each query's time."""
    with tempfile.TemporaryDirectory(prefix="cw-bench-run-pages-") as tmp:
        path = Path(tmp) / "runs.duckdb"
        synthetic_runs_store(path, n)
        with open_store(path, read_only=False) as con:
            con.execute(_VARY)
        newest, costliest = RunQuery(), RunQuery(sort_by="cost_usd")
        narrow = RunQuery(task_classes=("class_3",), breach="cap", min_cost_usd=0.01,
                          sort_by="duration_ms")
        half = datetime(2026, 1, 1) + timedelta(seconds=n // 2)  # a run starts each second
        print(f"runs: {n:,}")
        with read_store(path) as con:
            _timed("count_runs (every run)", lambda: count_runs(con, newest))
            _timed("runs_page newest, page 1 of 50", lambda: runs_page(con, newest, limit=50))
            _timed("runs_page newest, last page",
                   lambda: runs_page(con, newest, offset=max(n - 50, 0), limit=50))
            _timed("runs_page costliest, page 1", lambda: runs_page(con, costliest, limit=50))
            _timed("runs_page costliest, page 1,000",
                   lambda: runs_page(con, costliest, offset=49_950, limit=50))
            _timed("count + page: one class, cap breach, cost >= $0.01",
                   lambda: (count_runs(con, narrow), runs_page(con, narrow, limit=50)))
            _timed("run_measure_percentiles (4 measures, 8 classes + all)",
                   lambda: run_measure_percentiles(con))
            _timed("compare_windows (first half vs second half)",
                   lambda: compare_windows(con, Window(until=half), Window(since=half)))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
