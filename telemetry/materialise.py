"""Materialise ``runs`` rows from ``spans``: one set-based statement over touched traces.

A run is a trace (``run_id = trace_id``) whose root span (``parent_span_id IS NULL``) is
in the store and that holds at least one LLM call (or whose root is a run span cliffwatch
recorded, ``cliff.role = run``: a run rejected before any call): a trace with no LLM call
(an agent built outside any run, a health check) is not a run and never shows up as a $0
run in percentiles. The rules are generic, so they hold for cliffwatch's own traces and
for traces ingested over OTLP from other producers:

- ``task_class``: the root span's, else the earliest span's that has one, else the
  root's ``service_name``, else any span's, else ``'unknown'``.
- ``status``: the root's ``cliff.status`` attribute, else ``'failed'`` when the root's
  status code is ``error``, else ``'ok'``.
- ``cost_usd``: the sum of ``cost_usd`` over *leaf* LLM calls: spans with
  ``is_llm_call`` that have no LLM-call descendant and are not a second record of a call
  already counted. This module is the one place that rule lives: it stamps
  ``spans.is_leaf_call`` on every span of the touched traces (a call that later gains an
  LLM-call child, or a twin, is re-stamped), and everything that sums call costs (run rows
  here, analytics by model and role) reads that column. A wrapper span that repeats its
  children's usage (an agent span over its chat calls, whatever usage and model it
  carries; a retry wrapper) is therefore never added again (README, "Cost rules").
  Tokens, ``llm_calls`` and ``failed_calls`` count the same leaf calls.
- **duplicate instrumentation**: two instrumentations of one call (an SDK that traces
  itself plus an instrumentation of it) record it twice as siblings or cousins, which the
  leaf rule cannot see. :data:`DUPLICATE_RULE` says when two leaf calls are one; the one
  kept is the one with a reported cost, else with a cache split, else the earliest. The
  other stays in the store with ``is_leaf_call`` false and ``spans.duplicate_of`` set to
  the kept span's id, and is counted in ``runs.duplicate_calls``.
- ``cache_detail_missing_calls``: leaf calls whose computed cost is an upper bound (no
  cache split on a model that prices cache reads apart).
- ``unpriced_calls``: leaf calls with ``cost_source = 'unpriced'`` or no cost: they add
  nothing to ``cost_usd`` and are counted so a reader can see the cost is a lower bound.
- the run attributes (``cliff.max_workers``, ``cliff.ceiling_usd``, ``cliff.policy``,
  ``cliff.workers_*``, ``cliff.estimate_usd``, ``cliff.breach``, ``cliff.replay_of``) are
  read from the root span's attributes JSON; ``planner_model`` / ``synthesis_model``
  from the first ``plan`` / ``synthesis`` span (request model, else response model).
- times and duration are the root span's.

Only traces present in the write's batch are read (``trace_id IN (batch)``), so the cost
of a write does not grow with the history kept in the store.
"""

from __future__ import annotations

from datetime import datetime

import duckdb

from cliffwatch.telemetry import conventions as cv
from cliffwatch.telemetry.conventions import Role


def _root_attr(key: str, sql_type: str | None = None) -> str:
    expr = f"r.attributes->>'$.\"{key}\"'"
    return f"TRY_CAST({expr} AS {sql_type})" if sql_type else expr


_LEAF_FLAGS = """
UPDATE spans SET is_leaf_call = flags.is_leaf, duplicate_of = flags.duplicate_of
FROM (
    WITH RECURSIVE
    s AS MATERIALIZED (
        SELECT trace_id, span_id, parent_span_id, is_llm_call, start_time_unix_nano,
            end_time_unix_nano, input_tokens, output_tokens, reported_cost_usd,
            cache_read_tokens, cache_creation_tokens,
            regexp_replace(request_model, '^.*/', '') AS model_asked,
            regexp_replace(response_model, '^.*/', '') AS model_answered,
            attributes->>'$."gen_ai.response.id"' AS response_id,
            attributes->>'$."otel.scope.name"' AS scope_name
        FROM spans
        WHERE trace_id IN (SELECT DISTINCT trace_id FROM {batch})
    ),
    -- Every (LLM call, ancestor) pair, walking parent links upwards. The depth bound
    -- stops a malformed trace whose parent links form a cycle.
    up (trace_id, span_id, ancestor_id, depth) AS (
        SELECT trace_id, span_id, parent_span_id, 1
        FROM s WHERE is_llm_call AND parent_span_id IS NOT NULL
        UNION ALL
        SELECT up.trace_id, up.span_id, p.parent_span_id, up.depth + 1
        FROM up JOIN s AS p ON p.trace_id = up.trace_id AND p.span_id = up.ancestor_id
        WHERE p.parent_span_id IS NOT NULL AND up.depth < 256
    ),
    -- LLM calls that have an LLM-call descendant: they repeat usage counted below them.
    non_leaf AS (
        SELECT DISTINCT a.trace_id, a.span_id
        FROM up JOIN s AS a ON a.trace_id = up.trace_id AND a.span_id = up.ancestor_id
        WHERE a.is_llm_call
    ),
    -- Leaf calls, ranked within their trace by which of two records of one call is kept
    -- (one with a reported cost, then one with a cache split, then the earliest), and
    -- numbered by start time among the calls of their instrumentation with the same tokens.
    leaf AS MATERIALIZED (
        SELECT s.*,
            row_number() OVER (
                PARTITION BY s.trace_id
                ORDER BY reported_cost_usd IS NULL,
                    cache_read_tokens IS NULL AND cache_creation_tokens IS NULL,
                    start_time_unix_nano, span_id
            ) AS keep_rank,
            row_number() OVER (
                PARTITION BY s.trace_id, scope_name, input_tokens, output_tokens
                ORDER BY start_time_unix_nano, span_id
            ) AS occurrence
        FROM s LEFT JOIN non_leaf AS nl USING (trace_id, span_id)
        WHERE s.is_llm_call AND nl.span_id IS NULL
    ),
    -- The same call recorded by two instrumentations ({duplicate_rule}).
    dup AS (
        SELECT b.trace_id, b.span_id, arg_min(a.span_id, a.keep_rank) AS duplicate_of
        FROM leaf AS a JOIN leaf AS b
            ON a.trace_id = b.trace_id AND a.keep_rank < b.keep_rank
        WHERE a.scope_name IS DISTINCT FROM b.scope_name
            AND a.scope_name IS NOT NULL AND b.scope_name IS NOT NULL
            AND CASE
                WHEN a.response_id IS NOT NULL AND b.response_id IS NOT NULL
                    THEN a.response_id = b.response_id
                ELSE a.input_tokens = b.input_tokens
                    AND a.output_tokens = b.output_tokens
                    AND a.occurrence = b.occurrence
                    AND (a.model_asked IN (b.model_asked, b.model_answered)
                        OR a.model_answered IN (b.model_asked, b.model_answered))
                    AND a.start_time_unix_nano <= b.end_time_unix_nano
                    AND b.start_time_unix_nano <= a.end_time_unix_nano
            END
        GROUP BY b.trace_id, b.span_id
    )
    SELECT s.trace_id, s.span_id,
        l.span_id IS NOT NULL AND d.span_id IS NULL AS is_leaf,
        d.duplicate_of
    FROM s
    LEFT JOIN leaf AS l USING (trace_id, span_id)
    LEFT JOIN dup AS d USING (trace_id, span_id)
) AS flags
WHERE spans.trace_id = flags.trace_id AND spans.span_id = flags.span_id
"""

DUPLICATE_RULE = (
    "two leaf LLM calls of one trace from different instrumentation scopes are one call when "
    "they carry the same gen_ai.response.id, or, when either carries none, the same model "
    "(asked for or answered, provider prefix ignored), the same input and output token "
    "counts, overlapping times, and the same place (by start time) among their own "
    "instrumentation's calls with those token counts, so one call is matched to at most one "
    "call of each other instrumentation"
)
"""The duplicate-instrumentation rule, in words (the SQL of :data:`_LEAF_FLAGS`)."""


_MATERIALISE_RUNS = """
INSERT OR REPLACE INTO runs (
    run_id, task_class, started_at, ended_at, duration_ms, status, breach,
    cost_usd, input_tokens, output_tokens, llm_calls, unpriced_calls, failed_calls,
    workers_proposed, workers_dispatched, workers_failed, workers_cancelled,
    max_workers, ceiling_usd, estimate_usd, policy, planner_model, synthesis_model,
    replay_of, service_name, source, materialised_at, duplicate_calls,
    cache_detail_missing_calls
)
WITH
touched AS (SELECT DISTINCT trace_id FROM {batch}),
s AS MATERIALIZED (
    SELECT trace_id, span_id, parent_span_id, role, task_class, is_llm_call, status_code,
        is_leaf_call, cost_usd, cost_source, input_tokens, output_tokens, request_model,
        response_model, service_name, start_time_unix_nano, duplicate_of,
        cache_detail_missing
    FROM spans
    WHERE trace_id IN (SELECT trace_id FROM touched)
),
leaf AS (SELECT * FROM s WHERE is_leaf_call),
calls AS (
    SELECT trace_id,
        sum(cost_usd) AS cost_usd,
        sum(coalesce(input_tokens, 0)) AS input_tokens,
        sum(coalesce(output_tokens, 0)) AS output_tokens,
        count(*) AS llm_calls,
        count(*) FILTER (WHERE cost_usd IS NULL OR cost_source = 'unpriced') AS unpriced_calls,
        count(*) FILTER (WHERE status_code = 'error') AS failed_calls,
        count(*) FILTER (WHERE cache_detail_missing) AS cache_detail_missing_calls
    FROM leaf GROUP BY trace_id
),
duplicates AS (
    SELECT trace_id, count(*) AS duplicate_calls
    FROM s WHERE duplicate_of IS NOT NULL GROUP BY trace_id
),
info AS (
    SELECT trace_id,
        arg_min(task_class, start_time_unix_nano)
            FILTER (WHERE task_class IS NOT NULL) AS any_task_class,
        arg_min(service_name, start_time_unix_nano)
            FILTER (WHERE service_name IS NOT NULL) AS any_service_name,
        arg_min(coalesce(request_model, response_model), start_time_unix_nano)
            FILTER (WHERE role = 'plan') AS planner_model,
        arg_min(coalesce(request_model, response_model), start_time_unix_nano)
            FILTER (WHERE role = 'synthesis') AS synthesis_model
    FROM s GROUP BY trace_id
),
roots AS (
    SELECT * FROM spans
    WHERE parent_span_id IS NULL AND trace_id IN (SELECT trace_id FROM touched)
    QUALIFY row_number() OVER (
        PARTITION BY trace_id ORDER BY start_time_unix_nano, span_id) = 1
)
SELECT
    r.trace_id,
    coalesce(r.task_class, i.any_task_class, r.service_name, i.any_service_name, 'unknown'),
    r.started_at, r.ended_at, r.duration_ms,
    coalesce({status}, CASE WHEN r.status_code = 'error' THEN 'failed' ELSE 'ok' END),
    {breach},
    coalesce(c.cost_usd, 0.0),
    coalesce(c.input_tokens, 0), coalesce(c.output_tokens, 0),
    coalesce(c.llm_calls, 0), coalesce(c.unpriced_calls, 0), coalesce(c.failed_calls, 0),
    {proposed}, {dispatched}, {failed}, {cancelled},
    {max_workers}, {ceiling_usd}, {estimate_usd}, {policy},
    i.planner_model, i.synthesis_model,
    {replay_of}, r.service_name, r.source, $materialised_at,
    coalesce(d.duplicate_calls, 0), coalesce(c.cache_detail_missing_calls, 0)
FROM roots AS r
LEFT JOIN calls AS c USING (trace_id)
LEFT JOIN info AS i USING (trace_id)
LEFT JOIN duplicates AS d USING (trace_id)
-- A trace with no LLM call is not a run (an agent built outside any run emits one), unless
-- its root is a run span cliffwatch recorded (a run rejected before any call).
WHERE c.trace_id IS NOT NULL OR {own_run}
"""


def materialise_sql(batch_view: str) -> str:
    """The statement that (re)builds ``runs`` rows for the traces in ``batch_view``.

    Args:
        batch_view: a table or view with a ``trace_id`` column (the write's batch).

    Returns:
        SQL taking one named parameter, ``$materialised_at`` (TIMESTAMP, UTC).
    """
    return _MATERIALISE_RUNS.format(
        batch=batch_view,
        status=_root_attr(cv.CLIFF_STATUS),
        breach=_root_attr(cv.CLIFF_BREACH),
        proposed=_root_attr(cv.CLIFF_WORKERS_PROPOSED, "INTEGER"),
        dispatched=_root_attr(cv.CLIFF_WORKERS_DISPATCHED, "INTEGER"),
        failed=_root_attr(cv.CLIFF_WORKERS_FAILED, "INTEGER"),
        cancelled=_root_attr(cv.CLIFF_WORKERS_CANCELLED, "INTEGER"),
        max_workers=_root_attr(cv.CLIFF_MAX_WORKERS, "INTEGER"),
        ceiling_usd=_root_attr(cv.CLIFF_CEILING_USD, "DOUBLE"),
        estimate_usd=_root_attr(cv.CLIFF_ESTIMATE_USD, "DOUBLE"),
        policy=_root_attr(cv.CLIFF_POLICY),
        replay_of=_root_attr(cv.CLIFF_REPLAY_OF),
        own_run=f"{_root_attr(cv.CLIFF_ROLE)} = '{Role.RUN}'",
    )


def materialise_runs(
    con: duckdb.DuckDBPyConnection, batch_view: str, materialised_at: datetime
) -> int:
    """Insert or replace the ``runs`` rows of every trace in ``batch_view`` that has a root.

    First stamps ``spans.is_leaf_call`` on every span of those traces (the leaf-call rule
    of the module docstring), then builds the run rows from the stamped leaf calls.
    Idempotent: running it again over the same spans yields the same rows (only
    ``materialised_at`` changes).

    Args:
        con: a read-write connection (the caller owns the transaction).
        batch_view: table or view whose ``trace_id`` values name the touched traces.
        materialised_at: naive UTC timestamp stored in ``runs.materialised_at``.

    Returns:
        The number of ``runs`` rows inserted or replaced.
    """
    con.execute(_LEAF_FLAGS.format(batch=batch_view, duplicate_rule=DUPLICATE_RULE)).fetchall()
    rows = con.execute(
        materialise_sql(batch_view), {"materialised_at": materialised_at}
    ).fetchall()
    return int(rows[0][0]) if rows else 0
