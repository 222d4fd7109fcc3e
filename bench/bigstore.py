"""A store of N runs for the scale benchmarks, built once and cached.

The runs are a real 500-run demo (``orchestrator.demo.run_demo``, seed 7, itself cached)
copied ``N / 500`` times in SQL: ``INSERT ... SELECT`` over ``range(copies)``, each copy
with new trace ids and times shifted by a minute per copy; the demo's incidents and their
alerts are copied with their runs (30 a copy), and the roll-ups ``write_spans`` keeps are
built from the runs at the end, so the pages and commands read what they read in a store
cliffwatch wrote. No Python loop touches a span.
A new id is the MD5 of the copy number and the old id: as random as the 128-bit ids an
OpenTelemetry SDK gives, so the spans lie in ingestion order, not id order, as in a real
store (version 1 put the copy number first: the spans were in id order, and reads by run-id
range skipped row groups no real store lets them skip: the what-if at 1M runs took 33 s
there and 64 s on the same spans with random ids, issue 11). The file lives under
``~/.cache/cliffwatch-bench/`` keyed by :data:`STORE_VERSION` and the run count; bump the
version when the schema or the demo changes.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

STORE_VERSION = 4
"""Part of every cached file's name: bump it to rebuild after a schema, demo or layout
change (2: random ids; 3: schema 7, each run's estimate sums on its row; 4: the demo's
incidents and alerts copied with the runs, and the roll-ups built)."""

DEMO_RUNS = 500
COPIES_PER_INSERT = 50
"""Copies inserted per statement (bounds the memory of one insert)."""

CACHE_DIR = Path.home() / ".cache" / "cliffwatch-bench"


def _demo_store() -> Path:
    from cliffwatch.orchestrator.demo import run_demo

    path = CACHE_DIR / f"v{STORE_VERSION}-demo-{DEMO_RUNS}.duckdb"
    if not path.exists():
        building = path.with_suffix(".building")
        building.unlink(missing_ok=True)
        run_demo(building, runs=DEMO_RUNS, days=30, seed=7)
        building.rename(path)
    return path


def _copy_sql(table: str, id_column: str, time_columns: tuple[str, ...],
              ns_columns: tuple[str, ...], id_column_of_row: str | None = None,
              where: str = "TRUE") -> str:
    new_id = f"md5(printf('%08x', c) || substr({id_column}, 9))"
    replaced = [f"{new_id} AS {id_column}"]
    if id_column_of_row is not None:
        # An incident's or alert's own id is its kind and its run's id (the rules' form,
        # telemetry/incident_rules.py), so it follows the run's new id.
        replaced.append(f"kind || '-' || left({new_id}, 16) AS {id_column_of_row}")
    replaced += [f"{col} + to_seconds(c * 60) AS {col}" for col in time_columns]
    replaced += [f"{col} + c * 60000000000 AS {col}" for col in ns_columns]
    return (f"INSERT INTO {table} BY NAME SELECT d.* REPLACE ({', '.join(replaced)}) "
            f"FROM demo.{table} AS d, range($low, $high) AS t(c) WHERE {where}")


def big_store(runs: int, say: bool = True) -> tuple[Path, float | None]:
    """The cached store of about ``runs`` runs (a multiple of 500); build it if absent.

    Returns:
        ``(path, build_s)``: build_s None when the cached file was reused.
    """
    from cliffwatch.telemetry.schema import SEEN_TRACES_BACKFILL
    from cliffwatch.telemetry.store import open_store

    copies = max(1, math.ceil(runs / DEMO_RUNS))
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    path = CACHE_DIR / f"v{STORE_VERSION}-runs-{copies * DEMO_RUNS}.duckdb"
    if path.exists():
        ensure_rollups(path)
        return path, None
    t0 = time.perf_counter()
    demo = _demo_store()
    building = path.with_suffix(".building")
    building.unlink(missing_ok=True)
    spans = _copy_sql("spans", "trace_id", ("started_at", "ended_at"),
                      ("start_time_unix_nano", "end_time_unix_nano"))
    run_rows = _copy_sql("runs", "run_id", ("started_at", "ended_at"), ())
    incidents = _copy_sql("incidents", "run_id", ("detected_at", "updated_at"), (),
                          id_column_of_row="incident_id")
    alerts = _copy_sql("alerts", "run_id", ("raised_at", "created_at"), (),
                       id_column_of_row="alert_id", where="d.source = 'incident'")
    with open_store(building, read_only=False) as con:
        con.execute(f"ATTACH '{demo}' AS demo (READ_ONLY)")
        for low in range(0, copies, COPIES_PER_INSERT):
            params = {"low": low, "high": min(copies, low + COPIES_PER_INSERT)}
            for sql in (spans, run_rows, incidents, alerts):
                con.execute(sql, params)
            if say:
                print(f"  (building {path.name}: {params['high']}/{copies} copies, "
                      f"{time.perf_counter() - t0:.0f} s)", flush=True)
        con.execute("DETACH demo")
        con.execute(SEEN_TRACES_BACKFILL)  # every copied trace is seen, as write_spans keeps it
        con.execute("CHECKPOINT")
    ensure_rollups(building)
    building.rename(path)
    return path, time.perf_counter() - t0


def ensure_rollups(path: Path) -> bool:
    """Give the store at ``path`` the per-class, per-day roll-ups ``write_spans`` keeps
    (telemetry/rollups.py) when its runs were copied around the write path (as here):
    without them the dashboard reads every figure from ``runs``
    (analytics/rollup_read.py), a path no store written by cliffwatch takes. One GROUP BY
    over the runs, once: a store whose roll-ups are current is left as it is.

    Returns:
        True when the roll-ups were rebuilt.
    """
    from cliffwatch.analytics.rollup_read import rollups_current
    from cliffwatch.telemetry.rollups import rebuild_rollups
    from cliffwatch.telemetry.store import open_store, transaction

    with open_store(path, read_only=False, timeout_s=60) as con:
        if rollups_current(con):
            return False
        with transaction(con):
            rebuild_rollups(con)
        con.execute("CHECKPOINT")
    return True


def synthetic_runs_store(path: Path, n_runs: int) -> None:
    """Write ``n_runs`` synthetic rows into a new store's ``runs`` table (the table the
    read side reads): a lognormal cost body with a 2% heavy tail (x12), eight task classes,
    one run a second from 2026-01-01. Used by the ``percentiles`` and ``cli_percentiles``
    benchmarks and ``bench.run_pages``."""
    from cliffwatch.telemetry.store import open_store

    with open_store(path, read_only=False) as con:
        con.sql(
            f"""
            INSERT INTO runs (run_id, task_class, started_at, ended_at, duration_ms, status,
                cost_usd, input_tokens, output_tokens, llm_calls, unpriced_calls,
                failed_calls, source, materialised_at)
            SELECT printf('%032x', i), 'class_' || (i % 8),
                   TIMESTAMP '2026-01-01' + to_seconds(i), TIMESTAMP '2026-01-01'
                       + to_seconds(i + 30), 30000, 'ok',
                   exp(-4 + 0.6 * sqrt(-2 * ln(random())) * cos(2 * pi() * random()))
                       * CASE WHEN random() < 0.02 THEN 12 ELSE 1 END,
                   1000, 200, 5, 0, 0, 'bench', now()
            FROM range({n_runs}) t(i)
            """
        )
