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
Nothing imports this module; it is run.
"""

from __future__ import annotations

import importlib
import sys

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


def warm_imports(modules: tuple[str, ...] = WARM_MODULES) -> None:
    """Import ``modules``; one that fails to import is left for the page to report."""
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001, S112 - the page shows the error when it runs
            continue


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
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
