"""Store URLs: which backend a ``--db`` / ``$CLIFFWATCH_DB`` names (issue 10).

- a plain path (``data/cliffwatch.duckdb``): the embedded DuckDB store, the default;
- ``clickhouse://user:password@host:8123/database``: a ClickHouse server over HTTP through
  ``clickhouse-connect`` (``clickhouses://`` for HTTPS; port default 8123, 8443 for https;
  user default ``default``; database default ``default``);
- ``chdb:///absolute/dir`` or ``chdb://relative/dir``: the same engine embedded (a chDB
  session whose data lives in that folder).

Either engine URL takes the query parameter ``traces_table`` (default ``otel_traces``): the
table the OpenTelemetry Collector's ClickHouse exporter writes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

from cliffwatch import settings
from cliffwatch.telemetry.store import StoreError

StoreKind = Literal["duckdb", "clickhouse", "chdb"]

DEFAULT_TRACES_TABLE = "otel_traces"
"""The table name the Collector's ``clickhouseexporter`` uses unless configured otherwise
(its ``traces_table_name`` setting)."""

ENGINE_SCHEMES = settings.ENGINE_URL_SCHEMES
"""The URL prefixes that name a ClickHouse engine rather than a DuckDB file."""

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class StoreURLError(StoreError, ValueError):
    """A store URL cliffwatch cannot use; the message is one line (without the password)."""


@dataclass(frozen=True)
class StoreURL:
    """A parsed store URL.

    Attributes:
        kind: ``duckdb`` (a file), ``clickhouse`` (a server over HTTP) or ``chdb`` (embedded).
        path: the DuckDB file, or the chDB data folder; None for a server.
        host, port, user, password, secure: the server (``clickhouse`` only).
        database: the ClickHouse database (``default`` unless the URL names one).
        traces_table: the Collector's span table (``?traces_table=``, default ``otel_traces``).
    """

    kind: StoreKind
    path: Path | None = None
    host: str | None = None
    port: int | None = None
    user: str | None = None
    password: str | None = None
    database: str = "default"
    traces_table: str = DEFAULT_TRACES_TABLE
    secure: bool = False

    @property
    def is_engine(self) -> bool:
        """True for ClickHouse (server or chDB), False for DuckDB."""
        return self.kind != "duckdb"

    def __str__(self) -> str:
        """The URL as shown to people: never the password."""
        if self.kind == "duckdb":
            return str(self.path)
        if self.kind == "chdb":
            return f"chdb://{self.path}"
        scheme = "clickhouses" if self.secure else "clickhouse"
        return f"{scheme}://{self.user}@{self.host}:{self.port}/{self.database}"


def is_engine_url(text: str | object) -> bool:
    """Whether ``text`` names a ClickHouse engine (``clickhouse://``, ``chdb://``)."""
    return isinstance(text, str) and settings.is_engine_store(text)


def _identifier(value: str, what: str, shown: str) -> str:
    if not _IDENTIFIER.match(value):
        raise StoreURLError(
            f"store URL {shown}: {what} {value!r} must be letters, digits and underscores"
        )
    return value


def parse_store_url(text: str | Path) -> StoreURL:
    """Parse a ``--db`` value.

    Args:
        text: a path (DuckDB) or an engine URL (see the module docstring).

    Returns:
        The :class:`StoreURL`.

    Raises:
        StoreURLError: an engine URL with no host (server) or folder (chDB), a bad port, an
            unknown query parameter, or a database or table name that is not a plain
            identifier (names are put into SQL, so only ``[A-Za-z_][A-Za-z0-9_]*``).
    """
    if isinstance(text, Path) or not is_engine_url(text):
        return StoreURL(kind="duckdb", path=Path(text))
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    shown = f"{scheme}://{parts.hostname or ''}{parts.path}"
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - {"traces_table"})
    if unknown:
        raise StoreURLError(
            f"store URL {shown}: unknown parameter {unknown[0]!r} (known: traces_table)"
        )
    traces_table = _identifier(
        query.get("traces_table", [DEFAULT_TRACES_TABLE])[-1], "traces_table", shown
    )
    if scheme == "chdb":
        # chdb:///abs/dir -> netloc "", path "/abs/dir"; chdb://rel/dir -> netloc "rel".
        raw = unquote(parts.netloc + parts.path)
        if not raw or raw == "/":
            raise StoreURLError(f"store URL {text!r} names no folder: use chdb:///absolute/dir")
        return StoreURL(kind="chdb", path=Path(raw), traces_table=traces_table)
    if not parts.hostname:
        raise StoreURLError(
            f"store URL {shown} names no host: use clickhouse://user@host:8123/database"
        )
    secure = scheme == "clickhouses"
    try:
        port = parts.port or (8443 if secure else 8123)
    except ValueError:
        raise StoreURLError(f"store URL {shown}: the port is not a number 0-65535") from None
    database = _identifier(unquote(parts.path.strip("/")) or "default", "database", shown)
    return StoreURL(
        kind="clickhouse",
        host=parts.hostname,
        port=port,
        user=unquote(parts.username) if parts.username else "default",
        password=unquote(parts.password) if parts.password else "",
        database=database,
        traces_table=traces_table,
        secure=secure,
    )
