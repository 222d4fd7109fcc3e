"""The "upper bound" label: how many calls behind a figure gave no cache detail (issue 9).

A call on a model that prices cache reads apart, from a producer that gave no cache split,
was priced with every prompt token as uncached input (``spans.cache_detail_missing``,
counted per run in ``runs.cache_detail_missing_calls``; docs/cost-truth.md): when some of
those tokens were cache reads, the cost is too high, so every figure that sums it (the
percentiles, the spend, the report) is an upper bound. :func:`cache_detail_missing_calls`
counts them for the runs behind a figure and :func:`upper_bound_note` words the label the
CLI, the dashboard and the report print beside it.
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb

from cliffwatch.analytics.runs import scope_filter
from cliffwatch.analytics.store_access import frame, is_engine, where
from cliffwatch.analytics.window import Window


def cache_detail_missing_calls(
    con: duckdb.DuckDBPyConnection,
    window: Window = Window(),  # noqa: B008 - Window is frozen
    task_class: str | None = None,
    task_classes: Sequence[str] = (),
) -> int:
    """Calls without cache detail on a caching model in the runs started in ``window``.

    Args:
        con: a store connection.
        window: on the run's ``started_at`` (the runs the percentiles count).
        task_class: only runs of this class (it must exist).
        task_classes: only runs of these classes (each must exist); empty: every class.

    Returns:
        The sum of ``runs.cache_detail_missing_calls`` (0 for a store made before the
        column existed: it gains it, and the count, on its next write).

    Raises:
        UnknownTaskClassError: a class given has no runs in the store.
    """
    conds, params = scope_filter(con, window, "started_at", task_class,
                                 task_classes=task_classes)
    # A ClickHouse store's tables always have the current columns (telemetry/clickhouse/).
    has_column = is_engine(con) or frame(
        con,
        "SELECT count(*) AS n FROM information_schema.columns "
        "WHERE table_name = 'runs' AND column_name = 'cache_detail_missing_calls'",
    )["n"][0]
    if not has_column:
        return 0
    total = frame(
        con,
        f"SELECT coalesce(sum(cache_detail_missing_calls), 0)::BIGINT AS n "
        f"FROM runs {where(conds)}",
        params,
    )["n"][0]
    return int(total)


def upper_bound_note(calls: int) -> str | None:
    """The label of a figure that includes ``calls`` calls without cache detail, e.g.
    ``"upper bound: 3 calls on caching models reported no cache detail"``; None when
    ``calls`` is 0 (the figure is exact)."""
    if calls <= 0:
        return None
    noun = "call" if calls == 1 else "calls"
    return f"upper bound: {calls:,} {noun} on caching models reported no cache detail"
