"""Per task class and UTC day roll-ups of ``runs``, kept up to date by the write path.

``run_rollups`` (telemetry/schema.py, :data:`cliffwatch.telemetry.schema.RUN_ROLLUPS_DDL`)
holds one row per (task class, UTC day of ``started_at``) that has runs: the run count,
summed and largest cost, breaches, unpriced calls, capped runs, and the *exact*
P50/P95/P99 of that day's runs (``quantile_cont``, as analytics/percentiles.py computes
them). Exact per-day quantiles are the mergeable form chosen for trend lines: a trend
point is one class on one day, so its figure is read as it is, never merged; a day is
complete once it is past, so its row stops changing. Sums and counts add up across days
(a window's run count and spend); quantiles of a longer window do not, and readers compute
those from ``runs`` (exact), never from these rows.

The one entry point of the write path is :func:`update_rollups`, called in the write's
transaction after the touched runs were materialised (telemetry/write_pipeline.py): it
recomputes every day a touched run starts or ends on, for every class (a run replaced by
its complete form may change class or day: an incomplete run's start is its earliest
span's, on or after the root's start and before its end), from ``runs`` itself; should
the roll-ups then count another number of runs than ``runs`` holds (a trace rewritten
around the write path moved a run to another day), the table is rebuilt. So a
write costs one pass over those days' runs, not over history; ``runs`` is appended in
time order, so DuckDB's zone maps on ``started_at`` skip older row groups.

:func:`rebuild_rollups` recomputes the whole table (the schema migration that adds it runs
the same statements, :data:`REBUILD_STATEMENTS`); :func:`refresh_days_before` is for a
prune. ``updated_at`` is the write's time: ``max(updated_at)`` is the store's
*data version* for cached reads (:func:`data_version`).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # schema.py imports this module: `cliffwatch --help` must not load duckdb
    import duckdb

ROLLUP_TABLE = "run_rollups"
"""The table's name (its DDL is ``schema.RUN_ROLLUPS_DDL``)."""

ROLLUP_COLUMNS: tuple[str, ...] = (
    "task_class",
    "day",
    "runs",
    "total_usd",
    "max_usd",
    "p50_usd",
    "p95_usd",
    "p99_usd",
    "breaches",
    "unpriced_calls",
    "capped_runs",
    "updated_at",
)
"""Columns of ``run_rollups``, in order."""

_AGGREGATE = """
SELECT task_class, day, runs, total_usd, max_usd,
    q[1] AS p50_usd, q[2] AS p95_usd, q[3] AS p99_usd,
    breaches, unpriced_calls, capped_runs, $updated_at AS updated_at
FROM (
    SELECT task_class, started_at::DATE AS day,
        count(*) AS runs,
        sum(cost_usd) AS total_usd,
        max(cost_usd) AS max_usd,
        quantile_cont(cost_usd, [0.5, 0.95, 0.99]) AS q,
        count(*) FILTER (WHERE breach IS NOT NULL) AS breaches,
        coalesce(sum(unpriced_calls), 0)::BIGINT AS unpriced_calls,
        count(*) FILTER (WHERE max_workers IS NOT NULL) AS capped_runs
    FROM runs {where}
    GROUP BY 1, 2
)
"""
"""The roll-up rows of the runs matching ``{where}``; ``$updated_at`` is the write's time."""

_NOW_UTC = "make_timestamp(epoch_us(now()))"
"""The current time as a naive UTC TIMESTAMP, whatever the session's time zone."""

REBUILD_STATEMENTS: tuple[str, ...] = (
    f"DELETE FROM {ROLLUP_TABLE}",
    f"INSERT INTO {ROLLUP_TABLE} ({', '.join(ROLLUP_COLUMNS)}) "
    + _AGGREGATE.format(where="").replace("$updated_at", _NOW_UTC),
)
"""Statements that rebuild ``run_rollups`` from every run (no parameter: the schema
migration runs them as they are)."""

_TOUCHED_DAYS = """
SELECT list_sort(list(DISTINCT day) FILTER (WHERE day IS NOT NULL)) FROM (
    SELECT unnest(range(started_at::DATE, ended_at::DATE + 1, INTERVAL 1 DAY))::DATE AS day
    FROM {touched}
)
"""
"""The UTC days the touched runs start or end on (and those between), as one sorted list."""

_REFRESH = (
    f"DELETE FROM {ROLLUP_TABLE} WHERE list_contains($days::DATE[], day)",
    # The day range as bounds first (zone maps prune older row groups), then the exact set
    # of days.
    f"INSERT INTO {ROLLUP_TABLE} ({', '.join(ROLLUP_COLUMNS)}) "
    + _AGGREGATE.format(
        where="WHERE started_at >= $first AND started_at < $last + INTERVAL 1 DAY "
        "AND list_contains($days::DATE[], started_at::DATE)"
    ),
)


def _refresh_days(con: duckdb.DuckDBPyConnection, days: list[date], updated_at: datetime) -> int:
    """Recompute the roll-up rows of ``days`` (sorted) from ``runs``; returns len(days)."""
    if not days:
        return 0
    con.execute(_REFRESH[0], {"days": days})
    con.execute(_REFRESH[1], {"first": days[0], "last": days[-1], "days": days,
                              "updated_at": updated_at})
    return len(days)


def update_rollups(
    con: duckdb.DuckDBPyConnection, touched_runs: str, updated_at: datetime
) -> int:
    """Recompute the roll-ups of every UTC day a touched run starts or ends on.

    Call inside the write's transaction, after the touched runs were written to ``runs``.
    Every class's row of those days is rebuilt from ``runs`` (so a run that changed class
    or day when it was replaced leaves no stale figure behind).

    Args:
        con: the write's read-write connection.
        touched_runs: a table with the touched runs' ``started_at`` and ``ended_at``
            (``telemetry.materialise.TOUCHED_RUNS``); may be empty.
        updated_at: the write's time (naive UTC), stored in ``updated_at``.

    Returns:
        The number of days recomputed (0 when no run was touched).
    """
    touched = con.execute(_TOUCHED_DAYS.format(touched=touched_runs)).fetchall()[0][0]
    days = _refresh_days(con, list(touched or ()), updated_at)
    if days and not _counts_match(con):
        # A replaced run left a day outside its new start..end (its trace was rewritten
        # around the write path): that day still counts it. Rebuild everything (one
        # GROUP BY over runs, about 0.15 s at 1M runs); it does not happen otherwise.
        rebuild_rollups(con, updated_at)
    return days


def _counts_match(con: duckdb.DuckDBPyConnection) -> bool:
    rolled, counted = con.execute(
        f"SELECT (SELECT coalesce(sum(runs), 0) FROM {ROLLUP_TABLE}), (SELECT count(*) FROM runs)"
    ).fetchall()[0]
    return bool(rolled == counted)


def refresh_days_before(
    con: duckdb.DuckDBPyConnection, before: datetime, updated_at: datetime
) -> None:
    """After a prune of the runs started before ``before``: drop the roll-ups of the days
    before its day, and recompute its day (partly pruned)."""
    con.execute(f"DELETE FROM {ROLLUP_TABLE} WHERE day < $day", {"day": before.date()})
    _refresh_days(con, [before.date()], updated_at)


def rebuild_rollups(con: duckdb.DuckDBPyConnection, updated_at: datetime | None = None) -> int:
    """Recompute the whole ``run_rollups`` table from ``runs`` (for a store whose runs were
    written around the write path). Run it inside a transaction.

    Args:
        con: a read-write connection.
        updated_at: stored in ``updated_at`` (naive UTC); default now.

    Returns:
        The number of roll-up rows written.
    """
    con.execute(REBUILD_STATEMENTS[0])
    if updated_at is None:
        return int(con.execute(REBUILD_STATEMENTS[1]).fetchall()[0][0])
    insert = f"INSERT INTO {ROLLUP_TABLE} ({', '.join(ROLLUP_COLUMNS)}) " + _AGGREGATE.format(
        where="")
    return int(con.execute(insert, {"updated_at": updated_at}).fetchall()[0][0])


def data_version(con: duckdb.DuckDBPyConnection) -> datetime | None:
    """The time of the last write that changed ``runs`` (``max(updated_at)`` of the
    roll-ups; one small table), or None when the store has no run or no roll-up table."""
    try:
        value = con.execute(f"SELECT max(updated_at) FROM {ROLLUP_TABLE}").fetchall()[0][0]
    except duckdb.CatalogException:
        return None
    return value if isinstance(value, datetime) else None
