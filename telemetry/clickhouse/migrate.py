"""``cliffwatch migrate``: move a team's DuckDB history up into a ClickHouse store.

Three steps, each safe to run again:

1. **spans into the traces table**, in the Collector exporter's shape
   (:mod:`telemetry.clickhouse.otel_traces`), so the fleet's raw spans and the team's sit
   side by side. DuckDB streams the ``spans`` rows out in Arrow chunks (memory holds one
   chunk) into a staging table; ClickHouse then builds the exporter rows itself in one
   ``INSERT ... SELECT`` (attribute JSON to ``Map(String, String)`` cells, events to the
   Nested ``Events`` arrays, status words to the exporter's names), leaving out spans the
   table already holds, and the staging table is dropped. Histories are millions of
   spans: no row passes through Python one by one.
2. **cliffwatch's tables** (runs, incidents with their triage, alerts, deliveries, the
   mapped spans, ...) through :func:`telemetry.clickhouse.copy_tables.copy_store`
   (ReplacingMergeTree: a second copy leaves one version).
3. **the watermark** of ``cliffwatch watch`` set to the latest span end migrated, so
   ``watch`` does not redo them (it would skip them anyway: they are in
   ``cliffwatch_spans``).

What the DuckDB store does not keep is written empty: ``SpanKind`` (``Unspecified``),
``TraceState`` and ``Links``. Attribute numbers keep their JSON text (``1e-07`` where the
exporter would write ``1e-7``): :func:`~telemetry.clickhouse.otel_traces.parse_value`
reads both.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from cliffwatch.telemetry.clickhouse import otel_traces
from cliffwatch.telemetry.clickhouse.client import ClickHouseClient
from cliffwatch.telemetry.clickhouse.copy_tables import CHUNK_ROWS, copy_store, stream_rows
from cliffwatch.telemetry.clickhouse.watch import read_watermark, write_watermark
from cliffwatch.telemetry.store import open_store

STAGING_TABLE = "cliffwatch_migrate_spans"
"""The staging table of step 1 (created and dropped by :func:`migrate_store`)."""

_STAGED = (
    ("trace_id", "String"), ("span_id", "String"), ("parent_span_id", "Nullable(String)"),
    ("name", "String"), ("start_time_unix_nano", "Int64"), ("end_time_unix_nano", "Int64"),
    ("status_code", "String"), ("status_message", "Nullable(String)"),
    ("service_name", "Nullable(String)"), ("attributes", "Nullable(String)"),
    ("resource_attributes", "Nullable(String)"), ("events", "Nullable(String)"),
)

_SELECT_SPANS = (
    "SELECT trace_id, span_id, parent_span_id, name, start_time_unix_nano, "
    "end_time_unix_nano, status_code, status_message, service_name, "
    "CAST(attributes AS VARCHAR) AS attributes, "
    "CAST(resource_attributes AS VARCHAR) AS resource_attributes, "
    "CAST(events AS VARCHAR) AS events FROM spans"
)


def _text_map(json_expr: str) -> str:
    """ClickHouse: a JSON object's text to a ``Map(String, String)`` of its members,
    strings unquoted, anything else as its JSON text."""
    kv = f"JSONExtractKeysAndValuesRaw(ifNull({json_expr}, '{{}}'))"
    return (f"mapFromArrays(arrayMap(x -> x.1, {kv}), arrayMap(x -> if(startsWith(x.2, '\"'), "
            f"JSONExtractString(concat('[', x.2, ']'), 1), x.2), {kv}))")


def _insert_traces_sql(table: str) -> str:
    events = "JSONExtractArrayRaw(ifNull(events, '[]'))"
    status = ("multiIf(status_code = 'ok', 'Ok', status_code = 'error', 'Error', 'Unset')")
    attrs = "JSONExtractString(ifNull(attributes, '{}'), "
    columns = ", ".join(f"`{c}`" for c in otel_traces.COLUMNS)
    return f"""
INSERT INTO {table} ({columns})
SELECT
    fromUnixTimestamp64Nano(start_time_unix_nano, 'UTC'),
    trace_id, span_id, ifNull(parent_span_id, ''), '', name, 'Unspecified',
    ifNull(service_name, ''), {_text_map('resource_attributes')},
    {attrs}'otel.scope.name'), {attrs}'otel.scope.version'),
    {_text_map('attributes')},
    toUInt64(greatest(end_time_unix_nano - start_time_unix_nano, 0)),
    {status}, ifNull(status_message, ''),
    arrayMap(e -> fromUnixTimestamp64Nano(JSONExtractInt(e, 'time_unix_nano'), 'UTC'), {events}),
    arrayMap(e -> JSONExtractString(e, 'name'), {events}),
    arrayMap(e -> {_text_map("JSONExtractRaw(e, 'attributes')")}, {events}),
    [], [], [], []
FROM {STAGING_TABLE}
WHERE (trace_id, span_id) NOT IN (SELECT TraceId, SpanId FROM {table})
SETTINGS max_partitions_per_insert_block = 0
"""


@dataclass(frozen=True, slots=True)
class MigrateSummary:
    """What :func:`migrate_store` did.

    Attributes:
        spans_read: spans in the DuckDB store.
        spans_added: rows added to the traces table (spans it lacked).
        traces_table_spans: rows of the traces table holding a migrated span (every
            migrated span is there once the migration is complete).
        tables: rows copied per cliffwatch table (DuckDB name).
        watermark_ns: the ``watch`` watermark after the migration (None: no spans).
    """

    spans_read: int
    spans_added: int
    traces_table_spans: int
    tables: dict[str, int]
    watermark_ns: int | None

    @property
    def complete(self) -> bool:
        """Every DuckDB span is in the traces table and in ``cliffwatch_spans``."""
        return (self.traces_table_spans >= self.spans_read
                and self.tables.get("spans", 0) == self.spans_read)


def _count(client: ClickHouseClient, sql: str) -> int:
    return int(client.query_arrow(sql).column(0)[0].as_py())


def migrate_store(
    duckdb_path: str | os.PathLike[str],
    client: ClickHouseClient,
    traces_table: str = otel_traces.DEFAULT_TRACES_TABLE,
    *,
    chunk_rows: int = CHUNK_ROWS,
    progress: Callable[[str, int, int], None] | None = None,
) -> MigrateSummary:
    """Move the DuckDB store at ``duckdb_path`` into the ClickHouse store (module docstring).

    Args:
        duckdb_path: the DuckDB store (opened read-only; never changed).
        client: the ClickHouse store; missing tables are created.
        traces_table: the Collector's table to add the spans to.
        chunk_rows: rows per Arrow chunk (memory bound).
        progress: called as ``progress(step, done, total)``; ``step`` is the traces table
            (spans staged of the spans total) or ``cliffwatch <table>`` (rows copied,
            total 0: unknown).

    Returns:
        A :class:`MigrateSummary`.

    Raises:
        StoreError: the DuckDB store cannot be opened (missing, busy, damaged).
        ClickHouseError: ClickHouse refused a statement or a chunk (what was done stays;
            running the migration again completes it without duplicates).
    """
    otel_traces.checked_table_name(traces_table)
    client.command(otel_traces.create_table_sql(traces_table))
    client.command(f"DROP TABLE IF EXISTS {STAGING_TABLE}")
    client.command(
        f"CREATE TABLE {STAGING_TABLE} ("
        + ", ".join(f"`{n}` {t}" for n, t in _STAGED)
        + ") ENGINE = MergeTree ORDER BY (trace_id, span_id)"
    )
    last_end: int | None = None
    try:
        with open_store(duckdb_path, read_only=True) as con:
            total, last_end = con.execute(
                "SELECT count(*), max(end_time_unix_nano) FROM spans").fetchall()[0]
            stream_rows(
                con, _SELECT_SPANS, client, STAGING_TABLE, chunk_rows=chunk_rows,
                on_chunk=(lambda done: progress(traces_table, done, int(total)))
                if progress is not None else None,
            )
        before = _count(client, f"SELECT count() FROM {traces_table}")
        client.command(_insert_traces_sql(traces_table))
        added = _count(client, f"SELECT count() FROM {traces_table}") - before
        present = _count(client, f"""SELECT count() FROM {STAGING_TABLE}
            WHERE (trace_id, span_id) IN (SELECT TraceId, SpanId FROM {traces_table})""")
    finally:
        client.command(f"DROP TABLE IF EXISTS {STAGING_TABLE}")

    def on_chunk(table: str, done: int) -> None:
        if progress is not None:
            progress(f"cliffwatch {table}", done, 0)

    tables = copy_store(duckdb_path, client, chunk_rows=chunk_rows, on_chunk=on_chunk)
    mark = read_watermark(client, traces_table)
    if last_end is not None and (mark is None or int(last_end) > mark):
        mark = int(last_end)
        write_watermark(client, traces_table, mark)
    return MigrateSummary(int(total), added, present, tables, mark)
