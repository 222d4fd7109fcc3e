"""Debian's Chromium for the browser tests and the paint bench, installed when missing.

Playwright's own browser download does not work here
(docs/sources.md#chromium-for-the-browser-tests), so both ``tests/browser.py`` and
``bench/dashboard_paint.py`` drive ``/usr/bin/chromium`` and call :func:`ensure_chromium`
first.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
INSTALL_TIMEOUT_S = 900
"""Most seconds ``apt-get update`` or ``apt-get install`` may take."""


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
