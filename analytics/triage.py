"""Incident triage for the CLI and the dashboard: counts per status, one incident, and the
write that moves an incident through ``open -> acknowledged -> resolved``.

The write itself lives on the write side (:mod:`telemetry.triage`); it is re-exported
here, as :mod:`analytics.store_access` re-exports the store's opening, so the dashboard
and the CLI reach the store through analytics only.
"""

from __future__ import annotations

from typing import Any

import duckdb
import polars as pl

from cliffwatch.analytics.runs import scope_filter
from cliffwatch.analytics.store_access import frame, where
from cliffwatch.analytics.window import Window
from cliffwatch.telemetry.schema import INCIDENT_STATUSES
from cliffwatch.telemetry.triage import (
    IncidentNotFoundError,
    Triage,
    TriageError,
    TriageStatusError,
    acknowledge,
    resolve,
    set_incident_status,
)

__all__ = [
    "INCIDENT_STATUSES",
    "IncidentNotFoundError",
    "Triage",
    "TriageError",
    "TriageStatusError",
    "acknowledge",
    "get_incident",
    "resolve",
    "set_incident_status",
    "triage_counts",
]


def triage_counts(
    con: duckdb.DuckDBPyConnection,
    window: Window = Window(),  # noqa: B008 - Window is frozen
    task_class: str | None = None,
) -> pl.DataFrame:
    """Incidents per kind and triage status, for incidents detected in ``window``.

    Args:
        con: a store connection.
        window: on ``detected_at`` (``since`` inclusive, ``until`` exclusive).
        task_class: only incidents of runs of this class (it must exist in the store).

    Returns:
        Columns ``kind``, then one count column per status of
        :data:`telemetry.schema.INCIDENT_STATUSES` (``open``, ``acknowledged``,
        ``resolved``), then ``total``; one row per kind that has incidents, sorted.

    Raises:
        UnknownTaskClassError: ``task_class`` has no runs in the store.
    """
    conds, params = scope_filter(con, window, "detected_at", task_class)
    counts = ", ".join(
        f"count(*) FILTER (WHERE status = '{s}') AS {s}" for s in INCIDENT_STATUSES
    )
    sql = f"""
        SELECT kind, {counts}, count(*) AS total
        FROM incidents {where(conds)} GROUP BY kind ORDER BY kind
    """
    return frame(con, sql, params)


def get_incident(con: duckdb.DuckDBPyConnection, incident_id: str) -> dict[str, Any]:
    """Every column of one incident (``data`` as JSON text).

    Raises:
        IncidentNotFoundError: no incident has that id.
    """
    found = frame(
        con,
        "SELECT * EXCLUDE (data), data::VARCHAR AS data FROM incidents WHERE incident_id = $id",
        {"id": incident_id},
    )
    if found.is_empty():
        raise IncidentNotFoundError(f"no incident {incident_id!r}")
    return found.row(0, named=True)
