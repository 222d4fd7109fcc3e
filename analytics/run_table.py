"""The run table: every run of a selection, filtered, sorted and paged in SQL.

One page of rows at a time (``ORDER BY ... LIMIT ... OFFSET``) plus one ``count(*)``, so
a store of a million runs is never read whole: DuckDB keeps a top-N heap of
``offset + limit`` rows while it scans the ``runs`` table once. The sort always ends on
``run_id``, so pages never overlap or skip a run when several share a sort value.

Filters (every one optional, all ANDed): the time window on ``started_at``, task
classes, statuses, the breach (:data:`BREACH_FILTERS`) and a cost range in USD
(inclusive at both ends).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import duckdb
import polars as pl

from cliffwatch.analytics.errors import AnalyticsError
from cliffwatch.analytics.rollup_read import newest_runs_floor
from cliffwatch.analytics.runs import RUN_LIST_COLUMNS, scope_filter
from cliffwatch.analytics.store_access import frame, where
from cliffwatch.analytics.window import Window

RUN_TABLE_COLUMNS: tuple[str, ...] = (*RUN_LIST_COLUMNS, "input_tokens", "output_tokens")
"""Columns of :func:`runs_page`: :data:`analytics.runs.RUN_LIST_COLUMNS` and the tokens."""

SortColumn = Literal[
    "started_at", "cost_usd", "duration_ms", "llm_calls", "task_class", "status"
]
SORT_COLUMNS: tuple[str, ...] = get_args(SortColumn)
"""Columns :func:`runs_page` can sort by (each a ``runs`` column)."""

BreachFilter = Literal["any", "none", "cap", "ceiling"]
BREACH_FILTERS: tuple[str, ...] = get_args(BreachFilter)
"""``any``: runs with a cap or ceiling breach; ``none``: runs without; ``cap`` /
``ceiling``: that breach only."""


class RunQueryError(AnalyticsError, ValueError):
    """A run query that cannot be run: unknown sort column or breach, bad cost range,
    negative offset or limit. The message is one line for the user."""


@dataclass(frozen=True, slots=True)
class RunQuery:
    """Which runs, in which order.

    Attributes:
        window: on ``started_at`` (``since`` inclusive, ``until`` exclusive).
        task_classes: only these classes (each must exist in the store); empty = all.
        statuses: only runs with one of these statuses; empty = all.
        breach: one of :data:`BREACH_FILTERS`, or None for every run.
        min_cost_usd: only runs costing at least this (USD), None = no lower bound.
        max_cost_usd: only runs costing at most this (USD), None = no upper bound.
        sort_by: one of :data:`SORT_COLUMNS`.
        descending: largest (newest) first.
    """

    window: Window = field(default_factory=Window)
    task_classes: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    breach: str | None = None
    min_cost_usd: float | None = None
    max_cost_usd: float | None = None
    sort_by: str = "started_at"
    descending: bool = True

    def check(self) -> None:
        """Raise :class:`RunQueryError` when the query cannot be run (see its docstring)."""
        if self.sort_by not in SORT_COLUMNS:
            raise RunQueryError(
                f"cannot sort by {self.sort_by!r}: use one of {', '.join(SORT_COLUMNS)}"
            )
        if self.breach is not None and self.breach not in BREACH_FILTERS:
            raise RunQueryError(
                f"unknown breach filter {self.breach!r}: use one of {', '.join(BREACH_FILTERS)}"
            )
        low, high = self.min_cost_usd, self.max_cost_usd
        if low is not None and high is not None and low > high:
            raise RunQueryError(f"empty cost range: minimum ${low:g} is above maximum ${high:g}")

    def conditions(self, con: duckdb.DuckDBPyConnection) -> tuple[list[str], dict[str, Any]]:
        """SQL conditions on ``runs`` and their named parameters.

        Raises:
            RunQueryError: see :meth:`check`.
            UnknownTaskClassError: a class of ``task_classes`` has no runs in the store.
        """
        self.check()
        conds, params = scope_filter(
            con, self.window, "started_at", None, task_classes=self.task_classes
        )
        if self.statuses:
            conds.append("list_contains($statuses, status)")
            params["statuses"] = list(self.statuses)
        if self.breach == "any":
            conds.append("breach IS NOT NULL")
        elif self.breach == "none":
            conds.append("breach IS NULL")
        elif self.breach is not None:
            conds.append("breach = $breach")
            params["breach"] = self.breach
        if self.min_cost_usd is not None:
            conds.append("cost_usd >= $min_cost_usd")
            params["min_cost_usd"] = self.min_cost_usd
        if self.max_cost_usd is not None:
            conds.append("cost_usd <= $max_cost_usd")
            params["max_cost_usd"] = self.max_cost_usd
        return conds, params


def count_runs(con: duckdb.DuckDBPyConnection, query: RunQuery) -> int:
    """How many runs match ``query`` (every page together).

    Raises:
        RunQueryError, UnknownTaskClassError: see :meth:`RunQuery.conditions`.
    """
    conds, params = query.conditions(con)
    return int(frame(con, f"SELECT count(*) AS n FROM runs {where(conds)}", params)["n"][0])


def runs_page(
    con: duckdb.DuckDBPyConnection, query: RunQuery, *, offset: int = 0, limit: int = 50
) -> pl.DataFrame:
    """One page of the runs matching ``query``, in its order (ties by ``run_id``).

    Args:
        con: a store connection.
        query: the filters and the order.
        offset: rows to skip (page number x page size).
        limit: at most this many rows.

    Returns:
        Columns :data:`RUN_TABLE_COLUMNS` (as :func:`analytics.runs.list_runs`, plus
        ``input_tokens`` and ``output_tokens``, summed over the run's leaf LLM calls);
        empty past the last page.

    Raises:
        RunQueryError: a negative ``offset`` or ``limit``, or see :meth:`RunQuery.check`.
        UnknownTaskClassError: a class of ``query`` has no runs in the store.
    """
    if offset < 0 or limit < 0:
        raise RunQueryError(f"offset and limit must be >= 0, got {offset} and {limit}")
    conds, params = query.conditions(con)
    direction = "DESC" if query.descending else "ASC"
    if query.sort_by == "started_at" and query.descending and not (
        query.statuses or query.breach or query.min_cost_usd is not None
        or query.max_cost_usd is not None
    ):
        # The newest pages (the page's default): the roll-ups' day counts bound how far
        # back they reach, so the sort reads those days only.
        classes = ["list_contains($task_classes, task_class)"] if query.task_classes else []
        floor = newest_runs_floor(con, query.window, classes, params, offset + limit)
        if floor is not None:
            conds.append(f"started_at >= TIMESTAMP '{floor.isoformat()}'")
    sql = f"""
        SELECT {", ".join(RUN_TABLE_COLUMNS)} FROM runs {where(conds)}
        ORDER BY {query.sort_by} {direction}, run_id {direction}
        LIMIT {int(limit)} OFFSET {int(offset)}
    """
    return frame(con, sql, params)


def run_statuses(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The run statuses present in the store, sorted (the status filter's choices)."""
    return frame(con, "SELECT DISTINCT status FROM runs ORDER BY 1")["status"].to_list()
