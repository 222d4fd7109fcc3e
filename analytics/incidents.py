"""Incidents: cap breaches, cost-ceiling breaches and runaways, as the store recorded them.

The write side (``telemetry.incident_rules``) detects and records incidents; this module
only reads them.
"""

from __future__ import annotations

import duckdb
import polars as pl

from cliffwatch.analytics.runs import scope_filter
from cliffwatch.analytics.store_access import frame, limit_clause, where
from cliffwatch.analytics.window import Window

INCIDENT_COLUMNS: tuple[str, ...] = (
    "incident_id",
    "kind",
    "run_id",
    "task_class",
    "detected_at",
    "status",
    "detail",
    "data",
    "note",
    "updated_at",
)
"""Columns of :func:`list_incidents`, in order."""


def list_incidents(
    con: duckdb.DuckDBPyConnection,
    window: Window = Window(),  # noqa: B008 - Window is frozen
    kind: str | None = None,
    status: str | None = None,
    task_class: str | None = None,
    limit: int | None = None,
) -> pl.DataFrame:
    """Incidents detected in ``window``, newest first.

    Args:
        con: a store connection.
        window: on ``detected_at`` (the run's end; ``since`` inclusive, ``until``
            exclusive).
        kind: only this kind (``cap_breach|cost_ceiling|runaway``).
        status: only this triage status (``open|acknowledged|resolved``).
        task_class: only incidents of runs of this class (it must exist in the store).
        limit: at most this many rows (the newest); None = all.

    Returns:
        Columns :data:`INCIDENT_COLUMNS`: ``detected_at`` / ``updated_at`` naive UTC,
        ``detail`` one human line, ``data`` the kind's figures as JSON text (e.g.
        ``{"proposed": 47, "max_workers": 8, ...}`` for a cap breach), ``note`` the
        triage note or null.

    Raises:
        UnknownTaskClassError: ``task_class`` has no runs in the store.
        ValueError: ``limit`` is negative.
    """
    limit_sql = limit_clause(limit)
    conds, params = scope_filter(con, window, "detected_at", task_class)
    if kind is not None:
        conds.append("kind = $kind")
        params["kind"] = kind
    if status is not None:
        conds.append("status = $status")
        params["status"] = status
    columns = ", ".join("data::VARCHAR AS data" if c == "data" else c for c in INCIDENT_COLUMNS)
    sql = f"""
        SELECT {columns} FROM incidents {where(conds)}
        ORDER BY detected_at DESC, incident_id {limit_sql}
    """
    return frame(con, sql, params)
