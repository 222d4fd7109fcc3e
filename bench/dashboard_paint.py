"""Dashboard first paint: ``cliffwatch dashboard --db STORE`` and a headless Chromium.

For each page, the seconds from ``page.goto`` to the first plotly chart or table drawn
(``.js-plotly-plot``, ``stTable``, ``stDataFrame``) and to the end of the script run
(Streamlit's status widget gone), cold (the first visit after the server
started, in a fresh browser context) and warm (a second visit in another fresh context, so
only the server's caches are warm). Stores: a 500-run demo (the bench's cached demo,
:mod:`bench.bigstore`) and, with ``--runs N``, the cached store of N runs. Targets (issue 11):
Overview under 1.5 s on an idle machine at 1M runs, every page under 3 s. ``--quick``:
the Overview only.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench.bigstore import _demo_store, big_store

Result = list[tuple[str, str]]

PAGES = ("", "runs", "incidents", "findings")
"""URL paths measured ("" is the Overview)."""

PAINTED = ".js-plotly-plot, [data-testid='stTable'], [data-testid='stDataFrame']"
"""What counts as painted: a chart or a table (not a message: the Overview's upper-bound
warning comes before its figures)."""

START_TIMEOUT_S = 180.0
DONE = "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
"""The page's script run has ended (Streamlit's "running" indicator is gone)."""
PAINT_TIMEOUT_MS = 180_000
OVERVIEW_TARGET_S = 1.5
PAGE_TARGET_S = 3.0
CHROMIUM = "/usr/bin/chromium"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=5) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def _cliffwatch() -> list[str]:
    script = Path(sys.executable).parent / "cliffwatch"
    return [str(script)] if script.exists() else [
        sys.executable, "-c", "from cliffwatch.cli import main; main()"]


def _rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its children (the Streamlit server), in MB."""
    out = subprocess.run(["ps", "-o", "rss=", "--ppid", str(pid), "-p", str(pid)],
                         capture_output=True, text=True, check=False).stdout
    return sum(int(x) for x in out.split()) / 1024.0


def paint_times(db: Path, tmp: Path, pages: tuple[str, ...] = PAGES) -> tuple[
        list[tuple[str, float, float, float, float]], float]:
    """``([(page, cold_s, cold_done_s, warm_s, warm_done_s), ...], server_rss_mb)`` for the
    store ``db``: seconds to the first chart or table, and to the end of the script run.

    Raises:
        RuntimeError: the server exited or was not healthy within START_TIMEOUT_S.
    """
    from playwright.sync_api import sync_playwright

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp / "dashboard.log"
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    with log.open("wb") as out:
        proc = subprocess.Popen([*_cliffwatch(), "dashboard", "--db", str(db), "--port",
                                 str(port)], stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dashboard did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.2)
        rows: list[tuple[str, float, float, float, float]] = []
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM,
                                         args=["--no-sandbox", "--disable-gpu"])
            try:
                for path in pages:
                    times = []
                    for _visit in range(2):
                        context = browser.new_context(viewport={"width": 1440, "height": 1000})
                        page = context.new_page()
                        t0 = time.perf_counter()
                        page.goto(f"{url}/{path}")
                        page.wait_for_selector(PAINTED, timeout=PAINT_TIMEOUT_MS)
                        times.append(time.perf_counter() - t0)
                        # the script run's end, so the next visit does not share the CPU
                        page.wait_for_function(DONE, timeout=PAINT_TIMEOUT_MS)
                        times.append(time.perf_counter() - t0)
                        context.close()
                    rows.append((path or "overview", *times))
            finally:
                browser.close()
        return rows, _rss_mb(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def bench_dashboard_paint(tmp: Path, quick: bool, runs: int | None = None) -> Result:
    """First paint per page on the 500-run demo and, with ``runs``, on the store of N runs."""
    stores = [("demo 500 runs", _demo_store())]
    if runs is not None:
        stores.append((f"{runs:,} runs", big_store(runs)[0]))
    pages = PAGES[:1] if quick else PAGES
    result: Result = []
    for label, db in stores:
        load = "/".join(f"{x:.2f}" for x in os.getloadavg())
        rows, rss = paint_times(db, tmp, pages)
        for page, cold, cold_done, warm, warm_done in rows:
            target = OVERVIEW_TARGET_S if page == "overview" else PAGE_TARGET_S
            result.append((f"{label}: {page} cold / warm",
                           f"{cold:.2f} s / {warm:.2f} s (target < {target:g} s; run ended "
                           f"{cold_done:.2f} s / {warm_done:.2f} s)"))
        result.append((f"{label}: server RSS after", f"{rss:,.0f} MB"))
        result.append((f"{label}: load before, after",
                       f"{load}, {'/'.join(f'{x:.2f}' for x in os.getloadavg())} on "
                       f"{os.cpu_count()} CPUs"))
    return result
