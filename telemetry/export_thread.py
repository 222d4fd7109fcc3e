"""The span exporter's thread writer: a writer thread that gives way to the application.

The default batched exporter of :func:`telemetry.tracing.configure_tracing` writes in the
application's process, where every microsecond it holds the GIL is taken from the
application's threads. Mapping and writing a span holds it ~45-50 us (export thread CPU
per span, 60,000 spans, load 8-9), making one ~33 us: done as the spans come (the SDK's
export thread, :class:`telemetry.exporter.DuckDBSpanExporter`) the application made
spans at 0.68x the speed it has with a do-nothing exporter, and a sustained application
outran the writer until the SDK's queue dropped spans (bench/exporter.py).

:class:`ThreadSpanExporter` moves that work out of the way instead of out of the process:

- ``export`` (the SDK's export thread) only reads each span's fields and pickles them
  (:func:`telemetry.sdk_compact.compact_batch`, ~2 us a span; ~100 bytes a span against
  the SDK's ~2 KB objects) and queues the batch; the SDK's queue is emptied at once, so
  a burst the writer has not caught up with waits here, compact, not in the SDK's queue.
  At most :data:`telemetry.export_process.MAX_INFLIGHT_BYTES` wait; past them ``export``
  waits and the SDK drops spans (counted in the ledger).
- a writer thread of its own maps and writes each batch
  (:func:`telemetry.export_process.write_payload`: the same mapping, write or spill and
  ledger counts as the process writer's). Between chunks of
  :data:`telemetry.sdk_compact.PACE_ROWS` spans it checks ``activity``
  (``configure_tracing`` passes the count of spans ended in its tracer): when the
  application ended spans meanwhile, it sleeps :data:`GIVE_WAY` times the CPU time the
  chunk took, so while the application is busy making spans the writer holds the GIL
  about a tenth of the time; when the application waits (on its LLM calls, on
  :meth:`~ThreadSpanExporter.force_flush`) it writes at full speed.

``force_flush`` and ``shutdown`` return once every queued batch is written or spilled, so
the ledger is exact when they return, as with the other writers.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from cliffwatch.telemetry.export_process import (
    MAX_INFLIGHT_BYTES,
    compact_without_gc,
    write_payload_for,
)
from cliffwatch.telemetry.exporter import DuckDBSpanExporter
from cliffwatch.telemetry.write_ledger import LEDGER, WriteLedger

GIVE_WAY = 9.0
"""Seconds slept per second of CPU a chunk took, when the application ended spans
meanwhile: the writer then holds the GIL about 1 / (1 + GIVE_WAY) of the time."""


class _GiveWay:
    """The writer's pace (module doc): call it between chunks of work."""

    __slots__ = ("_activity", "_cpu", "_seen")

    def __init__(self, activity: Callable[[], int]) -> None:
        self._activity = activity
        self._seen = activity()
        self._cpu = time.thread_time()

    def __call__(self) -> None:
        seen = self._activity()
        if seen != self._seen:
            time.sleep(GIVE_WAY * (time.thread_time() - self._cpu))
            seen = self._activity()
        self._seen = seen
        self._cpu = time.thread_time()


class ThreadSpanExporter(DuckDBSpanExporter):
    """A :class:`~telemetry.exporter.DuckDBSpanExporter` that maps and writes in a writer
    thread of its own, giving way to the application (module doc); same contract, same
    ledger counts.

    Args:
        path, timeout_s, source, ledger: as :class:`~telemetry.exporter.DuckDBSpanExporter`.
        activity: a count that grows while the application makes spans (read between
            chunks); None never gives way.

    ``export`` returns ``SUCCESS`` once the batch is queued (the SDK's batch processor
    ignores the result; the ledger, exact after :meth:`force_flush` or :meth:`shutdown`,
    says what reached the store).
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout_s: float | None = None,
                 source: str = "cliffwatch", ledger: WriteLedger = LEDGER,
                 activity: Callable[[], int] | None = None) -> None:
        super().__init__(path, timeout_s=timeout_s, source=source, ledger=ledger)
        self._activity = activity
        self._forget_thread()

    def _forget_thread(self) -> None:
        """No writer thread, nothing queued: a new exporter's state, and that of a fork of
        the process (the parent writes what it had queued)."""
        self._owner_pid = os.getpid()
        self._cond = threading.Condition()
        self._queue: deque[tuple[int, bytes]] = deque()
        self._queued_bytes = 0
        self._writing = 0
        self._stopping = False
        self._thread: threading.Thread | None = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Queue ``spans`` for the writer thread (started on the first call).
        ``FAILURE`` after :meth:`shutdown` (the spans are counted lost)."""
        if self._shut_down:
            return super().export(spans)
        if self._owner_pid != os.getpid():
            self._forget_thread()
        payload, n = compact_without_gc(spans, self._skipped)
        with self._cond:
            self._cond.wait_for(lambda: self._queued_bytes < MAX_INFLIGHT_BYTES)
            stopped = self._stopping
            if not stopped:
                self._queue.append((n, payload))
                self._queued_bytes += len(payload)
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, daemon=True,
                                                    name="cliffwatch-export-writer")
                    self._thread.start()
                self._cond.notify_all()
        if stopped:  # shutting down: the writer thread may be gone, this thread writes it
            return write_payload_for(self, payload, n)
        return SpanExportResult.SUCCESS

    def _run(self) -> None:
        """The writer thread: write each queued batch in turn until stopped and empty."""
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._stopping)
                if not self._queue:
                    return
                spans, payload = self._queue.popleft()
                self._writing += 1
            try:
                write_payload_for(self, payload, spans, pace=(
                    _GiveWay(self._activity) if self._activity is not None else None))
            finally:
                with self._cond:
                    self._writing -= 1
                    self._queued_bytes -= len(payload)
                    self._cond.notify_all()

    def _idle(self) -> bool:
        return not self._queue and not self._writing

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Wait until every queued batch is written or spilled, then load pending spill
        files (:meth:`DuckDBSpanExporter.force_flush`).

        Returns:
            True when nothing is queued and no spill file is left within the timeout.
        """
        if self._owner_pid != os.getpid():
            self._forget_thread()
        with self._cond:
            if not self._cond.wait_for(self._idle, max(timeout_millis, 0) / 1000):
                return False
        return super().force_flush(timeout_millis)

    def shutdown(self) -> None:
        """Write every queued batch (each write or spill is bounded by the lock timeout),
        stop the writer thread, then load pending spill files and refuse further
        exports."""
        if self._owner_pid != os.getpid():
            self._forget_thread()
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        super().shutdown()
