"""The class estimates (:class:`analytics.recorded.Estimates`) read from the store, by
chunks of runs.

Why its own file: it is the one read of class-wide means every what-if starts with, and it
runs chunked like the what-if itself (:mod:`analytics.chunks`): per chunk of runs DuckDB
groups the chunk's calls by run and sub-task and returns sums and counts per class and
model, which add up across chunks into the means. Memory holds one chunk's groups, not one
per run of the store (at 1M runs, unchunked under the bulk-read memory bound it spilled:
20-30 s against 5.6 s unbounded, issue 11; one GROUP BY on a store of random trace ids,
10 s under 512 MB, 36 s under 256 MB). A DuckDB store's calls are written to Parquet per
chunk in one read of the spans (:func:`analytics.chunks.partition_by_chunk`), then each
chunk summed: a run-id range per chunk skips span blocks only in a store kept in trace-id
order. A ClickHouse store's chunks are run-id ranges.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
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
"""Runs per chunk of the estimates' read."""

_ESTIMATES_SQL = f"""
    WITH scope AS ({{scope}}),
    calls AS {{calls_mode}}({{calls}}),
    subtasks AS (
        SELECT task_class, trace_id, idx AS subtask_index, model,
            sum(cost_usd) AS cost_usd,
            count(*) FILTER (WHERE cost_usd IS NULL) AS unpriced,
            bool_or(cancelled) AS cancelled,
            max(output_tokens) FILTER (WHERE ok) AS output_tokens
        FROM calls JOIN scope ON calls.trace_id = scope.run_id
        WHERE role = '{Role.WORKER}'
        GROUP BY ALL
    ),
    workers AS (
        SELECT task_class, model,
            sum(cost_usd) FILTER (WHERE unpriced = 0) AS cost_sum,
            count(cost_usd) FILTER (WHERE unpriced = 0) AS cost_n,
            sum(output_tokens)::DOUBLE AS tokens_sum, count(output_tokens) AS tokens_n,
            count(*) AS samples
        FROM subtasks WHERE NOT cancelled AND model IS NOT NULL
        GROUP BY ALL
    ),
    stage AS (
        SELECT scope.task_class, calls.trace_id, sum(calls.cost_usd) AS cost_usd,
            avg(calls.price_in) FILTER (WHERE calls.role = '{Role.SYNTHESIS}') AS price_input
        FROM calls JOIN scope ON calls.trace_id = scope.run_id
        WHERE calls.role IN ('{Role.SYNTHESIS}', '{Role.CRITIC}')
        GROUP BY ALL
    )
    SELECT 'worker' AS kind, task_class, model, cost_sum, cost_n::BIGINT AS cost_n,
        tokens_sum, tokens_n::BIGINT AS tokens_n, samples::BIGINT AS samples,
        NULL::DOUBLE AS price_sum, 0::BIGINT AS price_n
    FROM workers
    UNION ALL
    SELECT 'synthesis', task_class, NULL::VARCHAR, sum(cost_usd), count(cost_usd)::BIGINT,
        NULL::DOUBLE, 0::BIGINT, count(*)::BIGINT, sum(price_input), count(price_input)::BIGINT
    FROM stage GROUP BY task_class
"""
"""Per chunk: sums and counts per (kind, class, model) whose ratios are the means
(``{calls_mode}``: empty, or ``NOT MATERIALIZED`` for calls read from a staged file). Every
count is cast to BIGINT in both branches: ClickHouse's ``count`` is UInt64, and a UNION of
it with a BIGINT literal would be a Variant column (the same SQL runs on both engines)."""

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

_PARTITION_SQL = f"""
    SELECT k.chunk, k.rk, c.role, c.cost_usd, c.output_tokens, c.ok, c.model, c.price_in,
        c.idx, c.cancelled, true AS leaf
    FROM ({_SPAN_CALLS.format(runs="")}) c JOIN ({{keys}}) k ON k.run_id = c.trace_id
"""
"""The calls of the runs ``{keys}`` (a query of ``run_id``, ``rk``, ``chunk``:
:func:`analytics.chunks.partition_by_chunk`'s), each with its run's chunk and integer
key, as :data:`_STAGED_CALLS` reads them."""

_STAGED_CALLS = """
    SELECT rk AS trace_id, role, cost_usd, output_tokens, ok, model, price_in, idx,
        cancelled
    FROM {staged} WHERE leaf
"""
"""The same calls from a chunk written by :func:`_one_scan_sums` (each run's integer key
``rk`` in place of its id)."""


def _mean(total: float | None, n: int) -> float | None:
    return None if not n else float(total or 0.0) / n


def load_estimates(con: duckdb.DuckDBPyConnection, task_class: str | None = None) -> Estimates:
    """Per class figures from every recorded run of ``task_class`` (None: every class).

    Means, not medians: a counterfactual's spend is a sum over many runs, and the mean
    is the figure whose sum is unbiased. Summed in chunks of :data:`CHUNK_RUNS` runs
    (sums and counts added across chunks; the means are those of one read, up to the
    order of float additions). On a DuckDB store of more than one chunk the spans are
    read once (:func:`_one_scan_sums`); on a ClickHouse store, by run-id range
    (:mod:`analytics.chunks`). The completed runs come from a second query
    (:func:`analytics.redo.load_completed_runs`).

    Args:
        con: a store connection.
        task_class: one class, or None for all.

    Returns:
        :class:`Estimates` (empty mappings where the store holds nothing to estimate from).
    """
    conds, params = estimate_scope(task_class)
    runs = frame(con, f"SELECT count(*) AS n FROM runs {where(conds)}", params)["n"][0]
    if runs > CHUNK_RUNS and isinstance(con, duckdb.DuckDBPyConnection):
        parts = run_bounded(con, lambda: _one_scan_sums(con, conds, params, runs))
        return fold_estimates(parts, load_completed_runs(con, task_class))
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
    return fold_estimates(parts, load_completed_runs(con, task_class))


def _one_scan_sums(
    con: duckdb.DuckDBPyConnection, conds: list[str], params: dict[str, Any], runs: int,
) -> list[pl.DataFrame]:
    """The sums and counts of the ``runs`` runs of ``conds`` per chunk of about
    :data:`CHUNK_RUNS` runs, the spans read once: their calls written to temporary
    Parquet files per chunk (:func:`analytics.chunks.partition_by_chunk`), then each
    chunk's summed. A chunk by run-id range reads every span block of a store whose spans
    are not in trace-id order (any real store: OTel trace ids are random), so the chunked
    read scanned the spans once per chunk: at 1M runs on such a store 23 s against 11 s
    so (issue 11)."""
    with tempfile.TemporaryDirectory(prefix="cliffwatch-estimates-") as tmp:
        files = chunks.partition_by_chunk(
            con, f"SELECT run_id, task_class FROM runs {where(conds)}", params,
            -(-runs // CHUNK_RUNS), _PARTITION_SQL, Path(tmp))
        return [_chunk_sums(con, chunk.rows, chunk.keys) for chunk in files]


def estimate_scope(task_class: str | None) -> tuple[list[str], dict[str, Any]]:
    """The runs the estimates read: ``(conditions on runs, unaliased; parameters)``."""
    if task_class is None:
        return [], {}
    return ["task_class = $task_class"], {"task_class": task_class}


def _chunk_sums(con: duckdb.DuckDBPyConnection, calls: str, keys: str) -> pl.DataFrame:
    """One chunk's sums and counts (:func:`fold_estimates` adds them up) from its calls
    written by :func:`_one_scan_sums` (``calls``, ``keys``: the SQL reading its calls and
    its runs, those of :func:`estimate_scope` within the chunk's range)."""
    # each reader of the calls reads its roles' rows from the file (not one materialised
    # copy of every call read back twice: a quarter of this query's CPU, issue 11)
    sql = _ESTIMATES_SQL.format(scope=f"SELECT rk AS run_id, task_class FROM {keys}",
                                calls=_STAGED_CALLS.format(staged=calls),
                                calls_mode="NOT MATERIALIZED ")
    return frame(con, sql)


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
