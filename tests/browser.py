"""A real Streamlit server and a real Chromium, for the dashboard's browser tests.

- :func:`ensure_chromium` (bench/chromium.py, shared with the paint bench) installs
  Debian's ``chromium`` package when ``/usr/bin/chromium``
  is missing (Playwright's own browser download does not work here,
  docs/sources.md#chromium-for-the-browser-tests).
- :func:`streamlit_server` starts ``streamlit run dashboard/app.py`` on a free loopback port
  against a given store, with the flags ``cliffwatch dashboard`` passes (no Deploy button,
  no usage statistics), and waits for ``/_stcore/health``; it stops the server on exit.
- :func:`chromium` starts a headless Chromium through Playwright, its waits (and
  Playwright's ``expect``) bounded by :data:`RENDER_TIMEOUT_MS`.

Timeouts are upper bounds, scaled by ``CLIFFWATCH_TEST_TIME_SCALE`` (tests/waits.py).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from waits import http_ok, scaled, scaled_ms, wait_until

from bench.chromium import CHROMIUM, BrowserUnavailable, ensure_chromium  # noqa: F401 - re-exported
from cliffwatch.cli.serve import STREAMLIT_OFFLINE_FLAGS

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
SERVER_START_TIMEOUT_S = 120
"""Base seconds for a fresh ``streamlit run`` to answer its health check (scaled)."""
RENDER_TIMEOUT_MS = scaled_ms(90)
"""The longest a page, element or ``expect`` is waited for, in ms: Streamlit runs the page
script on the server before anything shows, which a loaded machine stretches."""
ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "dashboard" / "app.py"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def streamlit_server(db_path: Path, log_path: Path) -> Iterator[str]:
    """Serve the dashboard on the store ``db_path``; yields its base URL.

    The server's output goes to ``log_path`` (read it when a test fails).

    Raises:
        RuntimeError: the server exited, or was not healthy within
            :data:`SERVER_START_TIMEOUT_S` seconds, scaled (the message ends with its log).
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "CLIFFWATCH_DB": str(db_path), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(APP),
        *STREAMLIT_OFFLINE_FLAGS,  # as `cliffwatch dashboard` serves it
        "--server.address", "127.0.0.1",
        "--server.port", str(port),
    ]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:

            def healthy() -> bool:
                if proc.poll() is not None:
                    raise RuntimeError(f"streamlit exited:\n{log_path.read_text()}")
                return http_ok(f"{url}/_stcore/health", b"ok")

            try:
                wait_until(healthy, SERVER_START_TIMEOUT_S, f"streamlit on {url}",
                           interval_s=0.2)
            except AssertionError as exc:
                raise RuntimeError(f"{exc}:\n{log_path.read_text()}") from None
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=scaled(30))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=scaled(30))


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium driven by Playwright (``playwright.sync_api.Browser``).

    Open pages with ``browser.new_page(viewport={"width": 1440, "height": 1000})``; one
    browser serves many tests (starting one takes a second or two).

    Raises:
        BrowserUnavailable: see :func:`ensure_chromium`.
    """
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=RENDER_TIMEOUT_MS)
    executable = ensure_chromium()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(executable), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
