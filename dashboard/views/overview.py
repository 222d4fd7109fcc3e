"""Overview: headline figures, P50/P95/P99 per task class with the Cost Cliff flagged, the
cost distribution of every class and the daily percentile trend with the cap's first day.

Deep link: ``/?since=7d&task_class=research`` (see :mod:`dashboard.filters`).
"""

import polars as pl
import streamlit as st

from analytics import charts
from dashboard import filters, queries, ui

selected = filters.current()
st.title("Cost per task")
st.caption(f"{selected.describe()} · store `{queries.store_path()}`")

data = queries.fetch(queries.load_overview, selected)
if data.percentiles.is_empty():
    queries.stop_if_no_runs()
    st.info("No runs match these filters: widen the time window or clear the class filter.")
    st.stop()

table = data.percentiles
kpis = st.columns(6)
kpis[0].metric("Runs", f"{table['runs'].sum():,}")
kpis[1].metric("Spend", ui.usd(table["total_usd"].sum()))
headline = data.headline_usd or (None, None, None)
for column, label, value in zip(kpis[2:5], ("P50", "P95", "P99"), headline, strict=True):
    column.metric(f"{label} per run", ui.usd(value))
kpis[5].metric("Open incidents", data.open_incidents)

st.subheader("Percentiles per task class")
flagged = table.with_columns(
    pl.when(pl.col("cliff_ratio") > ui.CLIFF_RATIO_ALERT)
    .then(pl.lit("🔴 Cost Cliff"))
    .otherwise(pl.lit(""))
    .alias("cliff")
)


def _alert(ratio: float | None) -> str:
    over = ratio is not None and ratio > ui.CLIFF_RATIO_ALERT
    return "background-color: #fde0e0; color: #b00020; font-weight: 700" if over else ""


st.dataframe(
    flagged.to_pandas().style.map(_alert, subset=["cliff_ratio"]),
    hide_index=True,
    column_order=["task_class", "runs", "total_usd", "mean_usd", "p50_usd", "p95_usd",
                  "p99_usd", "max_usd", "cliff_ratio", "cliff", "breaches", "unpriced_calls"],
    column_config={
        "task_class": st.column_config.TextColumn("Task class"),
        "runs": st.column_config.NumberColumn("Runs"),
        "total_usd": ui.usd_column("Spend"),
        "mean_usd": ui.usd_column("Mean"),
        "p50_usd": ui.usd_column("P50"),
        "p95_usd": ui.usd_column("P95"),
        "p99_usd": ui.usd_column("P99"),
        "max_usd": ui.usd_column("Max"),
        "cliff_ratio": st.column_config.NumberColumn(
            "P99 / P50", format="%.1f×",
            help=f"Flagged above {ui.CLIFF_RATIO_ALERT:g}x: the handbook's Cost Cliff.",
        ),
        "cliff": st.column_config.TextColumn(""),
        "breaches": st.column_config.NumberColumn("Breaches", help="Cap or ceiling breaches"),
        "unpriced_calls": st.column_config.NumberColumn(
            "Unpriced calls", help="LLM calls with no known price: counted, never $0."
        ),
    },
)

st.subheader("Cost distribution")
if data.runs_truncated:
    st.caption(f"Points: the newest {queries.RUN_POINTS_LIMIT:,} runs; the marks use all runs.")
else:
    st.caption("Each point is a run; click one to open it.")
picked = st.plotly_chart(
    charts.cost_distribution(data.runs, table),
    key="cost_distribution",
    on_select="rerun",
    selection_mode="points",
)
for point in picked.selection.points:
    if point.get("customdata"):
        ui.open_run(point["customdata"][0])

st.subheader("Daily P50 / P95 / P99")
st.plotly_chart(charts.daily_trend(data.daily, data.cap_date), key="daily_trend")
if data.cap_date is not None:
    st.caption(f"The max-workers cap came in on {data.cap_date.isoformat()} (dashed line).")
