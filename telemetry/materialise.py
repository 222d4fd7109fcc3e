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
  already counted. :mod:`telemetry.leaf_calls` is the one place that rule lives: it stamps
  ``spans.is_leaf_call`` on every span of the touched traces (a call that later gains an
  LLM-call child, or a twin, is re-stamped), and everything that sums call costs (run rows
  here, analytics by model and role) reads that column. A wrapper span that repeats its
  children's usage (an agent span over its chat calls, whatever usage and model it
  carries; a retry wrapper) is therefore never added again (README, "Cost rules").
  Tokens, ``llm_calls`` and ``failed_calls`` count the same leaf calls.
- **duplicate instrumentation**: two instrumentations of one call (an SDK that traces
  itself plus an instrumentation of it) record it twice as siblings or cousins, which the
  leaf rule cannot see. :data:`telemetry.leaf_calls.DUPLICATE_RULE` says when two leaf
  calls are one; the one kept is the one with a reported cost, else with a cache split,
  else the earliest. The other stays in the store with ``is_leaf_call`` false and
  ``spans.duplicate_of`` set to the kept span's id, and is counted in
  ``runs.duplicate_calls``.
- ``cache_detail_missing_calls``: leaf calls whose computed cost is an upper bound (no
  cache split on a model that prices cache reads apart).
- ``unpriced_calls``: leaf calls with ``cost_source = 'unpriced'`` or no cost: they add
  nothing to ``cost_usd`` and are counted so a reader can see the cost is a lower bound.
- the run attributes (``cliff.max_workers``, ``cliff.ceiling_usd``, ``cliff.policy``,
  ``cliff.workers_*``, ``cliff.estimate_usd``, ``cliff.breach``, ``cliff.replay_of``) are
  read from the root span's attributes JSON; ``planner_model`` / ``synthesis_model``
  from the first ``plan`` / ``synthesis`` span (request model, else response model).
- times and duration are the root span's.

- **incomplete runs**: a trace whose root span never arrived (its process was killed)
  becomes, once no span of it has arrived and none has ended for
  ``settings.incomplete_grace_s()`` (10 minutes by default), a run with status
  ``incomplete``: the cost, tokens and calls of the leaf calls that did arrive, the task
  class of its earliest span that has one, times from its earliest start to its latest
  end, no run attributes. It is counted everywhere a run is. If the root arrives later
  the row is replaced by the complete run. The sweep runs on write (:func:`sweep_orphans`).

Where a write reads: only the spans of the traces it touches, and only the spans ingested
since the first span of those traces arrived: ``open_traces`` (schema.py) remembers, for
every trace whose root has not arrived, when its first span was ingested; ``spans`` rows
are appended in ingestion order, so DuckDB's zone maps on ``ingested_at`` skip every older
row group and a write does not read (or scan) the history kept in the store. Those spans
are copied once into the temporary table :data:`SCOPE_SPANS`; leaf flags, run rows and the
incident rules read it, and the runs written are left in :data:`TOUCHED_RUNS` for the
incident and alert rules.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb

from cliffwatch import settings
from cliffwatch.telemetry import conventions as cv
from cliffwatch.telemetry import estimate_inputs, leaf_calls
from cliffwatch.telemetry.conventions import Role

SCOPE = "cliff_scope"
"""Temporary table of the traces a write materialises: ``trace_id``, ``incomplete_ok``
(the trace may become an incomplete run: it was swept before, or is being swept)."""

SCOPE_SPANS = "cliff_scope_spans"
"""Temporary table of the spans of :data:`SCOPE` a write reads (root rows keep their
attributes JSON; other rows have NULL there)."""

TOUCHED_ROOTS = "cliff_touched_roots"
"""Temporary table of the root spans a write read: ``trace_id``, ``attributes`` (JSON)."""

TOUCHED_RUNS = "cliff_touched_runs"
"""Temporary table (the columns of ``runs``) of the run rows a write inserted or replaced:
what :mod:`telemetry.incident_rules` and :mod:`telemetry.alert_rules` judge."""

SWEEP_LIMIT = 1000
"""Orphan traces one write turns into incomplete runs at most (the rest wait for the next)."""


_ROOT_KEYS: tuple[str, ...] = (
    cv.CLIFF_STATUS, cv.CLIFF_BREACH, cv.CLIFF_WORKERS_PROPOSED, cv.CLIFF_WORKERS_DISPATCHED,
    cv.CLIFF_WORKERS_FAILED, cv.CLIFF_WORKERS_CANCELLED, cv.CLIFF_MAX_WORKERS,
    cv.CLIFF_CEILING_USD, cv.CLIFF_ESTIMATE_USD, cv.CLIFF_POLICY, cv.CLIFF_REPLAY_OF,
    cv.CLIFF_ROLE,
)
"""The root span attributes a run row reads, extracted in one parse of the root's JSON
(``json_extract_string`` with a list of paths) into ``root_attrs``: one ``->>`` per key
parsed the document once per key (a quarter of the statement's CPU)."""

_ROOT_ATTRS = "json_extract_string(t.root.attributes, [{}])".format(
    ", ".join(f"'$.\"{key}\"'" for key in _ROOT_KEYS))


def _root_attr(key: str, sql_type: str | None = None) -> str:
    expr = f"r.root_attrs[{_ROOT_KEYS.index(key) + 1}]"
    return f"TRY_CAST({expr} AS {sql_type})" if sql_type else expr


_SCOPE_SPANS_SQL = """
CREATE OR REPLACE TEMP TABLE {scope_spans} AS
SELECT trace_id, span_id, parent_span_id, role, task_class, is_llm_call, status_code,
    cost_usd, cost_source, input_tokens, output_tokens, request_model, response_model,
    service_name, source, start_time_unix_nano, end_time_unix_nano, started_at, ended_at,
    duration_ms, cache_detail_missing, reported_cost_usd, cache_read_tokens,
    cache_creation_tokens, is_leaf_call, duplicate_of, price_input_usd_per_token,
    regexp_replace(request_model, '^.*/', '') AS model_asked,
    regexp_replace(response_model, '^.*/', '') AS model_answered,
    call_attrs[1] AS response_id, call_attrs[2] AS scope_name,
    call_attrs[3] AS subtask_index, call_attrs[4] AS error_type,
    CASE WHEN parent_span_id IS NULL THEN attributes END AS attributes
FROM (
    SELECT *, CASE WHEN is_llm_call THEN json_extract_string(
        attributes, ['$."gen_ai.response.id"', '$."otel.scope.name"',
                     '$."{subtask_index}"', '$."{error_type}"']) END AS call_attrs
    FROM spans
    WHERE {window} AND trace_id IN (SELECT trace_id FROM {scope})
)
"""



_RUN_COLUMNS = """
    run_id, task_class, started_at, ended_at, duration_ms, status, breach,
    cost_usd, input_tokens, output_tokens, llm_calls, unpriced_calls, failed_calls,
    workers_proposed, workers_dispatched, workers_failed, workers_cancelled,
    max_workers, ceiling_usd, estimate_usd, policy, planner_model, synthesis_model,
    replay_of, service_name, source, materialised_at, duplicate_calls,
    cache_detail_missing_calls, {estimate_inputs}
"""

_MATERIALISE_RUNS = """
INSERT INTO {touched_runs} ({columns})
WITH
{estimate_ctes},
t AS (
    SELECT s.trace_id,
        sum(s.cost_usd) FILTER (WHERE f.is_leaf) AS cost_usd,
        sum(coalesce(s.input_tokens, 0)) FILTER (WHERE f.is_leaf) AS input_tokens,
        sum(coalesce(s.output_tokens, 0)) FILTER (WHERE f.is_leaf) AS output_tokens,
        count(*) FILTER (WHERE f.is_leaf) AS llm_calls,
        count(*) FILTER (WHERE f.is_leaf AND (s.cost_usd IS NULL OR s.cost_source = 'unpriced'))
            AS unpriced_calls,
        count(*) FILTER (WHERE f.is_leaf AND s.status_code = 'error') AS failed_calls,
        count(*) FILTER (WHERE f.is_leaf AND s.cache_detail_missing) AS cache_detail_missing_calls,
        count(*) FILTER (WHERE f.duplicate_of IS NOT NULL) AS duplicate_calls,
        arg_min(s.task_class, s.start_time_unix_nano)
            FILTER (WHERE s.task_class IS NOT NULL) AS any_task_class,
        arg_min(s.service_name, s.start_time_unix_nano)
            FILTER (WHERE s.service_name IS NOT NULL) AS any_service_name,
        arg_min(coalesce(s.request_model, s.response_model), s.start_time_unix_nano)
            FILTER (WHERE s.role = 'plan') AS planner_model,
        arg_min(coalesce(s.request_model, s.response_model), s.start_time_unix_nano)
            FILTER (WHERE s.role = 'synthesis') AS synthesis_model,
        min(s.started_at) AS first_started_at, max(s.ended_at) AS last_ended_at,
        arg_min(s.source, s.start_time_unix_nano) AS first_source,
        -- The root: the earliest span without a parent (ties: the lowest span id).
        arg_min({{'task_class': s.task_class, 'started_at': s.started_at,
                  'ended_at': s.ended_at, 'duration_ms': s.duration_ms,
                  'status_code': s.status_code, 'attributes': s.attributes,
                  'service_name': s.service_name, 'source': s.source}},
                (s.start_time_unix_nano, s.span_id))
            FILTER (WHERE s.parent_span_id IS NULL) AS root
    FROM {scope_spans} AS s JOIN {flags} AS f USING (trace_id, span_id)
    GROUP BY s.trace_id
),
r AS (
    SELECT t.*, t.root IS NOT NULL AS is_root, {root_attrs} AS root_attrs,
        est.{estimate_inputs}
    FROM t JOIN {scope} AS sc USING (trace_id) LEFT JOIN est USING (trace_id)
    -- A trace without its root may become an incomplete run (sc.incomplete_ok).
    WHERE t.root IS NOT NULL OR sc.incomplete_ok
)
SELECT
    r.trace_id,
    coalesce(r.root.task_class, r.any_task_class, r.root.service_name, r.any_service_name,
             'unknown'),
    CASE WHEN r.is_root THEN r.root.started_at ELSE r.first_started_at END,
    CASE WHEN r.is_root THEN r.root.ended_at ELSE r.last_ended_at END,
    CASE WHEN r.is_root THEN r.root.duration_ms
        ELSE date_diff('microsecond', r.first_started_at, r.last_ended_at) / 1000.0 END,
    CASE WHEN NOT r.is_root THEN '{incomplete}' ELSE
        coalesce({status}, CASE WHEN r.root.status_code = 'error' THEN 'failed' ELSE 'ok' END)
    END,
    {breach},
    coalesce(r.cost_usd, 0.0),
    coalesce(r.input_tokens, 0), coalesce(r.output_tokens, 0),
    r.llm_calls, r.unpriced_calls, r.failed_calls,
    {proposed}, {dispatched}, {failed}, {cancelled},
    {max_workers}, {ceiling_usd}, {estimate_usd}, {policy},
    r.planner_model, r.synthesis_model,
    {replay_of}, r.root.service_name,
    CASE WHEN r.is_root THEN r.root.source ELSE r.first_source END, $materialised_at,
    r.duplicate_calls, r.cache_detail_missing_calls, r.{estimate_inputs}
FROM r
-- A trace with no LLM call is not a run (an agent built outside any run emits one), unless
-- its root is a run span cliffwatch recorded (a run rejected before any call).
WHERE r.llm_calls > 0 OR {own_run}
"""
"""One aggregate over the scope's spans, one row per trace (the root is the ``arg_min`` of
``(start_time_unix_nano, span_id)`` over spans without a parent), then one row per run. A
statement of one CTE per part (calls, duplicates, info, roots by a window) joined back
together took twice as long on bench/store_write.py's batch (137 runs, 1M runs of history).
"""


_ESTIMATE_CALLS = f"""
    SELECT s.trace_id, s.role, s.cost_usd, s.output_tokens, s.status_code,
        coalesce(s.request_model, s.response_model) AS model, s.price_input_usd_per_token,
        s.subtask_index, s.error_type
    FROM {SCOPE_SPANS} AS s JOIN {leaf_calls.FLAGS} AS f USING (trace_id, span_id)
    WHERE f.is_leaf AND s.role IN ('{Role.WORKER}', '{Role.SYNTHESIS}', '{Role.CRITIC}')
"""
"""The scope's leaf calls a run's class-estimate sums read (telemetry/estimate_inputs.py)."""


def materialise_sql() -> str:
    """The statement that builds the ``runs`` rows of the traces in :data:`SCOPE` from
    :data:`SCOPE_SPANS` and their leaf flags, into :data:`TOUCHED_RUNS`.

    Returns:
        SQL taking one named parameter, ``$materialised_at`` (TIMESTAMP, UTC).
    """
    return _MATERIALISE_RUNS.format(
        touched_runs=TOUCHED_RUNS,
        scope_spans=SCOPE_SPANS,
        scope=SCOPE,
        columns=_RUN_COLUMNS.format(estimate_inputs=estimate_inputs.COLUMN),
        estimate_ctes=estimate_inputs.ctes(_ESTIMATE_CALLS),
        estimate_inputs=estimate_inputs.COLUMN,
        root_attrs=_ROOT_ATTRS,
        flags=leaf_calls.FLAGS,
        incomplete=cv.RunStatus.INCOMPLETE,
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


def _window(since: datetime | None) -> str:
    # A literal, not a parameter, so that DuckDB prunes row groups by their zone maps.
    return "TRUE" if since is None else f"ingested_at >= TIMESTAMP '{since.isoformat()}'"


def _materialise_scope(
    con: duckdb.DuckDBPyConnection, since: datetime | None, materialised_at: datetime
) -> datetime | None:
    """Stamp the leaf flags of the traces in :data:`SCOPE` and add their run rows to
    :data:`TOUCHED_RUNS`, reading only spans ingested at or after ``since`` (None: all).
    Returns ``since``: a run row this rebuilds was materialised no earlier."""
    window = _window(since)
    con.execute(_SCOPE_SPANS_SQL.format(
        scope_spans=SCOPE_SPANS, window=window, scope=SCOPE,
        subtask_index=cv.CLIFF_SUBTASK_INDEX, error_type=cv.ERROR_TYPE))
    leaf_calls.stamp_leaf_calls(con, SCOPE_SPANS, window)
    con.execute(materialise_sql(), {"materialised_at": materialised_at}).fetchall()
    con.execute(f"""INSERT INTO {TOUCHED_ROOTS}
        SELECT trace_id, attributes FROM {SCOPE_SPANS} WHERE parent_span_id IS NULL""")
    return since


_BATCH_SCOPE = """
CREATE OR REPLACE TEMP TABLE {scope} AS
SELECT b.trace_id,
    bool_or(b.parent_span_id IS NULL) AS root_in_batch,
    max(b.end_time_unix_nano) AS last_end_ns,
    coalesce(bool_or(o.swept_at IS NOT NULL), FALSE) AS incomplete_ok,
    min(o.first_ingested_at) AS first_ingested_at,
    count(o.trace_id) > 0 AS was_open
FROM {batch} AS b LEFT JOIN open_traces AS o USING (trace_id)
GROUP BY b.trace_id
"""

_TRACK = (
    # Which of the scope's traces now have their root (in the batch or read with it).
    f"""CREATE OR REPLACE TEMP TABLE cliff_tracked AS
    SELECT sc.trace_id, sc.was_open, make_timestamp(sc.last_end_ns // 1000) AS last_ended_at,
        sc.root_in_batch OR sc.trace_id IN (
            SELECT trace_id FROM {SCOPE_SPANS} WHERE parent_span_id IS NULL) AS rooted
    FROM {SCOPE} AS sc""",
    """UPDATE open_traces AS o
    SET last_ingested_at = $now, last_ended_at = greatest(o.last_ended_at, t.last_ended_at),
        rooted_at = CASE WHEN t.rooted THEN coalesce(o.rooted_at, $now) END
    FROM cliff_tracked AS t WHERE t.was_open AND o.trace_id = t.trace_id""",
    """INSERT INTO open_traces
    SELECT trace_id, $now, $now, last_ended_at, NULL, CASE WHEN rooted THEN $now END
    FROM cliff_tracked WHERE NOT was_open""",
    # Rooted more than the grace period ago: a span arriving later is merged by the sweep.
    "DELETE FROM open_traces WHERE rooted_at < $cutoff",
)


def _track_open_traces(
    con: duckdb.DuckDBPyConnection, now: datetime, cutoff: datetime, *, any_open: bool = True,
    any_expired: bool = True,
) -> None:
    """Keep ``open_traces`` exact for the batch's traces (schema.py says what it holds);
    ``any_open``: whether any of them was in ``open_traces`` already (else its ``UPDATE``
    has nothing to do and is not run); ``any_expired``: whether a row was rooted before
    ``cutoff`` before this write (else its ``DELETE`` has nothing to do: the rows it
    writes are rooted now or not at all)."""
    statements = [_TRACK[0], *(_TRACK[1:2] if any_open else ()), _TRACK[2],
                  *(_TRACK[3:] if any_expired else ())]
    for sql in statements:
        params = {k: v for k, v in (("now", now), ("cutoff", cutoff)) if f"${k}" in sql}
        con.execute(sql, params or None)


def _grace(grace_s: float | None) -> float:
    return settings.incomplete_grace_s() if grace_s is None else grace_s


_DUE = """FROM open_traces
        WHERE rooted_at IS NULL AND last_ingested_at < $cutoff AND last_ended_at < $cutoff
            AND (swept_at IS NULL OR last_ingested_at > swept_at)"""
"""The orphan traces due for a sweep (:func:`sweep_orphans`), at ``$cutoff``."""


def sweep_orphans(
    con: duckdb.DuckDBPyConnection, now: datetime, grace_s: float | None = None
) -> tuple[bool, datetime | None]:
    """Turn traces whose root never arrived into ``incomplete`` runs (module docstring).

    A trace is swept once no span of it arrived (``ingested_at``, wall clock) and none
    ended (span end time) for ``grace_s`` seconds, and again whenever spans arrived after
    its last sweep. At most :data:`SWEEP_LIMIT` traces per call. A swept trace whose root
    is in the store after all (a late span of a finished run) is materialised as usual,
    reading its whole history, and leaves ``open_traces``.

    Args:
        con: the write's connection, after :func:`materialise_runs` (its temp tables).
        now: naive UTC wall-clock time of the write.
        grace_s: default ``settings.incomplete_grace_s()``.

    Returns:
        ``(swept, since)``: whether any trace was swept, and the earliest
        ``materialised_at`` a run row it rebuilt can already have (None: any).
    """
    cutoff = now - timedelta(seconds=_grace(grace_s))
    due = _DUE
    # Most writes find no orphan due: one look, no table.
    if not con.execute(f"SELECT EXISTS (SELECT 1 {due})", {"cutoff": cutoff}).fetchall()[0][0]:
        return False, None
    con.execute(f"""CREATE OR REPLACE TEMP TABLE {SCOPE} AS
        SELECT trace_id, TRUE AS incomplete_ok, first_ingested_at {due}
        ORDER BY last_ingested_at LIMIT {SWEEP_LIMIT}""", {"cutoff": cutoff})
    since = con.execute(f"SELECT min(first_ingested_at) FROM {SCOPE}").fetchall()[0][0]
    finished = con.execute(f"""SELECT count(*) FROM runs
        WHERE status <> '{cv.RunStatus.INCOMPLETE}' AND run_id IN (SELECT trace_id FROM {SCOPE})
        """).fetchall()[0][0]
    # A trace that has a complete run got a late span: read its whole history.
    window = _materialise_scope(con, None if finished else since, now)
    con.execute(f"""UPDATE open_traces SET swept_at = $now, rooted_at = CASE WHEN trace_id IN (
            SELECT trace_id FROM {SCOPE_SPANS} WHERE parent_span_id IS NULL) THEN $now END
        WHERE trace_id IN (SELECT trace_id FROM {SCOPE})""", {"now": now})
    return True, window


_REPLACE_RUNS = (
    # A run rebuilt was materialised before no earlier than its trace's first span was
    # ingested (the window: rows sit in materialised_at order, so zone maps prune the rest).
    f"""DELETE FROM runs WHERE {{window}}
        AND run_id IN (SELECT run_id FROM {TOUCHED_RUNS})""",
    f"INSERT INTO runs BY NAME SELECT * FROM {TOUCHED_RUNS}",
)


def replace_runs(con: duckdb.DuckDBPyConnection, since: datetime | None) -> int:
    """Replace the ``runs`` rows of the runs in :data:`TOUCHED_RUNS` by those rows: a
    delete of their old rows materialised at or after ``since`` (None: any time) and an
    insert (``runs`` has no key since schema version 6, schema.py).

    Returns:
        The number of rows inserted.
    """
    window = "TRUE" if since is None else (
        f"materialised_at >= TIMESTAMP '{since.isoformat(sep=' ')}'")
    con.execute(_REPLACE_RUNS[0].format(window=window)).fetchall()
    rows = con.execute(_REPLACE_RUNS[1]).fetchall()
    return int(rows[0][0]) if rows else 0


def materialise_runs(
    con: duckdb.DuckDBPyConnection,
    batch_view: str,
    materialised_at: datetime,
    *,
    grace_s: float | None = None,
) -> int:
    """Insert or replace the ``runs`` rows of every trace in ``batch_view`` that has a root,
    then sweep orphan traces into incomplete runs (:func:`sweep_orphans`).

    First stamps ``spans.is_leaf_call`` on the spans of those traces (the leaf-call rule
    of the module docstring), then builds the run rows from the stamped leaf calls.
    Idempotent: running it again over the same spans yields the same rows (only
    ``materialised_at`` changes). Leaves the rows written in :data:`TOUCHED_RUNS`.

    Args:
        con: a read-write connection (the caller owns the transaction) on which the
            batch's spans were just inserted with ``ingested_at = materialised_at``.
        batch_view: table or view whose ``trace_id`` values name the touched traces
            (with ``parent_span_id`` and ``end_time_unix_nano``: the write's batch).
        materialised_at: naive UTC wall-clock timestamp of the write, stored in
            ``runs.materialised_at``.
        grace_s: the incomplete-run grace period; default ``settings.incomplete_grace_s()``.

    Returns:
        The number of ``runs`` rows inserted or replaced.
    """
    con.execute(f"CREATE OR REPLACE TEMP TABLE {TOUCHED_RUNS} AS SELECT * FROM runs LIMIT 0")
    con.execute(f"CREATE OR REPLACE TEMP TABLE {TOUCHED_ROOTS} (trace_id VARCHAR, attributes JSON)")
    con.execute(_BATCH_SCOPE.format(scope=SCOPE, batch=batch_view))
    cutoff = materialised_at - timedelta(seconds=_grace(grace_s))
    # Looked at before the batch's traces are tracked: tracking only makes rows rooted now
    # (not expired) and ingested now (not due), so what is not there now is not after.
    since, any_open, any_expired, maybe_due = con.execute(f"""
        SELECT min(first_ingested_at), bool_or(was_open),
            EXISTS (SELECT 1 FROM open_traces WHERE rooted_at < $cutoff),
            EXISTS (SELECT 1 {_DUE})
        FROM {SCOPE}""", {"cutoff": cutoff}).fetchall()[0]
    window = _materialise_scope(
        con, materialised_at if since is None else since, materialised_at)
    _track_open_traces(con, materialised_at, cutoff, any_open=bool(any_open),
                       any_expired=bool(any_expired))
    swept, swept_window = (sweep_orphans(con, materialised_at, grace_s) if maybe_due
                           else (False, None))
    if swept:
        window = None if swept_window is None or window is None else min(window, swept_window)
    return replace_runs(con, window)
