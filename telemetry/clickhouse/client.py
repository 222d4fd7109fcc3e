"""One small client over the two ways to reach ClickHouse: chDB (embedded) and a server.

:func:`connect` takes a :class:`~cliffwatch.telemetry.clickhouse.url.StoreURL` and returns
a :class:`ClickHouseClient` with four calls (``query_arrow``, ``command``,
``insert_arrow``, ``close``) that everything ClickHouse in cliffwatch is written against,
so the tests exercise the same SQL on chDB as a fleet runs on its server.

chDB runs one embedded engine per process, bound to one data folder; the engine is started
once and shared by every client of that folder (starting it costs about half a second). A
client of another folder closes it first, if no client still holds it.
"""

from __future__ import annotations

import atexit
import io
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc

from cliffwatch.telemetry.clickhouse.url import StoreURL
from cliffwatch.telemetry.store import StoreError

INSTALL_HINT = "pip install 'cliffwatch[clickhouse]'"


class ClickHouseError(StoreError):
    """ClickHouse refused a statement or cannot be reached; the message is one line."""


class ClickHouseMissingError(StoreError):
    """The package that reaches ClickHouse (chdb or clickhouse-connect) is not installed."""


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class ClickHouseClient:
    """A ClickHouse connection: SQL in, Arrow out. Use as a context manager or ``close()``.

    Every call raises :class:`ClickHouseError` (one line, naming the store) when the engine
    refuses the statement or cannot be reached.
    """

    url: StoreURL

    def query_arrow(self, sql: str) -> pa.Table:
        """Run one SELECT and return all its rows as a pyarrow Table."""
        raise NotImplementedError

    def command(self, sql: str) -> None:
        """Run one statement that returns no rows (DDL, ``INSERT ... SELECT``)."""
        raise NotImplementedError

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        """Append ``data`` to ``table`` (column names must match; extra table columns take
        their defaults)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the connection; idempotent."""

    def __enter__(self) -> ClickHouseClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _fail(self, exc: BaseException) -> ClickHouseError:
        return ClickHouseError(f"store {self.url}: {_one_line(exc)}")


class _ChdbEngine:
    """The process's one chDB session: its folder and how many clients hold it."""

    lock = threading.RLock()
    session: Any = None
    path: Path | None = None
    holders = 0


def _chdb_session(path: Path) -> Any:
    """The shared chDB session of ``path``, started if needed (call with the lock held)."""
    try:
        from chdb.session import Session
    except ImportError:
        raise ClickHouseMissingError(
            f"chdb:// stores need the chdb package: {INSTALL_HINT} or pip install chdb"
        ) from None
    resolved = path.resolve()
    if _ChdbEngine.session is not None and _ChdbEngine.path != resolved:
        if _ChdbEngine.holders:
            raise ClickHouseError(
                f"store chdb://{path}: chDB runs one data folder per process and "
                f"chdb://{_ChdbEngine.path} is open"
            )
        _ChdbEngine.session.close()
        _ChdbEngine.session = None
    if _ChdbEngine.session is None:
        resolved.mkdir(parents=True, exist_ok=True)
        try:
            _ChdbEngine.session = Session(str(resolved))
        except Exception as exc:
            raise ClickHouseError(f"store chdb://{path}: {_one_line(exc)}") from None
        _ChdbEngine.path = resolved
        atexit.register(_close_engine)
    return _ChdbEngine.session


def _close_engine() -> None:
    """Stop the embedded engine before the interpreter tears down (chDB crashes at exit
    with a session left open)."""
    with _ChdbEngine.lock:
        if _ChdbEngine.session is not None:
            _ChdbEngine.session.close()
            _ChdbEngine.session = None
            _ChdbEngine.path = None


class ChdbClient(ClickHouseClient):
    """A client of the embedded engine (chDB) over the data folder ``url.path``."""

    def __init__(self, url: StoreURL) -> None:
        assert url.path is not None
        self.url = url
        with _ChdbEngine.lock:
            self._session = _chdb_session(url.path)
            _ChdbEngine.holders += 1
        self._open = True

    def query_arrow(self, sql: str) -> pa.Table:
        with _ChdbEngine.lock:
            try:
                table = self._session.query(sql, "ArrowTable")
            except Exception as exc:
                raise self._fail(exc) from None
        # An empty result without columns comes back as an empty bytes buffer.
        return table if isinstance(table, pa.Table) else pa.table({})

    def command(self, sql: str) -> None:
        with _ChdbEngine.lock:
            try:
                self._session.query(sql, "Null")
            except Exception as exc:
                raise self._fail(exc) from None

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        sink = io.BytesIO()
        with pyarrow.ipc.new_stream(sink, data.schema) as writer:
            writer.write_table(data)
        columns = ", ".join(f"`{name}`" for name in data.column_names)
        count = f"SELECT count() FROM {table}"
        with _ChdbEngine.lock:
            try:
                before = int(self._session.query(count, "CSV").bytes())
                with self._session._conn.send_insert(
                    f"INSERT INTO {table} ({columns})", "ArrowStream"
                ) as inserter:
                    inserter.append(sink.getvalue())
                    inserter.finish()
                # chDB's streaming insert neither raises nor says so when the engine
                # refuses the block (too many partitions, a bad value): nothing is written.
                # The process owns the folder and holds the lock, so the count tells; the
                # same insert through the Python() table function then raises the cause.
                # (A background merge of ReplacingMergeTree versions can lower the count
                # too: the rows are then inserted twice, which such a table collapses.)
                if int(self._session.query(count, "CSV").bytes()) - before != data.num_rows:
                    self._session.query(f"INSERT INTO {table} ({columns}) "
                                        "SELECT * FROM Python(data)")
            except Exception as exc:
                raise self._fail(exc) from None

    def close(self) -> None:
        """Release this client; the engine stays up for the next client of the folder."""
        with _ChdbEngine.lock:
            if self._open:
                self._open = False
                _ChdbEngine.holders -= 1


DRIVER_LOGGER = "clickhouse_connect"
"""clickhouse-connect's logger: it logs a WARNING ("Unexpected Http Driver Exception") for
every failed request before raising, which cliffwatch reports itself in one line."""


class _QuietDriver:
    """How many of cliffwatch's calls into clickhouse-connect are running, and the level its
    logger had before the first of them."""

    lock = threading.Lock()
    calls = 0
    level = logging.NOTSET


@contextmanager
def _quiet_driver() -> Iterator[None]:
    """Raise clickhouse-connect's logger to ERROR while cliffwatch calls the driver (and
    restore it after), so a failed request is one :class:`ClickHouseError`, not a driver
    warning too; the application's own logging setup is left as it is otherwise."""
    logger = logging.getLogger(DRIVER_LOGGER)
    with _QuietDriver.lock:
        if _QuietDriver.calls == 0:
            _QuietDriver.level = logger.level
            logger.setLevel(max(logger.level, logging.ERROR))
        _QuietDriver.calls += 1
    try:
        yield
    finally:
        with _QuietDriver.lock:
            _QuietDriver.calls -= 1
            if _QuietDriver.calls == 0:
                logger.setLevel(_QuietDriver.level)


def _unreachable_reason(exc: BaseException) -> str | None:
    """Why the server could not be reached (``connection refused``, ``name or service not
    known``, ``timed out``), from the socket error under the driver's exception; None when
    the server answered (the failure is ClickHouse's own)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        err = todo.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, TimeoutError) or type(err).__name__ == "ConnectTimeoutError":
            return "timed out"
        if isinstance(err, OSError) and err.strerror:
            return err.strerror[:1].lower() + err.strerror[1:]
        reason = getattr(err, "reason", None)  # urllib3's MaxRetryError
        todo.extend([err.__cause__, err.__context__,
                     reason if isinstance(reason, BaseException) else None])
    return None


class ServerClient(ClickHouseClient):
    """A client of a ClickHouse server over HTTP (``clickhouse-connect``).

    Every call into the driver runs with its logger quieted (:func:`_quiet_driver`); a
    server that cannot be reached is ``cannot reach ClickHouse at HOST:PORT: REASON``.
    """

    def __init__(self, url: StoreURL) -> None:
        try:
            import clickhouse_connect
        except ImportError:
            raise ClickHouseMissingError(
                f"clickhouse:// stores need clickhouse-connect: {INSTALL_HINT}"
            ) from None
        self.url = url
        try:
            with _quiet_driver():
                self._client = clickhouse_connect.get_client(
                    host=url.host,
                    port=url.port,
                    username=url.user,
                    password=url.password or "",
                    database=url.database,
                    secure=url.secure,
                )
        except Exception as exc:
            raise self._fail(exc) from None

    def _fail(self, exc: BaseException) -> ClickHouseError:
        reason = _unreachable_reason(exc)
        if reason is None:
            return super()._fail(exc)
        return ClickHouseError(f"cannot reach ClickHouse at {self.url.host}:{self.url.port}: "
                               f"{reason}")

    def query_arrow(self, sql: str) -> pa.Table:
        try:
            with _quiet_driver():
                return self._client.query_arrow(sql, use_strings=True)
        except Exception as exc:
            raise self._fail(exc) from None

    def command(self, sql: str) -> None:
        try:
            with _quiet_driver():
                self._client.command(sql)
        except Exception as exc:
            raise self._fail(exc) from None

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        try:
            with _quiet_driver():
                self._client.insert_arrow(table, data)
        except Exception as exc:
            raise self._fail(exc) from None

    def close(self) -> None:
        with _quiet_driver():
            self._client.close()


def connect(url: StoreURL) -> ClickHouseClient:
    """A client of the engine ``url`` names.

    Args:
        url: a ``chdb`` or ``clickhouse`` store URL.

    Raises:
        ClickHouseMissingError: chdb / clickhouse-connect is not installed.
        ClickHouseError: the engine cannot be started or reached, or chDB already runs
            another folder in this process.
        ValueError: ``url`` is a DuckDB path.
    """
    if url.kind == "chdb":
        return ChdbClient(url)
    if url.kind == "clickhouse":
        return ServerClient(url)
    raise ValueError(f"{url} is a DuckDB store, not a ClickHouse one")
