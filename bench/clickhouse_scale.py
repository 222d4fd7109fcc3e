"""``clickhouse_scale``: the analytics on ClickHouse (chDB) beside DuckDB, on the same runs.

The cached store of ``--runs`` runs (``bench/bigstore.py``; 1M runs, 7.6M spans by default)
is migrated once into a chDB folder beside it with ``cliffwatch migrate``'s
:func:`telemetry.clickhouse.migrate.migrate_store`: every span into the Collector's
``otel_traces`` table in the clickhouseexporter's shape, and cliffwatch's tables beside it
(the migration's time and peak RSS are printed the first time). Then each case runs in
its own child process per backend (``python -m bench.clickhouse_scale CASE STORE``), so each
has its own wall time and peak RSS (``ru_maxrss``): cost percentiles per class, incidents,
a what-if (``--max-workers 8``) and the dashboard Overview's queries (percentiles by class
and overall, daily percentiles, the newest 20,000 runs, cap start days, open incidents).
Printed: both wall times, the ratio ClickHouse / DuckDB, both peak RSS, and the load.

Heavy (GBs): run under the shared lock, ``flock /tmp/cliffwatch-bench.lock timeout 900
python -m bench clickhouse_scale``. The chDB folder is the bench's own cache (never one of
the cached DuckDB stores, which are only read).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.bigstore import big_store
from bench.scale import DEFAULT_RUNS, QUICK_RUNS, _load, child

Result = list[tuple[str, str]]


def _overview(con: Any) -> None:
    from cliffwatch.analytics.incidents import list_incidents
    from cliffwatch.analytics.percentiles import (
        cap_start_date,
        cost_percentiles,
        daily_percentiles,
        overall_percentiles,
    )
    from cliffwatch.analytics.runs import list_runs

    cost_percentiles(con)
    overall_percentiles(con)
    daily = daily_percentiles(con)
    list_runs(con, limit=20_000)
    for task_class in daily["task_class"].unique():
        cap_start_date(con, task_class)
    list_incidents(con, status="open")


def _whatif(con: Any) -> None:
    from cliffwatch.analytics.replay import LimitsOverride
    from cliffwatch.analytics.whatif import what_if

    what_if(con, LimitsOverride(max_workers=8))


def _percentiles(con: Any) -> None:
    from cliffwatch.analytics.percentiles import cost_percentiles

    cost_percentiles(con)


def _incidents(con: Any) -> None:
    from cliffwatch.analytics.incidents import list_incidents

    list_incidents(con)


CASES: dict[str, Callable[[Any], None]] = {
    "percentiles": _percentiles,
    "incidents": _incidents,
    "whatif": _whatif,
    "overview": _overview,
}


def chdb_copy(duck: Path) -> tuple[Path, float | None, float | None]:
    """The chDB folder holding ``duck`` migrated (``otel_traces`` + cliffwatch's tables),
    migrated now if absent: (folder, migrate_s, what the migration printed)."""
    folder = duck.with_name(duck.stem + ".otel.chdb")
    done = folder / "copied"
    if done.exists():
        return folder, None, None
    shutil.rmtree(folder, ignore_errors=True)
    code = ("import sys; from cliffwatch.telemetry.clickhouse.client import connect; "
            "from cliffwatch.telemetry.clickhouse.migrate import migrate_store; "
            "from cliffwatch.telemetry.clickhouse.url import parse_store_url; "
            "c = connect(parse_store_url('chdb://' + sys.argv[2])); "
            "s = migrate_store(sys.argv[1], c); "
            "print(f'{s.spans_added:,} spans into otel_traces'); c.close()")
    wall, rss, rc, err = child([sys.executable, "-c", code, str(duck), str(folder)])
    if rc != 0:
        raise RuntimeError(f"migrate into chDB failed: {err}")
    done.write_text(f"{wall:.1f} s, peak RSS {rss:.0f} MB\n")
    return folder, wall, rss


def bench_clickhouse_scale(tmp: Path, quick: bool, runs: int | None = None) -> Result:
    """Each case on DuckDB and on chDB over the same cached store (see the module)."""
    n = runs or (QUICK_RUNS if quick else DEFAULT_RUNS)
    duck, _ = big_store(n)
    folder, copy_s, copy_rss = chdb_copy(duck)
    out: Result = [("store", f"{duck.name} ({n:,} runs); chDB: {folder.name}")]
    if copy_s is not None:
        out.append(("migrate into chDB (otel_traces + cliffwatch tables)",
                    f"{copy_s:.1f} s, peak RSS {copy_rss:.0f} MB, load {_load()}"))
    out.append(("spans in otel_traces", f"{_traces_count(folder):,}"))
    for case in CASES:
        duck_run = child([sys.executable, "-m", "bench.clickhouse_scale", case, str(duck)])
        ch_run = child([sys.executable, "-m", "bench.clickhouse_scale", case,
                        f"chdb://{folder}"])
        for label, (_, _, rc, err) in (("duckdb", duck_run), ("chdb", ch_run)):
            if rc != 0:
                out.append((f"{case} {label}", f"FAILED: {err}"))
        out.append((case, f"duckdb {duck_run[0]:.2f} s, chdb {ch_run[0]:.2f} s, "
                          f"ratio {ch_run[0] / duck_run[0]:.2f}x; peak RSS duckdb "
                          f"{duck_run[1]:.0f} MB, chdb {ch_run[1]:.0f} MB; load {_load()}"))
    return out


def _traces_count(folder: Path) -> int:
    code = ("import sys; from cliffwatch.telemetry.clickhouse.client import connect; "
            "from cliffwatch.telemetry.clickhouse.url import parse_store_url; "
            "c = connect(parse_store_url('chdb://' + sys.argv[1])); "
            "print(c.query_arrow('SELECT count() AS n FROM otel_traces').column(0)[0]); "
            "c.close()")
    done = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True,
                          text=True, timeout=600)
    return int(done.stdout.strip() or 0)


def _child(case: str, store: str) -> None:
    """One case on one store, in this process (wall time includes the open and close)."""
    from cliffwatch.analytics.store_access import read_store

    t0 = time.perf_counter()
    with read_store(store) as con:
        CASES[case](con)
    print(f"{case} {store}: {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2])
