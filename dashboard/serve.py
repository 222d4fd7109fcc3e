"""Start the Streamlit server on ``app.py`` with the dashboard's modules already loaded.

``cliffwatch dashboard`` runs ``python -m cliffwatch.dashboard.serve APP_PY ARGS...``
(``APP_PY`` the entry point, then ``streamlit run``'s options). Streamlit imports a
page's modules in the first visitor's script run; here they are imported before the
server listens, so the first page a visitor opens does not wait for them (pandas, polars,
plotly, DuckDB and cliffwatch's own: about 1.5 s of CPU, issue 11).

Streamlit's garbage collection after every script run is turned off
(``runner.postScriptGC``: a full collection of a heap holding polars, plotly and pandas,
0.1-0.3 s of CPU after each page at 1M runs); Python still collects on its own
thresholds. The cached results' total size is bounded (:data:`CACHE_DATA_BUDGET`).

The Findings and What-if pages' first analyses (a minute each at a million runs) are
computed at start, in the background, into the result cache (:func:`precompute`), so
the first visitor of those pages reads them instead of waiting for them; they begin once
a visitor's first page is drawn (or :data:`FIRST_PAINT_WAIT_S` after the server serves).
Nothing imports this module; it is run.
"""

from __future__ import annotations

import importlib
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable

WARM_MODULES: tuple[str, ...] = (
    "streamlit.emojis",  # st.set_page_config's emoji favicon check: 0.15 s of regexes
    "streamlit.material_icon_names",
    "pandas.io.formats.style",
    "plotly.graph_objects",
    "plotly.io",
    "cliffwatch.analytics.charts",
    "cliffwatch.analytics.findings",
    "cliffwatch.analytics.replay",
    "cliffwatch.analytics.whatif",
    "cliffwatch.dashboard.queries",
    "cliffwatch.dashboard.runs_queries",
    "cliffwatch.dashboard.cost_truth_queries",
    "cliffwatch.dashboard.replay_queries",
    "cliffwatch.dashboard.alerts_queries",
    "cliffwatch.dashboard.run_measures_panel",
    "cliffwatch.dashboard.triage_panel",
    "cliffwatch.dashboard.limits_controls",
    "cliffwatch.dashboard.downloads",
    "cliffwatch.dashboard.links",
    "cliffwatch.dashboard.tables",
    "cliffwatch.dashboard.access",
)
"""What the pages import (views/*.py and what they use), loaded before the server starts."""


CACHE_LOGGER = "streamlit.runtime.caching.cache_data_api"
"""Streamlit's logger that warns "No runtime found, using MemoryCacheStorageManager" once
per ``st.cache_data`` function decorated before the server's runtime exists."""


def warm_imports(modules: tuple[str, ...] = WARM_MODULES) -> None:
    """Import ``modules``; one that fails to import is left for the page to report.

    While they import, :data:`CACHE_LOGGER` is held at ERROR: each ``st.cache_data``
    decoration checks its parameters against a stand-in cache when no runtime exists yet,
    and says so (14 warnings on the terminal at every start). The check is all it is used
    for: the functions' caches are made in the runtime's cache when first called."""
    from streamlit.logger import get_logger

    # Streamlit's own getter: a logger it makes later is given Streamlit's level, so it is
    # made (and registered) here, before ours is set.
    cache_logger = get_logger(CACHE_LOGGER)
    level = cache_logger.level
    cache_logger.setLevel(logging.ERROR)
    try:
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001, S112 - the page shows the error when it runs
                continue
    finally:
        cache_logger.setLevel(level)


def warm_store() -> None:
    """Read the store's write version once (:func:`dashboard.queries.store_version`, kept
    per store by its file signature), so the first page's script does not open the store
    for it (0.1-0.15 s at 1M runs, issue 11). A store that is missing or cannot be read is
    left for the page to report."""
    from cliffwatch.dashboard import queries

    try:
        queries.store_version(queries.store_path())
    except Exception:  # noqa: BLE001, S110 - the page shows the error when it runs
        pass


RUNTIME_WAIT_S = 120.0
"""Longest :func:`wait_for_runtime` waits for Streamlit's runtime to exist."""


def wait_for_runtime(wait_s: float = RUNTIME_WAIT_S) -> None:
    """Return once Streamlit's runtime exists (the server is starting to serve), or after
    ``wait_s``: the start-up analyses begin then, not while the server itself starts."""
    from streamlit import runtime

    deadline = time.monotonic() + wait_s
    while not runtime.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


FIRST_PAINT_WAIT_S = 15.0
"""Longest :func:`wait_for_first_paint` waits for a visitor's first page."""


def wait_for_first_paint(wait_s: float = FIRST_PAINT_WAIT_S) -> None:
    """Return once a session's first page was drawn (:data:`dashboard.paint_gate.FIRST_PAINT`),
    or after ``wait_s``: on this 2-core class of machine the start-up analyses' process
    (its imports, then DuckDB's threads) took CPU from the first visitor's browser and
    script run (issue 11); a page that needs their result meanwhile computes it itself."""
    from cliffwatch.dashboard import paint_gate

    paint_gate.FIRST_PAINT.wait(wait_s)


def start_up_wait() -> None:
    """What the start-up analyses wait for: the server serving (:func:`wait_for_runtime`),
    then a visitor's first page (:func:`wait_for_first_paint`)."""
    wait_for_runtime()
    wait_for_first_paint()


_CLI = "from cliffwatch.cli import main; main()"

PRECOMPUTE_NICE = 10
"""Niceness of the start-up computation: a page a visitor opens meanwhile goes first."""


def precompute_commands(db: str) -> list[list[str]]:
    """The ``cliffwatch`` commands that compute, and keep in the result cache, what the
    Findings and What-if pages show first (all time, every class; the What-if under
    :data:`dashboard.limits_controls.WHATIF_DEFAULT_CAP`): the CLI and the pages build the
    same keys (:func:`analytics.result_cache.analysis_key`). [] when nothing can be kept
    (``$CLIFFWATCH_RESULT_CACHE`` or ``$CLIFFWATCH_DASHBOARD_PRECOMPUTE`` off, or a
    ClickHouse store: no write version)."""
    from cliffwatch import settings
    from cliffwatch.dashboard.limits_controls import WHATIF_DEFAULT_CAP

    if (settings.result_cache_dir() is None or settings.is_engine_store(db)
            or not settings.dashboard_precompute()):
        return []
    cli = [sys.executable, "-c", _CLI]
    return [[*cli, "findings", "--db", db, "--format", "json"],
            [*cli, "whatif", "--max-workers", str(WHATIF_DEFAULT_CAP), "--db", db,
             "--format", "csv"]]


def _idle_class(pid: int) -> None:
    """Put process ``pid`` in Linux's ``SCHED_IDLE`` class where the platform has it: its
    threads (those it starts later inherit the class) run only on a CPU nothing else wants.
    Nice 10 alone still gave the analyses about a tenth of a busy CPU's time, and at 1M
    runs the Overview's second visit painted ~0.6 s later while they ran (issue 11)."""
    if hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))
        except OSError:  # the child already gone, or a sandbox refusing it: nice 10 stays
            pass


def precompute(commands: list[list[str]],
               first: Callable[[], None] | None = None) -> Callable[[], None]:
    """Call ``first`` (if given), then run ``commands`` one after the other, in a
    background thread; each command is a child process at :data:`PRECOMPUTE_NICE`, in
    the ``SCHED_IDLE`` class on Linux (the analyses of a million runs take a minute and a
    GB each: outside the server, one at a time). A page that asks for the same result
    meanwhile waits for it and reads it (:func:`analytics.result_cache.computing`); one
    that finds it kept reads it at once. The result is keyed by the store's write version
    read in the child's own connection, so it is never shown for a store that changed
    since.

    Returns:
        A function that stops the child running now and the ones not started (called
        when the server stops)."""
    stopped = threading.Event()
    guard = threading.Lock()
    running: list[subprocess.Popen[bytes]] = []

    def work() -> None:
        if first is not None:
            first()
        for command in commands:
            with guard:  # never started after stop()
                if stopped.is_set():
                    return
                try:
                    child = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                             stderr=subprocess.PIPE, process_group=0)
                    os.setpriority(os.PRIO_PROCESS, child.pid, PRECOMPUTE_NICE)
                    _idle_class(child.pid)
                except OSError as exc:
                    print(f"cliffwatch: start-up computation not started: {exc}",
                          file=sys.stderr)
                    return
                running.append(child)
            _, err = child.communicate()
            if child.returncode != 0 and not stopped.is_set():  # the page computes it
                last = (err.decode(errors="replace").strip().splitlines() or ["no message"])
                print(f"cliffwatch: start-up computation {command[3]} failed "
                      f"({child.returncode}): {last[-1]}", file=sys.stderr)

    def stop() -> None:
        with guard:
            stopped.set()
        for child in running:
            if child.poll() is None:
                child.terminate()
                child.wait()

    threading.Thread(target=work, name="cliffwatch-precompute", daemon=True).start()
    return stop


CACHE_DATA_BUDGET = "256mb"
"""Most serialized bytes every ``st.cache_data`` entry of the server may hold together:
past it Streamlit evicts the least recently used (results are keyed by window, filters
and store version, so a session that walks many windows at a million runs would
otherwise keep them all until their TTL). Large shared results (the What-if's, a row per
run) are cached as resources with their own entry bound instead."""

STREAMLIT_FLAGS: tuple[str, ...] = ("--runner.postScriptGC", "false",
                                    "--server.maxCacheDataSize", CACHE_DATA_BUDGET)
"""Streamlit options added to those given (see the module docstring)."""


def main(argv: list[str]) -> int:
    """``streamlit run ARGV[0] ARGV[1:]...`` in this process, after :func:`warm_imports`
    and :func:`warm_store`."""
    warm_imports()
    warm_store()
    from cliffwatch.dashboard.queries import store_path

    stop = precompute(precompute_commands(str(store_path())), first=start_up_wait)
    from streamlit import delta_generator
    from streamlit.web import cli

    # Streamlit's first element checks, once, whether it runs in a REPL, through
    # inspect.stack(), which reads the source of every frame (0.1-0.4 s on the first
    # page). It runs under `streamlit run` here: mark that check as done.
    if hasattr(delta_generator, "_use_warning_has_been_displayed"):
        delta_generator._use_warning_has_been_displayed = True

    sys.argv = ["streamlit", "run", argv[0], *STREAMLIT_FLAGS, *argv[1:]]
    try:
        cli.main()
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else 0
    finally:
        stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
