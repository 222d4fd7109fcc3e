"""The class estimates (:class:`analytics.recorded.Estimates`) read from the store.

Why its own file: it is the one read of class-wide means every what-if starts with (the
findings read it once for all their what-ifs). The means are ratios of sums and counts per
class and model. A DuckDB store of schema 7 or later keeps each run's sums on its ``runs``
row (telemetry/estimate_inputs.py, written with the row): one read of ``runs`` adds them up
(:data:`_RUNS_SQL`; at 1M runs 0.1 s against 6.8-9.2 s for the spans' read, issue 11).
Otherwise the spans are read: DuckDB groups every worker call by run and sub-task in one
query under the bulk-read memory bound (an older store opened read-only, until its first
write migrates it), and a ClickHouse store per run-id range chunk, the chunks' sums added
up.
"""

from __future__ import annotations

from typing import Any

import duckdb
import polars as pl

from cliffwatch.analytics import chunks
from cliffwatch.analytics.bulk_read import run_bounded
from cliffwatch.analytics.recorded import Estimates, WorkerEstimate
from cliffwatch.analytics.redo import CompletedRuns, load_completed_runs
from cliffwatch.analytics.store_access import frame, where
from cliffwatch.telemetry.estimate_inputs import COLUMN, SINCE_VERSION, span_calls, sum_ctes
from cliffwatch.telemetry.schema import META_TABLE

CHUNK_RUNS = 50_000
"""Runs per chunk of the estimates' read on a ClickHouse store (:func:`chunked_sums`)."""

_ESTIMATES_SQL = """
    WITH scope AS ({scope}), {sums}
    SELECT 'worker' AS kind, sc.task_class, m.model, sum(m.cost_usd) AS cost_sum,
        sum(m.priced)::BIGINT AS cost_n, sum(m.output_tokens) AS tokens_sum,
        sum(m.answered)::BIGINT AS tokens_n, sum(m.subtasks)::BIGINT AS samples,
        NULL::DOUBLE AS price_sum, 0::BIGINT AS price_n
    FROM est_models m JOIN scope sc ON sc.run_id = m.trace_id
    GROUP BY ALL
    UNION ALL
    SELECT 'synthesis', sc.task_class, NULL::VARCHAR, sum(st.stage_usd),
        count(st.stage_usd)::BIGINT, NULL::DOUBLE, 0::BIGINT, count(*)::BIGINT,
        sum(st.price_in), count(st.price_in)::BIGINT
    FROM est_stage st JOIN scope sc ON sc.run_id = st.trace_id
    GROUP BY ALL
"""
"""Sums and counts per (kind, class, model) whose ratios are the means, over the runs of
``{scope}`` (``run_id``, ``task_class``), from the spans: ``{sums}`` the per-run sums of
:func:`telemetry.estimate_inputs.sum_ctes` (the calls grouped per sub-task, then per run
and model; only those per-run rows are joined to their run's class: joining every call to
its run first took about a second more at 1M runs, issue 11). Every count is cast to
BIGINT in both branches: ClickHouse's ``count`` is UInt64, and a UNION of it with a BIGINT
literal would be a Variant column (the same SQL runs on both engines)."""

_RUNS_SQL = f"""
    SELECT 'worker' AS kind, task_class, w.model, sum(w.cost_usd) AS cost_sum,
        sum(w.priced)::BIGINT AS cost_n, sum(w.output_tokens) AS tokens_sum,
        sum(w.answered)::BIGINT AS tokens_n, sum(w.subtasks)::BIGINT AS samples,
        NULL::DOUBLE AS price_sum, 0::BIGINT AS price_n
    FROM (SELECT task_class, unnest({COLUMN}.workers) AS w FROM runs {{where}})
    GROUP BY ALL
    UNION ALL
    SELECT 'synthesis', task_class, NULL::VARCHAR, sum(e.stage_usd),
        count(e.stage_usd)::BIGINT, NULL::DOUBLE, 0::BIGINT, count(*)::BIGINT,
        sum(e.synthesis_price_input), count(e.synthesis_price_input)::BIGINT
    FROM (SELECT task_class, {COLUMN} AS e FROM runs {{where}})
    WHERE e.stage_usd IS NOT NULL OR e.synthesis_price_input IS NOT NULL
    GROUP BY ALL
"""
"""The sums and counts of :data:`_ESTIMATES_SQL` from the runs' own sums
(:data:`telemetry.estimate_inputs.COLUMN`, kept by the write path): one read of ``runs``
(``{where}``: on ``runs``, unaliased), no span read. The synthesis rows' ``samples`` count
only the runs with a priced synthesis or critic call (the spans' read counts every run
with one; nothing reads that count)."""


def _mean(total: float | None, n: int) -> float | None:
    return None if not n else float(total or 0.0) / n


def load_estimates(con: duckdb.DuckDBPyConnection, task_class: str | None = None) -> Estimates:
    """Per class figures from every recorded run of ``task_class`` (None: every class).

    Means, not medians: a counterfactual's spend is a sum over many runs, and the mean
    is the figure whose sum is unbiased. From the runs' own sums where the store keeps
    them (:func:`has_estimate_inputs`: :data:`_RUNS_SQL`); else on a DuckDB store one
    query over the spans (:data:`_ESTIMATES_SQL`)
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
    if has_estimate_inputs(con):
        parts = [frame(con, _RUNS_SQL.format(where=where(conds)), params)]
    elif isinstance(con, duckdb.DuckDBPyConnection):
        # the calls of the class's runs only (every run: no filter to build)
        runs = "AND s.trace_id IN (SELECT run_id FROM scope)" if conds else ""
        sql = _ESTIMATES_SQL.format(
            scope=f"SELECT run_id, task_class FROM runs {where(conds)}",
            sums=sum_ctes(span_calls(runs), materialized=True))
        parts = [run_bounded(con, lambda: frame(con, sql, params))]
    else:
        parts = chunked_sums(con, conds, params)
    return fold_estimates(parts, load_completed_runs(con, task_class))


def has_estimate_inputs(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the store keeps each run's estimate sums (a DuckDB store of schema 7 or
    later, telemetry/estimate_inputs.py; an older store opened read-only, one whose
    migration stopped half way, or a ClickHouse store, does not: the estimates then read
    the spans)."""
    if not isinstance(con, duckdb.DuckDBPyConnection):
        return False
    # the version, not the column: a migration stopped half way leaves it partly filled
    version = frame(con, f"SELECT max(TRY_CAST(value AS INTEGER)) AS v FROM {META_TABLE} "
                         "WHERE key = 'schema_version'")["v"][0]
    return version is not None and version >= SINCE_VERSION


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
        calls = span_calls(f"AND s.trace_id IN (SELECT run_id FROM scope) {span_range}")
        scope = f"SELECT run_id, task_class FROM runs {where([*conds, *extra])}"
        parts.append(frame(con, _ESTIMATES_SQL.format(scope=scope, sums=sum_ctes(calls)),
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
