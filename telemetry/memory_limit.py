"""DuckDB's ``memory_limit`` set for a block of work and put back exactly after it.

The setting belongs to the whole database instance (every connection of the process to the
file shares it), so whoever lowers it for a bulk step (the schema 7 migration's backfill,
telemetry/store.py; the analytics' bulk reads, analytics/bulk_read.py) must give the
connection back the limit it found, whatever fails in between.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # schema.py's importers keep `cliffwatch --help` free of duckdb
    import duckdb


def current_memory_limit(con: duckdb.DuckDBPyConnection) -> str | None:
    """The connection's ``memory_limit`` as DuckDB prints it (``'488.2 MiB'``), or None."""
    rows = con.execute("SELECT current_setting('memory_limit')").fetchall()
    return str(rows[0][0]) if rows else None


def restore_memory_limit(con: duckdb.DuckDBPyConnection, before: str | None) -> None:
    """Put back the ``memory_limit`` read by :func:`current_memory_limit`: RESET restores
    DuckDB's default exactly; a limit the caller had set comes back as its text says
    (DuckDB prints it rounded to 3 digits)."""
    con.execute("RESET memory_limit")
    now = current_memory_limit(con)
    if before and now != before:
        con.execute("SET memory_limit = $limit", {"limit": before})


@contextmanager
def memory_limit(con: duckdb.DuckDBPyConnection, limit: str) -> Iterator[None]:
    """Run the block under ``memory_limit`` = ``limit`` (DuckDB's size text, ``'512MB'``),
    then put back the connection's own (:func:`restore_memory_limit`), also when the block
    raises."""
    before = current_memory_limit(con)
    try:
        con.execute("SET memory_limit = $limit", {"limit": limit})
        yield
    finally:
        restore_memory_limit(con, before)
