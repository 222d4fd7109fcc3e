"""The class estimates (:class:`analytics.recorded.Estimates`) read from the store.

Why its own file: it is the one read of class-wide means every what-if starts with (the
findings read it once for all their what-ifs). DuckDB groups every worker call by run and
sub-task and returns sums and counts per class and model, whose ratios are the means: in
one query on a DuckDB store, under the bulk-read memory bound (at 1M runs 8.1-9.8 s against
9.7-10.4 s when the calls were first written to Parquet per chunk of runs and each chunk
summed, two pairs side by side; issue 11), and per run-id range chunk on a ClickHouse
store, the chunks' sums added up.
"""

from __future__ import annotations

from typing import Any

import duckdb
import polars as pl

from cliffwatch.analytics import chunks
from cliffwatch.analytics.bulk_read import run_bounded
from cliffwatch.analytics.recorded import CANCELLED_ERROR, Estimates, WorkerEstimate, attrs_sql
from cliffwatch.analytics.redo import CompletedRuns, load_completed_runs
from cliffwatch.analytics.store_access import frame, where
from cliffwatch.telemetry import conventions as cv
from cliffwatch.telemetry.conventions import Role

CHUNK_RUNS = 50_000
"""Runs per chunk of the estimates' read on a ClickHouse store (:func:`chunked_sums`)."""

_ESTIMATES_SQL = f"""
    WITH scope AS ({{scope}}),
    calls AS {{calls_mode}}({{calls}}),
    subtasks AS (
        SELECT trace_id, idx, model, sum(cost_usd) AS cost_usd,
            count(*) FILTER (WHERE cost_usd IS NULL) AS unpriced,
            bool_or(cancelled) AS cancelled,
            max(output_tokens) FILTER (WHERE ok) AS output_tokens
        FROM calls WHERE role = '{Role.WORKER}'
        GROUP BY ALL
    ),
    per_run AS (
        SELECT trace_id, model,
            sum(cost_usd) FILTER (WHERE unpriced = 0) AS cost_sum,
            count(cost_usd) FILTER (WHERE unpriced = 0) AS cost_n,
            sum(output_tokens)::DOUBLE AS tokens_sum, count(output_tokens) AS tokens_n,
            count(*) AS samples
        FROM subtasks WHERE NOT cancelled AND model IS NOT NULL
        GROUP BY ALL
    ),
    stage AS (
        SELECT trace_id, sum(cost_usd) AS cost_usd,
            avg(price_in) FILTER (WHERE role = '{Role.SYNTHESIS}') AS price_input
        FROM calls WHERE role IN ('{Role.SYNTHESIS}', '{Role.CRITIC}')
        GROUP BY ALL
    )
    SELECT 'worker' AS kind, sc.task_class, p.model, sum(p.cost_sum) AS cost_sum,
        sum(p.cost_n)::BIGINT AS cost_n, sum(p.tokens_sum) AS tokens_sum,
        sum(p.tokens_n)::BIGINT AS tokens_n, sum(p.samples)::BIGINT AS samples,
        NULL::DOUBLE AS price_sum, 0::BIGINT AS price_n
    FROM per_run p JOIN scope sc ON sc.run_id = p.trace_id
    GROUP BY ALL
    UNION ALL
    SELECT 'synthesis', sc.task_class, NULL::VARCHAR, sum(st.cost_usd),
        count(st.cost_usd)::BIGINT, NULL::DOUBLE, 0::BIGINT, count(*)::BIGINT,
        sum(st.price_input), count(st.price_input)::BIGINT
    FROM stage st JOIN scope sc ON sc.run_id = st.trace_id
    GROUP BY ALL
"""
"""Sums and counts per (kind, class, model) whose ratios are the means, over the runs of
``{scope}`` (``run_id``, ``task_class``) and the calls ``{calls}`` (:data:`_SPAN_CALLS`;
``{calls_mode}``: ``MATERIALIZED`` in DuckDB, the calls read once for both readers, empty
in ClickHouse). The calls are grouped per sub-task, then per run and model, and only
those per-run rows are joined to their run's class (joining every call to its run first
took about a second more at 1M runs; issue 11). Every count is cast to BIGINT in both
branches: ClickHouse's ``count`` is UInt64, and a UNION of it with a BIGINT literal would
be a Variant column (the same SQL runs on both engines)."""

_SPAN_CALLS = f"""
    SELECT trace_id, role, cost_usd, output_tokens, ok, model, price_in,
        TRY_CAST(a[1] AS INTEGER) AS idx, coalesce(a[2] = '{CANCELLED_ERROR}', false) AS cancelled
    FROM (
        SELECT s.trace_id, s.role, s.cost_usd, s.output_tokens, s.status_code <> 'error' AS ok,
            coalesce(s.request_model, s.response_model) AS model,
            s.price_input_usd_per_token AS price_in,
            CASE WHEN s.role = '{Role.WORKER}'
                THEN {attrs_sql((cv.CLIFF_SUBTASK_INDEX, cv.ERROR_TYPE))} END AS a
        FROM spans s
        WHERE s.is_leaf_call AND s.role IN ('{Role.WORKER}', '{Role.SYNTHESIS}', '{Role.CRITIC}')
            {{runs}}
    )
"""
"""The LLM calls the estimates read, from the spans (the worker calls' attributes parsed);
``{runs}``: SQL on ``spans s`` keeping the runs read (nothing: every run)."""

def _mean(total: float | None, n: int) -> float | None:
    return None if not n else float(total or 0.0) / n


def load_estimates(con: duckdb.DuckDBPyConnection, task_class: str | None = None) -> Estimates:
    """Per class figures from every recorded run of ``task_class`` (None: every class).

    Means, not medians: a counterfactual's spend is a sum over many runs, and the mean
    is the figure whose sum is unbiased. On a DuckDB store one query (:data:`_ESTIMATES_SQL`)
    under the bulk-read memory bound (:func:`analytics.bulk_read.run_bounded`: its groups
    spill past it); on a ClickHouse store by run-id range chunks of :data:`CHUNK_RUNS` runs
    (:func:`chunked_sums`; sums and counts added across chunks, the means those of one
    read up to the order of float additions). The completed runs come from a second query
    (:func:`analytics.redo.load_completed_runs`).

    Args:
        con: a store connection.
        task_class: one class, or None for all.

    Returns:
        :class:`Estimates` (empty mappings where the store holds nothing to estimate from).
    """
    conds, params = estimate_scope(task_class)
    if isinstance(con, duckdb.DuckDBPyConnection):
        # the calls of the class's runs only (every run: no filter to build)
        runs = "AND s.trace_id IN (SELECT run_id FROM scope)" if conds else ""
        sql = _ESTIMATES_SQL.format(
            scope=f"SELECT run_id, task_class FROM runs {where(conds)}",
            calls=_SPAN_CALLS.format(runs=runs), calls_mode="MATERIALIZED ")
        parts = [run_bounded(con, lambda: frame(con, sql, params))]
    else:
        parts = chunked_sums(con, conds, params)
    return fold_estimates(parts, load_completed_runs(con, task_class))


def chunked_sums(
    con: duckdb.DuckDBPyConnection, conds: list[str], params: dict[str, Any],
) -> list[pl.DataFrame]:
    """The sums and counts of :data:`_ESTIMATES_SQL` over the runs of ``conds`` (on
    ``runs``, unaliased), one query per run-id range chunk of about :data:`CHUNK_RUNS`
    runs (ClickHouse's way: each chunk's groups, not the store's, in memory)."""
    runs = frame(con, f"SELECT count(*) AS n FROM runs {where(conds)}", params)["n"][0]
    parts = []
    for bounds in chunks.chunk_bounds(con, f"SELECT run_id FROM runs {where(conds)}",
                                      params, runs, CHUNK_RUNS):
        mine = dict(params)
        extra, span_range = chunks.range_filters(bounds, "run_id", "s.trace_id", mine)
        calls = _SPAN_CALLS.format(
            runs=f"AND s.trace_id IN (SELECT run_id FROM scope) {span_range}")
        scope = f"SELECT run_id, task_class FROM runs {where([*conds, *extra])}"
        parts.append(frame(con, _ESTIMATES_SQL.format(scope=scope, calls=calls, calls_mode=""),
                           mine))
    return parts


def estimate_scope(task_class: str | None) -> tuple[list[str], dict[str, Any]]:
    """The runs the estimates read: ``(conditions on runs, unaliased; parameters)``."""
    if task_class is None:
        return [], {}
    return ["task_class = $task_class"], {"task_class": task_class}


def fold_estimates(parts: list[pl.DataFrame], completed: CompletedRuns) -> Estimates:
    """The :class:`Estimates` of the chunks' sums and counts ``parts`` and ``completed``
    (means: sums over counts, None where nothing was counted)."""
    rows = pl.concat(parts).group_by("kind", "task_class", "model").agg(
        pl.col("cost_sum", "tokens_sum", "price_sum").sum(),
        pl.col("cost_n", "tokens_n", "samples", "price_n").sum(),
    ) if parts else pl.DataFrame()
    workers: dict[tuple[str, str], WorkerEstimate] = {}
    synthesis: dict[str, float] = {}
    price: dict[str, float] = {}
    for row in rows.iter_rows(named=True):
        cost = _mean(row["cost_sum"], row["cost_n"])
        if row["kind"] == "worker":
            workers[(row["task_class"], row["model"])] = WorkerEstimate(
                cost, _mean(row["tokens_sum"], row["tokens_n"]), row["samples"]
            )
        else:
            if cost is not None:
                synthesis[row["task_class"]] = cost
            mean_price = _mean(row["price_sum"], row["price_n"])
            if mean_price is not None:
                price[row["task_class"]] = mean_price
    return Estimates(workers, synthesis, price, completed)
