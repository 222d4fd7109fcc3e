"""cliffwatch's own tables in ClickHouse: the DuckDB store's tables, column for column.

Each DuckDB table (telemetry/schema.py) has a ClickHouse twin named in :data:`TABLES`
(``runs`` -> ``cliffwatch_runs``, ...) with the same column names. The columns are not
written out a second time: :func:`columns` reads them from an empty in-memory DuckDB store
made with :data:`cliffwatch.telemetry.schema.DDL`, so a new DuckDB column appears here too
(but the derived ones of :data:`LOCAL_COLUMNS`, which a ClickHouse store does not keep).

Types map as ``VARCHAR`` -> ``String``, ``JSON`` -> ``String`` (the JSON text: ClickHouse's
JSON type rejects a top-level ``[]``), ``TIMESTAMP`` -> ``DateTime64(6, 'UTC')`` (DuckDB's
naive UTC microseconds), ``BIGINT`` -> ``Int64``, ``INTEGER`` -> ``Int32``, ``DOUBLE`` ->
``Float64``, ``BOOLEAN`` -> ``Bool``; a column DuckDB allows NULL in is ``Nullable``.

Engines are ``ReplacingMergeTree`` ordered by the DuckDB primary key (:data:`KEYS`), with no
version column: of the rows sharing a key, the last inserted wins. Re-inserting a row is
therefore idempotent, and a change (triage, a delivery attempt) is a new row version. Reads
must collapse the versions: ``SELECT ... FROM cliffwatch_runs FINAL``.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from cliffwatch.telemetry import estimate_inputs
from cliffwatch.telemetry.schema import DDL, META_TABLE

if TYPE_CHECKING:
    from cliffwatch.telemetry.clickhouse.client import ClickHouseClient

TABLES: dict[str, str] = {
    "spans": "cliffwatch_spans",
    "runs": "cliffwatch_runs",
    "incidents": "cliffwatch_incidents",
    "alerts": "cliffwatch_alerts",
    "alert_deliveries": "cliffwatch_alert_deliveries",
    "open_traces": "cliffwatch_open_traces",
    "class_p50": "cliffwatch_class_p50",
    META_TABLE: META_TABLE,
}
"""DuckDB table name -> its ClickHouse table (incidents carry the triage state)."""

KEYS: dict[str, tuple[str, ...]] = {
    "spans": ("trace_id", "span_id"),
    "runs": ("run_id",),
    "incidents": ("incident_id",),
    "alerts": ("alert_id",),
    "alert_deliveries": ("alert_id", "webhook_id"),
    "open_traces": ("trace_id",),
    "class_p50": ("task_class",),
    META_TABLE: ("key",),
}
"""DuckDB table name -> the columns that identify a row (its DuckDB primary key, or the key
its writer keeps unique): the ``ORDER BY`` of the ReplacingMergeTree."""

LOCAL_COLUMNS: dict[str, tuple[str, ...]] = {"runs": (estimate_inputs.COLUMN,)}
"""DuckDB table name -> its columns without a ClickHouse twin: derived sums a DuckDB store
keeps for its own reads (a ClickHouse store's readers compute them from the spans), left
out of the twin, of the copy and of what ``cliffwatch watch`` appends."""


def has_twin(table: str, column: str) -> bool:
    """Whether column ``column`` of DuckDB table ``table`` has a ClickHouse twin (not one
    of :data:`LOCAL_COLUMNS`)."""
    return column not in LOCAL_COLUMNS.get(table, ())


_TYPES = {
    "VARCHAR": "String",
    "JSON": "String",
    "TIMESTAMP": "DateTime64(6, 'UTC')",
    "BIGINT": "Int64",
    "UBIGINT": "UInt64",
    "INTEGER": "Int32",
    "DOUBLE": "Float64",
    "BOOLEAN": "Bool",
}


@cache
def _duckdb_columns() -> dict[str, tuple[tuple[str, str, bool], ...]]:
    """DuckDB table -> ((column, DuckDB type, nullable), ...) in table order, the columns
    with a ClickHouse twin only (:func:`has_twin`)."""
    import duckdb

    con = duckdb.connect(":memory:")
    try:
        for statement in DDL:
            con.execute(statement)
        rows = con.execute(
            "SELECT table_name, column_name, data_type, is_nullable = 'YES' "
            "FROM information_schema.columns ORDER BY table_name, ordinal_position"
        ).fetchall()
    finally:
        con.close()
    out: dict[str, list[tuple[str, str, bool]]] = {}
    for table, column, sql_type, nullable in rows:
        if has_twin(table, column):
            out.setdefault(table, []).append((column, sql_type, bool(nullable)))
    return {table: tuple(cols) for table, cols in out.items()}


def columns(table: str) -> tuple[tuple[str, str], ...]:
    """The ClickHouse columns of DuckDB table ``table``: ((name, ClickHouse type), ...).

    Raises:
        KeyError: ``table`` is not one of :data:`TABLES`.
    """
    if table not in TABLES:
        raise KeyError(table)
    out = []
    for name, sql_type, nullable in _duckdb_columns()[table]:
        ch_type = _TYPES[sql_type]
        out.append((name, f"Nullable({ch_type})" if nullable else ch_type))
    return tuple(out)


def json_columns(table: str) -> tuple[str, ...]:
    """The columns of DuckDB table ``table`` that DuckDB types JSON (String in ClickHouse;
    cast to VARCHAR when copying them)."""
    return tuple(name for name, sql_type, _ in _duckdb_columns()[table] if sql_type == "JSON")


def create_table_sql(table: str) -> str:
    """``CREATE TABLE IF NOT EXISTS`` for the ClickHouse twin of DuckDB table ``table``."""
    body = ",\n    ".join(f"`{name}` {ch_type}" for name, ch_type in columns(table))
    key = ", ".join(f"`{name}`" for name in KEYS[table])
    return (
        f"CREATE TABLE IF NOT EXISTS {TABLES[table]} (\n    {body}\n)\n"
        f"ENGINE = ReplacingMergeTree ORDER BY ({key})"
    )


def ensure_tables(client: ClickHouseClient) -> None:
    """Create every cliffwatch table that is missing (first use); existing ones are kept.

    Raises:
        ClickHouseError: the engine refused a statement (e.g. no CREATE permission).
    """
    for table in TABLES:
        client.command(create_table_sql(table))
