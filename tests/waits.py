"""Waits for the tests: timeouts that scale with the machine, and polling for readiness.

A test never sleeps a fixed time hoping something is ready: it polls for the thing itself
(a health endpoint answering, a file appearing, a row changing status) with
:func:`wait_until`, and gives up only after a timeout that is an upper bound, not an
expected duration. Every timeout passes through :func:`scaled`, so a loaded or slow
machine (a CI runner shared with other jobs) can stretch them all at once:

    CLIFFWATCH_TEST_TIME_SCALE=3 python3 dev.py test

``CLIFFWATCH_TEST_TIME_SCALE`` (default 1) multiplies every timeout in the tests. The base
values are already several times what an idle 2-core machine needs, so the suite passes on
a machine loaded 5x at the default; raise the factor beyond that. It is a setting of the
test suite, not of cliffwatch, so it lives here rather than in ``cliffwatch/settings.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

TIME_SCALE_ENV = "CLIFFWATCH_TEST_TIME_SCALE"
POLL_INTERVAL_S = 0.05


def _time_scale() -> float:
    raw = os.environ.get(TIME_SCALE_ENV, "").strip()
    if not raw:
        return 1.0
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise ValueError(f"{TIME_SCALE_ENV} must be a positive number, got {raw!r}")
    return value


TIME_SCALE = _time_scale()
"""The factor every test timeout is multiplied by (``$CLIFFWATCH_TEST_TIME_SCALE``)."""


def scaled(seconds: float) -> float:
    """``seconds`` x :data:`TIME_SCALE`: a timeout (an upper bound) for this machine."""
    return seconds * TIME_SCALE


def scaled_ms(seconds: float) -> int:
    """:func:`scaled` in whole milliseconds (Playwright's unit)."""
    return int(scaled(seconds) * 1000)


def wait_until(
    predicate: Callable[[], T],
    timeout_s: float,
    what: str,
    *,
    interval_s: float = POLL_INTERVAL_S,
) -> T:
    """Call ``predicate`` until it returns something truthy; return that value.

    Args:
        predicate: checked at once, then every ``interval_s`` seconds.
        timeout_s: base timeout in seconds, scaled by :data:`TIME_SCALE`.
        what: what is awaited, for the failure message ("the receiver's /health").
        interval_s: pause between checks.

    Raises:
        AssertionError: ``predicate`` was still falsy after the scaled timeout (so the
            test fails, naming ``what`` and the timeout).
    """
    limit_s = scaled(timeout_s)
    deadline = time.monotonic() + limit_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {limit_s:g} s waiting for {what}")
        time.sleep(interval_s)


def http_ok(url: str, body: bytes | None = None) -> bool:
    """True when ``GET url`` answers 200 (and exactly ``body``, when given); False when it
    cannot connect or answers otherwise."""
    try:
        with urllib.request.urlopen(url, timeout=scaled(5)) as resp:
            return resp.status == 200 and (body is None or resp.read().strip() == body)
    except (OSError, urllib.error.URLError):
        return False


@dataclass(frozen=True)
class Stopped:
    """How :func:`stop_process` ended: what the process printed, and whether it stopped
    by itself within the wait (False: it was aborted and killed)."""

    out: str
    err: str
    in_time: bool


def stop_process(proc: subprocess.Popen[str], signum: int, timeout_s: float) -> Stopped:
    """Send ``signum`` to ``proc`` (if it runs) and wait for it to exit, up to the scaled
    ``timeout_s``. If it does not, SIGABRT it, which under ``PYTHONFAULTHANDLER=1`` makes
    it print every thread's stack (where it waits), then kill it; it is always reaped, so
    no process outlives the test.
    """
    if proc.poll() is None:
        proc.send_signal(signum)
    try:
        out, err = proc.communicate(timeout=scaled(timeout_s))
        return Stopped(out or "", err or "", True)
    except subprocess.TimeoutExpired:
        pass
    proc.send_signal(signal.SIGABRT)
    try:
        out, err = proc.communicate(timeout=scaled(30))
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return Stopped(out or "", err or "", False)
