"""Shared pytest set-up: offline litellm, the project root, and the marks of process tests.

A test that starts a process (a subprocess, a server, Streamlit, Chromium) must be marked
``slow`` or ``browser``, so that the quick mode (``python3 dev.py test --quick``, which
deselects both) starts none. The marks are enforced, not just asked for: an audit hook
sees every process start (``subprocess.Popen``, ``os.system``, ``os.posix_spawn``, the
``exec`` and ``fork`` calls), and a test without either mark that started one fails,
naming the command. Threads (a webhook receiver, an in-process OTLP receiver) are fine.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Before anything imports litellm: use the bundled price map, never the network
# (docs/sources.md#litellm-offline-price-map).
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
# No test reads an analysis result another test (or an earlier run) kept on disk; the
# tests of that cache set their own folder (tests/test_result_cache.py).
os.environ["CLIFFWATCH_RESULT_CACHE"] = "off"
# An in-process OTLP receiver decodes in its own threads, starting no worker process (the
# quick tests start none); tests/test_receiver_pool.py sets its workers itself.
os.environ["CLIFFWATCH_RECEIVER_WORKERS"] = "0"

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROCESS_MARKS = ("slow", "browser")
_PROCESS_EVENTS = frozenset({
    "subprocess.Popen", "os.system", "os.posix_spawn", "os.spawn", "os.exec", "os.fork",
    "os.forkpty",
})
# Commands a library runs for itself, which the test did not ask for: the standard
# library's platform.processor() runs `uname -p` once per process (the openai SDK asks
# for it when it builds its default headers).
_INCIDENTAL_COMMANDS = frozenset({("uname", "-p")})


class _ProcessStarts:
    """Process starts seen by the audit hook while one test phase runs (any thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watching = False
        self._seen: list[str] = []

    def audit(self, event: str, args: tuple[Any, ...]) -> None:
        if event not in _PROCESS_EVENTS or not self._watching:
            return
        command = args[1] if event == "subprocess.Popen" and len(args) > 1 else args[:1]
        if isinstance(command, list | tuple) and tuple(map(str, command)) in _INCIDENTAL_COMMANDS:
            return
        with self._lock:
            self._seen.append(f"{event}: {_short(command)}")

    def start(self) -> None:
        with self._lock:
            self._seen.clear()
            self._watching = True

    def stop(self) -> list[str]:
        with self._lock:
            self._watching = False
            return list(self._seen)


def _short(command: Any) -> str:
    text = " ".join(map(str, command)) if isinstance(command, list | tuple) else str(command)
    return text if len(text) <= 120 else text[:117] + "..."


_STARTS = _ProcessStarts()
sys.addaudithook(_STARTS.audit)  # audit hooks cannot be removed: it only records when asked


def _check_process_marks(item: pytest.Item) -> Iterator[None]:
    if any(item.get_closest_marker(mark) for mark in PROCESS_MARKS):
        yield
        return
    _STARTS.start()
    try:
        yield
    finally:
        started = _STARTS.stop()
    if started:
        raise pytest.fail.Exception(
            f"{item.nodeid} starts a process but is not marked slow or browser "
            f"(the quick mode must start none): {started[0]}", pytrace=False
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    return (yield from _check_process_marks(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    return (yield from _check_process_marks(item))


def pytest_configure(config: pytest.Config) -> None:
    try:
        import waits  # noqa: F401 - a bad CLIFFWATCH_TEST_TIME_SCALE is a usage error
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None


@pytest.fixture(scope="session")
def project_root() -> Path:
    """The repository root (where data/ and README.md live)."""
    return ROOT
