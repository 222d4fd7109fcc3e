"""One background writer thread per process that owns a store: batches in, ``write_spans`` out.

The OTLP receiver and the litellm callback take records on many threads (HTTP handlers,
litellm's callback workers, an event loop) but a DuckDB file has one writer at a time
(docs/sources.md#duckdb-single-writer). :class:`SpanWriter` funnels every submission
through a queue into one thread that coalesces whatever is waiting into a batch and calls
:func:`telemetry.write_pipeline.write_spans` once for it, so many small requests become few
transactions. When the write fails (another process holds the store past the lock
timeout, the disk is full, the file is damaged) the batch is spilled
(:func:`telemetry.write_ledger.write_or_spill`) and loaded by the next write that
succeeds: durable either way, and each submission's future says which. A batch that can
be neither written nor spilled fails its futures with
:class:`~telemetry.write_ledger.SpansLostError` and is counted lost.

With ``hold_s`` (the receiver's) the thread keeps its read-write connection between
batches (:class:`~telemetry.store.HeldStore`): while requests keep coming it writes
without reopening the store, lets go after ``hold_s`` for
:data:`~telemetry.store.READER_WINDOW_S` so that readers (``cliffwatch runs``, the
dashboard) get the file, and lets go as soon as nothing has come for
:data:`IDLE_RELEASE_S`.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from cliffwatch.telemetry.records import SpanRecord
from cliffwatch.telemetry.store import READER_WINDOW_S, HeldStore
from cliffwatch.telemetry.write_ledger import is_data_error, write_or_spill
from cliffwatch.telemetry.write_pipeline import WriteResult

logger = logging.getLogger(__name__)

IDLE_RELEASE_S = 0.2
"""With ``hold_s``: the connection is closed once no submission has come for this long."""

DEFAULT_MAX_BATCH_SPANS = 20_000
"""Spans coalesced into one write at most: large enough that a burst of requests costs
few transactions, small enough that one Arrow batch stays a few tens of MB."""


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    """How a submission was made durable.

    Attributes:
        result: the :class:`~telemetry.write_pipeline.WriteResult` of the batch it went out in
            (counts cover the whole batch, which may hold other submissions), or None
            when it was spilled.
        spilled: True when the write failed and the records went to a spill file.
    """

    result: WriteResult | None
    spilled: bool


@dataclass(slots=True)
class WriterStats:
    """Running totals of a :class:`SpanWriter` (read them, do not set them)."""

    batches: int = 0
    spans_submitted: int = 0
    spans_written: int = 0
    spans_spilled: int = 0
    runs_materialised: int = 0
    incidents_recorded: int = 0
    failed_batches: int = 0


class _Flush:
    __slots__ = ("future",)

    def __init__(self) -> None:
        self.future: Future[None] = Future()


class _Stop:
    """The sentinel type that tells the thread to finish."""

    __slots__ = ()


_STOP = _Stop()

# What the queue carries: a submission (records and the future to resolve), a flush
# marker, or the stop sentinel.
_Submission = tuple[list[SpanRecord], Future[WriteOutcome]]
_QueueItem = _Submission | _Flush | _Stop


class SpanWriter:
    """A queue and one thread writing record batches into a store.

    Args:
        db_path: the store file (created on the first write).
        linger_s: how long the thread waits for more submissions after the first one of
            a batch. 0 (the receiver) writes as soon as the queue is empty: requests that
            arrive during a write are coalesced anyway. A callback that submits one span
            per call uses about a second, so a busy app writes once a second, not per call.
        max_batch_spans: spans in one write at most.
        timeout_s: lock retry bound per write before spilling; default
            ``settings.lock_timeout_s()``.
        hold_s: 0 (the default) opens and closes the store for every batch; above 0,
            one connection is kept across batches for up to this many seconds at a time
            (see the module docstring).

    Thread-safe; use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        db_path: str | os.PathLike[str],
        *,
        linger_s: float = 0.0,
        max_batch_spans: int = DEFAULT_MAX_BATCH_SPANS,
        timeout_s: float | None = None,
        hold_s: float = 0.0,
    ) -> None:
        self.db_path = Path(db_path)
        self._held = HeldStore(db_path, hold_max_s=hold_s) if hold_s > 0 else None
        self.linger_s = linger_s
        self.max_batch_spans = max_batch_spans
        self.timeout_s = timeout_s
        self.stats = WriterStats()
        self._queue: queue.Queue[_QueueItem] = queue.Queue()
        self._closed = False
        self._close_lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._run, name=f"cliffwatch-writer:{self.db_path.name}", daemon=True
        )
        self._thread.start()

    # --- public -----------------------------------------------------------------------

    def submit(self, records: Sequence[SpanRecord]) -> Future[WriteOutcome]:
        """Queue ``records`` for writing; the future resolves once they are durable.

        Raises:
            RuntimeError: the writer is closed.
        """
        if self._closed:
            raise RuntimeError(f"span writer for {self.db_path} is closed")
        future: Future[WriteOutcome] = Future()
        self.stats.spans_submitted += len(records)
        self._queue.put((list(records), future))
        return future

    def write(self, records: Sequence[SpanRecord], timeout_s: float | None = None) -> WriteOutcome:
        """Submit and wait: the records are written (or spilled) when this returns.

        Raises:
            TimeoutError: not durable within ``timeout_s`` (they may still be written).
            SpansLostError: the write failed and the spill file could not be written.
            Exception: the values cannot be stored
                (:func:`telemetry.write_ledger.is_data_error`); nothing was spilled.
        """
        return self.submit(records).result(timeout=timeout_s)

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until everything submitted so far is durable; False on timeout."""
        if self._closed and not self._thread.is_alive():
            return True
        marker = _Flush()
        self._queue.put(marker)
        try:
            marker.future.result(timeout=timeout_s)
        except TimeoutError:
            return False
        return True

    def close(self, timeout_s: float | None = 30.0) -> bool:
        """Write what is queued, then stop the thread; idempotent. False if it timed out."""
        with self._close_lock:
            if not self._closed:
                self._closed = True
                self._queue.put(_STOP)
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def __enter__(self) -> SpanWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the thread -------------------------------------------------------------------

    def _next(self) -> _QueueItem:
        """The next item; a held connection is released while the queue stays empty."""
        if self._held is not None and self._held.held:
            try:
                return self._queue.get(timeout=IDLE_RELEASE_S)
            except queue.Empty:
                self._held.release()
        return self._queue.get()

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            if self._held is not None:
                self._held.release()

    def _loop(self) -> None:
        stop = False
        while not stop:
            item = self._next()
            batch: list[_Submission] = []
            flushes: list[_Flush] = []
            size = 0
            deadline = time.monotonic() + self.linger_s
            while True:
                if isinstance(item, _Stop):
                    stop = True
                elif isinstance(item, _Flush):
                    flushes.append(item)
                else:
                    records, future = item
                    batch.append((records, future))
                    size += len(records)
                if stop or flushes or size >= self.max_batch_spans:
                    break
                try:
                    remaining = deadline - time.monotonic()
                    item = (
                        self._queue.get(timeout=remaining)
                        if remaining > 0
                        else self._queue.get_nowait()
                    )
                except queue.Empty:
                    break
            if batch:
                self._write_batch(batch)
            for marker in flushes:
                marker.future.set_result(None)
            if self._held is not None and self._held.due:
                self._held.release()
                time.sleep(READER_WINDOW_S)  # a waiting reader takes the file now

    def _write_batch(self, batch: list[_Submission]) -> None:
        records = [rec for recs, _ in batch for rec in recs]
        try:
            outcome = self._write_records(records)
        except Exception as exc:  # the thread must outlive any one bad batch
            if len(batch) > 1 and is_data_error(exc):
                # Isolate the failure: one submission whose values cannot be
                # written must not fail the others coalesced with it.
                for one in batch:
                    self._write_batch([one])
                return
            # Anything else (neither written nor spilled: already counted lost, once)
            # fails every submission of the batch alike.
            self.stats.failed_batches += 1
            logger.error("cliffwatch: writing %d spans failed: %s", len(records), exc)
            for _, future in batch:
                future.set_exception(exc)
            return
        self.stats.batches += 1
        for _, future in batch:
            future.set_result(outcome)

    def _write_records(self, records: list[SpanRecord]) -> WriteOutcome:
        result = write_or_spill(self.db_path, records, timeout_s=self.timeout_s,
                                held=self._held)
        if result is None:
            self.stats.spans_spilled += len(records)
            return WriteOutcome(None, spilled=True)
        self.stats.spans_written += result.spans_written
        self.stats.runs_materialised += result.runs_materialised
        self.stats.incidents_recorded += result.incidents_recorded
        return WriteOutcome(result, spilled=False)
