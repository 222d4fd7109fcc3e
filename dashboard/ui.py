"""Small display helpers the pages share: money formatting, column types, run links."""

from __future__ import annotations

from typing import NoReturn

import streamlit as st

RUN_PAGE = "views/run.py"
"""The run page's source, relative to app.py (what ``st.switch_page`` takes)."""

RUN_URL_PATH = "run"
"""The run page's URL path under ``st.navigation`` (its file name without ``.py``)."""

RUN_LINK_PREFIX = f"{RUN_URL_PATH}?run_id="
"""A run's deep link, relative to the app's pages, is this followed by its run id."""

CLIFF_RATIO_ALERT = 10.0
"""P99 / P50 above which a class is flagged: the handbook's Cost Cliff is P99 ~ 10x P50
in a pipeline without caps (DESIGN.md, "the problem it solves")."""

USD_FORMAT = "$%.4f"
"""Costs per run are cents to dollars: four decimals show a tenth of a cent."""


def usd(value: float | None) -> str:
    """``$0.0123`` (four decimals below $1, cents from $1 up); ``-`` for None."""
    if value is None:
        return "-"
    return f"${value:,.4f}" if abs(value) < 1 else f"${value:,.2f}"


def usd_column(label: str, help: str | None = None) -> object:
    """A number column shown as dollars with :data:`USD_FORMAT`."""
    return st.column_config.NumberColumn(label, format=USD_FORMAT, help=help)


def run_link(run_id: str) -> str:
    """The deep link of a run, relative to the app's pages (``run?run_id=...``)."""
    return RUN_LINK_PREFIX + run_id


def open_run(run_id: str) -> NoReturn:
    """Switch to the run page showing ``run_id`` (its URL becomes the deep link)."""
    st.switch_page(RUN_PAGE, query_params={"run_id": run_id})
