"""Cost percentiles per task class (or per model, or per role) and their daily trend.

Percentiles are continuous: DuckDB's ``quantile_cont``, which interpolates linearly
between order statistics exactly as numpy's default ``method='linear'`` (Hyndman & Fan
type 7; docs/sources.md#duckdb-percentiles). The *cliff ratio* is P99 / P50: the
handbook's "Cost Cliff" is P95 ~ 4x P50 and P99 ~ 10x P50 in a pipeline without caps
(docs/sources.md#handbook-production-cost-data).

All of it is computed in SQL in the store and returned as polars, once, for every view
(tables, charts, JSON) to render.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any, Literal, get_args

import duckdb
import polars as pl
from polars.datatypes import DataTypeClass

from cliffwatch.analytics import chunks, rollup_read
from cliffwatch.analytics.bulk_read import registered
from cliffwatch.analytics.runs import scope_filter
from cliffwatch.analytics.store_access import frame, is_engine, where
from cliffwatch.analytics.window import Window
from cliffwatch.telemetry.conventions import CostSource
from cliffwatch.telemetry.rollups import ROLLUP_TABLE

GroupBy = Literal["task_class", "model", "role"]
GROUP_BYS: tuple[str, ...] = get_args(GroupBy)
"""What :func:`cost_percentiles` can group by."""

PERCENTILE_COLUMNS: tuple[str, ...] = (
    "runs",
    "total_usd",
    "mean_usd",
    "p50_usd",
    "p95_usd",
    "p99_usd",
    "max_usd",
    "cliff_ratio",
    "breaches",
    "unpriced_calls",
)
"""Columns of :func:`cost_percentiles` after the group key, in order."""

# Leaf LLM calls of the runs in `scope` (a CTE of run_id): calls with no LLM-call
# descendant, so a parent that repeats its children's usage is never added again
# (README, "Cost rules"; the same rule the store uses for runs.cost_usd). `up` holds
# every span that is an ancestor of some LLM call; UNION (not ALL) ends on cycles.
_LEAF_CALLS_CTE = """
    leaf_calls AS (
        -- telemetry.materialise stamps is_leaf_call (LLM calls with no LLM-call
        -- descendant): the one place the leaf-call rule lives. The run's breach comes
        -- along (the units' one join with the runs).
        SELECT s.*, scope.breach FROM spans s JOIN scope ON s.trace_id = scope.run_id
        WHERE s.is_leaf_call
    )
"""

_UNIT_KEY_SQL = {
    "model": "coalesce(response_model, request_model, 'unknown')",
    "role": "role",
}


def _stats_sql(key: str | None, units: str) -> str:
    # `units` has one row per unit: key, cost_usd, breach, unpriced_calls. key=None: one
    # row over every unit (none when there is no unit, as a group-by would give).
    select_key = f"{key}," if key else ""
    group = f"GROUP BY {key}" if key else "HAVING count(*) > 0"
    order = f"ORDER BY {key}" if key else ""
    return f"""
        SELECT {select_key} runs, total_usd, mean_usd,
               q[1] AS p50_usd, q[2] AS p95_usd, q[3] AS p99_usd, max_usd,
               CASE WHEN q[1] > 0 THEN q[3] / q[1] END AS cliff_ratio,
               breaches, unpriced_calls
        FROM (
            SELECT {select_key}
                   count(*) AS runs,
                   sum(cost_usd) AS total_usd,
                   avg(cost_usd) AS mean_usd,
                   quantile_cont(cost_usd, [0.5, 0.95, 0.99]) AS q,
                   max(cost_usd) AS max_usd,
                   count(*) FILTER (WHERE breach IS NOT NULL) AS breaches,
                   sum(unpriced_calls)::BIGINT AS unpriced_calls
            FROM {units}
            {group}
        )
        {order}
    """


_RUN_SCOPE_SQL = "SELECT run_id, task_class, breach, unpriced_calls, cost_usd FROM runs {where}"
"""The runs in scope, one unit each (the per-run cost, as by task class and overall)."""


def cost_percentiles(
    con: duckdb.DuckDBPyConnection,
    window: Window = Window(),  # noqa: B008 - Window is frozen
    by: GroupBy = "task_class",
    task_class: str | None = None,
) -> pl.DataFrame:
    """Cost per task: count, total, mean, P50/P95/P99, max, cliff ratio and breaches.

    Every run started in ``window`` counts, whatever its status (a rejected run's planner
    call is real spend); with ``Window()`` every run in the store counts.

    The unit is always the task (one run):

    - ``by="task_class"``: one value per run, its ``runs.cost_usd`` (the sum of its leaf
      LLM calls), grouped by the run's task class.
    - ``by="model"`` / ``by="role"``: one value per (run, model) or (run, role) pair: the
      summed cost of that run's leaf LLM calls on that model (response model, else request
      model) or in that role (``plan``, ``worker``, ``synthesis``, ...). The percentiles
      are over those per-run sums, so "P99 of gpt-4o" reads "what the 1-in-100 worst task
      spends on gpt-4o", and ``runs`` counts the runs that used the model/role.

    Unpriced calls add nothing to any cost (never a silent $0 either: they are counted in
    ``unpriced_calls``).

    Args:
        con: a store connection.
        window: on the run's ``started_at`` (``since`` inclusive, ``until`` exclusive).
        by: ``"task_class"``, ``"model"`` or ``"role"``.
        task_class: only runs of this class (it must exist in the store).

    Returns:
        One row per group, sorted by it: the ``by`` column, then :data:`PERCENTILE_COLUMNS`:
        ``runs`` (units counted), ``total_usd`` / ``mean_usd`` / ``p50_usd`` /
        ``p95_usd`` / ``p99_usd`` / ``max_usd`` (USD per task), ``cliff_ratio``
        (P99 / P50; null when P50 is 0), ``breaches`` (units whose run had a cap or
        ceiling breach), ``unpriced_calls``. Empty (same columns) when no run matches.

    Raises:
        ValueError: ``by`` is not one of :data:`GROUP_BYS`.
        UnknownTaskClassError: ``task_class`` has no runs in the store.
    """
    if by not in GROUP_BYS:
        raise ValueError(f"cannot group by {by!r}: use one of {', '.join(GROUP_BYS)}")
    conds, params = scope_filter(con, window, "started_at", task_class)
    scope = _RUN_SCOPE_SQL.format(where=where(conds))
    if by == "task_class":
        return frame(con, f"WITH scope AS ({scope}) {_stats_sql('task_class', 'scope')}", params)
    params["unpriced"] = str(CostSource.UNPRICED)
    sql = f"""
        WITH scope AS ({scope}), {_LEAF_CALLS_CTE},
        units AS ({_UNITS_SQL.format(keys=f"{_UNIT_KEY_SQL[by]} AS {by}", group="GROUP BY 1, 2")})
        {_stats_sql(by, "units")}
    """
    return frame(con, sql, params)


_UNITS_SQL = """
    SELECT {keys}, c.trace_id,
           coalesce(sum(c.cost_usd), 0) AS cost_usd,
           any_value(c.breach) AS breach,
           count(*) FILTER (
               WHERE c.cost_usd IS NULL OR c.cost_source = $unpriced
           ) AS unpriced_calls
    FROM leaf_calls c
    {group}
"""
"""One unit per (run, key): the run's leaf calls summed; ``keys`` and ``group`` say which.
The run's breach is read with its calls (``leaf_calls``), not by joining the runs a second
time: at 1M runs a chunk's units took 0.19-0.33 s against 0.48 s (issue 11)."""


UNIT_CHUNK_RUNS = 100_000
"""Runs whose (run, model) and (run, role) units :func:`model_and_role_percentiles` groups
in one query: the grouping's hash table holds one chunk's units (about 6 per run; 100-128
MB for 100,000 runs, within a 256 MB bound), not the window's
(at 1M runs one query ran out of a 256 MB bound and the report was read again unbounded,
4.3 GB; issue 11). Chunks of 50,000 runs took 3.2 s against one query's 1.6 s at 100k
runs in a report (load ~10)."""

_UNIT_ROWS_SQL = """
    WITH scope AS ({scope}), leaf_calls AS (
        SELECT s.*, scope.breach FROM spans s JOIN scope ON s.trace_id = scope.run_id
        WHERE s.is_leaf_call {span_range}
    ),
    units AS ({units})
    SELECT grouping_id::TINYINT AS grouping_id,
        CASE WHEN grouping_id = 1 THEN model ELSE role END AS unit_key, cost_usd,
        CASE WHEN breach IS NOT NULL THEN true END AS breach,
        unpriced_calls::INTEGER AS unpriced_calls
    FROM units
"""
"""One chunk's units (:data:`_LEAF_CALLS_CTE` within the chunk's span range): by model
(``grouping_id`` 1) and by role (2), the key in ``unit_key``; ``breach`` true or NULL."""


def model_and_role_percentiles(
    con: duckdb.DuckDBPyConnection,
    window: Window = Window(),  # noqa: B008 - Window is frozen
    task_class: str | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """:func:`cost_percentiles` by ``"model"`` and by ``"role"`` (same rows, columns and
    figures), from one read of the window's leaf calls: DuckDB groups each call into its
    (run, model) and its (run, role) unit in one pass (``GROUPING SETS``), where two calls
    of :func:`cost_percentiles` read every call twice (at 1M runs each read is seconds;
    issue 11), by run-id range chunks of :data:`UNIT_CHUNK_RUNS` runs (:mod:`analytics.
    chunks`); the units (about 18 bytes each) are then summarised by the same SQL as
    :func:`cost_percentiles`'. On a ClickHouse store, the two calls.

    Args:
        con: a store connection.
        window: on the run's ``started_at`` (``since`` inclusive, ``until`` exclusive).
        task_class: only runs of this class (it must exist in the store).

    Returns:
        ``(by_model, by_role)``, each as :func:`cost_percentiles` returns it.

    Raises:
        UnknownTaskClassError: ``task_class`` has no runs in the store.
    """
    if is_engine(con):
        return (cost_percentiles(con, window, "model", task_class),
                cost_percentiles(con, window, "role", task_class))
    conds, params = scope_filter(con, window, "started_at", task_class)
    keys = (f"{_UNIT_KEY_SQL['model']} AS model, role, "
            "grouping(model, role) AS grouping_id")  # 1: by model, 2: by role
    units = _UNITS_SQL.format(
        keys=keys, group="GROUP BY GROUPING SETS ((model, c.trace_id), (role, c.trace_id))")
    runs = frame(con, f"SELECT count(*) AS n FROM runs {where(conds)}", params)["n"][0]
    parts = []
    for bounds in chunks.chunk_bounds(con, f"SELECT run_id FROM runs {where(conds)}", params,
                                      runs, UNIT_CHUNK_RUNS):
        mine = {**params, "unpriced": str(CostSource.UNPRICED)}
        extra, span_range = chunks.range_filters(bounds, "run_id", "s.trace_id", mine)
        scope = _RUN_SCOPE_SQL.format(where=where([*conds, *extra]))
        parts.append(frame(con, _UNIT_ROWS_SQL.format(scope=scope, span_range=span_range,
                                                      units=units), mine)
                     .with_columns(pl.col("unit_key").cast(pl.Categorical())))
    schema: dict[str, pl.DataType | DataTypeClass] = {
        "grouping_id": pl.Int8, "unit_key": pl.Categorical(), "cost_usd": pl.Float64,
        "breach": pl.Boolean, "unpriced_calls": pl.Int32}
    every = pl.concat(parts, how="vertical_relaxed") if parts else pl.DataFrame(schema=schema)
    parts.clear()
    with registered(con, units=every) as names:
        del every
        both = frame(con, _stats_sql("grouping_id, unit_key", names["units"]))
    return tuple(  # type: ignore[return-value]
        both.filter(pl.col("grouping_id") == flag).select(
            pl.col("unit_key").cast(pl.String).alias(key), *PERCENTILE_COLUMNS).sort(key)
        for flag, key in ((1, "model"), (2, "role"))
    )


def overall_percentiles(
    con: duckdb.DuckDBPyConnection,
    window: Window = Window(),  # noqa: B008 - Window is frozen
    task_classes: Sequence[str] = (),
) -> pl.DataFrame:
    """Cost per task over every run of the selection at once, whatever its class.

    The headline row beside :func:`cost_percentiles` by task class: the same figures and
    the same rule (every run started in ``window`` counts, whatever its status; unit =
    one run, its ``runs.cost_usd``), with P50/P95/P99 from ``quantile_cont`` over *all*
    the matching runs, not a sample: percentiles do not add up across classes, so the
    overall ones are computed from the runs themselves.

    Args:
        con: a store connection.
        window: on the run's ``started_at`` (``since`` inclusive, ``until`` exclusive).
        task_classes: only runs of these classes (each must exist in the store); empty
            means every class.

    Returns:
        One row with :data:`PERCENTILE_COLUMNS` (USD per task, as
        :func:`cost_percentiles`); empty (same columns) when no run matches.

    Raises:
        UnknownTaskClassError: one of ``task_classes`` has no runs in the store.
    """
    conds, params = scope_filter(con, window, "started_at", None, task_classes=task_classes)
    scope = _RUN_SCOPE_SQL.format(where=where(conds))
    return frame(con, f"WITH scope AS ({scope}) {_stats_sql(None, 'scope')}", params)


def daily_percentiles(
    con: duckdb.DuckDBPyConnection,
    window: Window = Window(),  # noqa: B008 - Window is frozen
    task_class: str | None = None,
) -> pl.DataFrame:
    """P50/P95/P99 cost per task class per UTC day, for trend lines.

    Args:
        con: a store connection.
        window: on the run's ``started_at``.
        task_class: only this class (it must exist in the store).

    Returns:
        Columns ``task_class``, ``day`` (date, UTC), ``runs``, ``p50_usd``, ``p95_usd``,
        ``p99_usd`` (USD per task, continuous percentiles over that day's runs), sorted by
        class then day. Days without runs have no row.

    Raises:
        UnknownTaskClassError: ``task_class`` has no runs in the store.
    """
    conds, params = scope_filter(con, window, "started_at", task_class)
    if not rollup_read.rollups_current(con):
        return frame(con, _DAILY_SQL.format(where=where(conds)), params)
    # Full days from the roll-ups (exact per-day quantiles); the days the window cuts from
    # the runs inside it.
    first, end = rollup_read.full_days(window)
    class_conds = ["task_class = $task_class"] if task_class is not None else []
    rolled = rollup_read.day_conditions(first, end) + class_conds
    cut = _DAILY_SQL.format(where=where([*conds, rollup_read.outside_full_days(first, end)]))
    sql = f"""
        SELECT task_class, day, runs, p50_usd, p95_usd, p99_usd
        FROM {ROLLUP_TABLE} {where(rolled)}
        UNION ALL ({cut})
        ORDER BY task_class, day
    """
    return frame(con, sql, params)


_DAILY_SQL = """
    SELECT task_class, day, runs, q[1] AS p50_usd, q[2] AS p95_usd, q[3] AS p99_usd
    FROM (
        SELECT task_class, started_at::DATE AS day, count(*) AS runs,
               quantile_cont(cost_usd, [0.5, 0.95, 0.99]) AS q
        FROM runs {where}
        GROUP BY 1, 2
    )
    ORDER BY task_class, day
"""


def cap_start_date(con: duckdb.DuckDBPyConnection, task_class: str | None = None) -> date | None:
    """The first UTC day on which a run had a max-workers cap (``max_workers`` not null).

    Marks "cap introduced" on trend charts. None when no run ever had a cap.

    Args:
        con: a store connection.
        task_class: look at this class only (None = any class).

    Raises:
        UnknownTaskClassError: ``task_class`` has no runs in the store.
    """
    conds, params = scope_filter(con, Window(), "started_at", task_class)
    return _cap_start_days(con, conds, params, grouped=False)[None]


def cap_start_dates(
    con: duckdb.DuckDBPyConnection, task_classes: Sequence[str]
) -> dict[str, date | None]:
    """:func:`cap_start_date` of each of ``task_classes`` in one query (the Overview's
    trend chart marks every class's).

    Returns:
        ``{task_class: first capped day or None}`` for each class given.

    Raises:
        UnknownTaskClassError: one of ``task_classes`` has no runs in the store.
    """
    if not task_classes:
        return {}
    conds, params = scope_filter(con, Window(), "started_at", None, task_classes=task_classes)
    found = _cap_start_days(con, conds, params, grouped=True)
    return {c: found.get(c) for c in task_classes}


def _cap_start_days(con: duckdb.DuckDBPyConnection, conds: list[str], params: dict[str, Any],
                    *, grouped: bool) -> dict[str | None, date | None]:
    """The first capped day of the runs of ``conds`` (class conditions only), per class
    when ``grouped`` (else under the key None): from the roll-ups when current (they
    count each day's capped runs), else from ``runs``."""
    key = "task_class" if grouped else "NULL::VARCHAR AS task_class"
    group = "GROUP BY task_class" if grouped else ""
    if rollup_read.rollups_current(con):
        rows = frame(con, f"SELECT {key}, min(day) FILTER (WHERE capped_runs > 0) AS day "
                          f"FROM {ROLLUP_TABLE} {where(conds)} {group}", params)
    else:
        rows = frame(con, f"SELECT {key}, (min(started_at) FILTER "
                          f"(WHERE max_workers IS NOT NULL))::DATE AS day FROM runs "
                          f"{where(conds)} {group}", params)
    return dict(zip(rows["task_class"].to_list(), rows["day"].to_list(), strict=True))
