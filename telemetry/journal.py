"""The receiver's journal: mapped spans made durable on local disk, then loaded into the
store in large batches by one thread.

``cliffwatch serve`` answers a good request 200 once its spans are appended here (one
Arrow IPC file per request, fsynced, renamed into place), not once they are in DuckDB: a
store write costs a fixed 65-80 ms per batch whatever its size (README, ``store_write``
bench), so writing each few requests' spans as they come made the store write the
receiver's bottleneck. :class:`JournalDrain` loads whatever has piled up, oldest first, up
to :data:`DRAIN_MAX_SPANS` spans per :func:`telemetry.write_pipeline.write_spans`, and
deletes the files only after that write has committed. The OpenTelemetry Collector's
sending queue with a storage extension acknowledges the same way: after persisting, before
exporting (docs/sources.md#collector-sending-queue).

Nothing is lost: a crash between commit and delete loads the files again, which adds
nothing (a span already stored is left out: ``write_pipeline.insert_new_spans``), and the
next receiver on the same store loads the files left behind before anything else. A
store that cannot be written (another process holds it, a full disk) leaves the files in
place and the drain retries every :data:`RETRY_S`. A span whose values the store refuses
(it would fail every retry) is isolated, logged with its ids, counted, and kept in a
``*.bad`` file beside the journal for a person to look at.

Layout: ``<db path>.journal/<time_ns>-<pid>-<n>.arrow`` (Arrow IPC file format, schema
:data:`telemetry.records.ARROW_SCHEMA`), written under a ``.tmp`` name first.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc

from cliffwatch.telemetry.otlp_decode import SpanRejection
from cliffwatch.telemetry.records import ARROW_SCHEMA, SpanRecord, records_to_arrow
from cliffwatch.telemetry.store import READER_WINDOW_S, HeldStore
from cliffwatch.telemetry.write_ledger import DATA_ERRORS, LEDGER, is_data_error
from cliffwatch.telemetry.write_pipeline import write_spans

logger = logging.getLogger(__name__)

JOURNAL_SUFFIX = ".arrow"
BAD_SUFFIX = ".bad"

DRAIN_MAX_SPANS = 20_000
"""Spans loaded by one store write at most: each write's fixed cost (65-80 ms) is spread
over thousands of spans, one batch stays about 20 MB of Arrow, and a write under load
ends within about a second, so readers waiting for the file (``cliffwatch runs``) wait
little longer than the writer's hold."""

IDLE_RELEASE_S = 0.2
"""The drain closes its held store connection once nothing has come for this long."""

RETRY_S = 1.0
"""Pause after a failed store write before the drain tries again."""


def journal_dir(db_path: str | os.PathLike[str]) -> Path:
    """The journal directory of a store: ``<db path>.journal`` beside the database file."""
    return Path(f"{os.fspath(db_path)}.journal")


class BacklogFullError(Exception):
    """The journal holds more spans not yet in the store than its bound: the request is
    answered 503 with ``Retry-After`` (the sender retries; nothing is dropped)."""


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One journal file: its place in arrival order, its path and how many spans it holds."""

    seq: int
    path: Path
    spans: int


def _read(path: Path) -> pa.Table:
    with pa.memory_map(str(path)) as source:
        table = ipc.open_file(source).read_all()
    return table if table.schema.equals(ARROW_SCHEMA) else table.cast(ARROW_SCHEMA)


class Journal:
    """The pending journal files of one store, and their span count (thread-safe).

    Args:
        db_path: the store whose journal this is; files left by an earlier receiver are
            taken up, oldest first (an unreadable one is renamed ``*.bad`` and logged).
        sync: fsync each file before it is renamed into place (and the directory after),
            so an answered request survives a power cut, not only a crash.
    """

    def __init__(self, db_path: str | os.PathLike[str], *, sync: bool = True) -> None:
        self.directory = journal_dir(db_path)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.sync = sync
        self._cond = threading.Condition()
        self._pending: dict[int, JournalEntry] = {}
        self._spans = 0
        self._reserved = 0  # spans of files being committed now, counted against the bound
        self._seq = 0
        self._names = 0
        for tmp in self.directory.glob("*.tmp"):
            tmp.unlink(missing_ok=True)  # a write cut short: never answered 200
        for path in sorted(self.directory.glob(f"*{JOURNAL_SUFFIX}")):
            try:
                rows = _read(path).num_rows
            except (OSError, pa.ArrowException) as exc:
                quarantine(path, exc)
                continue
            self._add(path, rows)

    def _add(self, path: Path, spans: int) -> JournalEntry:
        with self._cond:
            self._seq += 1
            entry = JournalEntry(self._seq, path, spans)
            self._pending[entry.seq] = entry
            self._spans += spans
            self._cond.notify_all()
        return entry

    @property
    def backlog_spans(self) -> int:
        """Spans in journal files not yet written to the store."""
        return self._spans

    @property
    def backlog_files(self) -> int:
        """Journal files not yet written to the store."""
        return len(self._pending)

    @property
    def last_seq(self) -> int:
        """The place of the latest file appended (0 when none was)."""
        return self._seq

    def check_room(self, spans: int, max_backlog: int) -> None:
        """Refuse ``spans`` more when the backlog (files pending and being committed) is
        not empty and they would pass ``max_backlog`` (so any request fits an empty
        journal). Checked again by :meth:`commit`; called alone (``spans`` 1), a request
        is answered 503 before any work is spent on it.

        Raises:
            BacklogFullError: no room (answered 503).
        """
        with self._cond:
            backlog = self._spans + self._reserved
            if backlog and backlog + spans > max_backlog:
                raise BacklogFullError(
                    f"{backlog:,} spans wait to be written to the store (limit "
                    f"{max_backlog:,}): retry after the Retry-After seconds")

    def tmp_path(self) -> Path:
        """A new unique ``*.tmp`` path in the journal directory, for :func:`write_file`
        then :meth:`commit` (``<time_ns>-<pid>-<n>.tmp``)."""
        with self._cond:
            self._names += 1
            name = f"{time.time_ns():020d}-{os.getpid()}-{self._names:08d}"
        return self.directory / f"{name}.tmp"

    def commit(self, tmp: Path, spans: int, max_backlog: int | None = None) -> JournalEntry:
        """Rename a :func:`write_file` file of ``spans`` spans into place (fsyncing the
        directory) and count it pending. The bound is checked and the spans reserved at
        once, so concurrent requests never pass it together.

        Args:
            tmp: the written file (from :meth:`tmp_path`); removed on any failure.
            spans: its rows.
            max_backlog: the bound of :meth:`check_room`; None: no bound.

        Raises:
            BacklogFullError: over ``max_backlog`` (answered 503).
            OSError: the rename or the directory fsync failed.
        """
        with self._cond:
            if max_backlog is not None:
                try:
                    self.check_room(spans, max_backlog)
                except BacklogFullError:
                    tmp.unlink(missing_ok=True)
                    raise
            self._reserved += spans
        final = tmp.with_suffix(JOURNAL_SUFFIX)
        try:
            os.replace(tmp, final)
            if self.sync:
                _sync_dir(self.directory)
        except BaseException:
            tmp.unlink(missing_ok=True)
            final.unlink(missing_ok=True)
            with self._cond:
                self._reserved -= spans
            raise
        with self._cond:  # one step: the spans never leave the count in between
            self._reserved -= spans
            return self._add(final, spans)

    def append(self, table: pa.Table) -> JournalEntry:
        """Make ``table`` (:data:`~telemetry.records.ARROW_SCHEMA`) durable as a new file.

        Raises:
            OSError: the file cannot be written (disk full, permissions); nothing is left.
        """
        tmp = self.tmp_path()
        write_file(tmp, table, sync=self.sync)
        return self.commit(tmp, table.num_rows)

    def take(self, max_spans: int) -> list[JournalEntry]:
        """The oldest pending files, up to ``max_spans`` spans (at least one file when
        any is pending); they stay pending until :meth:`remove`."""
        with self._cond:
            taken: list[JournalEntry] = []
            total = 0
            for seq in sorted(self._pending):
                entry = self._pending[seq]
                if taken and total + entry.spans > max_spans:
                    break
                taken.append(entry)
                total += entry.spans
            return taken

    def remove(self, entries: Sequence[JournalEntry]) -> None:
        """Delete files whose spans are in the store now (missing ones are ignored)."""
        for entry in entries:
            entry.path.unlink(missing_ok=True)
        with self._cond:
            for entry in entries:
                if self._pending.pop(entry.seq, None) is not None:
                    self._spans -= entry.spans
            self._cond.notify_all()

    def wait_pending(self, timeout_s: float | None) -> bool:
        """Block until a file is pending (True) or ``timeout_s`` passes (False)."""
        with self._cond:
            return self._cond.wait_for(lambda: bool(self._pending), timeout_s)

    def wait_stored(self, upto_seq: int, timeout_s: float | None) -> bool:
        """Block until every file up to ``upto_seq`` is in the store (True), or
        ``timeout_s`` passes (False)."""
        with self._cond:
            return self._cond.wait_for(
                lambda: not self._pending or min(self._pending) > upto_seq, timeout_s)


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def arrow_table(
    records: list[SpanRecord],
) -> tuple[pa.Table, list[SpanRecord], list[SpanRejection]]:
    """``records`` as one Arrow table (:data:`~telemetry.records.ARROW_SCHEMA`); a span
    with a value Arrow cannot take is found, left out and rejected.

    Returns:
        ``(table of the kept spans, kept spans, rejections)``.
    """
    try:
        return records_to_arrow(records), records, []
    except DATA_ERRORS:
        pass
    kept: list[SpanRecord] = []
    rejected: list[SpanRejection] = []
    for record in records:
        try:
            records_to_arrow([record])
            kept.append(record)
        except DATA_ERRORS as exc:
            rejected.append(SpanRejection.unstorable(record.trace_id, record.span_id, exc))
    return records_to_arrow(kept), kept, rejected


def write_file(path: Path, table: pa.Table, *, sync: bool = True) -> None:
    """Write ``table`` as an Arrow IPC file at ``path``, fsynced when ``sync`` (the
    directory is synced by :meth:`Journal.commit`).

    Raises:
        OSError: the file cannot be written (disk full, permissions); nothing is left.
    """
    try:
        with open(path, "wb") as sink:
            with ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table)
            if sync:
                sink.flush()
                os.fsync(sink.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def quarantine(path: Path, exc: BaseException) -> None:
    """Rename an unreadable journal file to ``*.bad`` and log it (it stays for a person)."""
    bad = path.with_suffix(BAD_SUFFIX)
    logger.error("cliffwatch: journal file %s is unreadable (%s); moved to %s", path, exc, bad)
    os.replace(path, bad)


@dataclass(slots=True)
class DrainStats:
    """Running totals of a :class:`JournalDrain` (read them, do not set them).

    Attributes:
        batches: store writes that committed.
        spans_stored: spans those writes carried (a re-sent span already stored counts).
        spans_unstorable: spans the store refused for their values, kept in ``*.bad``.
        store_errors: store writes that failed (the files stay; retried).
        last_store_error: the last failure's first line, or None.
    """

    batches: int = 0
    spans_stored: int = 0
    spans_unstorable: int = 0
    store_errors: int = 0
    last_store_error: str | None = None


class JournalDrain:
    """One thread loading a :class:`Journal` into its store in large batches.

    Args:
        db_path: the store.
        journal: its journal.
        hold_s: keep one store connection across batches for up to this long at a time,
            then leave the file to readers for :data:`~telemetry.store.READER_WINDOW_S`
            (:class:`~telemetry.store.HeldStore`); 0 opens the store for every batch.
        max_batch_spans: spans per store write at most.
        timeout_s: lock retry bound of each write; default ``settings.lock_timeout_s()``.
    """

    def __init__(self, db_path: str | os.PathLike[str], journal: Journal, *,
                 hold_s: float = 1.0, max_batch_spans: int = DRAIN_MAX_SPANS,
                 timeout_s: float | None = None) -> None:
        self.db_path = Path(db_path)
        self.journal = journal
        self.max_batch_spans = max_batch_spans
        self.timeout_s = timeout_s
        self.stats = DrainStats()
        self._held = HeldStore(db_path, hold_max_s=hold_s) if hold_s > 0 else None
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"cliffwatch-drain:{self.db_path.name}", daemon=True)
        self._thread.start()

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every file appended so far is in the store; False on timeout."""
        return self.journal.wait_stored(self.journal.last_seq, timeout_s)

    def close(self, timeout_s: float | None = 120.0) -> bool:
        """Load what is pending, then stop (files a failing store leaves stay for the next
        receiver). False when the thread had not finished within ``timeout_s``."""
        self._stopping.set()
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            if self._held is not None:
                self._held.release()

    def _loop(self) -> None:
        held = self._held
        while True:
            entries = self.journal.take(self.max_batch_spans)
            if not entries:
                if self._stopping.is_set():
                    return
                if not self.journal.wait_pending(IDLE_RELEASE_S) and held is not None:
                    held.release()  # idle: readers get the file
                continue
            if not self._drain(entries):
                if self._stopping.is_set():
                    return  # the store refuses: the files wait for the next receiver
                self._stopping.wait(RETRY_S)
                continue
            if held is not None and held.due:
                held.release()
                time.sleep(READER_WINDOW_S)  # a waiting reader takes the file now

    def _write(self, tables: Sequence[pa.Table]) -> None:
        write_spans(self.db_path, [], tables=tables, timeout_s=self.timeout_s, held=self._held)

    def _drain(self, entries: list[JournalEntry]) -> bool:
        """Write ``entries`` in one store write and delete them; False when the store
        failed (they stay pending)."""
        tables: list[pa.Table] = []
        readable: list[JournalEntry] = []
        for entry in entries:
            try:
                tables.append(_read(entry.path))
                readable.append(entry)
            except (OSError, pa.ArrowException) as exc:
                quarantine(entry.path, exc)
                self.journal.remove([entry])
        try:
            self._write(tables)
        except Exception as exc:  # noqa: BLE001 - the thread must outlive any one failure
            if not is_data_error(exc):
                return self._failed(exc, sum(e.spans for e in readable))
            for entry, table in zip(readable, tables, strict=True):
                if not self._isolate(entry, table):
                    return False
            return True
        self._stored(readable, sum(t.num_rows for t in tables))
        return True

    def _isolate(self, entry: JournalEntry, table: pa.Table) -> bool:
        """Write one file's spans one by one, keeping those the store refuses in a
        ``*.bad`` file; False when the store failed."""
        bad: list[pa.Table] = []
        for i in range(table.num_rows):
            row = table.slice(i, 1)
            try:
                self._write([row])
            except Exception as exc:  # noqa: BLE001
                if not is_data_error(exc):
                    return self._failed(exc, table.num_rows)
                logger.error("cliffwatch: span %s/%s cannot be stored: %s",
                             row["trace_id"][0], row["span_id"][0], str(exc).splitlines()[:1])
                bad.append(row)
        if bad:
            path = entry.path.with_suffix(BAD_SUFFIX)
            with open(path, "wb") as sink, ipc.new_file(sink, ARROW_SCHEMA) as writer:
                writer.write_table(pa.concat_tables(bad))
            self.stats.spans_unstorable += len(bad)
            LEDGER.add(lost=len(bad), error=f"{len(bad)} span(s) the store refused, kept in {path}")
        self._stored([entry], table.num_rows - len(bad))
        return True

    def _stored(self, entries: list[JournalEntry], spans: int) -> None:
        self.journal.remove(entries)
        self.stats.batches += 1
        self.stats.spans_stored += spans
        LEDGER.add(written=spans)

    def _failed(self, exc: BaseException, spans: int) -> bool:
        line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        self.stats.store_errors += 1
        self.stats.last_store_error = line
        logger.error("cliffwatch: writing %d journal spans failed (kept, retried): %s",
                     spans, line)
        return False
