"""Deep links to the Replay, What-if and Runs pages (relative to the app's pages)."""

from __future__ import annotations

from urllib.parse import urlencode

import polars as pl
import streamlit as st

from cliffwatch.analytics.replay import LimitsOverride
from cliffwatch.dashboard.ui import RUN_LINK_PREFIX

REPLAY_PAGE = "views/replay.py"
"""The Replay page's source, relative to app.py (what ``st.page_link`` takes)."""

RUNS_PAGE = "views/runs.py"
"""The Runs page's source (every run, paged): where a run is picked."""

REPLAY_URL_PATH = "replay"
"""The Replay page's URL path under ``st.navigation``."""


def limit_params(override: LimitsOverride) -> dict[str, str]:
    """The query parameters that ask the Replay / What-if page for ``override``."""
    args = override.cli_args()
    return {flag.removeprefix("--").replace("-", "_"): value
            for flag, value in zip(args[::2], args[1::2], strict=True)}


def replay_link(run_id: str, override: LimitsOverride | None = None) -> str:
    """``replay?run_id=...`` (with the limits of ``override``, if given)."""
    params = {"run_id": run_id, **(limit_params(override) if override else {})}
    return f"{REPLAY_URL_PATH}?{urlencode(params)}"


RUN_LINK_COLUMN = st.column_config.LinkColumn("Run", display_text="open run")
"""A table column of run page links (:func:`run_link_column`), shown as "open run"."""

REPLAY_LINK_COLUMN = st.column_config.LinkColumn("Replay", display_text="replay")
"""A table column of replay links (:func:`replay_link_column`), shown as "replay"."""


def run_link_column(name: str) -> pl.Expr:
    """A column ``name`` holding each row's run page link, from its ``run_id``."""
    return (pl.lit(RUN_LINK_PREFIX) + pl.col("run_id")).alias(name)


def replay_link_column(name: str) -> pl.Expr:
    """A column ``name`` holding each row's replay link (recorded limits), from its
    ``run_id``."""
    return (pl.lit(replay_link("")) + pl.col("run_id")).alias(name)
