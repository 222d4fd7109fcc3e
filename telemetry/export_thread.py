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
  waits and the SDK drops spans (counted in the ledger). Queuing the SDK's spans as they
  are, to compact them later, cost the application thread more than it saves: 60,000
  spans held ~10 objects each that every full garbage collection walks (application
  thread CPU while making 3.3 s against 2.5 s compacting them, load ~1.7).
- a writer thread of its own maps and writes each batch
  (:func:`telemetry.export_process.write_payload`: the same mapping, write or spill and
  ledger counts as the process writer's). Before each batch and between chunks of
  :data:`telemetry.sdk_compact.PACE_ROWS` spans it checks ``activity``
  (``configure_tracing`` passes the count of spans ended in its tracer). While the
  application ends spans, the writer waits (taking the GIL only to look, every
  :data:`POLL_S`) until the application pauses (on its LLM calls, on
  :meth:`~ThreadSpanExporter.force_flush`; fewer than :data:`PAUSE_RATE` spans a second
  since the last look): then it writes at full speed. A writer that
  waited that way would never write for an application that never pauses, so once the
  oldest waiting batch is :data:`MAX_LAG_S` old or :data:`MAX_LAG_SPANS` spans wait, it
  writes while spans are made, sleeping :data:`GIVE_WAY` times the CPU each chunk took
  (it then holds the GIL about a tenth of the time). ``force_flush`` and ``shutdown``
  make it write at full speed at once.

  Measured side by side (``python -m bench exporter``: 60,000 spans made in ~2.5 s, 5
  rounds, 2 cores shared, load 1.1-2.8, four sittings): pacing at 9:1 from the first
  chunk made spans at a median 0.76x, 0.81x, 0.90x and 0.93x a do-nothing exporter's
  speed; waiting for a pause, 0.89x, 0.90x, 0.94x and 1.00x. What is left is mostly
  ``export``'s compacting (0.10-0.15 s of the export thread's CPU for 60,000 spans).
  Not won: an application making bursts of 600 spans with 50 ms pauses made them at
  0.88x against 0.97x pacing at 9:1 (4 runs each, load ~2.5); each look during a burst
  takes the GIL from the application, where the 9:1 sleep after a chunk spanned a burst.

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
meanwhile and the writer is behind (:data:`MAX_LAG_S`, :data:`MAX_LAG_SPANS`): it then
holds the GIL about 1 / (1 + GIVE_WAY) of the time."""
POLL_S = 0.02
"""Seconds between two looks at the application's span count while the writer waits for
it to pause: a pause shorter than this may go unused."""
PAUSE_RATE = 1_000.0
"""Spans a second, since the last look, under which the application counts as paused: at
~40 us a span (bench/exporter.py) it then spends under ~4% of a core making spans, and an
application waiting on LLM calls (tens of spans a second) gets its spans written within
the SDK's schedule delay rather than :data:`MAX_LAG_S`."""
MAX_LAG_S = 5.0
"""Age (seconds since ``export`` queued it) of the oldest batch waiting past which the
writer writes while the application makes spans (module doc)."""
MAX_LAG_SPANS = 65_536
"""Spans waiting (queued or being written) past which the writer writes while the
application makes spans: the SDK's own queue (``DUCKDB_BATCH``) holds as many."""


class _GiveWay:
    """The writer's pace (module doc): call it before each batch and between chunks.

    Args:
        activity: a count that grows while the application makes spans.
        behind: True when the writer must write even while spans are made (lag bounds).
        hurry: True when it must write at full speed (a flush or shutdown waits).
        wait: ``wait(seconds)`` sleeps up to ``seconds``, returning early once ``hurry()``.
    """

    __slots__ = ("_activity", "_behind", "_cpu", "_hurry", "_looked", "_seen", "_wait")

    def __init__(self, activity: Callable[[], int], *, behind: Callable[[], bool],
                 hurry: Callable[[], bool], wait: Callable[[float], None]) -> None:
        self._activity = activity
        self._behind = behind
        self._hurry = hurry
        self._wait = wait
        self._seen = activity()
        self._looked = time.monotonic()
        self._cpu = time.thread_time()

    def _busy(self) -> bool:
        """Whether the application made spans at :data:`PAUSE_RATE` or more since the
        last look (and take this look)."""
        seen, now = self._activity(), time.monotonic()
        busy = seen - self._seen >= PAUSE_RATE * max(now - self._looked, 1e-9)
        self._seen, self._looked = seen, now
        return busy

    def __call__(self) -> None:
        while self._busy() and not self._hurry():
            if self._behind():  # spans still made, writer behind: write a tenth of the time
                self._wait(GIVE_WAY * (time.thread_time() - self._cpu))
                self._busy()  # a new look from here
                break
            self._wait(POLL_S)  # spans made since the last look: wait for a pause
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
        self._queue: deque[tuple[int, bytes, float]] = deque()  # spans, payload, queued at
        self._queued_bytes = 0
        self._waiting_spans = 0  # queued or being written
        self._writing_since: float | None = None  # queued at, of the batch being written
        self._writing = 0
        self._flushes = 0  # force_flush calls waiting: write at full speed
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
                self._queue.append((n, payload, time.monotonic()))
                self._queued_bytes += len(payload)
                self._waiting_spans += n
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, daemon=True,
                                                    name="cliffwatch-export-writer")
                    self._thread.start()
                self._cond.notify_all()
        if stopped:  # shutting down: the writer thread may be gone, this thread writes it
            return write_payload_for(self, payload, n)
        return SpanExportResult.SUCCESS

    def _hurry(self) -> bool:
        return self._stopping or self._flushes > 0

    def _behind(self) -> bool:
        oldest = self._writing_since if self._writing_since is not None else (
            self._queue[0][2] if self._queue else None)
        return self._waiting_spans > MAX_LAG_SPANS or (
            oldest is not None and time.monotonic() - oldest > MAX_LAG_S)

    def _wait(self, seconds: float) -> None:
        with self._cond:
            self._cond.wait_for(self._hurry, seconds)

    def _run(self) -> None:
        """The writer thread: write each queued batch in turn until stopped and empty."""
        pace = None if self._activity is None else _GiveWay(
            self._activity, behind=self._behind, hurry=self._hurry, wait=self._wait)
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._stopping)
                if not self._queue:
                    return
            if pace is not None:
                pace()  # the application may be making spans: wait for it to pause
            with self._cond:
                spans, payload, queued_at = self._queue.popleft()
                self._writing += 1
                self._writing_since = queued_at
            try:
                write_payload_for(self, payload, spans, pace=pace)
            finally:
                with self._cond:
                    self._writing -= 1
                    self._writing_since = None
                    self._queued_bytes -= len(payload)
                    self._waiting_spans -= spans
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
            self._flushes += 1  # the writer stops giving way
            self._cond.notify_all()
            try:
                if not self._cond.wait_for(self._idle, max(timeout_millis, 0) / 1000):
                    return False
            finally:
                self._flushes -= 1
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
