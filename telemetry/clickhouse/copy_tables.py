"""Copy a DuckDB store's cliffwatch tables into a ClickHouse store's ``cliffwatch_*`` tables.

Used by the tests (the same store on both backends), the bench and ``cliffwatch migrate``.
Each table is read in chunks of :data:`CHUNK_ROWS` rows through an Arrow stream and each
chunk inserted as one Arrow block, so memory holds one chunk at a time, not the store. JSON
columns travel as their text (ClickHouse holds them as ``String``; tables.py says why).
Rows are idempotent by key (ReplacingMergeTree), so a copy run twice leaves one version.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import pyarrow as pa

from cliffwatch.telemetry.clickhouse.client import ClickHouseClient
from cliffwatch.telemetry.clickhouse.tables import (
    TABLES,
    ensure_tables,
    has_twin,
    json_columns,
)
from cliffwatch.telemetry.store import open_store

if TYPE_CHECKING:
    import duckdb

CHUNK_ROWS = 100_000
"""Rows per Arrow chunk read from DuckDB and inserted into ClickHouse (about 100 MB of
spans with attributes at most)."""


def _select_sql(con: object, table: str) -> str | None:
    """``SELECT`` of the columns ``table`` has in this store (an older store may lack
    some), JSON ones as text; None when the store has no such table."""
    found = con.execute(  # type: ignore[attr-defined]
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = ? AND table_schema = 'main' ORDER BY ordinal_position",
        [table],
    ).fetchall()
    if not found:
        return None
    json_names = set(json_columns(table))
    parts = [
        f'CAST("{name}" AS VARCHAR) AS "{name}"' if name in json_names or sql_type == "JSON"
        else f'"{name}"'
        for name, sql_type in found if has_twin(table, name)
    ]
    return f"SELECT {', '.join(parts)} FROM {table}"


def copy_store(
    duckdb_path: str | os.PathLike[str],
    client: ClickHouseClient,
    *,
    chunk_rows: int = CHUNK_ROWS,
    on_chunk: Callable[[str, int], None] | None = None,
) -> dict[str, int]:
    """Copy every cliffwatch table of the DuckDB store at ``duckdb_path`` into ``client``.

    Args:
        duckdb_path: the DuckDB store (opened read-only).
        client: the ClickHouse store; missing ``cliffwatch_*`` tables are created.
        chunk_rows: rows per chunk (memory bound).
        on_chunk: called after each chunk with (DuckDB table, rows copied so far).

    Returns:
        Rows copied per DuckDB table name.

    Raises:
        StoreError: the DuckDB store cannot be opened (missing, busy, damaged).
        ClickHouseError: ClickHouse refused a statement or a chunk.
    """
    ensure_tables(client)
    copied: dict[str, int] = {}
    with open_store(duckdb_path, read_only=True) as con:
        for table, target in TABLES.items():
            select = _select_sql(con, table)
            if select is None:
                continue
            copied[table] = stream_rows(
                con, select, client, target, chunk_rows=chunk_rows,
                on_chunk=functools.partial(on_chunk, table) if on_chunk else None,
            )
    return copied


def stream_rows(
    con: duckdb.DuckDBPyConnection,
    select_sql: str,
    client: ClickHouseClient,
    target: str,
    *,
    chunk_rows: int = CHUNK_ROWS,
    on_chunk: Callable[[int], None] | None = None,
) -> int:
    """Insert the rows of a DuckDB ``SELECT`` into ClickHouse table ``target``, one Arrow
    chunk of ``chunk_rows`` at a time (memory holds one chunk); ``on_chunk`` gets the rows
    done so far after each. Returns the rows inserted.

    Raises:
        ClickHouseError: ClickHouse refused a chunk (the chunks before it stay).
    """
    reader: pa.RecordBatchReader = con.sql(select_sql).to_arrow_reader(chunk_rows)
    total = 0
    for batch in reader:
        if batch.num_rows:
            client.insert_arrow(target, pa.Table.from_batches([batch]))
            total += batch.num_rows
            if on_chunk is not None:
                on_chunk(total)
    return total
