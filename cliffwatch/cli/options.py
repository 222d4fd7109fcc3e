"""Options and choices shared by the commands, and the store a command works on.

Every command resolves its store from ``--db``, else $CLIFFWATCH_DB, else
``data/cliffwatch.duckdb``: :func:`read_only_store` for a command that reads (a DuckDB file
or a ClickHouse store URL, ``clickhouse://...`` / ``chdb:///dir``; issue 10),
:func:`writable_store` for one that records runs or spans (a DuckDB file:
:func:`cliffwatch.settings.db_path` refuses a ClickHouse URL with one line).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cliffwatch import settings
from cliffwatch.telemetry.schema import INCIDENT_STATUSES

if TYPE_CHECKING:
    import duckdb


POLARS_ALLOCATOR_CONF = "background_thread:true,dirty_decay_ms:0,muzzy_decay_ms:0"
"""The configuration of polars' allocator (jemalloc, read from ``_RJEM_MALLOC_CONF`` at its
first allocation) for the commands that build frames of every run (``whatif``,
``findings``, ``report``): freed pages go back to the system at once, by a background
thread, not after jemalloc's default 10 s decay. At 1M runs a report's peak RSS was
1,015 MB with the default and 925 MB so, in the same wall time (20.6-23.7 s, load ~1.7;
issue 11). jemalloc's options: docs/sources.md#jemalloc."""


POLARS_OWN_ALLOCATOR_CONFS = (
    "dirty_decay_ms:500,muzzy_decay_ms:1000",
    "dirty_decay_ms:500,muzzy_decay_ms:1000,thp:always,metadata_thp:always",
)
"""What polars writes into ``os.environ["_RJEM_MALLOC_CONF"]`` when it is imported with the
variable unset (polars/__init__.py of polars 1.x; the second with ``POLARS_THP=1``): a
process started by one that had imported polars (a bench, a user's app, a notebook)
inherits it, and it is not a choice of the user's."""


def return_freed_memory() -> None:
    """Have polars hand the memory it frees back to the system at once in this process
    (:data:`POLARS_ALLOCATOR_CONF`): call before polars is first imported (a command's lazy
    imports). A ``_RJEM_MALLOC_CONF`` the user set is kept; one polars itself set in a
    parent process (:data:`POLARS_OWN_ALLOCATOR_CONFS`) is not the user's and is replaced
    (a ``report`` at 1M runs started so peaked at 967-984 MB against 870 MB: issue 11).
    Once polars is loaded in this process it changes nothing."""
    if os.environ.get("_RJEM_MALLOC_CONF") in (None, *POLARS_OWN_ALLOCATOR_CONFS):
        os.environ["_RJEM_MALLOC_CONF"] = POLARS_ALLOCATOR_CONF


class OutputFormat(StrEnum):
    """How tabular output is printed."""

    TABLE = "table"
    JSON = "json"
    CSV = "csv"


IncidentStatus = StrEnum(  # type: ignore[misc]
    "IncidentStatus", [(status.upper(), status) for status in INCIDENT_STATUSES]
)
"""Triage statuses of an incident (from the store's schema), as CLI choices."""

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Store: a DuckDB file, or for reading a ClickHouse URL "
        "(clickhouse://host/db, chdb:///dir) (default: $CLIFFWATCH_DB, else "
        "data/cliffwatch.duckdb in the current directory).",
        metavar="PATH|URL",
        show_default=False,
    ),
]
FormatOption = Annotated[
    OutputFormat,
    typer.Option("--format", help="Output: a table, JSON (array of objects) or CSV."),
]


def given_when(value: str | None) -> str | None:
    """A ``--since`` / ``--until`` value as given: left out is None (an open end), but an
    empty one is refused (a shell variable that came out empty is no "all time").

    Raises:
        typer.BadParameter: the value is empty or blank.
    """
    if value is not None and not value.strip():
        raise typer.BadParameter("empty: give a time (2026-11-01, 2026-11-01T12:00, 7d, "
                                 "today) or leave the option out")
    return value


SinceOption = Annotated[
    str | None,
    typer.Option(
        "--since",
        metavar="WHEN",
        help="From this time on, inclusive: 2026-11-01, 2026-11-01T12:00, 7d, 24h, today.",
        callback=given_when,
    ),
]
UntilOption = Annotated[
    str | None,
    typer.Option("--until", metavar="WHEN", callback=given_when,
                 help="Before this time, exclusive (same forms as --since)."),
]
def limit_option(noun: str, table_limit: int) -> Any:
    """The ``--limit`` option of a listing of ``noun`` (``runs``, ``incidents``,
    ``alerts``): the newest N, 0 for all; left out, ``table_limit`` rows in a table and
    every row in JSON and CSV."""
    return typer.Option("--limit", min=0, show_default=False,
                        help=f"Newest N {noun}; 0 for all (default: {table_limit} in a "
                             "table, all in JSON and CSV).")


TaskClassOption = Annotated[
    str | None,
    typer.Option("--task-class", metavar="CLASS", help="Only runs of this task class."),
]


def missing_store_hint(path: Path, option: str = "--db") -> str:
    """What to run when the store at ``path`` does not exist (the CLI's and dashboard's
    promise in the README: a missing store says what to run); ``option`` names the option
    the user gave it with (``--db``, which $CLIFFWATCH_DB stands in for, or ``--from``)."""
    point = f"--db or ${settings.CLIFFWATCH_DB}" if option == "--db" else option
    return f"fill one with 'cliffwatch demo --db {path}', or point {point} at your store"


@contextmanager
def read_only_store(
    db: str | Path | None, option: str = "--db"
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection to the resolved store (DuckDB, or ClickHouse by URL);
    ``option`` is the option that gave ``db`` (named by the missing store's hint).

    Raises:
        StoreNotFoundError: the store is missing (the message says what to run).
        StoreError: the store is not a cliffwatch store, or busy; a ClickHouse URL that
            is bad, unreachable or has no cliffwatch tables.
    """
    from cliffwatch.analytics.store_access import (  # lazy: DuckDB, pyarrow
        StoreNotFoundError,
        read_store,
    )

    url = settings.db_url(db)
    if settings.is_engine_store(url):
        with read_store(url) as con:
            yield con
        return
    path = Path(url)
    if not path.exists():
        raise StoreNotFoundError(
            f"store {path} does not exist: {missing_store_hint(path, option)}")
    with read_store(path) as con:
        yield con


def writable_store(db: str | Path | None) -> Path:
    """The resolved store path for a command that writes runs or spans: a new file is
    fine, an existing one must be a cliffwatch store, and the alert settings the write
    reads must be good (checked now, before any work).

    Raises:
        StoreError: the file exists and is not a cliffwatch store, or is busy.
        SettingError: the store is a ClickHouse URL (written by ``cliffwatch watch``), or an
            alert setting is bad (:func:`cliffwatch.settings.check_alert_settings`).
    """
    settings.check_alert_settings()
    path = settings.db_path(db)
    if path.exists():
        with read_only_store(path):
            pass
    return path


def span_store(db: str | Path | None) -> Path | str:
    """The store a command that writes spans (``demo``, ``run``, ``serve``) sends them to:
    a ClickHouse store URL as given, else :func:`writable_store`; either way the alert
    settings are checked now, before any work.

    Raises:
        StoreError: a DuckDB file that exists and is not a cliffwatch store, or is busy.
        SettingError: an alert setting is bad.
    """
    url = settings.db_url(db)
    if settings.is_engine_store(url):
        settings.check_alert_settings()
        return url
    return writable_store(db)
