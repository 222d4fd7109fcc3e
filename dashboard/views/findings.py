"""Findings: the handbook's anti-patterns in the selected runs, largest projected saving
first, each with its evidence, its fix and the runs behind it.

Deep link: ``/findings?kind=implicit_max_workers`` (plus the sidebar's parameters).
"""

from __future__ import annotations

import dataclasses
import json
from urllib.parse import quote

import polars as pl
import streamlit as st

from cliffwatch.analytics import result_cache
from cliffwatch.analytics.findings import Thresholds, find_findings
from cliffwatch.analytics.store_access import read_store
from cliffwatch.dashboard import downloads, filters, queries, tables, ui
from cliffwatch.dashboard.filters import Filters

# What each finding kind is called on the page (a comment, not a docstring: Streamlit's
# "magic" would print a bare string of a page script).
KIND_LABELS = {
    "implicit_max_workers": "Implicit max-workers",
    "cap_above_safe_maximum": "Cap above 8",
    "no_cost_ceiling": "No per-task cost ceiling",
    "cost_cliff": "Cost Cliff (P99/P50)",
    "synthesis_on_planner_model": "Synthesis on the planner's model",
    "orchestrating_small_tasks": "Orchestrating small tasks",
}


@st.cache_data(ttl=queries.CACHE_TTL_S, show_spinner=False)
def load_findings(db: str, version: tuple[int, ...], selected: Filters) -> pl.DataFrame:
    """:func:`analytics.findings.find_findings` for the filters (one read-only open), read
    from the result cache when any process computed it for this store version
    (:func:`dashboard.queries.persisted_key`), and kept there after computing.

    Raises:
        StoreError, AnalyticsError: as :func:`dashboard.queries.load_overview`.
        SettingError: a malformed findings threshold.
    """
    thresholds = Thresholds.from_settings()
    key = queries.persisted_key("findings", db, version, selected,
                                thresholds=dataclasses.asdict(thresholds))

    def compute() -> pl.DataFrame:
        with read_store(db) as con:
            return find_findings(con, selected.window(), task_class=selected.only_class(),
                                 thresholds=thresholds)

    found = result_cache.findings_through(key, compute)
    if len(selected.task_classes) > 1:
        found = found.filter(pl.col("task_class").is_in(list(selected.task_classes)))
    return found


selected = filters.current()
st.title("Findings")
st.caption(f"{ui.md_text(selected.describe())} · the handbook's orchestrator-worker anti-patterns, "
           "measured in these runs")

with st.spinner("Looking for the anti-patterns in these runs (once per window and store "
                "version: kept after, for every viewer and restart)...", show_time=True):
    found = queries.fetch(load_findings, selected)
if found.is_empty():
    queries.stop_if_no_runs()
    st.success("No findings: none of the handbook's anti-patterns in these runs.")
    ui.stop()

# The options are the kinds themselves (as the CLI names them): a bound widget matches a
# URL's ?kind= against the options as shown, so a label would break deep links.
kind = st.selectbox(
    "Kind", [k for k in KIND_LABELS if k in set(found["kind"].to_list())], index=None,
    placeholder="All kinds", key="kind", bind="query-params",
)
shown = found.filter(pl.col("kind") == kind) if kind else found

present = shown.filter(pl.col("still_present"))
kpis = st.columns(3)
kpis[0].metric("Findings", shown.height)
kpis[1].metric("Still present", present.height,
               help="The class's newest runs still show the anti-pattern.")
yearly = float(present["yearly_saving_usd"].drop_nulls().sum())
kpis[2].metric("Projected yearly saving (still present)", ui.usd(yearly),
               help="Each finding's saving over the window, scaled to a year by the "
                    "window's length (see each finding's basis).")

tables.show(
    shown.with_columns(pl.col("kind").replace_strict(KIND_LABELS).alias("what")),
    column_order=["task_class", "what", "runs", "yearly_saving_usd", "still_present", "title"],
    column_config={
        "what": st.column_config.TextColumn("Finding"),
        "yearly_saving_usd": st.column_config.NumberColumn(
            "Yearly saving", format="$%,.2f",
            help="Projected over a year from this window's what-if; blank without a basis."),
        "title": st.column_config.TextColumn("Evidence", width="large"),
    },
)
downloads.csv_button(shown, "findings")

for row in shown.iter_rows(named=True):
    saving = row["yearly_saving_usd"]
    label = (f"{KIND_LABELS[row['kind']]} · {ui.md_text(row['task_class'])}"
             + (f" · {ui.usd(saving)} a year" if saving is not None else ""))
    with st.expander(label):
        st.markdown(f"**Fix.** {ui.md_text(row['fix'])}")
        st.text(row["title"])
        st.caption(f"Saving: {ui.md_text(row['basis'])}. "
                   f"Runs from {row['first_seen']:%Y-%m-%d %H:%M} to "
                   f"{row['last_seen']:%Y-%m-%d %H:%M} UTC.")
        evidence = json.loads(row["evidence"])
        run_ids = evidence.pop("run_ids", [])
        if run_ids:
            st.markdown("Costliest runs: " + ", ".join(
                f"[{ui.md_text(run_id[:12])}](<{ui.run_link(quote(run_id))}>)"
                for run_id in run_ids))
        st.json(evidence, expanded=False)
