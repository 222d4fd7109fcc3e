"""Incidents: cap breaches, cost-ceiling breaches and runaway runs, filterable by kind,
status and (sidebar) task class; selecting a row opens its run.

Deep link: ``/incidents?kind=cap_breach&status=open`` (plus the sidebar's parameters).
"""

import polars as pl
import streamlit as st

from cliffwatch.dashboard import downloads, filters, links, queries, tables, triage_panel, ui

selected = filters.current()
st.title("Incidents")
st.caption(ui.md_text(selected.describe()))

found = queries.fetch(queries.load_incidents, selected)
if found.is_empty():
    queries.stop_if_no_runs()
    st.info("No incidents in this window: no cap or ceiling breach and no runaway run.")
    ui.stop()

left, right = st.columns(2)
# Options are the kinds and statuses present in the window, so no vocabulary is
# repeated here; a linked value that is not present is dropped by the bound widget.
kind = left.selectbox(
    "Kind", sorted(found["kind"].unique().to_list()), index=None,
    placeholder="All kinds", key="kind", bind="query-params",
)
status = right.selectbox(
    "Status", sorted(found["status"].unique().to_list()), index=None,
    placeholder="All statuses", key="status", bind="query-params",
)
shown = found
if kind:
    shown = shown.filter(pl.col("kind") == kind)
if status:
    shown = shown.filter(pl.col("status") == status)

newest = shown.head(tables.MAX_SHOWN_ROWS)  # list_incidents gives them newest first
st.caption(
    f"{shown.height:,} of {found.height:,} incidents · select a row to open its run"
    + (f" · the newest {newest.height:,} listed (the CSV has all {shown.height:,})"
       if newest.height < shown.height else "")
)
table = newest.with_columns(
    links.run_link_column("link"),
    links.replay_link_column("replay"),
)
picked = tables.show(
    table,
    key="incidents",
    on_select="rerun",
    selection_mode="single-row",
    # The note column only once some incident has a note: it would take the room the
    # detail needs to show whole.
    column_order=["detected_at", "link", "replay", "kind", "status", "task_class", "detail"]
    + (["note"] if newest["note"].is_not_null().any() else []),
    column_config={
        "detected_at": st.column_config.DatetimeColumn("Detected (UTC)", format="YYYY-MM-DD HH:mm"),
        "detail": st.column_config.TextColumn("What happened", width=420),
        "link": links.RUN_LINK_COLUMN,
        "replay": links.REPLAY_LINK_COLUMN,
        "note": st.column_config.TextColumn("Note", width="medium"),
    },
)
if picked.selection.rows:
    ui.open_run(table["run_id"][picked.selection.rows[0]])
downloads.csv_button(shown, "incidents")
triage_panel.render_triage(newest)  # the incidents listed above, not 30,000 options
