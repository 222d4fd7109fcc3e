"""Reading alerts and their webhook deliveries (``cliffwatch alerts``, the dashboard).

The write side is :mod:`telemetry.alert_rules` (alerts and their outbox rows) and
:mod:`telemetry.alerts` (delivery); this module only reads the two tables.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import duckdb
import polars as pl

from cliffwatch.telemetry.store import is_engine_connection

STATUSES = ("pending", "sending", "delivered", "failed", "unknown")
"""Delivery statuses: queued or waiting to retry; claimed and being sent; delivered;
given up (``--retry`` sends again); lease expired mid-send (may have arrived)."""

NO_WEBHOOK = "no_webhook"
"""Status :func:`list_alerts` shows for an alert that had no webhook to go to."""


def has_alert_tables(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the store has the ``alerts`` and ``alert_deliveries`` tables (a store made
    before alerts existed has neither until its next write). A ClickHouse store always
    has both (telemetry/clickhouse/tables.py creates every table at once)."""
    if is_engine_connection(con):
        return True
    rows = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'main' "
        "AND table_name IN ('alerts', 'alert_deliveries')"
    ).fetchall()
    return rows[0][0] == 2


ALERT_COLUMNS: tuple[str, ...] = (
    "alert_id",
    "source",
    "kind",
    "task_class",
    "run_id",
    "raised_at",
    "webhook",
    "status",
    "attempts",
    "last_http_status",
    "last_error",
    "next_attempt_at",
    "delivered_at",
    "text",
)
"""Columns of :func:`list_alerts`, in order."""


def list_alerts(
    con: duckdb.DuckDBPyConnection,
    *,
    status: str | None = None,
    limit: int | None = None,
    conditions: Sequence[str] = (),
    params: Mapping[str, Any] | None = None,
) -> pl.DataFrame:
    """Alerts and their deliveries, newest first: one row per (alert, webhook).

    Args:
        con: a store connection (read-only is enough).
        status: only deliveries with this status (one of :data:`STATUSES`, or
            :data:`NO_WEBHOOK` for alerts that had no webhook to go to).
        limit: at most this many rows; None: all.
        conditions: more trusted SQL conditions on the columns of :data:`ALERT_COLUMNS`
            (ANDed; a window on ``raised_at``, a task class: analytics' scope filter,
            :func:`analytics.alert_view.alert_deliveries`), never user input.
        params: the named parameters of ``conditions`` (not ``status``).

    Returns:
        Columns :data:`ALERT_COLUMNS`: ``raised_at`` (the incident's detection time or the
        rule's window end, naive UTC), ``webhook`` redacted (null without one),
        ``status``, ``attempts``, ``last_http_status``, ``last_error``,
        ``next_attempt_at`` (when a pending one is due), ``delivered_at``, ``text`` (the
        alert's one line). Empty when the store predates alerts.

    Raises:
        ValueError: an unknown ``status``, or a negative ``limit``.
    """
    if status is not None and status not in (*STATUSES, NO_WEBHOOK):
        raise ValueError(f"unknown status {status!r} (use {', '.join((*STATUSES, NO_WEBHOOK))})")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    empty = pl.DataFrame(schema={c: pl.String for c in ALERT_COLUMNS})
    if not has_alert_tables(con):
        return empty
    conds, values = list(conditions), dict(params or {})
    if status is not None:
        conds.append("status = $status")
        values["status"] = status
    where = f"WHERE {' AND '.join(conds)}" if conds else ""
    limit_sql = f"LIMIT {int(limit)}" if limit is not None else ""
    sql = f"""
        SELECT * FROM (
            SELECT a.alert_id, a.source, a.kind, a.task_class, a.run_id, a.raised_at,
                   d.webhook, coalesce(d.status, '{NO_WEBHOOK}') AS status,
                   coalesce(d.attempts, 0) AS attempts, d.last_http_status, d.last_error,
                   CASE WHEN d.status = 'pending' THEN d.next_attempt_at END
                       AS next_attempt_at,
                   d.delivered_at, a.text
            FROM alerts AS a LEFT JOIN alert_deliveries AS d USING (alert_id)
            WHERE a.write_id <> 'baseline'
        ) {where}
        ORDER BY raised_at DESC, alert_id, webhook {limit_sql}
    """
    # Read through the Arrow PyCapsule stream, not .pl(): no pyarrow import (issue 11).
    return pl.DataFrame(con.sql(sql, params=values or None))


def payload_of(con: duckdb.DuckDBPyConnection, alert_id: str) -> dict[str, object]:
    """The JSON payload an alert is POSTed with (for tests and ``--format json``).

    Raises:
        KeyError: no such alert.
    """
    rows = con.execute(
        "SELECT payload::VARCHAR FROM alerts WHERE alert_id = ?", [alert_id]
    ).fetchall()
    if not rows:
        raise KeyError(alert_id)
    return json.loads(rows[0][0])
