"""The span exporter's process writer: map and write span batches in a child process.

With two cores, whatever the export thread does while holding the GIL is taken from the
application thread: mapping a span costs ~80 us and writing it ~45 us, making one ~50 us,
so writing in the application's process made spans at 0.46-0.66x the speed of a
do-nothing exporter (``python -m bench exporter``). :class:`ProcessSpanExporter` keeps in
the application's process only what it must: each exported batch becomes compact pickled
rows (:func:`telemetry.sdk_compact.compact_batch`, ~3 us a span) sent down a pipe to a
writer process that maps them (:func:`telemetry.sdk_compact.records_from_rows`) and writes
or spills them (:func:`telemetry.exporter.write_records`), then answers with the batch's
written, spilled and lost counts, which go into the parent's ledger.

What it costs the application (per-thread CPU of 60,000 spans, ``time.thread_time`` and
the writer's ``/proc`` times, load 8-9): the application thread 1.98 s with a do-nothing
exporter; the export thread 0.11 s popping the SDK's queue with a do-nothing exporter,
0.22-0.26 s with this one (the rest is ``compact_batch``, ~2 us a span); the writer
process 3.6-3.8 s. With the writer at the application's priority the application thread
spent 2.43 s instead of 2.08 (it shared its core with the writer's DuckDB), so:

- the writer runs at :data:`WRITER_NICE`, it and its autogroup (:func:`_lower_priority`):
  where the cores are busy the application runs first, and the writer catches up while
  the application waits (on its LLM calls, on ``flush``); with 60,000 spans the
  application thread spent 1.99 s against 1.98 with a do-nothing exporter.
- a niced writer falls behind, so the SDK's export thread never waits for it: ``export``
  queues the batch and a sender thread writes it down the pipe (a pipe holds 64 KB: a
  blocked export thread let the SDK's queue fill and drop spans). What waits is bounded
  by :data:`MAX_INFLIGHT_BYTES`; past it ``export`` waits and the SDK drops (counted).

The writer process:

- is started on the first export (never for a tracer that exports nothing) as
  ``sys.executable -c <bootstrap>``: a fresh interpreter, never a fork (a fork of a
  threaded application is unsafe) and never multiprocessing's spawn (which re-imports the
  application's ``__main__``). It gets the parent's ``sys.path`` over the pipe, so it
  imports the same cliffwatch; and the parent's environment, so the same settings.
- runs in a session of its own (a Ctrl-C in the terminal stops the application, not the
  write of the spans the application already made), and exits when its pipe closes: at
  the exporter's shutdown, or when the parent dies (it also checks its parent id while
  idle, in case a forked child of the parent holds the pipe open).
- is waited for: :meth:`ProcessSpanExporter.force_flush` and ``shutdown`` return once
  every batch sent has been answered, so the ledger is exact when they return.

No span is lost silently: the parent keeps each batch's bytes until the writer answers
for it. When the writer cannot be started (no ``sys.executable``, not POSIX) or exits
with batches unanswered (killed, out of memory, a bug), those batches are mapped and
written in the parent (logged as an error) and the exporter writes in-process from then on.
A writer that answers nothing for ``settings.lock_timeout_s()`` + 120 s while batches wait
is killed at shutdown, and its batches are written in the parent the same way.
"""

from __future__ import annotations

import gc
import logging
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from cliffwatch.settings import lock_timeout_s
from cliffwatch.telemetry.exporter import DuckDBSpanExporter, skipped_span, write_records
from cliffwatch.telemetry.sdk_compact import (
    Row,
    compact_batch,
    load_rows,
    records_from_rows,
    row_ids,
)
from cliffwatch.telemetry.write_ledger import LEDGER, WriteLedger

logger = logging.getLogger(__name__)

_BATCH = struct.Struct("<QQQ")  # sequence number, spans, payload bytes
_REPLY = struct.Struct("<Q")  # payload bytes of the pickled answer
STOP_SEQ = 0
"""Sequence number of the frame that stops the writer (batches count from 1): a pipe
inherited by a fork of the application would keep the writer from ever seeing its end."""
STALL_GRACE_S = 120.0
"""Seconds past the lock timeout a writer may answer nothing before shutdown kills it."""
_IDLE_CHECK_S = 2.0  # how often an idle writer checks that its parent still lives
WRITER_NICE = 10
"""Niceness the writer process adds to its own (``os.nice``): where the cores are busy, the
application's threads run first and the writer takes what is left (CFS weight 110 against
1024 at nice 0) and catches up while the application waits (module doc)."""
MAX_INFLIGHT_BYTES = 128 << 20
"""Payload bytes handed to the writer and not yet answered for, at most: past them
``export`` waits (the SDK's queue fills and drops spans, counted in the ledger) instead of
holding more of a writer that is far behind."""

def bootstrap(module: str) -> str:
    """The ``-c`` program of a cliffwatch child process that serves ``module``'s
    ``serve(config)``: read the config frame (an 8-byte little-endian length, then a
    pickled dict) from stdin, take the parent's ``sys.path`` from it, then serve (the export
    writer here; the receiver's ingest workers, :mod:`telemetry.ingest_pool`).

    Raises:
        ValueError: ``module`` is not a dotted module name.
    """
    if not all(part.isidentifier() for part in module.split(".")):
        raise ValueError(f"not a module name: {module!r}")
    return (
        "import os, pickle, struct, sys\n"
        "def read(n):\n"
        "    data = b''\n"
        "    while len(data) < n:\n"
        "        chunk = os.read(0, n - len(data))\n"
        "        if not chunk:\n"
        "            raise SystemExit(0)\n"
        "        data += chunk\n"
        "    return data\n"
        "config = pickle.loads(read(struct.unpack('<Q', read(8))[0]))\n"
        "sys.path[:] = config['sys_path']\n"
        f"from {module} import serve\n"
        "serve(config)\n"
    )


BOOTSTRAP = bootstrap(__name__)
"""The writer's ``-c`` program (:func:`bootstrap` of this module)."""


def write_all(fd: int, data: bytes | memoryview) -> None:
    """All of ``data`` to the blocking ``fd`` (a child's pipe; shared with
    :mod:`telemetry.ingest_pool`).

    Raises:
        OSError: the pipe is closed (the other end exited).
    """
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def read_exact(fd: int, n: int, parent_pid: int | None = None) -> bytes | None:
    """``n`` bytes from ``fd``, or None at end of file (or, when ``parent_pid`` is given,
    once the parent is gone while nothing is waiting to be read)."""
    chunks: list[bytes] = []
    left = n
    while left:
        if parent_pid is not None:
            ready, _, _ = select.select([fd], [], [], _IDLE_CHECK_S)
            if not ready:
                if os.getppid() != parent_pid:
                    return None
                continue
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def write_payload(
    path: Path, payload: bytes, spans: int, *, source: str, timeout_s: float | None,
    ledger: WriteLedger, pace: Callable[[], None] | None = None,
) -> None:
    """Map a :func:`compact_batch` payload of ``spans`` spans and write or spill it,
    counting every span in ``ledger`` (never raises; failures are logged). ``pace`` is
    called between chunks of the mapping and after the write
    (:func:`telemetry.sdk_compact.records_from_rows`)."""
    def skipped(row: Row) -> None:
        trace_id, span_id = row_ids(row)
        skipped_span(str(row[3]) if len(row) > 3 else "?", trace_id, span_id, ledger)

    try:
        records = records_from_rows(load_rows(payload), source=source, on_error=skipped,
                                    pace=pace)
    except Exception as exc:  # an unreadable payload (a bug): every span of it is lost
        ledger.add(lost=spans, error=f"export batch unreadable: {exc}".split("\n")[0])
        logger.exception("cliffwatch: could not read a batch of %d spans", spans)
        return
    write_records(path, records, timeout_s=timeout_s, ledger=ledger)
    if pace is not None:
        pace()


def write_payload_for(
    exporter: DuckDBSpanExporter, payload: bytes, spans: int,
    pace: Callable[[], None] | None = None,
) -> SpanExportResult:
    """:func:`write_payload` in this process for ``exporter`` (its store, source, lock
    timeout and ledger; under its lock, instrumentation suppressed).

    Returns:
        ``FAILURE`` when spans of the payload were lost (logged), else ``SUCCESS``.
    """
    token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
    try:
        before = exporter.ledger.snapshot().lost
        with exporter._lock:
            write_payload(exporter.path, payload, spans, source=exporter.source,
                          timeout_s=exporter.timeout_s, ledger=exporter.ledger, pace=pace)
        lost = exporter.ledger.snapshot().lost > before
        return SpanExportResult.FAILURE if lost else SpanExportResult.SUCCESS
    finally:
        detach(token)


def _lower_priority(nice: int) -> None:
    """Add ``nice`` to this process's niceness (before DuckDB starts threads: they inherit
    it) and to its autogroup's: with ``sched_autogroup`` (Linux's default on desktops and
    many servers) the CPU is first shared between autogroups, one per session, and the
    writer's own session (``start_new_session``) would otherwise get as much as the whole
    application's. Where either is not allowed the writer keeps the priority it has."""
    if not nice:
        return
    try:
        os.nice(nice)
    except OSError:
        pass
    try:
        with open("/proc/self/autogroup", "w") as autogroup:
            autogroup.write(str(nice))
    except OSError:
        pass  # no autogroups here (not Linux, or disabled): the thread's nice is enough


def serve(config: dict[str, Any]) -> None:
    """The writer process's loop (run by :data:`BOOTSTRAP`): answer each batch on stdout
    with its counts, until stdin closes or the parent is gone."""
    reply_fd = os.dup(1)
    os.dup2(2, 1)  # a stray print goes to stderr, never into the answers
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _lower_priority(config.get("nice", 0))
    logging.basicConfig(level=logging.WARNING,
                        format="cliffwatch export writer: %(levelname)s %(message)s")
    path = Path(config["path"])
    while True:
        header = read_exact(0, _BATCH.size, config["parent_pid"])
        if header is None:
            return
        seq, spans, size = _BATCH.unpack(header)
        if seq == STOP_SEQ:
            return
        payload = read_exact(0, size, config["parent_pid"])
        if payload is None:
            return
        ledger = WriteLedger()
        write_payload(path, payload, spans, source=config["source"],
                      timeout_s=config["timeout_s"], ledger=ledger)
        c = ledger.snapshot()
        answer = pickle.dumps((seq, c.written, c.spilled, c.lost, c.store_failed, c.last_error))
        write_all(reply_fd, _REPLY.pack(len(answer)) + answer)


def compact_without_gc(
    spans: Sequence[ReadableSpan], on_error: Callable[[ReadableSpan], None]
) -> tuple[bytes, int]:
    """:func:`compact_batch` with the garbage collector paused (the ``export`` of both
    writers, :mod:`telemetry.export_thread` too): the batch's row tuples would trigger
    collections that walk the application's whole heap while the export thread holds the
    GIL (7 -> 4 us a span in ``python -m bench exporter``, load 6). The collector's state
    is restored after, whatever it was."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return compact_batch(spans, on_error=on_error)
    finally:
        if enabled:
            gc.enable()


class ProcessSpanExporter(DuckDBSpanExporter):
    """A :class:`~telemetry.exporter.DuckDBSpanExporter` whose writes happen in a child
    process (module doc); same arguments, same contract, same ledger counts.

    ``export`` returns ``SUCCESS`` once the batch is handed to the writer (the SDK's batch
    processor ignores the result anyway; the ledger, exact after :meth:`force_flush` or
    :meth:`shutdown`, says what reached the store).
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout_s: float | None = None,
                 source: str = "cliffwatch", ledger: WriteLedger = LEDGER) -> None:
        super().__init__(path, timeout_s=timeout_s, source=source, ledger=ledger)
        self._in_process = os.name != "posix"
        self._forget_writer()

    def _forget_writer(self) -> None:
        """No writer yet: the state of a new exporter, and of one in a fork of the process
        that started a writer (the fork has its own; its copies of the locks may have been
        held by a thread the fork does not have)."""
        self._owner_pid = os.getpid()
        self._cond = threading.Condition()
        self._start_lock = threading.Lock()
        self._inflight: dict[int, tuple[int, bytes]] = {}  # seq -> (spans, payload)
        self._inflight_bytes = 0
        self._outbox: deque[int] = deque()  # seqs for the sender thread; STOP_SEQ stops it
        self._gone = False  # the writer exited and its unanswered batches were taken back
        self._rescuing = 0  # batches being written in this process after the writer died
        self._seq = STOP_SEQ
        self._answers = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._sender: threading.Thread | None = None
        self._closing = False

    @property
    def writer_pid(self) -> int | None:
        """The writer process's id, or None before the first export or when writing here."""
        return self._proc.pid if self._proc is not None and not self._in_process else None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Hand ``spans`` to the writer process (started on the first call); in-process
        when it cannot run (module doc). ``FAILURE`` after :meth:`shutdown`."""
        if self._shut_down or self._in_process:
            return super().export(spans)
        payload, n = compact_without_gc(spans, self._skipped)
        proc = self._started()
        if proc is None or proc.stdin is None:
            return self._write_here(payload, n)
        with self._cond:
            self._cond.wait_for(lambda: self._inflight_bytes < MAX_INFLIGHT_BYTES or self._gone)
            if not self._gone:  # the sender thread writes it down the pipe
                self._seq += 1
                self._inflight[self._seq] = (n, payload)
                self._inflight_bytes += len(payload)
                self._outbox.append(self._seq)
                self._cond.notify_all()
                return SpanExportResult.SUCCESS
            self._rescuing += 1  # the writer is gone: this batch is ours to write
        self._rescue([(n, payload)])
        return SpanExportResult.SUCCESS

    def _write_here(self, payload: bytes, spans: int) -> SpanExportResult:
        return write_payload_for(self, payload, spans)

    def _check_fork(self) -> None:
        if self._owner_pid != os.getpid():  # a fork: the parent's writer is not ours
            inherited = self._proc
            self._forget_writer()
            if inherited is not None:
                for pipe in (inherited.stdin, inherited.stdout):
                    if pipe is not None:
                        pipe.close()  # this process's copies only

    def _started(self) -> subprocess.Popen[bytes] | None:
        self._check_fork()
        if self._proc is not None or self._in_process:
            return self._proc if not self._in_process else None
        with self._start_lock:
            if self._proc is None and not self._in_process:
                try:
                    self._proc = self._spawn()
                except (OSError, ValueError) as exc:
                    logger.warning("cliffwatch: cannot start the export writer process "
                                   "(%s); writing spans in this process", exc)
                    self._in_process = True
                    return None
                self._reader = threading.Thread(
                    target=self._read_answers, args=(self._proc,),
                    name="cliffwatch-export-answers", daemon=True)
                self._reader.start()
                self._sender = threading.Thread(
                    target=self._send, args=(self._proc,),
                    name="cliffwatch-export-sender", daemon=True)
                self._sender.start()
        return self._proc

    def _spawn(self) -> subprocess.Popen[bytes]:
        if not sys.executable:
            raise ValueError("sys.executable is empty")
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter, our own program
            [sys.executable, "-c", BOOTSTRAP], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, bufsize=0, close_fds=True, start_new_session=True)
        config = pickle.dumps({
            "sys_path": list(sys.path), "path": os.fspath(self.path), "source": self.source,
            "timeout_s": self.timeout_s, "parent_pid": os.getpid(), "nice": WRITER_NICE,
        })
        assert proc.stdin is not None
        try:
            write_all(proc.stdin.fileno(), _REPLY.pack(len(config)) + config)
        except OSError:
            proc.kill()
            proc.wait()
            raise
        return proc

    def _send(self, proc: subprocess.Popen[bytes]) -> None:
        """The sender thread: write each batch of the outbox down the writer's pipe, in
        order, until the stop frame is written or the pipe breaks (the writer is gone: the
        answers thread takes back what it did not answer for). Closes the pipe."""
        assert proc.stdin is not None
        fd = proc.stdin.fileno()
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._outbox)
                    seq = self._outbox.popleft()
                    batch = self._inflight.get(seq)
                if seq == STOP_SEQ:
                    write_all(fd, _BATCH.pack(STOP_SEQ, 0, 0))
                    return
                if batch is not None:  # None: taken back, the writer is gone
                    write_all(fd, _BATCH.pack(seq, batch[0], len(batch[1])))
                    write_all(fd, batch[1])
        except OSError:
            pass  # the writer is gone: the answers thread has seen it or will
        finally:
            proc.stdin.close()

    def _read_answers(self, proc: subprocess.Popen[bytes]) -> None:
        """The answers thread: count each answered batch, then rescue what is left."""
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        while (header := read_exact(fd, _REPLY.size)) is not None:
            body = read_exact(fd, _REPLY.unpack(header)[0])
            if body is None:
                break
            seq, written, spilled, lost, store_failed, error = pickle.loads(body)  # noqa: S301
            self.ledger.add(written=written, spilled=spilled, lost=lost,
                            store_failed=store_failed, error=error)
            with self._cond:
                done = self._inflight.pop(seq, None)
                self._inflight_bytes -= len(done[1]) if done is not None else 0
                self._answers += 1
                self._cond.notify_all()
        code = proc.wait()
        proc.stdout.close()
        with self._cond:
            orphans = [self._inflight.pop(seq) for seq in sorted(self._inflight)]
            self._inflight_bytes = 0
            self._gone = True
            self._rescuing += len(orphans)
            self._cond.notify_all()
            if orphans or not self._closing:
                self._in_process = True
        if orphans or not self._closing:
            logger.error("cliffwatch: the export writer process exited (code %s) with %d "
                         "batches unanswered; writing them and the next ones in this process",
                         code, len(orphans))
        self._rescue(orphans)

    def _rescue(self, batches: list[tuple[int, bytes]]) -> None:
        """Write batches the writer did not answer for in this process (counted in
        ``_rescuing`` by the caller, which this releases)."""
        for spans, payload in batches:
            try:
                self._write_here(payload, spans)
            finally:
                with self._cond:
                    self._rescuing -= 1
                    self._cond.notify_all()

    def _idle(self) -> bool:
        return not self._inflight and not self._rescuing

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Wait until the writer has answered for every batch sent, then load pending
        spill files (:meth:`DuckDBSpanExporter.force_flush`).

        Returns:
            True when every batch is answered and no spill file is left within the
            timeout; False otherwise (the batches stay in flight, counted when answered).
        """
        self._check_fork()
        with self._cond:
            if not self._cond.wait_for(self._idle, max(timeout_millis, 0) / 1000):
                logger.warning("cliffwatch: export writer still busy after %d ms",
                               timeout_millis)
                return False
        return super().force_flush(timeout_millis)

    def shutdown(self) -> None:
        """Wait for the writer to answer for every batch (killing one that answers nothing
        for the lock timeout + :data:`STALL_GRACE_S`; its batches are written here), stop
        it, then load pending spill files and refuse further exports."""
        self._check_fork()
        proc = self._proc
        if not self._shut_down and proc is not None:
            stall_s = (self.timeout_s or lock_timeout_s()) + STALL_GRACE_S
            with self._cond:
                while not self._idle():
                    answers = self._answers
                    self._cond.wait_for(self._idle, stall_s)
                    if not self._idle() and self._answers == answers:
                        logger.error("cliffwatch: the export writer answered nothing for "
                                     "%.0f s; stopping it", stall_s)
                        proc.kill()
                        break
                self._closing = True
                self._outbox.append(STOP_SEQ)
                self._cond.notify_all()
            if self._sender is not None:
                self._sender.join()
            if self._reader is not None:
                self._reader.join()
        super().shutdown()
