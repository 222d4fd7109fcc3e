"""telemetry/stop_signals.py: SIGINT and SIGTERM set a stop request and never raise, even
in a process that inherited SIGINT ignored; the handlers before are put back after.

Real signals, sent to this process (``os.kill``), handled by its real handlers."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest
from waits import scaled, wait_until

from cliffwatch.telemetry.stop_signals import StopRequest, stop_on_signals


@pytest.fixture(autouse=True)
def _handlers_back() -> Iterator[None]:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in before.items():
        signal.signal(sig, handler)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_sets_the_request_and_raises_nothing(signum: int) -> None:
    before = signal.getsignal(signum)
    with stop_on_signals() as stop:
        assert not stop.is_set()
        os.kill(os.getpid(), signum)  # KeyboardInterrupt or death, were it not handled
        wait_until(stop.is_set, 10, "the stop request")
        assert stop.signum == signum
    assert signal.getsignal(signum) is before


def test_sigint_stops_even_when_the_process_inherited_it_ignored() -> None:
    # A process started in a script's background: SIGINT ignored before Python starts.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with stop_on_signals() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        wait_until(stop.is_set, 10, "the stop request")
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # as it was, for what follows


def test_wait_returns_when_another_thread_asks_or_at_its_timeout() -> None:
    stop = StopRequest()
    started = time.monotonic()
    assert stop.wait(0.3) is False
    assert time.monotonic() - started >= 0.3
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    assert stop.wait(scaled(30)) is True
    assert time.monotonic() - started < scaled(30)
    assert stop.wait(0) is True  # once asked, stays asked


def test_a_signal_interrupts_a_wait_within_a_poll() -> None:
    with stop_on_signals() as stop:
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM)).start()
        started = time.monotonic()
        assert stop.wait(scaled(30)) is True
        assert time.monotonic() - started < scaled(30)
    assert stop.signum == signal.SIGTERM


def test_off_the_main_thread_no_handler_is_touched() -> None:
    seen: list[object] = []

    def body() -> None:
        with stop_on_signals() as stop:
            seen.append(signal.getsignal(signal.SIGTERM))
            stop.set()
            seen.append(stop.wait(0))

    before = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=body)
    thread.start()
    thread.join(scaled(30))
    assert seen == [before, True]
