"""The read side's one door into the store: a read-only connection and query -> polars.

``read_store`` is :func:`telemetry.store.open_store` in read-only mode, re-exported with the
store's exceptions so the dashboard and the CLI never import duckdb or telemetry
themselves (imports run dashboard -> analytics -> telemetry.store).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import duckdb
import polars as pl

from cliffwatch.telemetry.store import (
    NotACliffwatchStoreError,
    StoreBusyError,
    StoreDamagedError,
    StoreError,
    StoreNotFoundError,
    open_store,
)

__all__ = [
    "NotACliffwatchStoreError",
    "StoreBusyError",
    "StoreDamagedError",
    "StoreError",
    "StoreNotFoundError",
    "frame",
    "limit_clause",
    "read_store",
    "where",
]


@contextmanager
def read_store(
    path: str | os.PathLike[str], *, timeout_s: float | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection to the store at ``path``, closed on exit.

    Args:
        path: the DuckDB file.
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
    with open_store(path, read_only=True, timeout_s=timeout_s) as con:
        # DuckDB draws its own progress bar on a terminal for queries over ~2 s; it would
        # land in the middle of a CLI table or JSON document.
        con.execute("SET enable_progress_bar = false")
        yield con


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
