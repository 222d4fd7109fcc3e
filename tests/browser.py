"""A real Streamlit server and a real Chromium, for the dashboard's browser tests.

- :func:`ensure_chromium` installs Debian's ``chromium`` package when ``/usr/bin/chromium``
  is missing (Playwright's own browser download does not work here,
  docs/sources.md#chromium-for-the-browser-tests).
- :func:`streamlit_server` starts ``streamlit run dashboard/app.py`` on a free loopback port
  against a given store and waits for ``/_stcore/health``; it stops the server on exit.
- :func:`chromium` starts a headless Chromium through Playwright.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
INSTALL_TIMEOUT_S = 900
SERVER_START_TIMEOUT_S = 60
ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "dashboard" / "app.py"


class BrowserUnavailable(RuntimeError):
    """Chromium is missing and this machine cannot install it (no apt-get)."""


def ensure_chromium() -> Path:
    """Path of a Chromium binary, installing Debian's ``chromium`` first when it is missing.

    Raises:
        BrowserUnavailable: Chromium is missing and there is no ``apt-get`` to install it.
        subprocess.CalledProcessError: apt-get failed (a real failure, not a skip).
    """
    if CHROMIUM.exists():
        return CHROMIUM
    if shutil.which("apt-get") is None:
        raise BrowserUnavailable(f"{CHROMIUM} is missing and apt-get is not available")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update"], check=True, env=env, timeout=INSTALL_TIMEOUT_S,
                   capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "chromium"], check=True, env=env,
                   timeout=INSTALL_TIMEOUT_S, capture_output=True)
    return CHROMIUM


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
            return resp.status == 200 and resp.read().strip() == b"ok"
    except OSError:
        return False


@contextmanager
def streamlit_server(db_path: Path, log_path: Path) -> Iterator[str]:
    """Serve the dashboard on the store ``db_path``; yields its base URL.

    The server's output goes to ``log_path`` (read it when a test fails).

    Raises:
        RuntimeError: the server exited, or was not healthy within
            :data:`SERVER_START_TIMEOUT_S` seconds (the message ends with its log).
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "CLIFFWATCH_DB": str(db_path), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.headless", "true",
        "--server.address", "127.0.0.1",
        "--server.port", str(port),
        "--server.fileWatcherType", "none",
        "--browser.gatherUsageStats", "false",
    ]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + SERVER_START_TIMEOUT_S
            while not _healthy(url):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"streamlit did not come up on {url}:\n{log_path.read_text()}"
                    )
                time.sleep(0.2)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium driven by Playwright (``playwright.sync_api.Browser``).

    Open pages with ``browser.new_page(viewport={"width": 1440, "height": 1000})``; one
    browser serves many tests (starting one takes a second or two).

    Raises:
        BrowserUnavailable: see :func:`ensure_chromium`.
    """
    from playwright.sync_api import sync_playwright

    executable = ensure_chromium()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(executable), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
