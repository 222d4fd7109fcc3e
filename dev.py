#!/usr/bin/env python3
"""The README's two commands, on a machine that has only Python 3.11 and pip.

    python3 dev.py demo          # set up .venv, run the demo workload into
                                 # data/cliffwatch.duckdb, then open the dashboard on it
    python3 dev.py test          # set up .venv, run the whole test suite (pytest), as CI does
    python3 dev.py test --quick  # the same without the tests marked slow or browser: no
                                 # process, server or browser is started
    python3 dev.py bench         # set up .venv, run the benchmarks in bench/

Set-up is idempotent: the virtual environment in .venv is created once and re-installed
only when pyproject.toml changes (its hash is kept in .venv/.cliffwatch-installed).
Extra arguments after the command go to what it runs (``python3 dev.py test -k store``).

Tests: ``slow`` marks every test that starts a process (a subprocess, the receiver or the
dashboard as a server), ``browser`` the ones that drive Chromium; tests/conftest.py fails
an unmarked test that starts one. Waits poll for readiness, and every test timeout is
multiplied by CLIFFWATCH_TEST_TIME_SCALE (default 1; set it higher on a slow or busy
machine, e.g. ``CLIFFWATCH_TEST_TIME_SCALE=3 python3 dev.py test``; tests/waits.py).
pytest turns warnings into errors, except the dependency warnings listed by name in
pyproject.toml.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"
STAMP = VENV / ".cliffwatch-installed"
QUICK_MARKS = "not slow and not browser"
"""pytest's mark expression for ``test --quick``."""
HELP_FLAGS = frozenset({"-h", "--help"})


def _say(msg: str) -> None:
    print(f"[dev] {msg}", flush=True)


def ensure_env() -> None:
    """Create .venv and install cliffwatch with its test extras when pyproject changed."""
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if not PY.exists():
        _say(f"creating virtual environment in {VENV}")
        venv.EnvBuilder(with_pip=True).create(VENV)
    if STAMP.exists() and STAMP.read_text().strip() == want:
        return
    _say("installing cliffwatch and its dependencies (first run takes about a minute)")
    pip = [str(PY), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", f"{ROOT}[test]"], check=True)
    STAMP.write_text(want)


def demo_commands(rest: list[str], store_exists: bool) -> list[list[str]]:
    """The ``cliffwatch`` commands ``dev.py demo REST`` runs, in order (each only if the one
    before succeeded): ``demo REST`` then ``dashboard``; ``dashboard`` alone when the demo
    store exists and no arguments were given; ``demo --help`` alone when help is asked."""
    if HELP_FLAGS & set(rest):
        return [["demo", *rest]]
    demo = [] if store_exists and not rest else [["demo", *rest]]
    return [*demo, ["dashboard"]]


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"demo", "test", "bench"}:
        print(__doc__)
        return 2
    cmd, rest = argv[0], argv[1:]
    ensure_env()
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    if cmd == "test":
        if "--quick" in rest:
            rest = ["-m", QUICK_MARKS, *(arg for arg in rest if arg != "--quick")]
        return subprocess.run([str(PY), "-m", "pytest", *rest], cwd=ROOT, env=env).returncode
    if cmd == "bench":
        return subprocess.run([str(PY), "-m", "bench", *rest], cwd=ROOT, env=env).returncode
    cw = str(BIN / "cliffwatch")
    store = ROOT / "data" / "cliffwatch.duckdb"
    commands = demo_commands(rest, store.exists())
    if commands[0] == ["dashboard"]:
        # A second Quickstart opens the demo it made before rather than piling a second
        # workload onto it; `cliffwatch demo --fresh` makes a new one.
        _say(f"{store.relative_to(ROOT)} exists: opening it (for a new demo: "
             ".venv/bin/cliffwatch demo --fresh)")
    rc = 0
    for command in commands:
        rc = subprocess.run([cw, *command], cwd=ROOT, env=env).returncode
        if rc != 0:
            break
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
