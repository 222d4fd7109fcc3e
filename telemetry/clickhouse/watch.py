"""``cliffwatch watch``: turn the Collector's ``otel_traces`` rows into runs, incidents and
alerts in cliffwatch's own ClickHouse tables, incrementally.

A fleet's spans reach ClickHouse with no cliffwatch process in their path (the Collector's
``clickhouse`` exporter writes them, docs/fleet.md). This job follows that table:

1. **scan** (:func:`scan_batch`): the rows whose span ended after the watermark less the
   lateness window (``settings.watch_lateness_s()``), minus those already processed (their
   ``(trace_id, span_id)`` is in ``cliffwatch_spans``), oldest end first, at most
   ``batch_spans`` of them. The watermark is the latest span end processed, kept in
   ``cliffwatch_meta`` (key :func:`watermark_key`). Spans are exported when they end, so
   a span's end is close to when it lands; one that lands later than the lateness window
   behind a later-ending span already processed is missed.
2. **map** with the one mapping (:func:`telemetry.otlp_mapping.map_spans`, after
   :func:`~telemetry.clickhouse.otel_traces.rows_to_spans`), content dropped unless
   ``settings.capture_content()``: the same records an OTLP ingest of the spans gives.
3. **judge** on a scratch in-memory DuckDB store (:func:`process_batch`): it gets the
   spans already processed of the batch's traces, and the context the rules read (the runs
   of every task class and UTC day those traces can touch, their incidents and alerts,
   the kept class P50s); then :func:`telemetry.write_pipeline.apply_batch`, the DuckDB
   store's own write steps, materialises the runs, records incidents and queues alerts.
   No rule is written a second time.
4. **append** what the write produced to the ``cliffwatch_*`` tables (ReplacingMergeTree,
   :mod:`telemetry.clickhouse.tables`): the touched runs, the new incidents, alerts and
   deliveries, the class P50s it refreshed, then the spans (new, and old ones whose leaf
   flags changed), then the watermark. A crash in between redoes the batch: runs are
   re-appended (same key: idempotent) and incidents already recorded are not recorded
   again (the scratch store holds them), so a restart never duplicates anything.
5. **deliver** due alert deliveries to the configured webhooks
   (:func:`telemetry.clickhouse.deliver.deliver_pending`).

Not done here: incomplete runs (a trace whose root never arrives stays without a run; the
DuckDB store's sweep needs its ``open_traces`` history, which the scratch store lacks).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import duckdb
import pyarrow as pa

from cliffwatch import settings
from cliffwatch.errors import CliffwatchError
from cliffwatch.telemetry.clickhouse import otel_traces
from cliffwatch.telemetry.clickhouse.client import ClickHouseClient
from cliffwatch.telemetry.clickhouse.deliver import deliver_pending
from cliffwatch.telemetry.clickhouse.tables import (
    TABLES,
    ensure_tables,
    has_twin,
    json_columns,
)
from cliffwatch.telemetry.clickhouse.values import naive_utc, quoted
from cliffwatch.telemetry.content_capture import without_content
from cliffwatch.telemetry.otlp_mapping import MappingConfig, map_spans
from cliffwatch.telemetry.records import records_to_arrow
from cliffwatch.telemetry.schema import DDL, META_TABLE, SEEN_TRACES_BACKFILL
from cliffwatch.telemetry.stop_signals import StopRequest
from cliffwatch.telemetry.write_pipeline import apply_batch

logger = logging.getLogger("cliffwatch.watch")

DEFAULT_BATCH_SPANS = 50_000
"""Spans one scan takes at most (one scratch store, one set of appends)."""

MAX_SPAN_S = 7 * 86_400
"""Longest span the scan expects, seconds: only rows that started at most this long before
the rescan point are read (``otel_traces`` is partitioned by start day)."""

_NS = 1_000_000_000
_END_NS = "(toUnixTimestamp64Nano(Timestamp) + toInt64(Duration))"


class WatchError(CliffwatchError):
    """``watch`` cannot go on (its table is missing, a statement failed); one line."""


@dataclass(frozen=True, slots=True)
class WatchConfig:
    """How ``watch`` runs.

    Attributes:
        traces_table: the Collector's table (``StoreURL.traces_table``).
        batch_spans: spans per scan at most.
        lateness_s: rescan window behind the watermark (``settings.watch_lateness_s()``).
        mapping: the mapping's task-class rule, source label and price overrides.
        capture_content: keep prompt and completion content (default: the setting).
        runaway_k: the runaway multiple (default ``settings.runaway_k()``).
        deliver: send due alert deliveries after each batch.
    """

    traces_table: str = otel_traces.DEFAULT_TRACES_TABLE
    batch_spans: int = DEFAULT_BATCH_SPANS
    lateness_s: float | None = None
    mapping: MappingConfig = field(default_factory=MappingConfig)
    capture_content: bool | None = None
    runaway_k: float | None = None
    deliver: bool = True


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What one batch did: spans read and mapped, runs and incidents written, alerts
    raised, deliveries queued, spans the mapping rejected, the batch's latest span end."""

    spans: int
    runs: int
    incidents: int
    alerts: int
    deliveries: int
    rejected: int
    last_end_ns: int


@dataclass(slots=True)
class WatchSummary:
    """Running totals of a :func:`watch` (what the CLI's summary line prints)."""

    batches: int = 0
    spans: int = 0
    runs: int = 0
    incidents: int = 0
    alerts: int = 0
    rejected: int = 0
    delivered: int = 0
    watermark_ns: int | None = None

    def add(self, result: BatchResult) -> None:
        self.batches += 1
        self.spans += result.spans
        self.runs += result.runs
        self.incidents += result.incidents
        self.alerts += result.alerts
        self.rejected += result.rejected

    def line(self) -> str:
        """One human line: the counts and the watermark (UTC)."""
        mark = "none" if self.watermark_ns is None else _iso(self.watermark_ns)
        return (f"{self.spans} spans, {self.runs} runs, {self.incidents} incidents, "
                f"{self.alerts} alerts ({self.delivered} delivered), "
                f"{self.rejected} spans rejected, watermark {mark}")


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / _NS, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# --- the watermark -------------------------------------------------------------------------


def watermark_key(traces_table: str) -> str:
    """The ``cliffwatch_meta`` key of the watermark of ``traces_table``."""
    return f"watch_watermark_ns:{traces_table}"


def read_watermark(client: ClickHouseClient, traces_table: str) -> int | None:
    """The latest span end (ns since the epoch) ``watch`` processed, or None."""
    rows = client.query_arrow(
        f"SELECT value FROM {TABLES[META_TABLE]} FINAL "
        f"WHERE key = {quoted([watermark_key(traces_table)])}"
    ).to_pylist()
    return int(rows[0]["value"]) if rows else None


def write_watermark(client: ClickHouseClient, traces_table: str, end_ns: int) -> None:
    """Store the watermark (a new row version of its ``cliffwatch_meta`` key)."""
    client.insert_arrow(TABLES[META_TABLE], pa.table({
        "key": [watermark_key(traces_table)], "value": [str(int(end_ns))],
    }))


# --- scan ----------------------------------------------------------------------------------


def scan_batch(
    client: ClickHouseClient, traces_table: str, since_ns: int | None, limit: int
) -> pa.Table:
    """Rows of ``traces_table`` whose span ended after ``since_ns`` (None: all) and that
    are not in ``cliffwatch_spans`` yet, oldest end first, at most ``limit``; the columns
    :func:`~telemetry.clickhouse.otel_traces.rows_to_spans` reads plus ``_end_ns``."""
    where = ["TraceId != ''", "SpanId != ''"]
    done = f"SELECT trace_id, span_id FROM {TABLES['spans']}"
    if since_ns is not None:
        start_floor = since_ns - MAX_SPAN_S * _NS
        where += [
            f"Timestamp >= fromUnixTimestamp64Nano(toInt64({start_floor}))",
            f"{_END_NS} > {since_ns}",
        ]
        # cliffwatch_spans keeps microseconds: a second of margin on its side.
        floor_us = since_ns // 1000 - 1_000_000
        done += f" WHERE ended_at >= fromUnixTimestamp64Micro(toInt64({floor_us}))"
    where.append(f"(TraceId, SpanId) NOT IN ({done})")
    return client.query_arrow(
        f"SELECT {otel_traces.select_columns_sql()}, {_END_NS} AS _end_ns "
        f"FROM {traces_table} WHERE {' AND '.join(where)} "
        f"ORDER BY _end_ns, TraceId, SpanId LIMIT {int(limit)}"
    )


# --- the scratch store ---------------------------------------------------------------------


_KEYED = frozenset({"incidents", "alerts", "alert_deliveries"})
"""Scratch tables with a primary key (a row already there wins over a loaded one). ``runs``
has none (schema 6): a run already there wins too (:data:`_NEW_RUNS`). ``spans``
has none (schema 4): its rows are loaded once, read FINAL, into the empty scratch store, and
``seen_traces`` is filled from them so the write keeps their re-sent spans out."""


LOADED_ROLES = "cliff_loaded_roles"
"""Scratch temp table: ``trace_id``, ``span_id``, ``role`` of the spans loaded from the
store, before the write (a call whose role it changes is appended again)."""

_NEW_RUNS = " WHERE run_id NOT IN (SELECT run_id FROM runs)"


def _load(con: duckdb.DuckDBPyConnection, client: ClickHouseClient, table: str,
          where: str) -> int:
    """Copy the rows of ``cliffwatch_<table>`` matching ``where`` into scratch ``table``."""
    rows = naive_utc(client.query_arrow(f"SELECT * FROM {TABLES[table]} FINAL WHERE {where}"))
    if rows.num_rows == 0:
        return 0
    con.register("cliff_loaded", rows)
    try:
        keyed = (" ON CONFLICT DO NOTHING" if table in _KEYED
                 else _NEW_RUNS if table == "runs" else "")
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM cliff_loaded{keyed}")
    finally:
        con.unregister("cliff_loaded")
    return rows.num_rows


def _scratch() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    for statement in DDL:
        con.execute(statement)
    return con


IN_CHUNK = 2_000
"""Values one ``IN (...)`` list of a context read holds at most (ClickHouse bounds a
query's size: 256 KiB by default)."""


def _load_in(con: duckdb.DuckDBPyConnection, client: ClickHouseClient, table: str,
             column: str, values: list[str]) -> None:
    """:func:`_load` of the rows whose ``column`` is one of ``values``, in chunks."""
    for start in range(0, len(values), IN_CHUNK):
        _load(con, client, table, f"{column} IN ({quoted(values[start:start + IN_CHUNK])})")


def _load_context(con: duckdb.DuckDBPyConnection, client: ClickHouseClient,
                  batch: pa.Table) -> None:
    """Fill the scratch store with what the rules read for the batch's traces (module
    docstring, step 3); the alert ids loaded are left in ``cliff_loaded_alerts`` (so only
    new ones are appended)."""
    con.register("cliff_new", batch)
    try:
        traces = [r[0] for r in con.execute("SELECT DISTINCT trace_id FROM cliff_new").fetchall()]
        _load_in(con, client, "spans", "trace_id", traces)
        # The roles as stored, so calls whose role the write works out again (their trace
        # continued: telemetry/continued_roles.py) are appended with the new one.
        con.execute(f"CREATE OR REPLACE TEMP TABLE {LOADED_ROLES} AS "
                    "SELECT trace_id, span_id, role FROM spans")
        con.execute(SEEN_TRACES_BACKFILL)
        # Where the old spans of those traces sit, so the write reads them (materialise).
        con.execute("""INSERT INTO open_traces
            SELECT trace_id, min(ingested_at), max(ingested_at), max(ended_at), NULL, NULL
            FROM spans GROUP BY trace_id""")
        # Every class and UTC day the traces' runs can have (their spans' task classes and
        # service names, 'unknown'), so the P50s and the alert windows see all their runs.
        classes, days = con.execute("""
            WITH s AS (
                SELECT task_class, service_name, start_time_unix_nano AS ns FROM spans
                UNION ALL
                SELECT task_class, service_name, start_time_unix_nano FROM cliff_new)
            SELECT list(DISTINCT c) FILTER (WHERE c IS NOT NULL),
                   list(DISTINCT strftime(make_timestamp(ns // 1000), '%Y-%m-%d'))
            FROM (SELECT unnest([task_class, service_name, 'unknown']) AS c, ns FROM s)
            """).fetchall()[0]
    finally:
        con.unregister("cliff_new")
    _load_in(con, client, "runs", "task_class", classes or [])
    _load_in(con, client, "runs", "run_id", traces)
    _load_in(con, client, "runs", "toString(toDate(started_at))", days or [])
    _load_in(con, client, "class_p50", "task_class", classes or [])
    # The incidents the rules could find again: of the traces' runs and of the classes
    # whose every run a refreshed P50 judges.
    _load_in(con, client, "incidents", "task_class", classes or [])
    _load_in(con, client, "incidents", "run_id", traces)
    incident_ids = [r[0] for r in con.execute("SELECT incident_id FROM incidents").fetchall()]
    _load_in(con, client, "alerts", "alert_id", incident_ids)
    _load(con, client, "alerts", "startsWith(alert_id, 'rule:')")
    # Alerts exist but none of these: one of them, so the write does not take the store
    # for one that predates alerts (telemetry/alert_rules.py, the baseline).
    if not con.execute("SELECT count(*) FROM alerts").fetchall()[0][0]:
        _load(con, client, "alerts", "1 LIMIT 1")
    con.execute("CREATE OR REPLACE TEMP TABLE cliff_loaded_alerts AS SELECT alert_id FROM alerts")


def _out(con: duckdb.DuckDBPyConnection, table: str, where: str) -> pa.Table:
    """Rows of scratch ``table`` matching ``where``, JSON columns as text (ClickHouse)."""
    json_cols = set(json_columns(table))
    names = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall() if has_twin(table, r[0])]
    select = ", ".join(f"{n}::VARCHAR AS {n}" if n in json_cols else n for n in names)
    return con.sql(f"SELECT {select} FROM {table} WHERE {where}").to_arrow_table()


def _append(client: ClickHouseClient, table: str, rows: pa.Table) -> int:
    if rows.num_rows:
        client.insert_arrow(TABLES[table], rows)
    return rows.num_rows


def process_batch(
    client: ClickHouseClient, rows: pa.Table, config: WatchConfig, now: datetime | None = None
) -> BatchResult:
    """Map, judge and append one scanned batch (module docstring, steps 2 to 4).

    Args:
        client: the ClickHouse store (its cliffwatch tables exist).
        rows: what :func:`scan_batch` returned (non-empty).
        config: the watch's settings.
        now: naive UTC wall time of the write (``ingested_at``); default now.

    Returns:
        A :class:`BatchResult`.

    Raises:
        ClickHouseError: a read or an append failed (what was appended stays; redoing
            the batch is safe).
    """
    when = now or datetime.now(UTC).replace(tzinfo=None)
    capture = (settings.capture_content() if config.capture_content is None
               else config.capture_content)
    k = settings.runaway_k() if config.runaway_k is None else config.runaway_k
    spans = otel_traces.rows_to_spans(rows)
    records, rejections = map_spans(spans if capture else without_content(spans), config.mapping)
    last_end = int(max(rows.column("_end_ns").to_pylist()))
    batch = records_to_arrow(records)
    con = _scratch()
    try:
        _load_context(con, client, batch)
        con.execute("BEGIN TRANSACTION")
        _, runs, incidents, _ = apply_batch(con, batch, when, k, keep_rollups=False)
        con.execute("COMMIT")
        touched = "run_id IN (SELECT run_id FROM cliff_touched_runs)"
        _append(client, "runs", _out(con, "runs", touched))
        _append(client, "incidents", _out(
            con, "incidents", "incident_id IN (SELECT incident_id FROM cliff_new_incidents)"))
        new_alerts = "alert_id NOT IN (SELECT alert_id FROM cliff_loaded_alerts)"
        alerts = _append(client, "alerts", _out(con, "alerts", new_alerts))
        deliveries = _append(client, "alert_deliveries", _out(con, "alert_deliveries", new_alerts))
        _append(client, "class_p50", _out(
            con, "class_p50", "task_class IN (SELECT task_class FROM cliff_classes)"))
        # Last: a span in cliffwatch_spans is a processed span (the scan skips it).
        _append(client, "spans", _out(con, "spans", f"""ingested_at = TIMESTAMP '{when.isoformat()}'
            OR (trace_id, span_id) IN (SELECT trace_id, span_id FROM cliff_flags WHERE changed)
            OR (trace_id, span_id, role) NOT IN (SELECT trace_id, span_id, role FROM {LOADED_ROLES})
            """))
    finally:
        con.close()
    return BatchResult(len(records), runs, incidents, alerts, deliveries, len(rejections),
                       last_end)


# --- the loop ------------------------------------------------------------------------------


def prepare(client: ClickHouseClient, traces_table: str) -> None:
    """Create cliffwatch's tables if missing and check the Collector's table exists.

    Raises:
        WatchError: ``traces_table`` does not exist (the Collector has not written yet,
            or ``?traces_table=`` names another table).
    """
    otel_traces.checked_table_name(traces_table)
    found = client.query_arrow(
        f"SELECT count() AS n FROM system.tables WHERE database = currentDatabase() "
        f"AND name = {quoted([traces_table])}").to_pylist()
    if not found or not found[0]["n"]:
        raise WatchError(
            f"table {traces_table} not found: point the Collector's clickhouse exporter at "
            "this database (docs/fleet.md) or name the table with ?traces_table=")
    ensure_tables(client)


def watch(
    client: ClickHouseClient,
    config: WatchConfig = WatchConfig(),  # noqa: B008 (frozen, immutable default)
    *,
    once: bool = False,
    stop: threading.Event | StopRequest | None = None,
    progress: Callable[[WatchSummary], None] | None = None,
    poll_s: float | None = None,
) -> WatchSummary:
    """Follow ``config.traces_table`` until stopped (or, with ``once``, until nothing new
    is left), batch by batch (module docstring).

    Args:
        client: the ClickHouse store.
        config: the watch's settings.
        once: process what is there and return.
        stop: set it to stop after the current batch (a :class:`StopRequest` from
            :func:`telemetry.stop_signals.stop_on_signals` for SIGINT and SIGTERM).
        progress: called with the running totals after every batch.
        poll_s: sleep between empty scans; default ``settings.watch_poll_s()``.

    Returns:
        The totals (:class:`WatchSummary`).

    Raises:
        WatchError: the traces table is missing.
        ClickHouseError: a statement failed (what was done stays done; run again).
    """
    prepare(client, config.traces_table)
    lateness_ns = int((settings.watch_lateness_s() if config.lateness_s is None
                       else config.lateness_s) * _NS)
    pause = settings.watch_poll_s() if poll_s is None else poll_s
    stop = stop or threading.Event()
    summary = WatchSummary(watermark_ns=read_watermark(client, config.traces_table))
    while not stop.is_set():
        since = None if summary.watermark_ns is None else summary.watermark_ns - lateness_ns
        rows = scan_batch(client, config.traces_table, since, config.batch_spans)
        if rows.num_rows:
            result = process_batch(client, rows, config)
            summary.add(result)
            mark = max(result.last_end_ns, summary.watermark_ns or 0)
            write_watermark(client, config.traces_table, mark)
            summary.watermark_ns = mark
        if config.deliver:
            summary.delivered += deliver_pending(client)
        if progress is not None:
            progress(summary)
        if rows.num_rows < config.batch_spans:
            if once:
                break
            stop.wait(pause)
    return summary
