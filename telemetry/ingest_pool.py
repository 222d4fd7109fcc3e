"""The receiver's worker processes: decode, map and journal requests off the server's GIL.

On 2 cores one interpreter cannot both serve HTTP and decode at the rate the decode alone
reaches: per 512-span request decode + map cost 30.7 ms, the Arrow table 2.1 ms, the
journal file and its fsync 1.7 ms, all under the GIL the HTTP server and the store's
drain thread need too (``python -m bench receiver``). :class:`IngestPool` runs
:func:`telemetry.otlp_ingest.journal_request` in ``N`` worker processes
(``CLIFFWATCH_RECEIVER_WORKERS``); the server keeps HTTP, the journal's bookkeeping and
the drain. Each worker takes one request at a time: the body (Content-Encoding undone)
and the journal ``*.tmp`` path the server chose, and answers once that file is written
and fsynced with a small :class:`~telemetry.otlp_ingest.Ingested` (counts, rejections,
or the 400 reason). The server renames the file into the journal and only then answers
200, so nothing is acknowledged before it is durable.

A worker:

- is a fresh interpreter (``sys.executable -c``: never a fork of the threaded server,
  never multiprocessing's spawn, which re-imports ``__main__``; as the exporter's writer,
  :mod:`telemetry.export_process`), with the server's ``sys.path`` and environment, in a
  session of its own (a Ctrl-C in the terminal stops the server, which stops the
  workers), exiting when its pipe closes or its parent is gone;
- that exits or is killed mid-request, or answers nothing within the request's timeout,
  costs that one request a 503 (retryable; its ``*.tmp`` file is removed): it is killed
  if need be and a new one started in the background, while the others serve on. It never
  hangs the handler: every wait on a worker is bounded.
"""

from __future__ import annotations

import logging
import os
import pickle
import queue
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from cliffwatch.telemetry import export_process
from cliffwatch.telemetry.export_process import read_exact, write_all
from cliffwatch.telemetry.otlp_ingest import Ingested, journal_request
from cliffwatch.telemetry.otlp_mapping import MappingConfig

logger = logging.getLogger(__name__)

_FRAME = struct.Struct("<Q")  # payload bytes of the pickle that follows; 0 stops a worker
START_TIMEOUT_S = 120.0
"""How long a new worker may take to import and say it is ready (litellm's import costs
seconds, more on a loaded machine)."""
RESTART_PAUSE_S = 1.0
"""Pause before starting a worker again after a start failed."""

BOOTSTRAP = export_process.bootstrap(__name__)
"""A worker's ``-c`` program: the export writer's (read the config frame, take the
server's ``sys.path``), serving :func:`serve` of this module."""


class WorkerLost(Exception):
    """No worker answered the request: it exited, was killed, or did not answer in time
    (answered 503; the request's journal file, if any, is removed)."""


class WorkerFailed(Exception):
    """A worker raised on a request (a bug, not bad input): answered as any server error."""


def serve(config: dict[str, Any]) -> None:
    """A worker's loop (run by :data:`BOOTSTRAP`): say ready, then answer each request
    frame ``(kind, tmp path, body)`` with its pickled :class:`Ingested`, until stdin
    closes, a zero frame comes, or the parent is gone."""
    reply_fd = os.dup(1)
    os.dup2(2, 1)  # a stray print goes to stderr, never into the answers
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING,
                        format="cliffwatch receiver worker: %(levelname)s %(message)s")
    from cliffwatch.telemetry.pricing import import_litellm

    import_litellm()  # the first price lookup costs seconds: pay it before serving
    mapping: MappingConfig = pickle.loads(config["mapping"])  # noqa: S301 - our parent's
    capture_content, sync, parent = config["capture_content"], config["sync"], config["ppid"]
    write_all(reply_fd, _FRAME.pack(0))  # ready
    while (header := read_exact(0, _FRAME.size, parent)) is not None:
        size = _FRAME.unpack(header)[0]
        body = read_exact(0, size, parent) if size else None
        if body is None:
            return
        kind, tmp, data = pickle.loads(body)  # noqa: S301 - our parent's
        answer: Ingested | WorkerFailed
        try:
            answer = journal_request(data, kind, Path(tmp), mapping, capture_content, sync)
        except Exception as exc:  # noqa: BLE001 - a bug: the server answers it as one
            logger.exception("a request failed")
            answer = WorkerFailed(f"{type(exc).__name__}: {exc}".splitlines()[0])
        out = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        write_all(reply_fd, _FRAME.pack(len(out)) + out)


def _send(fd: int, data: bytes, deadline: float) -> None:
    """Write all of ``data`` to the non-blocking ``fd`` by ``deadline`` (monotonic).

    Raises:
        WorkerLost: the pipe is closed, or still full at the deadline.
    """
    view = memoryview(data)
    while view:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([], [fd], [], left)[1]:
            raise WorkerLost("the worker took no request in time")
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            continue
        except OSError as exc:
            raise WorkerLost(f"the worker is gone ({exc.strerror or exc})") from None


def _recv(fd: int, n: int, deadline: float) -> bytes:
    """``n`` bytes from ``fd`` by ``deadline`` (monotonic).

    Raises:
        WorkerLost: end of file (the worker exited) or nothing more by the deadline.
    """
    chunks: list[bytes] = []
    while n:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise WorkerLost("the worker did not answer in time")
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise WorkerLost("the worker exited")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


class _Worker:
    """One worker process and its pipes (used by one request at a time)."""

    def __init__(self, config: bytes) -> None:
        if not sys.executable:
            raise OSError("sys.executable is empty")
        self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter, our own program
            [sys.executable, "-c", BOOTSTRAP], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            bufsize=0, close_fds=True, start_new_session=True)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.send_fd, self.recv_fd = self.proc.stdin.fileno(), self.proc.stdout.fileno()
        try:
            write_all(self.send_fd, _FRAME.pack(len(config)) + config)
        except OSError as exc:
            self.kill()
            raise WorkerLost(f"the worker did not start ({exc.strerror or exc})") from None
        os.set_blocking(self.send_fd, False)

    @property
    def pid(self) -> int:
        """The worker's process id."""
        return self.proc.pid

    def wait_ready(self, timeout_s: float) -> None:
        """Block until the worker has imported what it needs.

        Raises:
            WorkerLost: it exited or was not ready within ``timeout_s``.
        """
        try:
            _recv(self.recv_fd, _FRAME.size, time.monotonic() + timeout_s)
        except WorkerLost:
            self.kill()
            raise

    def call(self, request: bytes, deadline: float) -> Ingested:
        """Send one pickled request and read its answer by ``deadline``.

        Raises:
            WorkerLost: the worker is gone or late (the caller kills it).
            WorkerFailed: the worker raised on the request.
        """
        _send(self.send_fd, _FRAME.pack(len(request)) + request, deadline)
        size = _FRAME.unpack(_recv(self.recv_fd, _FRAME.size, deadline))[0]
        answer = pickle.loads(_recv(self.recv_fd, size, deadline))  # noqa: S301 - our child's
        if isinstance(answer, WorkerFailed):
            raise answer
        return answer

    def kill(self) -> None:
        """Kill the process, reap it, close its pipes (so it writes nothing after)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()

    def stop(self, timeout_s: float) -> None:
        """Ask the worker to exit (a zero frame), killing it after ``timeout_s``."""
        try:
            os.set_blocking(self.send_fd, True)
            write_all(self.send_fd, _FRAME.pack(0))
            self.proc.wait(timeout_s)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass
        self.kill()


class IngestPool:
    """``workers`` worker processes running :func:`~telemetry.otlp_ingest.journal_request`
    (module doc); thread-safe, one request per worker at a time, the rest wait their turn.

    Args:
        workers: processes, 1 or more.
        mapping: how spans are mapped.
        capture_content: keep prompt and completion content.
        sync: fsync each journal file.

    Raises:
        ValueError: (on construction) ``workers`` below 1.
    """

    def __init__(self, workers: int, mapping: MappingConfig, capture_content: bool, *,
                 sync: bool = True) -> None:
        if workers < 1:
            raise ValueError(f"an ingest pool needs 1 or more workers, not {workers}")
        self.workers = workers
        self._config = pickle.dumps({
            "sys_path": list(sys.path), "ppid": os.getpid(), "capture_content": capture_content,
            "sync": sync, "mapping": pickle.dumps(mapping),
        })
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._all: set[_Worker] = set()
        self._lock = threading.Lock()
        self._busy = 0
        self._closed = False

    def start(self, timeout_s: float = START_TIMEOUT_S) -> IngestPool:
        """Start every worker and wait until all are ready (they import in parallel).

        Raises:
            OSError, WorkerLost: a worker could not be started (the others are stopped).
        """
        started: list[_Worker] = []
        try:
            for _ in range(self.workers):
                started.append(self._new_worker())
            deadline = time.monotonic() + timeout_s
            for worker in started:
                worker.wait_ready(max(deadline - time.monotonic(), 0.0))
        except BaseException:
            for worker in started:
                self._forget(worker)
            raise
        for worker in started:
            self._idle.put(worker)
        return self

    def _new_worker(self) -> _Worker:
        worker = _Worker(self._config)
        with self._lock:
            self._all.add(worker)
        return worker

    def _forget(self, worker: _Worker) -> None:
        worker.kill()
        with self._lock:
            self._all.discard(worker)

    @property
    def pids(self) -> list[int]:
        """The process ids of the live workers (idle or busy)."""
        with self._lock:
            return sorted(w.pid for w in self._all)

    @property
    def busy(self) -> int:
        """Requests a worker is working on now."""
        return self._busy

    def run(self, data: bytes, kind: str, tmp: Path, timeout_s: float) -> Ingested:
        """:func:`~telemetry.otlp_ingest.journal_request` of one body in a worker, waiting
        for a free one first; the whole bounded by ``timeout_s``.

        Raises:
            WorkerLost: no worker free in time, or the worker exited, was killed, or did
                not answer in time (a new one is started in the background).
            WorkerFailed: the worker raised (a bug).
        """
        deadline = time.monotonic() + timeout_s
        try:
            worker = self._idle.get(timeout=timeout_s)
        except queue.Empty:
            raise WorkerLost(f"no receiver worker was free within {timeout_s:g} s") from None
        request = pickle.dumps((kind, os.fspath(tmp), data), protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            self._busy += 1
        try:
            answer = worker.call(request, deadline)
        except WorkerLost:
            self._replace(worker)
            raise
        except BaseException:
            self._idle.put(worker)
            raise
        finally:
            with self._lock:
                self._busy -= 1
        self._idle.put(worker)
        return answer

    def _replace(self, worker: _Worker) -> None:
        """Kill a lost worker now (it writes nothing after this returns) and start its
        successor in the background."""
        code = worker.proc.poll()
        self._forget(worker)
        logger.error("cliffwatch: receiver worker %d lost (%s); starting another",
                     worker.pid, "still running, killed" if code is None else f"exit {code}")
        if not self._closed:
            threading.Thread(target=self._restart, name="cliffwatch-ingest-restart",
                             daemon=True).start()

    def _restart(self) -> None:
        while not self._closed:
            try:
                worker = self._new_worker()
                worker.wait_ready(START_TIMEOUT_S)
            except (OSError, WorkerLost) as exc:
                logger.error("cliffwatch: cannot start a receiver worker (%s); retrying", exc)
                time.sleep(RESTART_PAUSE_S)
                continue
            if self._closed:
                self._forget(worker)
            else:
                self._idle.put(worker)
            return

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop every worker (those busy are killed after ``timeout_s``). Idempotent."""
        self._closed = True
        with self._lock:
            workers = list(self._all)
            self._all.clear()
        for worker in workers:
            worker.stop(timeout_s)
