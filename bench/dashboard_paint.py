"""Dashboard first paint: ``cliffwatch dashboard --db STORE`` and a headless Chromium.

For each page, the seconds from ``page.goto`` to the frame painted after the first plotly
chart or table entered the page (``.js-plotly-plot``, ``stTable``, ``stDataFrame``),
timed by the browser's clock (:data:`IN_PAGE_CLOCK`), and to the end of the script run
(Streamlit's status widget gone), cold (the first visit after the server started, in a
fresh browser context), warm (a second visit in another fresh context, so only the
server's caches are warm) and return (a third in the first visit's context: the browser
has Streamlit's and plotly's JavaScript cached, as a returning visitor does). Each row
also says when Playwright's wait saw the element (it polls, at 0.5 s intervals after its
first checks, each check waiting for the page's main thread: up to a second late; the
headline figure was that wait until 2026-12), and on the page's clock when the element
entered the DOM and when the frame after it was painted. Stores: a 500-run demo
(the bench's cached demo, :mod:`bench.bigstore`) and the cached store of ``--runs N``
runs (default 1M, as the scale benchmarks'; 100k with ``--quick``), each as a copy
migrated to this schema version (:func:`current_schema_copy`);
beside them a bare Streamlit page with one table, the floor no page can beat (Streamlit's
JavaScript, its websocket session, the browser). The server starts with an empty result
cache (``$CLIFFWATCH_RESULT_CACHE``), so the Findings and What-if rows' cold figure is the
whole analysis computed: by the server's start-up analyses (``dashboard/serve.py``, in
child processes begun once the first page visited was drawn, at most 15 s after the start;
the row says how long after the start the page was visited, and the RSS line their
processes' memory) or, when the page comes first, by the page; a second server, started
after the first stopped, then visits those two pages again with what the first kept (the
rows "after a restart"). Targets (issue 11): Overview under 1.5 s on an idle machine at 1M
runs, every page under 3 s and the server under 1 GB. ``--quick``: the Overview only;
``--pages run,replay``: those pages only (:func:`select_pages`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.bigstore import _demo_store, big_store
from bench.chromium import ensure_chromium
from bench.scale import DEFAULT_RUNS, QUICK_RUNS

Result = list[tuple[str, str]]

PAGES = ("", "runs", "incidents", "alerts", "run?run_id={run_id}", "replay?run_id={run_id}",
         "compare", "cost_truth", "findings", "whatif?max_workers=8")
"""URL paths measured ("" is the Overview; ``{run_id}`` is the store's newest run). The
pages that read the most (findings, what-if: analytics/, pushed down by another change)
come last, so a slow one delays no other. The Report page builds on a button: not
measured."""

PAINTED = ".js-plotly-plot, [data-testid='stTable'], [data-testid='stDataFrame']"
"""What counts as painted: a chart or a table (not a message: the Overview's upper-bound
warning comes before its figures)."""

EMPTY = "[data-testid='stAlertContentInfo'], [data-testid='stAlertContentSuccess']"
"""On pages other than the Overview, an st.info or st.success message counts as painted
too (a "nothing to show" message: the bench's 1M store has no incidents or alerts, its
runs being copied in SQL, not written through the incident rules; or Cost truth's verdict
line, drawn with the audit before its chart); the row says so. Pages that draw in two steps
(the Overview's figures then its charts, Cost truth's audit then its cache savings, each
read by its own loader) paint before their script ends: the "run ended" figure beside
each row is the time to the complete page (:data:`COMPLETE`: the charts drawn too, where
they come in the script run after the first paint)."""



def page_name(path: str) -> str:
    """A :data:`PAGES` entry's name: its path before any ``?``, ``overview`` for ``""``."""
    return path.split("?")[0] or "overview"


def select_pages(names: str) -> tuple[str, ...]:
    """The :data:`PAGES` entries named in ``names`` (comma-separated page names such as
    ``overview,run``), in :data:`PAGES` order.

    Raises:
        ValueError: a name is not one of the pages.
    """
    wanted = {n.strip() for n in names.split(",") if n.strip()}
    known = {page_name(p) for p in PAGES}
    if not wanted or wanted - known:
        raise ValueError(f"--pages: choose from {', '.join(sorted(known))}")
    return tuple(p for p in PAGES if page_name(p) in wanted)


START_TIMEOUT_S = 180.0
DONE = "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
"""The page's script run has ended (Streamlit's "running" indicator is gone)."""
COMPLETE = ("() => !document.querySelector('[data-testid=\"stStatusWidget\"]') && "
            "!document.querySelector(\"[data-testid='stMain'] [data-testid='stSkeleton'], "
            "[data-testid^='stBidiComponent']\")")
"""The page is complete: no script run going, no element of the main area still waiting
for its JavaScript (Streamlit's skeleton) and no first-paint gate waiting to ask for the
charts (dashboard/paint_gate.py: the charts, and on the Runs, Replay, Compare and Cost truth
pages what else can wait, come in the script run that follows the first paint, so their
first run's end is not the page's)."""
PAINT_TIMEOUT_MS = 180_000
OVERVIEW_TARGET_S = 1.5
PAGE_TARGET_S = 3.0


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


def _rss_mb(pid: int) -> tuple[float, float]:
    """Resident memory, in MB, of ``pid`` and its children (the ``cliffwatch dashboard``
    launcher and the Streamlit server), and of their further descendants (the server's
    start-up analyses, ``dashboard/serve.py``: child processes of their own)."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid=,rss="],
                         capture_output=True, text=True, check=False).stdout
    rows = [tuple(int(x) for x in line.split()) for line in out.splitlines() if line.strip()]
    children: dict[int, list[tuple[int, int]]] = {}
    for child, parent, rss in rows:
        children.setdefault(parent, []).append((child, rss))
    own = {p: r for p, _, r in rows}.get(pid, 0)
    server = own + sum(r for _, r in children.get(pid, []))
    further, todo = 0, [c for c, _ in children.get(pid, [])]
    while todo:
        for child, rss in children.get(todo.pop(), []):
            further += rss
            todo.append(child)
    return server / 1024.0, further / 1024.0


Row = tuple[str, float, float, float, float, float, str]


IN_PAGE_CLOCK = """(() => {
  const selector = %s;
  const seen = new MutationObserver(() => {
    if (document.querySelector(selector)) {
      window.cliffwatchPaintedAt = performance.now();
      seen.disconnect();
      // a rAF callback runs before the next frame's paint; a task queued from it, after
      requestAnimationFrame(() => setTimeout(() => {
        window.cliffwatchFrameAt = performance.now();
      }, 0));
    }
  });
  seen.observe(document, {childList: true, subtree: true});
})();"""
"""Records, in the page, when an element matching the selector (``%s``) entered the DOM
and when the frame after it was painted: milliseconds after the navigation started, on the
page's clock. Playwright's ``wait_for_selector`` checks at 0.5 s intervals once the first
few checks failed, and a check waits for the page's main thread (plotly.js evaluating:
0.8 s, in the run the Overview's first-paint gate asks for once its table is drawn), so
what the wait sees is up to that much later than the element: these say when it came and
when it was on screen, and with ``performance.timeOrigin`` (the navigation's start on the
wall clock) when, counted from ``page.goto``, it was painted (the headline figure;
docs/sources.md#playwrights-waits-and-the-pages-clock)."""


def _visit(context: Any, url: str, selector: str,
           done: str = COMPLETE) -> tuple[float, float, bool, tuple[float, float, float]]:
    """One visit in ``context``: seconds to ``selector`` as Playwright's wait saw it and to
    the page complete (the function ``done`` true: :data:`COMPLETE` unless told), whether
    a chart or table (not a message) was drawn, and, from the browser's own clock
    (:data:`IN_PAGE_CLOCK`), the seconds from the navigation's start to the element in the
    DOM and to the frame painted after it, and from ``page.goto`` to that frame (the
    frame's wall-clock time, ``performance.timeOrigin`` plus the page's clock, less this
    process's ``time.time()`` when it called ``goto``: one machine, one clock).

    Raises:
        playwright's TimeoutError: nothing painted within PAINT_TIMEOUT_MS.
    """
    page = context.new_page()
    page.add_init_script(IN_PAGE_CLOCK % json.dumps(selector))
    t0 = time.perf_counter()
    t0_epoch = time.time()
    try:
        page.goto(url)
        page.wait_for_selector(selector, timeout=PAINT_TIMEOUT_MS)
        seen = time.perf_counter() - t0
        drawn = page.query_selector(PAINTED) is not None
        # the page complete, so the next visit does not share the CPU
        page.wait_for_function(done, timeout=PAINT_TIMEOUT_MS)
        clock = page.evaluate("[window.cliffwatchPaintedAt ?? NaN, "
                              "window.cliffwatchFrameAt ?? NaN, performance.timeOrigin]")
        frame_s = float(clock[1]) / 1000.0
        from_goto = (float(clock[2]) / 1000.0 + frame_s) - t0_epoch
        return (seen, time.perf_counter() - t0, drawn,
                (float(clock[0]) / 1000.0, frame_s, from_goto))
    finally:
        page.close()


def _visit_thrice(browser: Any, url: str, path: str, done: str | None = None) -> Row:
    """Three visits of ``url/path``: ``(page, cold_s, cold_done_s, warm_s, warm_done_s,
    return_s, note)``. Cold: the server's first; warm: again in a fresh browser context
    (only the server's caches are warm); return: again in the first visit's context (the
    browser's cache of Streamlit's and plotly's JavaScript warm too: a returning visitor).
    inf for a visit that did not paint within PAINT_TIMEOUT_MS (the note says so, and the
    later visits are skipped). ``done``: when the page is complete (None:
    :data:`COMPLETE`)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    name = page_name(path)
    selector = PAINTED if name == "overview" else f"{PAINTED}, {EMPTY}"
    times: list[float] = []
    in_page: list[tuple[float, float, float]] = []
    note = ""
    first = browser.new_context(viewport={"width": 1440, "height": 1000})
    try:
        for context in (first, None, first):
            fresh = context or browser.new_context(viewport={"width": 1440, "height": 1000})
            try:
                seen, ended, drawn, clock = _visit(fresh, f"{url}/{path}", selector,
                                                   done or COMPLETE)
            finally:
                if context is None:
                    fresh.close()
            # the figure is the frame painted, from goto, on one clock; NaN (no clock
            # read) falls back to what Playwright's wait saw
            times += [clock[2] if math.isfinite(clock[2]) else seen, ended]
            in_page.append((seen, *clock))
            if not drawn:
                note = " (a message: no chart or table)"
    except PlaywrightTimeout:
        times += [math.inf] * (6 - len(times))
        note = f" (nothing painted in {PAINT_TIMEOUT_MS / 1000:.0f} s)"
    finally:
        first.close()
    if len(in_page) == 3:
        note += (" (Playwright's wait saw it at " + " / ".join(f"{v[0]:.2f}" for v in in_page)
                 + " s; on the page's clock in the DOM at "
                 + " / ".join(f"{v[1]:.2f}" for v in in_page)
                 + " s, its frame painted at " + " / ".join(f"{v[2]:.2f}" for v in in_page)
                 + " s)")
    return (name, times[0], times[1], times[2], times[3], times[4], note)


def _newest_run_id(db: Path) -> str:
    from cliffwatch.telemetry.store import open_store

    with open_store(db, read_only=True) as con:
        rows = con.execute("SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 1").fetchall()
    return str(rows[0][0]) if rows else "none"


def paint_times(db: Path | None, tmp: Path, pages: tuple[str, ...] = PAGES,
                results: Path | None = None) -> tuple[list[Row], float, float]:
    """``([(page, cold_s, cold_done_s, warm_s, warm_done_s, return_s, note), ...],
    peak_rss_mb, background_rss_mb)``
    for the store ``db``: seconds to the first chart or table (or, on a page other than the
    Overview, its empty-state message) and to the end of the script run; the server's
    largest RSS seen after a page, and that of its own child processes (the start-up
    analyses). The Findings and What-if rows' note says how long after the server
    started their cold visit began (their start-up analyses run from then). ``db`` None:
    a bare Streamlit page drawing one small table (:data:`BARE_APP`), served with the
    same options (Streamlit's own floor).
    ``results``: the server's ``$CLIFFWATCH_RESULT_CACHE`` (the Findings and What-if results
    kept between processes); None: off, every analysis computed.

    Raises:
        RuntimeError: the server exited or was not healthy within START_TIMEOUT_S.
    """
    from playwright.sync_api import sync_playwright

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp / "dashboard.log"
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "CLIFFWATCH_RESULT_CACHE": str(results) if results else "off"}
    if db is None:
        app = tmp / "bare_app.py"
        app.write_text(BARE_APP)
        from cliffwatch.cli.serve import STREAMLIT_OFFLINE_FLAGS

        command = [sys.executable, "-m", "streamlit", "run", str(app), *STREAMLIT_OFFLINE_FLAGS,
                   "--server.port", str(port)]
        run_id = "none"
    else:
        command = [*_cliffwatch(), "dashboard", "--db", str(db), "--port", str(port)]
        run_id = _newest_run_id(db)
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dashboard did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.2)
        started = time.monotonic()
        rows: list[Row] = []
        peak = background = 0.0
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(ensure_chromium()),
                                         args=["--no-sandbox", "--disable-gpu"])
            try:
                for path in pages:
                    began = time.monotonic() - started
                    row = _visit_thrice(browser, url, path.format(run_id=run_id),
                                        DONE if db is None else None)  # bare: no charts
                    if path in KEPT_PAGES:
                        row = (*row[:-1], f"{row[-1]} (visited {began:.0f} s after the start)")
                    rows.append(row)
                    server, further = _rss_mb(proc.pid)
                    peak, background = max(peak, server), max(background, further)
            finally:
                browser.close()
        return rows, peak, background
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


BARE_APP = """import streamlit as st
st.title("bare")
st.table({"a": [1, 2], "b": [3, 4]})
"""
"""The floor: Streamlit and the browser alone, one title and one small table."""


def current_schema_copy(db: Path) -> Path:
    """A copy of the cached store ``db`` opened once read-write, so it has this version's
    schema (its migrations ran: the roll-ups, for one); built once beside it, named by the
    schema version. The cached store itself is never written."""
    from bench.bigstore import ensure_rollups
    from cliffwatch.telemetry.schema import SCHEMA_VERSION
    from cliffwatch.telemetry.store import open_store

    path = db.with_name(f"{db.stem}-schema{SCHEMA_VERSION}.duckdb")
    if not path.exists():
        building = path.with_suffix(".building")
        shutil.copyfile(db, building)
        with open_store(building, read_only=False, timeout_s=60) as con:
            con.execute("CHECKPOINT")
        building.rename(path)
    ensure_rollups(path)  # (copies made before the cached store had them)
    return path


KEPT_PAGES = ("findings", "whatif?max_workers=8")
"""Measured again after a server restart: the pages whose whole-window analysis the first
server computed (their cold rows above) and kept on disk, so the new server reads it."""


def target_s(page: str) -> float:
    """The first-paint target of a :func:`page_name`, in seconds (issue 11)."""
    return OVERVIEW_TARGET_S if page == "overview" else PAGE_TARGET_S


def _result_rows(label: str, rows: list[Row], floor: Row) -> Result:
    result: Result = []
    for page, cold, cold_done, warm, warm_done, back, note in rows:
        target = target_s(page)
        verdict = "met" if max(cold, warm) < target else "NOT met"
        result.append((f"{label}: {page} cold / warm / return",
                       f"{cold:.2f} / {warm:.2f} / {back:.2f} s{note} (target < {target:g} s "
                       f"cold and warm: {verdict}; run ended {cold_done:.2f} / "
                       f"{warm_done:.2f} s; {warm / floor[3]:.1f}x / {back / floor[5]:.1f}x "
                       "the bare page warm / return)"))
    return result


def bench_dashboard_paint(tmp: Path, quick: bool, runs: int | None = None,
                          pages: tuple[str, ...] | None = None) -> Result:
    """First paint per page on the 500-run demo and on the store of ``runs`` runs (None:
    the scale benchmarks' default, 1M, 100k with ``quick``; each store a copy at this
    schema version), beside a bare Streamlit page (the floor). ``pages``: only those
    :data:`PAGES` entries (None: all; ``quick``: the Overview)."""
    size = runs if runs is not None else QUICK_RUNS if quick else DEFAULT_RUNS
    stores = [("demo 500 runs", current_schema_copy(_demo_store())),
              (f"{size:,} runs", current_schema_copy(big_store(size)[0]))]
    pages = pages if pages is not None else PAGES[:1] if quick else PAGES
    kept_pages = tuple(p for p in KEPT_PAGES if p in pages)
    load = "/".join(f"{x:.2f}" for x in os.getloadavg())
    bare, bare_rss, _ = paint_times(None, tmp, ("",))
    floor = bare[0]
    result: Result = [("bare Streamlit page (floor) cold / warm / return",
                       f"{floor[1]:.2f} / {floor[3]:.2f} / {floor[5]:.2f} s; "
                       f"RSS {bare_rss:,.0f} MB")]
    for n, (label, db) in enumerate(stores):
        results = tmp / f"results-{n}"  # empty: the first server computes every analysis
        rows, rss, background = paint_times(db, tmp, pages, results)
        result += _result_rows(label, rows, floor)
        if kept_pages:
            kept, kept_rss, kept_background = paint_times(db, tmp, kept_pages, results)
            result += _result_rows(f"{label}, after a restart (result kept)", kept, floor)
            rss, background = max(rss, kept_rss), max(background, kept_background)
        result.append((f"{label}: server peak RSS (after a page)",
                       f"{rss:,.0f} MB (target < 1,024 MB); its start-up analyses' "
                       f"processes {background:,.0f} MB"))
    result.append(("load before, after", f"{load}, "
                   f"{'/'.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs"))
    return result
