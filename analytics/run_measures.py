"""P50/P95/P99 per run of cost, latency, tokens and LLM calls, per task class.

The unit is one run (a ``runs`` row): its ``cost_usd``, its ``duration_ms`` (root span
start to end), its tokens (``input_tokens + output_tokens`` of its leaf LLM calls) and its
``llm_calls``. Percentiles are DuckDB's ``quantile_cont``: linear interpolation between
order statistics, numpy's default ``method='linear'`` (docs/sources.md#duckdb-percentiles),
computed in SQL over every matching run, never a sample. The same run rule as
:func:`analytics.percentiles.cost_percentiles`: every run started in the window counts,
whatever its status.
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import polars as pl

from cliffwatch.analytics.runs import scope_filter
from cliffwatch.analytics.store_access import frame, where
from cliffwatch.analytics.window import Window

MEASURES: dict[str, str] = {
    "cost_usd": "cost_usd",
    "duration_ms": "duration_ms",
    "tokens": "input_tokens + output_tokens",
    "llm_calls": "llm_calls",
}
"""Measure name -> its SQL over ``runs`` (units: USD, milliseconds, tokens, calls)."""

QUANTILES: tuple[tuple[str, float], ...] = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
"""Percentile column suffix -> fraction."""


def measure_columns() -> list[str]:
    """The percentile columns of :func:`run_measure_percentiles`, in order:
    ``cost_usd_p50, cost_usd_p95, cost_usd_p99, duration_ms_p50, ...``."""
    return [f"{m}_{q}" for m in MEASURES for q, _ in QUANTILES]


def run_measure_percentiles(
    con: duckdb.DuckDBPyConnection,
    window: Window = Window(),  # noqa: B008 - Window is frozen
    task_classes: Sequence[str] = (),
) -> pl.DataFrame:
    """P50/P95/P99 per run of every measure in :data:`MEASURES`, per class and overall.

    Args:
        con: a store connection.
        window: on the run's ``started_at`` (``since`` inclusive, ``until`` exclusive).
        task_classes: only runs of these classes (each must exist); empty = every class.

    Returns:
        One row per task class (sorted), then one row with ``task_class`` null over every
        matching run (percentiles do not add up across classes, so it is computed from
        the runs themselves). Columns: ``task_class``, ``runs``, then
        :func:`measure_columns` as DOUBLE (``cost_usd_*`` USD, ``duration_ms_*``
        milliseconds, ``tokens_*`` tokens, ``llm_calls_*`` calls). Empty when no run
        matches.

    Raises:
        UnknownTaskClassError: one of ``task_classes`` has no runs in the store.
    """
    conds, params = scope_filter(con, window, "started_at", None, task_classes=task_classes)
    fractions = ", ".join(str(f) for _, f in QUANTILES)
    quantiles = ",\n".join(
        f"quantile_cont(({sql})::DOUBLE, [{fractions}]) AS q_{name}"
        for name, sql in MEASURES.items()
    )
    picks = ", ".join(
        f"q_{name}[{i + 1}] AS {name}_{suffix}"
        for name in MEASURES
        for i, (suffix, _) in enumerate(QUANTILES)
    )
    sql = f"""
        SELECT CASE WHEN overall = 0 THEN task_class END AS task_class, runs, {picks}
        FROM (
            SELECT task_class, grouping(task_class) AS overall, count(*) AS runs,
                   {quantiles}
            FROM runs {where(conds)}
            GROUP BY GROUPING SETS ((task_class), ())
            HAVING count(*) > 0
        )
        ORDER BY overall, task_class
    """
    return frame(con, sql, params)
