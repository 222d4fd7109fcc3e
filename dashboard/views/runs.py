"""Runs: every run of the sidebar's window and classes, filtered by status, breach and
cost, sorted, one page at a time (paged in SQL, so a store of a million runs is never
loaded whole); each row links to its run page and its replay.

Deep link: ``/runs?status=ok&breach=any+breach&min_cost_usd=0.5&sort=cost&order=ascending&page=2``
plus the sidebar's ``since``, ``until`` and ``task_class`` (:mod:`dashboard.filters`).
``breach`` is ``any breach``, ``no breach``, ``cap breach`` or ``ceiling breach``; ``sort``
one of :data:`SORT_LABELS`; ``status`` may repeat; ``per_page`` 25, 50, 100 or 200.
"""

from typing import Any

import polars as pl
import streamlit as st

from cliffwatch.analytics.run_table import BREACH_FILTERS, SORT_COLUMNS, RunQuery
from cliffwatch.dashboard import cells, downloads, filters, links, paint_gate, queries, tables, ui
from cliffwatch.dashboard.runs_queries import load_runs_page, load_statuses

# Bound select boxes write the option *shown* into the URL, so the options are the words
# a user reads (``?sort=cost&order=ascending&breach=any+breach``), mapped to the query here.
SORT_LABELS = {
    "start time": "started_at", "cost": "cost_usd", "duration": "duration_ms",
    "LLM calls": "llm_calls", "task class": "task_class", "status": "status",
}
BREACH_LABELS = {
    "any breach": "any", "no breach": "none", "cap breach": "cap", "ceiling breach": "ceiling",
}
ORDERS = ("descending", "ascending")
assert set(SORT_LABELS.values()) == set(SORT_COLUMNS)
assert set(BREACH_LABELS.values()) == set(BREACH_FILTERS)
PAGE_SIZES = (25, 50, 100, 200)

# The page's own widgets' keys (each its query parameter), what they read before anyone
# set them (in that order) and the height their two rows take (1440 px wide).
CONTROL_KEYS = ("status", "breach", "min_cost_usd", "max_cost_usd", "sort", "order",
                "per_page", "page")
DEFAULTS = ((), None, None, None, next(iter(SORT_LABELS)), ORDERS[0], PAGE_SIZES[1], 1)
CONTROLS_HEIGHT_PX = 152


def _controls() -> tuple[Any, ...]:
    top = st.columns(4)
    statuses = top[0].multiselect(
        "Status", queries.fetch(load_statuses), key="status", bind="query-params",
        placeholder="All statuses",
    )
    breach = top[1].selectbox(
        "Breach", tuple(BREACH_LABELS), index=None, placeholder="All runs", key="breach",
        bind="query-params",
    )
    min_cost = top[2].number_input(
        "Cost from (USD)", min_value=0.0, value=None, step=0.01, format="%.4f",
        placeholder="no minimum", key="min_cost_usd", bind="query-params",
    )
    max_cost = top[3].number_input(
        "Cost up to (USD)", min_value=0.0, value=None, step=0.01, format="%.4f",
        placeholder="no maximum", key="max_cost_usd", bind="query-params",
    )
    order_row = st.columns(4)
    sort_by = order_row[0].selectbox("Sort by", tuple(SORT_LABELS), key="sort",
                                     bind="query-params")
    order = order_row[1].selectbox("Order", ORDERS, key="order", bind="query-params",
                                   help="Descending: newest, costliest, longest first.")
    page_size = order_row[2].selectbox("Runs per page", PAGE_SIZES, index=1, key="per_page",
                                       bind="query-params")
    page_asked = order_row[3].number_input("Page", min_value=1, value=1, step=1, key="page",
                                           bind="query-params")
    return statuses, breach, min_cost, max_cost, sort_by, order, page_size, page_asked


selected = filters.current()
st.title("Runs")
st.caption(ui.md_text(selected.describe()))

# Before the page's first paint in a session, with none of them set by the link: the table
# with their defaults first, the widgets in their place in the next run (paint_gate.py).
statuses, breach, min_cost, max_cost, sort_by, order, page_size, page_asked = (
    paint_gate.widgets("runs", CONTROL_KEYS, CONTROLS_HEIGHT_PX, _controls, DEFAULTS))

spec = RunQuery(
    statuses=tuple(sorted(statuses)), breach=BREACH_LABELS.get(breach or ""),
    min_cost_usd=min_cost, max_cost_usd=max_cost,
    sort_by=SORT_LABELS.get(sort_by or "", "started_at"), descending=order != "ascending",
)
shown = queries.fetch(load_runs_page, selected, spec, int(page_asked), int(page_size or 50))
if shown.total == 0:
    queries.stop_if_no_runs()
    st.info("No runs match these filters: widen the time window or clear a filter.")
    ui.stop()

first = (shown.page - 1) * int(page_size or 50) + 1
note = " (the last page)" if shown.page < int(page_asked) else ""
st.caption(
    f"Runs {first:,} to {first + shown.rows.height - 1:,} of {shown.total:,} · page "
    f"{shown.page:,} of {shown.pages:,}{note} · sorted by "
    f"{ui.md_text(sort_by or 'start time')}, {ui.md_text(order or 'descending')}, over every "
    "matching run; "
    "select a row to open it"
)

runs = shown.rows
table = cells.text_columns(runs, "task_class", "status", "breach", "run_id").with_columns(
    pl.col("started_at").dt.strftime("%Y-%m-%d %H:%M:%S").alias("started"),
    pl.col("cost_usd").map_elements(ui.usd, return_dtype=pl.String).alias("cost"),
    pl.col("duration_ms").map_elements(cells.duration, return_dtype=pl.String).alias("duration"),
    pl.col("llm_calls").map_elements(cells.count, return_dtype=pl.String).alias("calls"),
    (pl.col("input_tokens") + pl.col("output_tokens"))
    .map_elements(cells.count, return_dtype=pl.String).alias("tokens"),
    pl.struct("workers_proposed", "workers_dispatched").map_elements(
        lambda w: f"{cells.count(w['workers_proposed'])} → {cells.count(w['workers_dispatched'])}",
        return_dtype=pl.String,
    ).alias("workers"),
    pl.col("max_workers").map_elements(cells.count, return_dtype=pl.String, skip_nulls=False)
    .alias("cap"),
    links.run_link_column("run_link"),
    links.replay_link_column("replay_link"),
)
picked = tables.show(
    table,
    key="runs",
    on_select="rerun",
    selection_mode="single-row",
    column_order=["started", "run_link", "replay_link", "task_class", "status", "breach",
                  "cost", "duration", "calls", "tokens", "workers", "cap", "run_id"],
    column_config={
        "started": st.column_config.TextColumn("Started (UTC)"),
        "calls": st.column_config.TextColumn("LLM calls"),
        "workers": st.column_config.TextColumn("Workers proposed → dispatched"),
        "cap": st.column_config.TextColumn("Max workers"),
        "run_id": st.column_config.TextColumn("Run id"),
        "run_link": links.RUN_LINK_COLUMN,
        "replay_link": links.REPLAY_LINK_COLUMN,
    },
)
if picked.selection.rows:
    ui.open_run(runs["run_id"][picked.selection.rows[0]])
# The download button (and, in a session's first run, the sidebar's widgets: app.py) come
# once the browser has drawn the table (dashboard/paint_gate.py).
if paint_gate.painted("runs", paint_gate.DATAFRAME_SELECTOR):
    downloads.csv_button(runs, "runs_page", label="Download this page as CSV")
