"""A ClickHouse store seen through the subset of DuckDB's connection API the read side uses.

analytics/ and dashboard/ call ``con.sql(sql, params=...)`` (read as Arrow by
:func:`cliffwatch.analytics.store_access.frame`, or ``.fetchall()`` / ``.fetchone()``),
``con.execute(...)``, and ``con.register(name, arrow)`` / ``con.unregister(name)`` for small
frames their SQL joins. :class:`EngineConnection` offers the same calls on a ClickHouse
client: each statement is transpiled once (:func:`dialect.to_clickhouse`) and runs in the
engine, which returns only the result; no span is pulled into Python to be aggregated.

Results are made to look like DuckDB's: timestamps naive UTC (``timestamp[us]``), unsigned
integers (ClickHouse's ``count()``) as ``int64``, and ``NOT NULL`` dropped from the schema.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from cliffwatch.telemetry.clickhouse.client import ClickHouseClient, ClickHouseError
from cliffwatch.telemetry.clickhouse.dialect import TOKEN, to_clickhouse
from cliffwatch.telemetry.clickhouse.tables import TABLES
from cliffwatch.telemetry.store import NotACliffwatchStoreError

_UNSIGNED = {pa.uint8(): pa.int64(), pa.uint16(): pa.int64(), pa.uint32(): pa.int64(),
             pa.uint64(): pa.int64()}


def _duckdb_like_type(arrow_type: pa.DataType) -> pa.DataType:
    if arrow_type in _UNSIGNED:
        return _UNSIGNED[arrow_type]
    if pa.types.is_timestamp(arrow_type):
        return pa.timestamp(arrow_type.unit)
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return pa.list_(_duckdb_like_type(arrow_type.value_type))
    return arrow_type


def duckdb_like(table: pa.Table) -> pa.Table:
    """``table`` with DuckDB's result types: naive UTC timestamps, signed counts, nullable
    fields (values unchanged)."""
    fields = []
    arrays = []
    for field, column in zip(table.schema, table.columns, strict=True):
        target = _duckdb_like_type(field.type)
        if pa.types.is_timestamp(field.type) and field.type.tz:
            # Same instants: drop the zone from the type (the values are UTC already).
            column = pc.cast(column, pa.timestamp(field.type.unit, "UTC")).cast(target)
        elif target != field.type:
            column = column.cast(target)
        fields.append(pa.field(field.name, target, nullable=True))
        arrays.append(column)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


class EngineResult:
    """The rows of one statement, read like a DuckDB relation (Arrow stream, fetch calls)."""

    def __init__(self, table: pa.Table) -> None:
        self._table = table
        self._next = 0

    def __arrow_c_stream__(self, requested_schema: Any = None) -> Any:
        return self._table.__arrow_c_stream__(requested_schema)

    def arrow(self) -> pa.Table:
        """All rows as a pyarrow Table."""
        return self._table

    @property
    def columns(self) -> list[str]:
        """The column names."""
        return list(self._table.column_names)

    def fetchall(self) -> list[tuple[Any, ...]]:
        """The rows not fetched yet, as tuples."""
        rows = self._table.slice(self._next).to_pylist()
        self._next = self._table.num_rows
        return [tuple(row.values()) for row in rows]

    def fetchone(self) -> tuple[Any, ...] | None:
        """The next row as a tuple, or None after the last."""
        if self._next >= self._table.num_rows:
            return None
        row = self._table.slice(self._next, 1).to_pylist()[0]
        self._next += 1
        return tuple(row.values())


_ARROW_TO_CLICKHOUSE = {
    pa.bool_(): "Bool", pa.int8(): "Int8", pa.int16(): "Int16", pa.int32(): "Int32",
    pa.int64(): "Int64", pa.uint8(): "UInt8", pa.uint16(): "UInt16", pa.uint32(): "UInt32",
    pa.uint64(): "UInt64", pa.float32(): "Float32", pa.float64(): "Float64",
    pa.string(): "String", pa.large_string(): "String", pa.utf8(): "String",
    pa.date32(): "Date32",
}


def clickhouse_type(arrow_type: pa.DataType) -> str:
    """The ClickHouse column type that holds ``arrow_type`` (scalars Nullable).

    Raises:
        ClickHouseError: a type with no mapping here (structs, maps, binary).
    """
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return f"Array({clickhouse_type(arrow_type.value_type)})"
    if pa.types.is_timestamp(arrow_type):
        return "Nullable(DateTime64(6, 'UTC'))"
    if pa.types.is_string_view(arrow_type):
        return "Nullable(String)"
    if arrow_type in _ARROW_TO_CLICKHOUSE:
        return f"Nullable({_ARROW_TO_CLICKHOUSE[arrow_type]})"
    raise ClickHouseError(f"cannot hold Arrow type {arrow_type} in a ClickHouse table")


class EngineConnection:
    """DuckDB-connection-shaped access to a ClickHouse store (see the module docstring).

    Args:
        client: the engine; the connection does not own it (the caller closes it).
    """

    is_clickhouse = True
    """Marks a ClickHouse store's connection (``telemetry.clickhouse.is_engine_connection``)."""

    def __init__(self, client: ClickHouseClient) -> None:
        self.client = client
        self.url = client.url
        self._registered: set[str] = set()

    def sql(
        self, sql: str, params: Mapping[str, Any] | Sequence[Any] | None = None
    ) -> EngineResult:
        """Run one DuckDB statement (transpiled) and return its rows; ``params`` by name
        (``$name``) or in order (``?``).

        Raises:
            TranspileError: the statement cannot be written for ClickHouse.
            ClickHouseError: the engine refused it (one line).
        """
        plan = to_clickhouse(sql, params)
        if not plan.steps:
            return EngineResult(duckdb_like(self.client.query_arrow(plan.query)))
        token = uuid.uuid4().hex[:12]
        created: list[str] = []
        try:
            for step, temp in zip(plan.steps, plan.temps, strict=True):
                self.client.command(step.replace(TOKEN, token))
                created.append(temp.replace(TOKEN, token))
            table = self.client.query_arrow(plan.query.replace(TOKEN, token))
        finally:
            for temp in created:
                self.client.command(f"DROP TEMPORARY TABLE IF EXISTS {temp}")
        return EngineResult(duckdb_like(table))

    def execute(
        self, sql: str, params: Mapping[str, Any] | Sequence[Any] | None = None
    ) -> EngineResult:
        """As :meth:`sql`."""
        return self.sql(sql, params)

    def register(self, name: str, data: Any) -> None:
        """Make ``data`` (a pyarrow Table, or anything with ``to_arrow()``) a table called
        ``name`` for the following statements: a temporary Memory table of the session
        (no write right on the database needed), dropped by
        :meth:`unregister` or :meth:`close`. Meant for small frames."""
        table = data.to_arrow() if hasattr(data, "to_arrow") else data
        if not isinstance(table, pa.Table):
            table = pa.table(table)
        if name in TABLES:
            raise ClickHouseError(f"cannot register a frame as {name!r}: a store table")
        columns = ", ".join(
            f"`{field.name}` {clickhouse_type(field.type)}" for field in table.schema
        )
        self.client.command(f"DROP TEMPORARY TABLE IF EXISTS `{name}`")
        self.client.command(f"CREATE TEMPORARY TABLE `{name}` ({columns}) ENGINE = Memory")
        self._registered.add(name)
        if table.num_rows:
            self.client.insert_arrow(name, table)

    def unregister(self, name: str) -> None:
        """Drop a table made by :meth:`register`."""
        if name in self._registered:
            self._registered.discard(name)
            self.client.command(f"DROP TEMPORARY TABLE IF EXISTS `{name}`")

    def close(self) -> None:
        """Drop every registered frame; the client stays open (its owner closes it)."""
        for name in list(self._registered):
            self.unregister(name)


def check_store(client: ClickHouseClient) -> None:
    """Raise unless the database holds cliffwatch's tables.

    Raises:
        NotACliffwatchStoreError: no ``cliffwatch_meta`` table (the message says how to
            fill the database).
    """
    found = client.query_arrow(
        "SELECT count() AS n FROM system.tables "
        "WHERE database = currentDatabase() AND name = 'cliffwatch_meta'"
    )["n"].to_pylist()
    if not found or not found[0]:
        raise NotACliffwatchStoreError(
            f"store {client.url} has no cliffwatch tables: run 'cliffwatch watch --db "
            f"{client.url}' or 'cliffwatch migrate --to {client.url}' first"
        )
