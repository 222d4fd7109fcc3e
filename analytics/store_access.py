"""The read side's one door into the store: a read-only connection and query -> polars.

``read_store`` is :func:`telemetry.store.open_store` in read-only mode, re-exported with the
store's exceptions so the dashboard and the CLI never import duckdb or telemetry
themselves (imports run dashboard -> analytics -> telemetry.store). Given a ClickHouse
store URL (``clickhouse://...``, ``chdb:///dir``; issue 10) it yields a
:class:`~cliffwatch.telemetry.clickhouse.connection.EngineConnection` instead, which takes
the same calls and runs the same (transpiled) SQL in ClickHouse.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeAlias

import duckdb
import polars as pl

from cliffwatch import settings
from cliffwatch.telemetry.clickhouse import is_engine_connection
from cliffwatch.telemetry.store import (
    NotACliffwatchStoreError,
    StoreBusyError,
    StoreDamagedError,
    StoreError,
    StoreNotFoundError,
    open_store,
)

if TYPE_CHECKING:
    from cliffwatch.telemetry.clickhouse.connection import EngineConnection

Connection: TypeAlias = "duckdb.DuckDBPyConnection | EngineConnection"
"""What :func:`read_store` yields: a DuckDB connection, or a ClickHouse store's
DuckDB-shaped connection."""

__all__ = [
    "NotACliffwatchStoreError",
    "StoreBusyError",
    "StoreDamagedError",
    "StoreError",
    "StoreNotFoundError",
    "frame",
    "is_engine",
    "limit_clause",
    "read_store",
    "store_label",
    "where",
]


@contextmanager
def read_store(
    path: str | os.PathLike[str], *, timeout_s: float | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection to the store at ``path``, closed on exit.

    Args:
        path: the DuckDB file, or a ClickHouse store URL (``clickhouse://``, ``chdb://``;
            :func:`cliffwatch.telemetry.clickhouse.url.parse_store_url`): then the
            connection is an ``EngineConnection`` (typed as DuckDB's for the callers: it
            takes the same calls), and errors are ``StoreError`` subclasses with one line
            (bad URL, package missing, server unreachable, no cliffwatch tables).
        timeout_s: how long to retry while a writer holds the file; default
            ``cliffwatch.settings.lock_timeout_s()``.

    Raises:
        StoreNotFoundError: ``path`` does not exist.
        NotACliffwatchStoreError: ``path`` is not a DuckDB file or not a cliffwatch store.
        StoreBusyError: another process kept the file locked for ``timeout_s``.
        StoreDamagedError: the file is truncated (at open), or a query inside the block
            read a missing or corrupt block (raised from the block, in place of DuckDB's
            error): the same one-line store error either way, for the CLI and the
            dashboard alike (:func:`telemetry.store.open_store` is the one boundary).
    """
    if settings.is_engine_store(path):
        with _read_engine(os.fspath(path)) as engine:
            yield engine  # type: ignore[misc]
        return
    with open_store(path, read_only=True, timeout_s=timeout_s) as con:
        # DuckDB draws its own progress bar on a terminal for queries over ~2 s; it would
        # land in the middle of a CLI table or JSON document.
        con.execute("SET enable_progress_bar = false")
        yield con


@contextmanager
def _read_engine(url_text: str) -> Iterator[EngineConnection]:
    from cliffwatch.telemetry.clickhouse.client import connect
    from cliffwatch.telemetry.clickhouse.connection import EngineConnection, check_store
    from cliffwatch.telemetry.clickhouse.url import parse_store_url

    url = parse_store_url(url_text)
    if url.kind == "chdb" and not (url.path and url.path.is_dir()):
        raise StoreNotFoundError(f"store {url} does not exist")
    with connect(url) as client:
        check_store(client)
        con = EngineConnection(client)
        try:
            yield con
        finally:
            con.close()


def is_engine(con: object) -> bool:
    """Whether ``con`` reads a ClickHouse store (not DuckDB)."""
    return is_engine_connection(con)


def store_label(store: str | os.PathLike[str]) -> str:
    """A store as shown to people: the path, or the URL without its password.

    Raises:
        StoreError: a ClickHouse URL that does not parse.
    """
    if not settings.is_engine_store(store):
        return os.fspath(store)
    from cliffwatch.telemetry.clickhouse.url import parse_store_url

    return str(parse_store_url(os.fspath(store)))


def frame(
    con: duckdb.DuckDBPyConnection, sql: str, params: Mapping[str, Any] | None = None
) -> pl.DataFrame:
    """Run one read query with named parameters (``$name``) and return every row as polars.

    DuckDB 2.0 streams results and ``execute().pl()`` is gone; the frame reads the whole
    result, so the connection is free again afterwards. It is read through the Arrow
    PyCapsule stream (``__arrow_c_stream__``), not ``.pl()``: the same Arrow data and dtypes,
    but no pyarrow import (0.26 s of CPU at every CLI start; issue 11).
    """
    return pl.DataFrame(con.sql(sql, params=dict(params) if params else None))


def where(conditions: list[str]) -> str:
    """``WHERE a AND b ...`` of trusted SQL conditions, or "" when there are none."""
    return f"WHERE {' AND '.join(conditions)}" if conditions else ""


def limit_clause(limit: int | None) -> str:
    """``LIMIT n`` for at most ``limit`` rows, or "" for all of them (None).

    Raises:
        ValueError: ``limit`` is negative.
    """
    if limit is None:
        return ""
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    return f"LIMIT {int(limit)}"
