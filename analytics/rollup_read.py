"""Reads that use the per-class, per-day roll-ups (telemetry/rollups.py) where they give the
same answer as ``runs``, so a page's cost follows the window, not the history.

Used only when the roll-ups are *current*: the table exists (schema version 5) and its run
count equals ``runs``' (a store whose runs were written around the write path, or an older
store opened read-only, is read from ``runs`` as before). Every figure stays exact:

- a window's full UTC days come from the roll-up rows (each holds the exact quantiles of
  its day's runs); a day the window cuts (a ``since`` or ``until`` that is not midnight)
  is computed from ``runs`` over the part inside the window;
- the newest N runs of a window: the roll-ups' day counts bound how far back they reach,
  so the sort reads those days only (:func:`newest_runs_floor`).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any

import duckdb

from cliffwatch.analytics.window import Window
from cliffwatch.telemetry.rollups import ROLLUP_TABLE


def rollups_current(con: duckdb.DuckDBPyConnection) -> bool:
    """True when ``run_rollups`` exists and counts every run of ``runs`` (two cheap reads:
    a sum over the small roll-up table and ``runs``' row count). False on a connection
    that is not DuckDB's (a ClickHouse store's, ``is_clickhouse``): it keeps no roll-ups."""
    if getattr(con, "is_clickhouse", False) is True:
        return False
    try:
        rolled = con.execute(f"SELECT coalesce(sum(runs), 0) FROM {ROLLUP_TABLE}").fetchall()
    except duckdb.CatalogException:
        return False
    counted = con.execute("SELECT count(*) FROM runs").fetchall()
    return bool(rolled[0][0] == counted[0][0])


def full_days(window: Window) -> tuple[date | None, date | None]:
    """``(first, end)``: the UTC days wholly inside ``window`` are ``first <= day < end``
    (None: unbounded on that side). ``first >= end`` means there is none."""
    first = end = None
    if window.since is not None:
        first = window.since.date()
        if window.since.time() != time():
            first += timedelta(days=1)
    if window.until is not None:
        end = window.until.date()
    return first, end


def day_conditions(first: date | None, end: date | None, column: str = "day") -> list[str]:
    """SQL conditions on a DATE ``column`` for ``first <= column < end`` (literal dates:
    trusted values, so DuckDB can prune on them)."""
    conds = []
    if first is not None:
        conds.append(f"{column} >= DATE '{first.isoformat()}'")
    if end is not None:
        conds.append(f"{column} < DATE '{end.isoformat()}'")
    return conds


def outside_full_days(first: date | None, end: date | None) -> str:
    """A SQL condition on ``runs.started_at`` true outside the full days ``[first, end)``:
    the rows of the days a window cuts. ``FALSE`` when the full days cover the window."""
    parts = []
    if first is not None:
        parts.append(f"started_at < TIMESTAMP '{first.isoformat()}'")
    if end is not None:
        parts.append(f"started_at >= TIMESTAMP '{end.isoformat()}'")
    return f"({' OR '.join(parts)})" if parts else "FALSE"


def newest_runs_floor(
    con: duckdb.DuckDBPyConnection, window: Window, class_conds: list[str],
    params: dict[str, Any], limit: int,
) -> datetime | None:
    """A start time at or before the ``limit``-th newest run of the window (UTC midnight of
    a day), or None when the roll-ups cannot bound it (not current, or fewer runs).

    Only full days of the window are counted (a day the window cuts counts as 0), so the
    bound is never too late: every one of the newest ``limit`` runs starts at or after it.

    Args:
        con: a store connection.
        window: the runs' window.
        class_conds: conditions on ``task_class`` (trusted SQL with ``params``).
        params: their named parameters.
        limit: how many newest runs the caller reads.
    """
    if limit <= 0 or not rollups_current(con):
        return None
    first, end = full_days(window)
    conds = [*day_conditions(first, end), *class_conds]
    where = f"WHERE {' AND '.join(conds)}" if conds else ""
    used = {k: v for k, v in params.items() if f"${k}" in " ".join(class_conds)}
    rows = con.execute(
        f"""SELECT day FROM (
                SELECT day, sum(sum(runs)) OVER (ORDER BY day DESC) AS newer
                FROM {ROLLUP_TABLE} {where} GROUP BY day)
            WHERE newer >= $limit ORDER BY day DESC LIMIT 1""",
        {**used, "limit": limit},
    ).fetchall()
    return datetime.combine(rows[0][0], time()) if rows else None


_WRITE_VERSION_SQL = f"""
SELECT (SELECT epoch_us(max(updated_at)) FROM {ROLLUP_TABLE}),
    (SELECT count(*) FROM runs),
    (SELECT count(*) FROM incidents),
    (SELECT epoch_us(max(updated_at)) FROM incidents),
    (SELECT count(*) FROM alerts),
    (SELECT epoch_us(max(updated_at)) FROM alert_deliveries),
    (SELECT epoch_us(max(last_ingested_at)) FROM open_traces)
"""


def write_version(con: duckdb.DuckDBPyConnection) -> tuple[int, ...] | None:
    """What the store's writers last changed, as integers: the roll-ups' last write (any
    write that changed ``runs``), the run, incident and alert counts, the last triage and
    webhook delivery update, the last span of a trace still open. Equal versions: the pages'
    data is the same. One query over small tables (and ``runs``' row count).

    Returns:
        The tuple (None in place of a missing time is 0), or None when the store has no
        roll-up table (schema before 4, read-only, or not a DuckDB store): the caller
        falls back to the file.
    """
    if getattr(con, "is_clickhouse", False) is True:
        return None
    try:
        row = con.execute(_WRITE_VERSION_SQL).fetchall()[0]
    except duckdb.CatalogException:
        return None
    return tuple(int(v or 0) for v in row)
