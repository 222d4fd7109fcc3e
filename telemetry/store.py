"""The DuckDB store's connection layer: short-lived connections with lock retry, schema
creation and version checks, and the store errors.

DuckDB 2.0 lets one process hold a file read-write, or several processes hold it
read-only, never both; any other connect fails at once with ``IOException: Could not set
lock on file`` (docs/sources.md#duckdb-single-writer). So connections are short: every
:func:`open_store` opens, does its work and closes (the one exception,
:class:`HeldStore`, keeps a writer's connection for a bounded time and lets go when idle),
and a lock conflict is retried with exponential backoff and full jitter until a timeout,
then reported as :class:`StoreBusyError`. Within one process the conflict shows up as a
``ConnectionException`` ("different configuration") when a read-only and a read-write
connection overlap, or a ``ResourceInUseException`` ("Unique file handle conflict") when
two threads attach or close the file at the same moment; both are retried the same way.

Spans enter the store only through :func:`telemetry.write_pipeline.write_spans` (spill,
insert, materialise, incidents, alert outbox), which builds on this module; this module
imports nothing of the write side, so readers (analytics, triage, alert delivery) depend
on the connection layer alone.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from cliffwatch import settings
from cliffwatch.errors import CliffwatchError
from cliffwatch.telemetry import estimate_inputs
from cliffwatch.telemetry.memory_limit import memory_limit
from cliffwatch.telemetry.schema import (
    DDL,
    META_TABLE,
    RUNS_UNKEYED_MIGRATION,
    SCHEMA_VERSION,
    SPANS_UNKEYED_MIGRATION,
    VERSION_BUMP,
)

SPANS_UNKEYED_SINCE = 4
"""The schema version from which ``spans`` has no primary key (schema.py)."""

RUNS_UNKEYED_SINCE = 6
"""The schema version from which ``runs`` has no primary key (schema.py)."""

# Backoff: the first retry after about 5 ms (a writer holds the file for a few ms per
# batch), doubling up to 100 ms so a long holder is polled ten times a second, with
# "full jitter" (sleep uniformly in [0, delay]) so that competing processes do not retry
# in lockstep (AWS Architecture Blog, "Exponential Backoff And Jitter", 2015).
_BACKOFF_FIRST_S = 0.005
_BACKOFF_MAX_S = 0.1

_LOCK_MESSAGES = (
    "Could not set lock on file",  # another process holds the file
    "different configuration",  # this process holds it read-only vs read-write
    "Unique file handle conflict",  # this process is attaching or closing it right now
)
_NOT_DUCKDB_MESSAGE = "not a valid DuckDB database file"
_MISSING_MESSAGE = "database does not exist"

_write_locks: dict[str, threading.Lock] = {}
_write_locks_guard = threading.Lock()

class StoreError(CliffwatchError):
    """A cliffwatch store cannot be used; the message is one line naming the path."""


class StoreNotFoundError(StoreError):
    """A read-only open of a store file that does not exist."""


class NotACliffwatchStoreError(StoreError):
    """The file exists but is not a DuckDB database, or is one without ``cliffwatch_meta``."""


class StoreBusyError(StoreError):
    """Another process held the store's lock for longer than the timeout."""


class StoreDamagedError(StoreError):
    """The store file is truncated or a block of it fails DuckDB's checksum."""


# DuckDB's file layout (docs/sources.md#duckdb-file-damage-and-failed-commits): three
# 4 KiB headers, then blocks of ``block_size`` bytes. A checkpoint cuts free blocks off the
# end of the file (``total_blocks`` still counts them), so only the blocks in use must be
# in the file: at least ``used_blocks`` of them.
_FILE_HEADERS_BYTES = 3 * 4096

_SHORT_READ_MESSAGE = "Could not read enough bytes"
"""DuckDB's words for a file that ends before a block it lists (truncated)."""

_DAMAGE_MESSAGES = (
    _SHORT_READ_MESSAGE,
    "checksum",  # a block's stored checksum does not match its content
    "Corrupt database file",
)


def _store_failure(exc: BaseException) -> bool:
    """Whether a DuckDB error comes from the store file (I/O, damage, a failed commit),
    not from the query or the values written."""
    if isinstance(exc, (duckdb.IOException, duckdb.FatalException,
                        duckdb.SerializationException)):
        return True
    text = str(exc)
    return isinstance(exc, duckdb.Error) and (
        "Failed to commit" in text or "invalidated" in text
        or any(m in text for m in _DAMAGE_MESSAGES)
    )


def store_error(path: str | os.PathLike[str], exc: BaseException) -> StoreError:
    """The one-line :class:`StoreError` for a DuckDB error raised by the store file.

    Args:
        path: the store.
        exc: the error (DuckDB's message: its first line is kept, naming the cause, e.g.
            ``No space left on device``).

    Returns:
        :class:`StoreDamagedError` when the file is truncated or corrupt, else
        :class:`StoreError` ("store PATH: cannot write: ...").
    """
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else type(exc).__name__
    if any(m in first for m in _DAMAGE_MESSAGES):
        return StoreDamagedError(f"store {path} is damaged (truncated or corrupt): {first}")
    return StoreError(f"store {path} failed: {first}")


def _check_length(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Raise :class:`StoreDamagedError` when the file is shorter than its blocks in use.

    DuckDB reads a truncated file until a query reaches a missing block, so a store cut
    short answers some queries (wrongly: from the blocks left) and fails others; this
    check makes every open fail instead. It costs one pragma. It is a lower bound (the
    blocks in use need not be the first ones), so it never refuses a sound file and
    catches a file cut by more than its free blocks (a file cut to half, in practice).
    Damage inside the file is caught by DuckDB's per-block checksums when the block is
    read, not here.
    """
    size_bytes = path.stat().st_size
    row = con.execute(
        "SELECT block_size, used_blocks FROM pragma_database_size() "
        "WHERE database_name = current_database()"
    ).fetchone()
    if row is None:
        return
    block_size, used_blocks = int(row[0]), int(row[1])
    needed_bytes = _FILE_HEADERS_BYTES + used_blocks * block_size
    if used_blocks and size_bytes < needed_bytes:
        raise _truncated(path, f"but its {used_blocks} blocks in use need {needed_bytes:,}")


def _truncated(path: Path, why: str) -> StoreDamagedError:
    """The one message of a store file cut short: ``store PATH is damaged: the file is N
    bytes <why> (truncated?)``."""
    try:
        size = f"{path.stat().st_size:,} bytes"
    except OSError:
        size = "shorter"
    return StoreDamagedError(f"store {path} is damaged: the file is {size} {why} (truncated?)")


def rollback_quietly(con: duckdb.DuckDBPyConnection) -> None:
    """ROLLBACK the open transaction, if DuckDB still has one.

    Used in ``except`` blocks: when COMMIT itself failed (disk full) DuckDB has already
    ended the transaction and ROLLBACK raises "no transaction is active"
    (docs/sources.md#duckdb-file-damage-and-failed-commits), which would replace the
    error that matters. That second error is dropped here.
    """
    try:
        con.execute("ROLLBACK")
    except duckdb.Error:
        pass


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """BEGIN ... COMMIT around the block; ROLLBACK (quietly) and re-raise on any error,
    so the error raised is the one that failed the block or the COMMIT."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield
        con.execute("COMMIT")
    except BaseException:
        rollback_quietly(con)
        raise


def _is_lock_conflict(exc: duckdb.Error) -> bool:
    text = str(exc)
    return any(m in text for m in _LOCK_MESSAGES)


def _connect(path: Path, read_only: bool, timeout_s: float) -> duckdb.DuckDBPyConnection:
    deadline = time.monotonic() + timeout_s
    delay = _BACKOFF_FIRST_S
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.Error as exc:
            text = str(exc)
            if _NOT_DUCKDB_MESSAGE in text:
                raise NotACliffwatchStoreError(
                    f"{path} is not a cliffwatch store (not a DuckDB database file)"
                ) from None
            if read_only and _MISSING_MESSAGE in text:
                raise StoreNotFoundError(f"store {path} does not exist") from None
            if _SHORT_READ_MESSAGE in text:  # cut short before the blocks an open reads
                raise _truncated(path, "and ends before the blocks DuckDB reads to open "
                                 "it") from None
            damaged = store_error(path, exc)
            if isinstance(damaged, StoreDamagedError):  # a corrupt header or block
                raise damaged from None
            if not _is_lock_conflict(exc):
                first_line = text.splitlines()[0] if text else type(exc).__name__
                raise StoreError(f"cannot open store {path}: {first_line}") from exc
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            mode = "read-only" if read_only else "read-write"
            raise StoreBusyError(
                f"store {path} is busy: another process held its lock for {timeout_s:g} s "
                f"({mode} open gave up)"
            )
        time.sleep(min(random.uniform(0, delay), remaining))
        delay = min(delay * 2, _BACKOFF_MAX_S)


def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    rows = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = ? AND schema_name = 'main'",
        [name],
    ).fetchall()
    return rows[0][0] > 0


def _check_version(con: duckdb.DuckDBPyConnection, path: Path) -> int:
    rows = con.execute(
        f"SELECT value FROM {META_TABLE} WHERE key = 'schema_version'"
    ).fetchall()
    if not rows:
        raise NotACliffwatchStoreError(f"{path} is not a cliffwatch store (no schema version)")
    version = int(rows[0][0])
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"store {path} has schema version {version}; this cliffwatch reads up to "
            f"{SCHEMA_VERSION} (upgrade cliffwatch)"
        )
    return version


def _ensure_schema(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    is_new = not _has_table(con, META_TABLE)
    version = None
    if not is_new:
        version = _check_version(con, path)
        if version == SCHEMA_VERSION:
            return  # DDL only on a schema change: nothing to run on an up-to-date store
    elif con.execute("SELECT count(*) FROM duckdb_tables()").fetchall()[0][0] > 0:
        # Someone else's database: do not add our tables to it.
        raise NotACliffwatchStoreError(
            f"{path} is not a cliffwatch store (a DuckDB database without {META_TABLE})"
        )
    # A new store, or an older version: the DDL and migrations (idempotent) bring it to
    # SCHEMA_VERSION; an older store's version is raised last, once every step committed.
    with transaction(con):
        for statement in DDL:
            con.execute(statement)
        if is_new:
            con.execute(
                f"INSERT INTO {META_TABLE} VALUES ('schema_version', ?), ('created_at', ?)",
                [str(SCHEMA_VERSION), datetime.now(UTC).isoformat()],
            )
        if version is not None and version < SPANS_UNKEYED_SINCE:
            for statement in SPANS_UNKEYED_MIGRATION:  # once: rebuilds spans (seconds)
                con.execute(statement)
        if version is not None and version < RUNS_UNKEYED_SINCE:
            for statement in RUNS_UNKEYED_MIGRATION:  # once: rebuilds runs
                con.execute(statement)
    if version is None:
        return
    if version < estimate_inputs.SINCE_VERSION:
        # committed chunk by chunk under a memory bound, before the version is raised
        with memory_limit(con, estimate_inputs.BACKFILL_MEMORY_LIMIT):
            chunks = estimate_inputs.backfill_chunks(con)
            for chunk in range(chunks):
                with transaction(con):
                    con.execute(estimate_inputs.BACKFILL, {"chunks": chunks, "chunk": chunk})
    with transaction(con):
        con.execute(VERSION_BUMP)


@contextmanager
def open_store(
    path: str | os.PathLike[str], *, read_only: bool, timeout_s: float | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the store for one short piece of work, retrying while another process holds it.

    Read-write opens create the parent directory, the schema and the ``cliffwatch_meta``
    row when the file is new. Read-only opens check that the file is a cliffwatch store.
    The connection is closed on exit, whatever happens; do not keep it.

    Args:
        path: the DuckDB file.
        read_only: open read-only (several processes may) or read-write (one process).
        timeout_s: seconds to keep retrying a lock conflict; default
            ``settings.lock_timeout_s()`` ($CLIFFWATCH_LOCK_TIMEOUT_S, 10 s).

    Yields:
        A duckdb connection. Read every result to the end (DuckDB 2.0 results stream).

    Raises:
        StoreNotFoundError: read-only and the file does not exist.
        NotACliffwatchStoreError: the file is not a DuckDB database, or lacks
            ``cliffwatch_meta`` (read-write refuses to add tables to a foreign database).
        StoreBusyError: the lock was not obtained within ``timeout_s``.
        StoreDamagedError: the file is shorter than its blocks need (truncated), at open;
            or, raised from the ``with`` block, a block read failed (truncated, or its
            checksum does not match).
        StoreError: any other failure to open (permissions, newer schema version), or a
            store failure raised from the ``with`` block (a failed commit: disk full).
            DuckDB errors of the query or the values (a bad cast) pass through as they
            are.
    """
    store_path = Path(path)
    timeout = settings.lock_timeout_s() if timeout_s is None else timeout_s
    if read_only and not store_path.exists():
        raise StoreNotFoundError(f"store {store_path} does not exist")
    if not read_only:
        store_path.parent.mkdir(parents=True, exist_ok=True)
    con = _connect(store_path, read_only, timeout)
    try:
        _check_length(con, store_path)
        if read_only:
            if not _has_table(con, META_TABLE):
                raise NotACliffwatchStoreError(
                    f"{store_path} is not a cliffwatch store (no {META_TABLE} table)"
                )
            _check_version(con, store_path)
        else:
            _ensure_schema(con, store_path)
        yield con
    except duckdb.Error as exc:
        # The store's one boundary for errors raised while it is used: a block that
        # cannot be read or a commit that cannot be written is one line naming the store,
        # for every reader and writer (CLI, dashboard, receiver) alike.
        if not _store_failure(exc):
            raise
        raise store_error(store_path, exc) from exc
    finally:
        con.close()


def write_lock(path: str | os.PathLike[str]) -> threading.Lock:
    """This process's lock for read-write work on the store at ``path``.

    DuckDB's file lock is per process: two threads of one process could both open the
    file read-write and race on the same keys. :func:`telemetry.write_pipeline.write_spans`
    holds this lock while it writes; other read-write work in the process holds it too so
    that it never overlaps a span write (alert delivery, :mod:`telemetry.alerts`, does).

    Args:
        path: the store; relative and absolute spellings of one file share a lock.

    Returns:
        The one :class:`threading.Lock` for that path (created on first use, kept for
        the life of the process). Acquire it with a timeout and raise
        :class:`StoreBusyError` when it is not obtained, as
        :func:`telemetry.write_pipeline.write_spans` does.
    """
    key = os.path.abspath(path)
    with _write_locks_guard:
        return _write_locks.setdefault(key, threading.Lock())


class HeldStore:
    """One read-write connection kept open across the writes of one writer thread, for at
    most ``hold_max_s`` at a time.

    Each :func:`open_store` pays the open (schema check) and the close (DuckDB checkpoints
    the write-ahead log when the last connection closes); a process that owns a store and
    writes many batches (``cliffwatch serve``) keeps the connection instead, so DuckDB
    checkpoints when its log is full, not per batch. While it is held no other process
    can open the file, not even read-only, so the owner lets go: when idle
    (:meth:`release`), and once ``hold_max_s`` is up (:attr:`due`), after which it should
    pause :data:`READER_WINDOW_S` before the next write, long enough for a reader's
    retry (at most :data:`_BACKOFF_MAX_S` apart) to take the file.

    Not thread-safe: one writer thread uses it (under :func:`write_lock` for each write).

    Args:
        path: the store (created on first use).
        hold_max_s: longest a connection is kept, seconds.
    """

    def __init__(self, path: str | os.PathLike[str], *, hold_max_s: float) -> None:
        self.path = Path(path)
        self.hold_max_s = hold_max_s
        self._stack: ExitStack | None = None
        self._con: duckdb.DuckDBPyConnection | None = None
        self._opened_at = 0.0

    @property
    def held(self) -> bool:
        """Whether a connection is open now."""
        return self._con is not None

    @property
    def due(self) -> bool:
        """Whether the connection has been held for ``hold_max_s`` or longer."""
        return self._con is not None and time.monotonic() - self._opened_at >= self.hold_max_s

    @contextmanager
    def use(self, timeout_s: float | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """The held connection, opened first when there is none (as :func:`open_store`
        read-write, retrying a lock conflict for ``timeout_s``).

        Raises:
            What :func:`open_store` raises on open; from the block, a store failure as
            :func:`store_error` (the connection is closed then, and reopened on the next
            use); other errors pass through as they are, and a DuckDB error of any kind
            closes the connection too.
        """
        if self._con is None:
            stack = ExitStack()
            self._con = stack.enter_context(
                open_store(self.path, read_only=False, timeout_s=timeout_s))
            self._stack, self._opened_at = stack, time.monotonic()
        try:
            yield self._con
        except duckdb.Error as exc:
            self.release()
            if not _store_failure(exc):
                raise
            raise store_error(self.path, exc) from exc

    def release(self) -> None:
        """Close the connection if one is open (DuckDB checkpoints). Never raises: what is
        committed is in the write-ahead log already, which the next open replays."""
        stack, self._stack, self._con = self._stack, None, None
        if stack is not None:
            try:
                stack.close()
            except Exception as exc:  # noqa: BLE001 - a failed checkpoint loses nothing
                logging.getLogger(__name__).warning(
                    "cliffwatch: closing store %s: %s", self.path, str(exc).splitlines()[:1])


READER_WINDOW_S = 0.15
"""How long a :class:`HeldStore` owner leaves the file free after a hold of ``hold_max_s``:
more than :data:`_BACKOFF_MAX_S`, the longest a waiting reader sleeps between tries."""


def is_engine_connection(con: object) -> bool:
    """Whether ``con`` is a ClickHouse store's connection
    (:class:`telemetry.clickhouse.connection.EngineConnection`), not DuckDB's. Imports
    nothing, so the DuckDB path pays nothing for it; here, in the connection layer, so a
    reader asks without importing the ClickHouse package (whose write side, ``watch``,
    imports the readers: a cycle)."""
    return getattr(con, "is_clickhouse", False) is True
