"""A process's copy of ``seen_traces`` (schema.py), kept by its writers of a store, so that
a write finds which of its traces were written before without scanning that table.

A write looks its batch's traces up in ``seen_traces`` (one row per trace ever written:
:func:`telemetry.write_pipeline.insert_new_spans`). In SQL that is a scan of the whole table,
16 bytes a trace, and it grows with history: 4 ms at 10k runs, 12 to 14 ms at 1M
(bench/store_write.py's 1,000-span batch), and a short connection reads it cold (16-19 ms
at 1M). A process that writes a store again and again (``cliffwatch serve``'s journal, the
exporter's writer, the demo) keeps this copy instead: the keys sorted with their first
ingestion time, loaded once, then brought up to date at each write by reading only the
rows appended since (``rowid`` at or after the last one read: DuckDB skips the older row
groups). The lookup is then a binary search of the batch's few hundred keys, the same
whatever the history.

``seen_traces`` is append-only (nothing in cliffwatch deletes from it: a prune keeps it),
so its ``rowid`` s are dense and stable and "the rows after the last one read" is exact
(that read and the table's count cost well under a millisecond at 1M traces:
docs/sources.md#duckdb-primary-keys-and-zone-maps).
Each catch-up checks that: the row last read is still there with the same key, and the
table's count grew by exactly the rows read. Anything else (rows deleted or rewritten, the
file replaced) reloads the whole copy, so the copy never answers other than the table
would.

Memory: two machine words a trace (16 MB at 1M traces) and the rows appended since the
last load in a dict; the copy is reloaded (sorted by DuckDB) once those exceed
:data:`RELOAD_AFTER_ROWS` or an eighth of the copy. Above :data:`MAX_COPY_TRACES` traces no
copy is kept and the write looks in the table.

Whose copy: one per store file and process (:func:`copy_for`), shared by every writer of
that file in the process (they write one at a time, under
:func:`telemetry.store.write_lock`): a held writer's from its first write, a writer that
opens a short connection per write (the exporter's thread writer, the demo) from its
second write to the file. A process that writes a store once (a CLI command) never loads
one: the load reads the whole table (about 0.1 s of CPU at 1M traces, six lookups' worth),
where a short connection's lookup in the table reads it cold at every write. At most
:data:`MAX_COPIES` files' copies are kept, the least recently written dropped first.
"""

from __future__ import annotations

import array
import bisect
import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

MAX_COPY_TRACES = 20_000_000
"""Traces above which no copy is kept (320 MB): the write scans ``seen_traces`` instead."""

RELOAD_AFTER_ROWS = 65_536
"""Rows appended since the last load above which the copy is reloaded whole (sorted)."""

MAX_COPIES = 4
"""Store files whose copies one process keeps at most (:func:`copy_for`)."""

SHORT_WRITES_BEFORE_COPY = 1
"""Writes on short connections a process makes to a file before it keeps a copy for it."""

_EPOCH = datetime(1970, 1, 1)


def trace_key(trace_id: str) -> int:
    """``md5_number_lower(trace_id)`` as DuckDB computes it (schema.py, ``seen_traces``):
    the second half of the id's MD5 digest read as a little-endian unsigned 64-bit number."""
    return int.from_bytes(hashlib.md5(trace_id.encode()).digest()[8:], "little")


_TAIL = """
SELECT NULL::BIGINT AS rowid, NULL::UBIGINT AS trace_key, NULL::BIGINT AS first_us,
    count(*) AS n
FROM seen_traces
UNION ALL
SELECT rowid, trace_key, epoch_us(first_ingested_at), NULL FROM seen_traces
WHERE rowid >= {start}
"""
"""The table's count (the row without a rowid) and its rows from rowid ``{start}`` (a
literal, so that DuckDB skips the row groups before it), any order. A union: half the CPU
of the count joined to the rows and sorted (0.7 ms against 1.5 at 100k runs)."""


def new_keys(trace_ids: Iterable[str], seen: Iterable[tuple[str, datetime]]) -> list[int]:
    """The distinct :func:`trace_key` s of ``trace_ids`` but those of the traces in
    ``seen`` (what :meth:`SeenCopy.find` returned): the rows a write adds to ``seen_traces``."""
    known = {trace_id for trace_id, _ in seen}
    return sorted({trace_key(t) for t in trace_ids if t not in known})


def _words(column: pa.ChunkedArray) -> bytes:
    """The 8-byte values of a column without nulls, as bytes (no Python object a value)."""
    values = column.combine_chunks()
    return values.buffers()[1].to_pybytes()[values.offset * 8:(values.offset + len(values)) * 8]


class SeenCopy:
    """This writer's copy of ``seen_traces`` (module docstring). Not thread-safe: used
    under :func:`telemetry.store.write_lock`, by one writer."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._loaded = False
        self._keys = array.array("Q")  # sorted; a key twice: the earliest time first
        self._first_us = array.array("q")  # first_ingested_at, microseconds since 1970
        self._recent: dict[int, int] = {}  # rows read since the load: key -> earliest time
        self._rows = 0  # rows of the table this copy holds
        self._next_rowid = 0  # rowid after the last row read
        self._last_key: int | None = None  # trace_key of rowid _next_rowid - 1

    def find(
        self, con: duckdb.DuckDBPyConnection, trace_ids: Iterable[str]
    ) -> list[tuple[str, datetime]] | None:
        """The traces of ``trace_ids`` that ``seen_traces`` holds, with the earliest
        ``first_ingested_at`` of their key: what the write's SQL lookup returns.

        Args:
            con: the write's connection, inside its transaction, before the batch's
                traces are added to ``seen_traces``.
            trace_ids: the batch's distinct trace ids.

        Returns:
            ``[(trace_id, first_ingested_at)]`` (naive UTC), any order; None when the table
            is over :data:`MAX_COPY_TRACES` (then the caller looks in the table).
        """
        if not self._catch_up(con):
            return None
        found = []
        for trace_id in trace_ids:
            key = trace_key(trace_id)
            first = self._recent.get(key)
            i = bisect.bisect_left(self._keys, key)
            if i < len(self._keys) and self._keys[i] == key:
                first = self._first_us[i] if first is None else min(first, self._first_us[i])
            if first is not None:
                found.append((trace_id, _EPOCH + timedelta(microseconds=first)))
        return found

    def _catch_up(self, con: duckdb.DuckDBPyConnection) -> bool:
        """Read the rows appended since the last read (checking nothing else changed), or
        load the copy; False when the table is too large to copy."""
        reread = self._last_key is not None
        start = self._next_rowid - 1 if reread else (0 if self._loaded else 2**62)
        rows = con.execute(_TAIL.format(start=start)).fetchall()
        count = next(int(row[3]) for row in rows if row[0] is None)
        if count > MAX_COPY_TRACES:
            self._reset()
            return False
        if not self._loaded:
            return self._load(con)
        tail = sorted(row[:3] for row in rows if row[0] is not None)
        new = tail[1:] if reread else tail
        if reread and (not tail or tail[0][0] != start or tail[0][1] != self._last_key):
            return self._load(con)  # the row last read is gone or changed
        if count != self._rows + len(new):
            return self._load(con)  # rows were deleted (or rewritten)
        if len(self._recent) + len(new) > max(RELOAD_AFTER_ROWS, len(self._keys) // 8):
            return self._load(con)
        for _, key, first_us in new:
            known = self._recent.get(key)
            self._recent[key] = first_us if known is None else min(known, first_us)
        self._rows = count
        if new:
            self._next_rowid, self._last_key = int(new[-1][0]) + 1, int(new[-1][1])
        return True

    def _load(self, con: duckdb.DuckDBPyConnection) -> bool:
        """Reload the whole copy, sorted by DuckDB (about 0.1 s of CPU at 1M traces)."""
        self._reset()
        table = con.sql("""
            SELECT trace_key, epoch_us(first_ingested_at) AS first_us
            FROM seen_traces ORDER BY trace_key, first_us""").to_arrow_table()
        if table.num_rows > MAX_COPY_TRACES:
            self._reset()
            return False
        last_rowid, last_key = con.execute(
            "SELECT max(rowid), arg_max(trace_key, rowid) FROM seen_traces").fetchall()[0]
        if table.num_rows:
            self._keys.frombytes(_words(table.column(0)))
            self._first_us.frombytes(_words(table.column(1)))
            self._next_rowid, self._last_key = int(last_rowid) + 1, int(last_key)
        self._rows, self._loaded = table.num_rows, True
        return True


_COPIES: OrderedDict[str, SeenCopy] = OrderedDict()
_SHORT_WRITES: OrderedDict[str, int] = OrderedDict()
_COPIES_GUARD = threading.Lock()


def copy_for(path: str | os.PathLike[str], *, held: bool) -> SeenCopy | None:
    """This process's copy for the store at ``path`` (module docstring, "Whose copy"), made
    when there is none: at once for a held writer (``held``), at its
    :data:`SHORT_WRITES_BEFORE_COPY` + 1st write for a writer on short connections.

    Call it under the store's :func:`telemetry.store.write_lock` and use the copy only
    there (the copy is not thread-safe; this registry is).

    Args:
        path: the store; relative and absolute spellings of one file share a copy.
        held: whether the write goes through a :class:`telemetry.store.HeldStore`.

    Returns:
        The copy, or None: look in the table (a short writer's first write).
    """
    key = os.path.abspath(path)
    with _COPIES_GUARD:
        copy = _COPIES.get(key)
        if copy is None:
            if not held:
                writes = _SHORT_WRITES.pop(key, 0) + 1
                _SHORT_WRITES[key] = writes
                while len(_SHORT_WRITES) > 64 * MAX_COPIES:
                    _SHORT_WRITES.popitem(last=False)
                if writes <= SHORT_WRITES_BEFORE_COPY:
                    return None
            copy = _COPIES[key] = SeenCopy()
            while len(_COPIES) > MAX_COPIES:
                _COPIES.popitem(last=False)
        _COPIES.move_to_end(key)
        return copy
