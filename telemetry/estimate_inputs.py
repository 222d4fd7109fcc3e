"""A run's share of its task class's estimates, kept on its ``runs`` row.

The what-if and the findings estimate work a run's own record does not hold (a sub-task a
replan would run, a synthesis a truncated plan still reaches) from class-wide means
(analytics/estimates.py, :class:`cliffwatch.analytics.recorded.Estimates`). Those means are
sums over every recorded run divided by counts; each run adds its own sums and counts.
Reading them from the spans means grouping every worker call of history per sub-task and
parsing two attributes of each (6-9 s of a 14 s what-if at 1M runs; issue 11), so the
write path keeps each run's sums on its row instead, in the column :data:`COLUMN`
(:data:`SQL_TYPE`), computed by the same statement that builds the row
(telemetry/materialise.py) from the same leaf calls, and filled for the runs of an older
store by the schema 7 migration (:data:`BACKFILL`, in committed chunks) from the stored
spans with the same SQL (:func:`ctes`). A run rebuilt or pruned takes its sums with it.
The same sums, not packed, are what analytics/estimates.py reads from the spans where a
store does not keep them (:func:`sum_ctes`).

Per run (NULL when the run has no worker, synthesis or critic leaf call):

- ``workers``: one entry per worker model: ``cost_usd`` the summed cost of its
  sub-tasks whose every call was priced, ``priced`` how many those are, ``output_tokens``
  the summed largest output of each sub-task's successful calls, ``answered`` how many
  sub-tasks had one, ``subtasks`` the sub-tasks (attempts of one ``cliff.subtask.index``
  on one model are one sub-task; a sub-task with a call cancelled in flight is left out:
  it did not run to an end).
- ``stage_usd``: the summed cost of the synthesis and critic calls (NULL: none priced).
- ``synthesis_price_input``: the mean USD per input token of the synthesis calls.

A ClickHouse store does not keep the column (its ``cliffwatch_runs`` twin leaves it out,
telemetry/clickhouse/tables.py): the estimates read its spans.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cliffwatch.telemetry import conventions as cv
from cliffwatch.telemetry.conventions import Role

if TYPE_CHECKING:  # schema.py imports this module: `cliffwatch --help` must not load duckdb
    import duckdb

COLUMN = "estimate_inputs"
"""The ``runs`` column holding a run's sums (module docstring)."""

SQL_TYPE = (
    "STRUCT(workers STRUCT(model VARCHAR, cost_usd DOUBLE, priced BIGINT, "
    "output_tokens DOUBLE, answered BIGINT, subtasks BIGINT)[], stage_usd DOUBLE, "
    "synthesis_price_input DOUBLE)"
)
"""DuckDB type of :data:`COLUMN`."""

CALL_COLUMNS = (
    "trace_id", "role", "cost_usd", "output_tokens", "status_code", "model",
    "price_input_usd_per_token", "subtask_index", "error_type",
)
"""What :func:`sum_ctes` reads of each leaf call: the span's columns of those names,
``model`` the request model else the response model, ``subtask_index`` and ``error_type``
the texts of the ``cliff.subtask.index`` and ``error.type`` attributes."""

_SUM_CTES = f"""
est_calls AS {{materialized}}({{calls}}),
est_subtasks AS (
    SELECT trace_id, TRY_CAST(subtask_index AS INTEGER) AS idx, model,
        sum(cost_usd) AS cost_usd, count(*) FILTER (WHERE cost_usd IS NULL) AS unpriced,
        bool_or(coalesce(error_type = '{cv.ERROR_TYPE_CANCELLED}', false)) AS cancelled,
        max(output_tokens) FILTER (WHERE status_code <> 'error') AS output_tokens
    FROM est_calls WHERE role = '{Role.WORKER}'
    GROUP BY ALL
),
est_models AS (
    SELECT trace_id, model,
        sum(cost_usd) FILTER (WHERE unpriced = 0) AS cost_usd,
        count(cost_usd) FILTER (WHERE unpriced = 0) AS priced,
        sum(output_tokens)::DOUBLE AS output_tokens, count(output_tokens) AS answered,
        count(*) AS subtasks
    FROM est_subtasks WHERE NOT cancelled AND model IS NOT NULL
    GROUP BY ALL
),
est_stage AS (
    SELECT trace_id, sum(cost_usd) AS stage_usd,
        avg(price_input_usd_per_token) FILTER (WHERE role = '{Role.SYNTHESIS}') AS price_in
    FROM est_calls WHERE role IN ('{Role.SYNTHESIS}', '{Role.CRITIC}')
    GROUP BY trace_id
)"""

_PACK_CTES = f"""
est_workers AS (
    SELECT trace_id, list({{'model': model, 'cost_usd': cost_usd, 'priced': priced,
        'output_tokens': output_tokens, 'answered': answered, 'subtasks': subtasks}}
        ORDER BY model) AS workers
    FROM est_models GROUP BY trace_id
),
est AS (
    SELECT trace_id, {{'workers': w.workers, 'stage_usd': st.stage_usd,
        'synthesis_price_input': st.price_in}}::{SQL_TYPE} AS {COLUMN}
    FROM est_workers AS w FULL JOIN est_stage AS st USING (trace_id)
)"""


def sum_ctes(calls: str, *, materialized: bool = False) -> str:
    """Common table expressions (text to follow ``WITH`` or a comma) of the sums per run:
    ``est_models`` (``trace_id``, ``model``, then the fields of a ``workers`` entry of
    :data:`COLUMN`) and ``est_stage`` (``trace_id``, ``stage_usd``, ``price_in``: the
    synthesis calls' mean input price). ``calls``: a SELECT of leaf LLM calls with
    :data:`CALL_COLUMNS` (other roles may be in it; they are left out); ``materialized``:
    read it once for both (DuckDB only). Plain SQL that ClickHouse runs too
    (analytics/estimates.py reads a ClickHouse store's spans with it)."""
    return _SUM_CTES.format(calls=calls, materialized="MATERIALIZED " if materialized else "")


def ctes(calls: str, *, materialized: bool = False) -> str:
    """:func:`sum_ctes`, then ``est`` (``trace_id``, :data:`COLUMN`): one row per trace of
    ``calls`` that has a worker, synthesis or critic call (DuckDB)."""
    return f"{sum_ctes(calls, materialized=materialized)},{_PACK_CTES}"


def span_calls(runs: str = "") -> str:
    """The leaf calls :func:`sum_ctes` reads, from the ``spans`` table (aliased ``s``);
    ``runs``: SQL on ``s`` keeping the runs read (``AND ...``; nothing: every run)."""
    return f"""
    SELECT trace_id, role, cost_usd, output_tokens, status_code, model,
        price_input_usd_per_token, a[1] AS subtask_index, a[2] AS error_type
    FROM (
        SELECT s.trace_id, s.role, s.cost_usd, s.output_tokens, s.status_code,
            coalesce(s.request_model, s.response_model) AS model,
            s.price_input_usd_per_token,
            CASE WHEN s.role = '{Role.WORKER}' THEN json_extract_string(s.attributes,
                ['$."{cv.CLIFF_SUBTASK_INDEX}"', '$."{cv.ERROR_TYPE}"']) END AS a
        FROM spans s
        WHERE s.is_leaf_call AND s.role IN ('{Role.WORKER}', '{Role.SYNTHESIS}', '{Role.CRITIC}')
            {runs}
    )
"""


SINCE_VERSION = 7
"""The schema version from which a store keeps :data:`COLUMN` filled for every run (a
store below it may hold the column partly filled: a migration stopped half way)."""

BACKFILL_CHUNK_RUNS = 100_000
"""Runs one committed step of the migration's backfill fills (:data:`BACKFILL`): its
memory is one chunk's. One statement over the 1M-run bench store held 4.3 GB under
DuckDB's default memory limit and ran out of memory under 512 MB; ten chunks under
:data:`BACKFILL_MEMORY_LIMIT` took 51 s with a peak RSS of 664 MB (issue 11)."""

BACKFILL_MEMORY_LIMIT = "512MB"
"""DuckDB's ``memory_limit`` while the backfill runs (the connection's own limit is put
back after it)."""

BACKFILL = f"""
    UPDATE runs SET {COLUMN} = est.{COLUMN}
    FROM (WITH {ctes(span_calls("AND hash(s.trace_id) % $chunks = $chunk"), materialized=True)}
          SELECT * FROM est) AS est
    WHERE runs.run_id = est.trace_id
"""
"""One chunk of schema 7's backfill: :data:`COLUMN` of the stored runs whose run id hashes
to ``$chunk`` modulo ``$chunks``, from their spans. telemetry/store.py runs every chunk
(:func:`backfill_chunks` of them), each in its own transaction, before it raises the
version: memory holds one chunk's sums, and a stop half way leaves the version where it
was (the next read-write open fills every chunk again: the UPDATE sets, it never adds)."""


def backfill_chunks(con: duckdb.DuckDBPyConnection) -> int:
    """How many chunks :data:`BACKFILL` runs in: about :data:`BACKFILL_CHUNK_RUNS` stored
    runs each, at least one."""
    runs = con.execute("SELECT count(*) FROM runs").fetchall()[0][0]
    return max(1, -(-int(runs) // BACKFILL_CHUNK_RUNS))
