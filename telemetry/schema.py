"""The DuckDB store's schema: tables ``spans``, ``runs``, ``incidents`` and ``cliffwatch_meta``.

Times are ``TIMESTAMP`` in UTC (no zone stored). ``spans`` is the raw truth; ``runs`` is
materialised from it when a run's root span arrives (one row per trace), so analytics
reads one row per run instead of aggregating spans; ``incidents`` holds breaches and
runaways with their triage state. ``cliffwatch_meta`` marks a file as a cliffwatch store
and holds the schema version.
"""

from __future__ import annotations

from cliffwatch.telemetry import estimate_inputs
from cliffwatch.telemetry.rollups import REBUILD_STATEMENTS as RUN_ROLLUPS_REBUILD

SCHEMA_VERSION = 7
"""1: the first store. 2: spans gain the token breakdown, every rate used, the reported and
computed costs side by side and the duplicate mark; runs gain ``duplicate_calls`` and
``cache_detail_missing_calls`` (:data:`MIGRATIONS`). 3: tables ``open_traces`` (traces
without their root span: where the write path finds a trace's spans, and the incomplete-run
sweep) and ``class_p50`` (the runaway rule's per-class P50, refreshed on a bound). 4:
``spans`` without its primary key (:data:`SPANS_UNKEYED_MIGRATION`) and table
``seen_traces`` (:data:`SEEN_TRACES_DDL`), by which a write keeps re-sent spans out. 5: table
``run_rollups`` (per task class and day, :data:`RUN_ROLLUPS_DDL`), built from the runs
already stored (:data:`RUN_ROLLUPS_MIGRATION`). 6: ``runs`` without its primary key
(:data:`RUNS_UNKEYED_MIGRATION`); a write replaces the runs it materialises by a delete in a
bounded window and an insert (telemetry/materialise.py). 7: ``runs.estimate_inputs``, the
run's sums behind its class's estimates (telemetry/estimate_inputs.py), filled for the runs
already stored from their spans (:data:`telemetry.estimate_inputs.BACKFILL`, in committed
chunks before the version is raised: about 3 s per 100,000 runs)."""

META_TABLE = "cliffwatch_meta"

ALERTS_DDL = """
    CREATE TABLE IF NOT EXISTS alerts (
        alert_id VARCHAR PRIMARY KEY,
        source VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,
        task_class VARCHAR,
        run_id VARCHAR,
        raised_at TIMESTAMP NOT NULL,
        created_at TIMESTAMP NOT NULL,
        write_id VARCHAR NOT NULL,
        text VARCHAR NOT NULL,
        payload JSON NOT NULL
    )
"""
"""One row per alert ever raised: an incident (``alert_id`` = its incident id, source
``incident``) or a threshold rule firing (source ``rule``); written in the same
transaction as the incident (telemetry/alert_rules.py)."""

ALERT_DELIVERIES_DDL = """
    CREATE TABLE IF NOT EXISTS alert_deliveries (
        alert_id VARCHAR NOT NULL,
        webhook_id VARCHAR NOT NULL,
        webhook VARCHAR NOT NULL,
        status VARCHAR NOT NULL,
        attempts INTEGER NOT NULL,
        next_attempt_at TIMESTAMP,
        lease_until TIMESTAMP,
        last_error VARCHAR,
        last_http_status INTEGER,
        delivered_at TIMESTAMP,
        updated_at TIMESTAMP NOT NULL,
        PRIMARY KEY (alert_id, webhook_id)
    )
"""
"""The webhook outbox: one row per (alert, webhook). ``webhook_id`` is a hash of the URL and
``webhook`` a redacted form: the URL itself (a secret) is never stored
(telemetry/alerts.py)."""

SPAN_COLUMNS_V2: tuple[tuple[str, str], ...] = (
    ("input_tokens_reported", "BIGINT"),
    ("cache_read_tokens", "BIGINT"),
    ("cache_creation_tokens", "BIGINT"),
    ("reasoning_tokens", "BIGINT"),
    ("price_cache_read_usd_per_token", "DOUBLE"),
    ("price_cache_creation_usd_per_token", "DOUBLE"),
    ("price_reasoning_usd_per_token", "DOUBLE"),
    ("price_model_key", "VARCHAR"),
    ("reported_cost_usd", "DOUBLE"),
    ("computed_cost_usd", "DOUBLE"),
    ("cache_detail_missing", "BOOLEAN"),
    # Stamped by telemetry.materialise: the span_id of the span of the same trace that
    # records the same LLM call (a second instrumentation of it); NULL otherwise.
    ("duplicate_of", "VARCHAR"),
)
"""Columns schema version 2 added to ``spans`` (telemetry/records.py says what each holds)."""

OPEN_TRACES_DDL = """
    CREATE TABLE IF NOT EXISTS open_traces (
        trace_id VARCHAR NOT NULL,
        first_ingested_at TIMESTAMP NOT NULL,
        last_ingested_at TIMESTAMP NOT NULL,
        last_ended_at TIMESTAMP NOT NULL,
        swept_at TIMESTAMP,
        rooted_at TIMESTAMP
    )
"""
"""The traces written recently: one row per trace whose root span has not arrived (in-flight
traces, the orphans of killed processes) or arrived less than the incomplete-run grace
period ago (``rooted_at``), so the table stays small. ``first_ingested_at`` bounds where the
trace's spans sit in ``spans`` (rows are appended in ingestion order, so DuckDB's zone maps
on ``ingested_at`` skip older row groups); ``swept_at`` is set once a rootless trace became
an ``incomplete`` run (telemetry/materialise.py)."""

CLASS_P50_DDL = """
    CREATE TABLE IF NOT EXISTS class_p50 (
        task_class VARCHAR NOT NULL,
        p50_usd DOUBLE,
        class_runs BIGINT NOT NULL,
        runs_since INTEGER NOT NULL,
        refreshed_at TIMESTAMP NOT NULL
    )
"""
"""The runaway rule's P50 of each task class (``quantile_cont(cost_usd, 0.5)`` over all its
runs) with the run count it was computed over, the runs written to the class since and when
(telemetry/incident_rules.py says when it is refreshed)."""

SPANS_DDL_TEMPLATE = """
    CREATE TABLE IF NOT EXISTS {table} (
        trace_id VARCHAR NOT NULL,
        span_id VARCHAR NOT NULL,
        parent_span_id VARCHAR,
        name VARCHAR NOT NULL,
        started_at TIMESTAMP NOT NULL,
        ended_at TIMESTAMP NOT NULL,
        start_time_unix_nano BIGINT NOT NULL,
        end_time_unix_nano BIGINT NOT NULL,
        duration_ms DOUBLE NOT NULL,
        status_code VARCHAR NOT NULL,
        status_message VARCHAR,
        role VARCHAR NOT NULL,
        task_class VARCHAR,
        is_llm_call BOOLEAN NOT NULL,
        operation VARCHAR,
        provider VARCHAR,
        request_model VARCHAR,
        response_model VARCHAR,
        input_tokens BIGINT,
        output_tokens BIGINT,
        cost_usd DOUBLE,
        cost_source VARCHAR,
        price_input_usd_per_token DOUBLE,
        price_output_usd_per_token DOUBLE,
        service_name VARCHAR,
        source VARCHAR NOT NULL,
        attributes JSON,
        resource_attributes JSON,
        events JSON,
        ingested_at TIMESTAMP NOT NULL
    )
"""
"""The ``spans`` table as created (``{table}``: its name). No primary key since schema
version 4: DuckDB's key index on (trace_id, span_id) over millions of spans made every
write slower as history grew (issue 11); a write keeps a span already stored out with
:data:`SEEN_TRACES_DDL` instead (telemetry/write_pipeline.py). Columns added later by
``ALTER`` (:data:`SPANS_ALTER_COLUMNS`) follow these."""

SEEN_TRACES_DDL = """
    CREATE TABLE IF NOT EXISTS seen_traces (
        trace_key UBIGINT NOT NULL,
        first_ingested_at TIMESTAMP NOT NULL
    )
"""
"""Every trace ever written, one row each: ``trace_key`` is ``md5_number_lower(trace_id)``
(the low 64 bits of the id's MD5: stable across DuckDB versions, unlike ``hash``) and
``first_ingested_at`` the ``ingested_at`` of its first span, so every span of the trace
sits at or after it in ``spans`` (rows are appended in ingestion order; DuckDB's zone maps
on ``ingested_at`` skip older row groups). A write looks the batch's traces up here (a
scan of 16 bytes per trace, no index to maintain): a trace not found is new and its spans
need no duplicate check; a trace found is checked against its own window of ``spans``
only. Two traces sharing a key only widen that window; the check is on the ids
themselves. Kept when spans are pruned (a trace pruned and re-sent is then checked
against an empty window and stored again, as before version 4)."""

RUN_ROLLUPS_DDL = """
    CREATE TABLE IF NOT EXISTS run_rollups (
        task_class VARCHAR NOT NULL,
        day DATE NOT NULL,
        runs BIGINT NOT NULL,
        total_usd DOUBLE,
        max_usd DOUBLE,
        p50_usd DOUBLE,
        p95_usd DOUBLE,
        p99_usd DOUBLE,
        breaches BIGINT NOT NULL,
        unpriced_calls BIGINT NOT NULL,
        capped_runs BIGINT NOT NULL,
        updated_at TIMESTAMP NOT NULL
    )
"""
"""One row per (task class, UTC day of ``started_at``) with runs: ``runs``, ``total_usd`` and
``max_usd`` (USD), the exact ``p50_usd`` / ``p95_usd`` / ``p99_usd`` of that day's runs,
``breaches``, ``unpriced_calls``, ``capped_runs`` (runs with a max-workers cap) and
``updated_at`` (the write that last recomputed it); kept by the write path
(telemetry/rollups.py)."""

RUN_ROLLUPS_MIGRATION: tuple[str, ...] = (RUN_ROLLUPS_DDL, *RUN_ROLLUPS_REBUILD)
"""Version 5's roll-ups: the table, then its rows from every run already stored (one
GROUP BY over ``runs``; idempotent: the rebuild replaces every row)."""

RUNS_DDL_TEMPLATE = """
    CREATE TABLE IF NOT EXISTS {table} (
        run_id VARCHAR NOT NULL,
        task_class VARCHAR NOT NULL,
        started_at TIMESTAMP NOT NULL,
        ended_at TIMESTAMP NOT NULL,
        duration_ms DOUBLE NOT NULL,
        status VARCHAR NOT NULL,
        breach VARCHAR,
        cost_usd DOUBLE NOT NULL,
        input_tokens BIGINT NOT NULL,
        output_tokens BIGINT NOT NULL,
        llm_calls INTEGER NOT NULL,
        unpriced_calls INTEGER NOT NULL,
        failed_calls INTEGER NOT NULL,
        workers_proposed INTEGER,
        workers_dispatched INTEGER,
        workers_failed INTEGER,
        workers_cancelled INTEGER,
        max_workers INTEGER,
        ceiling_usd DOUBLE,
        estimate_usd DOUBLE,
        policy VARCHAR,
        planner_model VARCHAR,
        synthesis_model VARCHAR,
        replay_of VARCHAR,
        service_name VARCHAR,
        source VARCHAR NOT NULL,
        materialised_at TIMESTAMP NOT NULL
    )
"""
"""The ``runs`` table as created (``{table}``: its name): one row per run. No primary key
since schema version 6: DuckDB's key index over millions of runs made every write's upsert
slower as history grew (issue 11); :func:`telemetry.materialise.materialise_runs` deletes
the rows of the runs it rebuilds (within the window where they can sit: rows are appended
in ``materialised_at`` order, and a run is materialised no earlier than its first span was
ingested) and inserts the new ones, in the write's transaction. Columns added later by
``ALTER`` (:data:`RUNS_ALTER_COLUMNS`) follow these."""

RUNS_ALTER_COLUMNS: tuple[tuple[str, str], ...] = (
    ("duplicate_calls", "INTEGER DEFAULT 0"),
    ("cache_detail_missing_calls", "INTEGER DEFAULT 0"),
    (estimate_inputs.COLUMN, estimate_inputs.SQL_TYPE),
)
"""The ``runs`` columns added by ``ALTER`` after :data:`RUNS_DDL_TEMPLATE`'s, in order."""

RUNS_CLASS_TIME_INDEX = (
    "CREATE INDEX IF NOT EXISTS runs_class_time ON runs (task_class, started_at)"
)

RUNS_UNKEYED_MIGRATION: tuple[str, ...] = (
    "DROP TABLE IF EXISTS runs_unkeyed",
    RUNS_DDL_TEMPLATE.format(table="runs_unkeyed"),
    *(f"ALTER TABLE runs_unkeyed ADD COLUMN {name} {sql_type}"
      for name, sql_type in RUNS_ALTER_COLUMNS),
    # Insertion order is kept, so ``materialised_at`` stays in row order for the window.
    "INSERT INTO runs_unkeyed BY NAME SELECT * FROM runs ORDER BY materialised_at",
    "DROP TABLE runs",  # drops its indexes with it
    "ALTER TABLE runs_unkeyed RENAME TO runs",
    RUNS_CLASS_TIME_INDEX,
)
"""Version 6, once, on the first read-write open of an older store, inside the schema
transaction after :data:`DDL` (and after :data:`SPANS_UNKEYED_MIGRATION` when that runs):
DuckDB cannot drop a primary key, so ``runs`` is rebuilt without it, every row and column
kept, ordered by ``materialised_at`` (telemetry/store.py runs it)."""

_OPEN_TRACES_BACKFILL = """
    INSERT INTO open_traces
    SELECT trace_id, min(ingested_at), max(ingested_at), max(ended_at), NULL, NULL
    FROM spans GROUP BY trace_id
    HAVING count(*) FILTER (WHERE parent_span_id IS NULL) = 0
        AND trace_id NOT IN (SELECT trace_id FROM open_traces)
"""

SPANS_ALTER_COLUMNS: tuple[tuple[str, str], ...] = (("is_leaf_call", "BOOLEAN"), *SPAN_COLUMNS_V2)
"""The ``spans`` columns added by ``ALTER`` after :data:`SPANS_DDL_TEMPLATE`'s, in order."""

SEEN_TRACES_BACKFILL = """
    INSERT INTO seen_traces
    SELECT md5_number_lower(trace_id), min(ingested_at) FROM spans GROUP BY trace_id
"""
"""Fills :data:`SEEN_TRACES_DDL` from the spans of a store older than version 4."""

SPANS_UNKEYED_MIGRATION: tuple[str, ...] = (
    "DROP TABLE IF EXISTS spans_unkeyed",
    SPANS_DDL_TEMPLATE.format(table="spans_unkeyed"),
    *(f"ALTER TABLE spans_unkeyed ADD COLUMN {name} {sql_type}"
      for name, sql_type in SPANS_ALTER_COLUMNS),
    # Insertion order is kept (DuckDB's preserve_insertion_order), so ``ingested_at`` stays
    # in row order and its zone maps keep pruning.
    "INSERT INTO spans_unkeyed BY NAME SELECT * FROM spans",
    "DROP TABLE spans",
    "ALTER TABLE spans_unkeyed RENAME TO spans",
    SEEN_TRACES_BACKFILL,
)
"""Version 4, once, on the first read-write open of an older store, inside the schema
transaction after :data:`DDL`: DuckDB cannot drop a primary key, so ``spans`` is rebuilt
without it (every row and column kept), then :data:`SEEN_TRACES_BACKFILL`: 52 s and
6.8 GB resident for 1M runs / 7.6M spans (docs/sources.md#duckdb-primary-keys-and-zone-maps;
telemetry/store.py runs it)."""

MIGRATIONS: tuple[str, ...] = (
    *(
        f"ALTER TABLE spans ADD COLUMN IF NOT EXISTS {name} {sql_type}"
        for name, sql_type in SPAN_COLUMNS_V2
    ),
    *(f"ALTER TABLE runs ADD COLUMN IF NOT EXISTS {name} {sql_type}"
      for name, sql_type in RUNS_ALTER_COLUMNS),
    OPEN_TRACES_DDL,
    CLASS_P50_DDL,
    # Version 3: the traces of an older store that never got their root span (one scan).
    _OPEN_TRACES_BACKFILL,
    # Version 5: the per class and day roll-ups of the runs already stored.
    *RUN_ROLLUPS_MIGRATION,
)
"""Idempotent statements that bring a store of an older version up to this one; run by a
read-write open of a store whose version is below :data:`SCHEMA_VERSION` (after the tables
exist), so an old store migrates on its next write; then version 7's backfill
(:data:`telemetry.estimate_inputs.BACKFILL`, a transaction per chunk) and
:data:`VERSION_BUMP` (telemetry/store.py). A read-only open of an old store sees the old
columns until then."""

VERSION_BUMP = (
    f"UPDATE {META_TABLE} SET value = '{SCHEMA_VERSION}' "
    f"WHERE key = 'schema_version' AND TRY_CAST(value AS INTEGER) < {SCHEMA_VERSION}"
)
"""The last step of a migration: the store's version raised to :data:`SCHEMA_VERSION`."""

DDL: tuple[str, ...] = (
    f"""
    CREATE TABLE IF NOT EXISTS {META_TABLE} (
        key VARCHAR PRIMARY KEY,
        value VARCHAR NOT NULL
    )
    """,
    SPANS_DDL_TEMPLATE.format(table="spans"),
    RUNS_DDL_TEMPLATE.format(table="runs"),
    """
    CREATE TABLE IF NOT EXISTS incidents (
        incident_id VARCHAR PRIMARY KEY,
        kind VARCHAR NOT NULL,
        run_id VARCHAR NOT NULL,
        task_class VARCHAR,
        detected_at TIMESTAMP NOT NULL,
        detail VARCHAR NOT NULL,
        data JSON,
        status VARCHAR NOT NULL DEFAULT 'open',
        note VARCHAR,
        updated_at TIMESTAMP
    )
    """,
    ALERTS_DDL,
    ALERT_DELIVERIES_DDL,
    SEEN_TRACES_DDL,
    # Stamped by telemetry.materialise (LLM calls with no LLM-call descendant); added by
    # ALTER so stores made before the column existed gain it on their next write.
    "ALTER TABLE spans ADD COLUMN IF NOT EXISTS is_leaf_call BOOLEAN",
    *MIGRATIONS,
    RUNS_CLASS_TIME_INDEX,
    "CREATE INDEX IF NOT EXISTS incidents_run ON incidents (run_id)",
)
"""Statements that create an empty store, or bring an older one up to date; every one is
idempotent. Run only when the store is new or its version is older (telemetry/store.py)."""

INCIDENT_STATUSES = ("open", "acknowledged", "resolved")
