"""Overview: headline figures, P50/P95/P99 per task class with the Cost Cliff flagged, the
cost distribution of every class and the daily percentile trend with the cap's first day.

Deep link: ``/?since=7d&task_class=research`` (see :mod:`dashboard.filters`).
"""

import polars as pl
import streamlit as st

from cliffwatch.analytics import charts
from cliffwatch.dashboard import (
    downloads,
    filters,
    paint_gate,
    queries,
    run_measures_panel,
    ui,
)

selected = filters.current()
st.title("Cost per task")
st.caption(f"{ui.md_text(selected.describe())} · store {ui.md_text(queries.store_label())}")

data = queries.fetch(queries.load_overview, selected)
if data.percentiles.is_empty():
    queries.stop_if_no_runs()
    st.info("No runs match these filters: widen the time window or clear the class filter.")
    ui.stop()

table = data.percentiles
overall = data.overall.row(0, named=True)
kpis = st.columns(6)
kpis[0].metric("Runs", f"{overall['runs']:,}")
kpis[1].metric("Spend", ui.usd(overall["total_usd"]))
for column, label in zip(kpis[2:5], ("P50", "P95", "P99"), strict=True):
    column.metric(f"{label} per run", ui.usd(overall[f"{label.lower()}_usd"]))
kpis[5].metric("Open incidents", data.open_incidents)
if data.upper_bound:
    st.warning(f"Spend and P50/P95/P99 are an {ui.md_text(data.upper_bound)} (see Cost truth).")

st.subheader("Percentiles per task class")
cliff_ratio = queries.cliff_ratio()
st.table(ui.percentile_table(table, cliff_ratio), hide_index=True)
downloads.csv_button(table, "percentiles")
st.caption(
    f"Cost per run. P99 / P50 above {cliff_ratio:g}x is flagged: the handbook's Cost "
    "Cliff. Breaches: runs over the cap or the ceiling. Unpriced calls add no cost (never a "
    "silent $0) and are counted."
)

# What comes below (a wide table and the plotly charts) is sent once the browser has drawn
# the table above (dashboard/paint_gate.py): the first paint waits for no more JavaScript.
if not paint_gate.painted("overview"):
    ui.stop()

run_measures_panel.render(selected)

charts_data = queries.fetch(queries.load_overview_charts, selected)
st.subheader("Cost distribution")
if charts_data.runs_truncated:
    st.caption(f"Points: the newest {queries.RUN_POINTS_LIMIT:,} runs; the marks use all runs.")
else:
    st.caption("Each point is a run; click one to open it.")
picked = st.plotly_chart(
    charts.cost_distribution(charts_data.runs, table),
    key="cost_distribution",
    on_select="rerun",
    selection_mode="points",
)
for point in picked["selection"]["points"]:
    if point.get("customdata"):
        ui.open_run(point["customdata"][0])

st.subheader("Daily P50 / P95 / P99")
trend_classes = sorted(charts_data.cap_dates)
trend_class = trend_classes[0]
if len(trend_classes) > 1:
    trend_class = st.segmented_control(
        "Task class", trend_classes, default=trend_class, required=True, key="trend_class",
        label_visibility="collapsed", format_func=ui.md_text,
    )
cap_date = charts_data.cap_dates[trend_class]
st.plotly_chart(
    charts.daily_trend(charts_data.daily.filter(pl.col("task_class") == trend_class), cap_date),
    key="daily_trend",
)
if cap_date is not None:
    st.caption(f"The max-workers cap came in on {cap_date.isoformat()} (dashed line).")
else:
    st.caption(f"No {ui.md_text(trend_class)} run in the store has had a max-workers cap.")
