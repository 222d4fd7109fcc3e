"""The leaf-call rule: which LLM calls of a trace count towards its run (the module
docstring of telemetry/materialise.py states it), stamped on ``spans.is_leaf_call`` and
``spans.duplicate_of``.

:func:`stamp_leaf_calls` is called by :func:`telemetry.materialise.materialise_runs` on the
spans of the traces a write touches (its temporary table of them); it leaves the flags in the
temporary table ``cliff_flags`` (``trace_id``, ``span_id``, ``is_leaf``, ``duplicate_of``,
``changed``), which the run rows and ``cliffwatch watch`` (telemetry/clickhouse/watch.py) read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb

FLAGS = "cliff_flags"
"""Temporary table of the flags of a write's spans (module docstring)."""

_DUPLICATES = """
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
"""
"""The calls of :data:`_LEAF_FLAGS`'s ``leaf`` that are a second record of another
(:data:`DUPLICATE_RULE`), with the kept call's id."""

_NO_DUPLICATES = "SELECT NULL::VARCHAR AS trace_id, NULL::VARCHAR AS span_id, " \
    "NULL::VARCHAR AS duplicate_of WHERE FALSE"
"""No duplicates: a scope where no trace holds LLM calls of two instrumentation scopes,
which the rule needs (its self-join of every trace's leaf calls is half the cost of the
leaf flags otherwise)."""

_SHAPE = """
SELECT EXISTS (
        SELECT 1 FROM {scope_spans} WHERE is_llm_call AND scope_name IS NOT NULL
        GROUP BY trace_id HAVING count(DISTINCT scope_name) > 1),
    EXISTS (
        SELECT 1 FROM {scope_spans} AS c JOIN {scope_spans} AS p
            ON p.trace_id = c.trace_id AND p.span_id = c.parent_span_id
        WHERE p.is_llm_call),
    EXISTS (
        SELECT 1 FROM {scope_spans}
        WHERE is_leaf_call IS DISTINCT FROM coalesce(is_llm_call, FALSE)
            OR duplicate_of IS NOT NULL)
"""
"""What the scope's traces hold: LLM calls of two instrumentation scopes in one trace (the
duplicate rule can match), an LLM call that is the parent of a span (it may have an
LLM-call descendant), and a span whose stored flags differ from those of a scope with
neither (every call a leaf, no duplicate)."""

_ALL_CALLS_LEAVES = """
CREATE OR REPLACE TEMP TABLE {flags} AS
SELECT trace_id, span_id, coalesce(is_llm_call, FALSE) AS is_leaf,
    NULL::VARCHAR AS duplicate_of,
    (is_leaf_call IS DISTINCT FROM coalesce(is_llm_call, FALSE)
        OR duplicate_of IS NOT NULL) AS changed
FROM {scope_spans}
"""
"""The flags of a scope where no LLM call is the parent of a span and no trace holds calls
of two instrumentation scopes: what :data:`_LEAF_FLAGS` computes then (no call has an
LLM-call descendant, so none is left out as a wrapper; no pair can be duplicates), without
its recursive walk of every call's ancestors (4.5 of 5 ms of the flags, planning
included, on bench/store_write.py's batch, where every call is a leaf as in the
orchestrator's own traces)."""

_LEAF_FLAGS = """
CREATE OR REPLACE TEMP TABLE {flags} AS
    WITH RECURSIVE
    s AS (SELECT * FROM {scope_spans}),
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
    dup AS ({dup})
    SELECT s.trace_id, s.span_id,
        l.span_id IS NOT NULL AND d.span_id IS NULL AS is_leaf,
        d.duplicate_of,
        (s.is_leaf_call IS DISTINCT FROM (l.span_id IS NOT NULL AND d.span_id IS NULL)
            OR s.duplicate_of IS DISTINCT FROM d.duplicate_of) AS changed
    FROM s
    LEFT JOIN leaf AS l USING (trace_id, span_id)
    LEFT JOIN dup AS d USING (trace_id, span_id)
"""

# Only rows whose flags change are written; the window lets the scan skip old row groups.
_UPDATE_FLAGS = """
UPDATE spans SET is_leaf_call = f.is_leaf, duplicate_of = f.duplicate_of
FROM (SELECT * FROM {flags} WHERE changed) AS f
WHERE {window} AND spans.trace_id = f.trace_id AND spans.span_id = f.span_id
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


def stamp_leaf_calls(con: duckdb.DuckDBPyConnection, scope_spans: str, window: str) -> None:
    """Compute the leaf flags of the spans in ``scope_spans`` into :data:`FLAGS` and write
    those that changed to ``spans``.

    The duplicate rule (:data:`DUPLICATE_RULE`) runs only when a trace holds LLM calls of
    two instrumentation scopes, the walk of the calls' ancestors only when an LLM call is
    the parent of a span (else every call is a leaf: :data:`_ALL_CALLS_LEAVES`); ``spans``
    is updated only when a flag changed.

    Args:
        con: the write's connection, inside its transaction.
        scope_spans: a table of the spans judged (telemetry/materialise.py's
            ``SCOPE_SPANS``: ids, parent, call columns, ``scope_name``, ``response_id``,
            ``model_asked``, ``model_answered``, the stored flags).
        window: SQL condition on ``spans`` that holds for every row of ``scope_spans``
            (a literal ``ingested_at`` bound, so the update's scan skips older row groups).
    """
    two_scopes, call_parents, leaves_changed = con.execute(
        _SHAPE.format(scope_spans=scope_spans)).fetchall()[0]
    if not (two_scopes or call_parents):
        con.execute(_ALL_CALLS_LEAVES.format(scope_spans=scope_spans, flags=FLAGS))
        changed = leaves_changed
    else:
        con.execute(_LEAF_FLAGS.format(scope_spans=scope_spans, duplicate_rule=DUPLICATE_RULE,
                                       dup=_DUPLICATES if two_scopes else _NO_DUPLICATES,
                                       flags=FLAGS))
        changed = con.execute(f"SELECT count(*) FROM {FLAGS} WHERE changed").fetchall()[0][0]
    if changed:
        con.execute(_UPDATE_FLAGS.format(window=window, flags=FLAGS)).fetchall()
