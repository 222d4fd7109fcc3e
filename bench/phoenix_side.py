"""``python -m bench phoenix``: the same OTLP requests sent to ``cliffwatch serve`` and to
Arize Phoenix's receiver, side by side (issue 11).

Phoenix (the ``arize-phoenix`` package from PyPI) is installed into its own virtual
environment under the bench cache (``~/.cache/cliffwatch-bench/phoenix-venv``), never into
cliffwatch's: its pins differ from ours. When it cannot be installed the bench says so and
reports cliffwatch alone. Both servers run as processes on loopback with a new store each and
take the same protobuf bodies (:func:`bench.otlp_decode.make_payloads`, 512 GenAI spans per
request) from the same 4 clients (:func:`bench.receiver.post_load`).

Two figures per server, because the two answer at different moments: *answered* spans/s
(first send to last 200) and *stored* spans/s (first send until every span can be read back
from the server's store: ``spans`` in cliffwatch's DuckDB file, the ``spans`` table of
Phoenix's SQLite database, polled). cliffwatch answers once a request's spans are written
or spilled; Phoenix answers once they are queued in memory and writes them afterwards.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.otlp_decode import SPANS_PER_REQUEST, make_payloads
from bench.receiver import (
    CLIENTS,
    answers_200,
    latency_p50_p99,
    load_average,
    post_load,
    spans_stored,
    start_serve,
    stop_serve,
)

REQUESTS = 40
"""Requests per server (10 per client; 20,480 spans)."""

INSTALL_TIMEOUT_S = 1800.0
START_TIMEOUT_S = 300.0
STORED_TIMEOUT_S = 600.0
"""How long to wait for every answered span to be readable from a server's store."""

VENV = Path.home() / ".cache" / "cliffwatch-bench" / "phoenix-venv"


def _phoenix_exe() -> Path | str:
    """The ``phoenix`` script of the bench's Phoenix venv, installing it on first use; or
    the reason it cannot be had (a string)."""
    exe = VENV / "bin" / "phoenix"
    if exe.exists():
        return exe
    try:
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True,
                       capture_output=True, timeout=300)
        done = subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "arize-phoenix"],
                              capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"cannot install arize-phoenix: {exc}"
    if done.returncode != 0 or not exe.exists():
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"cannot install arize-phoenix: {tail}"
    return exe


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_phoenix(exe: Path, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """``phoenix serve`` on loopback with its SQLite store in ``workdir``; process and port
    once its page answers. Raises RuntimeError when it does not start in time."""
    port = _free_port()
    env = {**os.environ, "PHOENIX_WORKING_DIR": str(workdir), "PHOENIX_HOST": "127.0.0.1",
           "PHOENIX_PORT": str(port), "PHOENIX_GRPC_PORT": str(_free_port())}
    log = (workdir / "serve.log").open("wb")
    proc = subprocess.Popen([str(exe), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        if answers_200(port, "/"):
            return proc, port
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"phoenix serve did not start (log: {workdir / 'serve.log'})")


def _phoenix_spans(workdir: Path) -> int:
    db = workdir / "phoenix.db"
    if not db.exists():
        return 0
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return int(con.execute("SELECT count(*) FROM spans").fetchone()[0])
    except sqlite3.OperationalError:  # the table is created by Phoenix's migrations
        return 0
    finally:
        con.close()


def _wait_stored(count: Callable[[], int], expected: int, t0: float) -> tuple[int, float]:
    """Poll ``count()`` until it reaches ``expected`` or stops within STORED_TIMEOUT_S;
    the count reached and the seconds since ``t0``."""
    deadline = time.monotonic() + STORED_TIMEOUT_S
    seen = count()
    while seen < expected and time.monotonic() < deadline:
        time.sleep(0.25)
        seen = count()
    return seen, time.perf_counter() - t0


Measured = tuple[float, list[float], list[int], int, float]
"""(load wall seconds, request latencies s, HTTP statuses, spans stored, seconds until
stored): what :func:`_measure` returns."""


def _measure(proc: subprocess.Popen[Any], port: int, bodies: list[bytes],
             count: Callable[[], int]) -> Measured:
    """Post ``bodies`` to the server on ``port`` (:func:`bench.receiver.post_load`), wait
    until ``count()`` reaches every span sent, then stop the server."""
    try:
        t0 = time.perf_counter()
        wall_s, latencies, statuses = post_load(port, bodies)
        stored, stored_s = _wait_stored(count, len(bodies) * SPANS_PER_REQUEST, t0)
    finally:
        stop_serve(proc)
    return wall_s, latencies, statuses, stored, stored_s


def _figures(name: str, wall_s: float, latencies: list[float], statuses: list[int],
             stored: int, stored_s: float) -> list[tuple[str, str]]:
    ok = sum(1 for s in statuses if s == 200)
    p50, p99 = latency_p50_p99(latencies) if latencies else (float("nan"), float("nan"))
    return [
        (f"{name}: answered", f"{ok} x 200 of {len(statuses)}; "
                              f"{ok * SPANS_PER_REQUEST / wall_s:,.0f} spans/s "
                              f"({wall_s:.1f} s), P50 / P99 {p50:.2f} / {p99:.2f} s"),
        (f"{name}: stored", f"{stored:,} spans readable after {stored_s:.1f} s: "
                            f"{stored / stored_s:,.0f} spans/s"),
    ]


def bench_phoenix(tmp: Path, quick: bool) -> list[tuple[str, str]]:
    """The figures of the module docstring, as (label, value) lines; Phoenix's rows say
    why they are missing when it cannot be installed or started."""
    n_requests = REQUESTS // 4 if quick else REQUESTS
    bodies = make_payloads(n_requests)
    expected = n_requests * SPANS_PER_REQUEST
    rows = [("load", f"{CLIENTS} clients x {n_requests // CLIENTS} protobuf requests of "
                     f"{SPANS_PER_REQUEST} spans ({expected:,} spans) to each server, "
                     "loopback, each server a process with a new store"),
            ("load average 1/5/15 before", f"{load_average()} on {os.cpu_count()} CPUs")]
    db = tmp / "phoenix-side.duckdb"
    proc, port = start_serve(db)
    ours = _measure(proc, port, bodies, lambda: spans_stored(db))
    rows += _figures("cliffwatch serve", *ours)
    exe = _phoenix_exe()
    if isinstance(exe, str):
        return [*rows, ("Arize Phoenix", f"skipped: {exe}")]
    workdir = tmp / "phoenix"
    workdir.mkdir()
    try:
        phoenix, phoenix_port = _start_phoenix(exe, workdir)
    except RuntimeError as exc:
        return [*rows, ("Arize Phoenix", f"skipped: {exc}")]
    theirs = _measure(phoenix, phoenix_port, bodies, lambda: _phoenix_spans(workdir))
    version = subprocess.run([str(VENV / "bin" / "python"), "-c",
                              "import phoenix; print(phoenix.__version__)"],
                             capture_output=True, text=True, timeout=120).stdout.strip()
    rows += _figures(f"Arize Phoenix {version}", *theirs)
    ours_rate, theirs_rate = ours[3] / ours[4], theirs[3] / theirs[4]
    rows += [("stored spans/s, cliffwatch / Phoenix",
              f"{ours_rate / theirs_rate:.1f}x" if theirs_rate > 0 else "Phoenix stored none"),
             ("load average 1/5/15 after", load_average())]
    return rows
