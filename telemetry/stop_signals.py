"""Stopping a long-running command (``serve``, ``watch``) on SIGINT or SIGTERM.

Two facts of Python and POSIX shells shape it (docs/sources.md#python-signal-handlers):

- A process started in the background of a script (``cliffwatch serve &``, a CI job, a
  supervisor's non-interactive shell) inherits SIGINT *ignored*, and Python then leaves it
  ignored instead of raising KeyboardInterrupt: ``kill -INT`` (and Ctrl-C) did nothing to
  such a ``cliffwatch serve``. So the handlers here are installed explicitly for both
  signals, whatever the process inherited, as Streamlit's and uvicorn's servers do.
- A Python handler runs in the main thread between two bytecodes, wherever that thread
  is. Raising from it (KeyboardInterrupt) can cut any code short, and taking a lock in it
  can deadlock: ``threading.Event.set`` takes the lock that ``Event.wait`` holds around
  its wait. So a handler here sets one attribute, and waits poll it.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

POLL_S = 0.1
"""How often :meth:`StopRequest.wait` looks at its flag: the longest a stop waits."""

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """A stop flag that a signal handler or another thread may set without a lock.

    Has the part of :class:`threading.Event` a loop uses (``set``, ``is_set``, ``wait``),
    so it can be passed where one is taken. ``signum`` is the signal that set it, or None.
    """

    def __init__(self) -> None:
        self._requested = False
        self.signum: int | None = None

    def set(self) -> None:
        """Ask for the stop (safe in a signal handler: one attribute assignment)."""
        self._requested = True

    def is_set(self) -> bool:
        """True once the stop was asked for."""
        return self._requested

    def wait(self, timeout_s: float | None = None) -> bool:
        """Sleep until the stop is asked for (True) or ``timeout_s`` seconds pass (False);
        a stop is seen within :data:`POLL_S`."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self._requested:
            pause = POLL_S if deadline is None else min(POLL_S, deadline - time.monotonic())
            if pause <= 0:
                break
            time.sleep(pause)
        return self._requested


@contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """A :class:`StopRequest` set by SIGINT or SIGTERM while the block runs, so a loop
    stops after its current step; neither signal raises meanwhile, and the handlers the
    process had (SIG_IGN included) are put back after. Off the main thread, where Python
    cannot set handlers, the request is only set by the caller."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: Any) -> None:
        stop.signum = signum
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            # None: a handler not set from Python; the default is the nearest we can restore
            signal.signal(sig, signal.SIG_DFL if old is None else old)
