"""What-if: every run of the sidebar's window replayed under a cap and ceiling of your
choice; per-class savings and the cost distribution before and after.

Deep link: ``/whatif?max_workers=8`` (plus ``ceiling_usd``, ``policy`` and the sidebar's
parameters); 0 switches a limit off, an empty one stays as each run recorded it.
"""

import polars as pl
import streamlit as st

from cliffwatch.analytics import replay_charts
from cliffwatch.analytics.whatif import COUNTS_NOTE
from cliffwatch.dashboard import (
    downloads,
    filters,
    links,
    paint_gate,
    queries,
    replay_queries,
    tables,
    ui,
)
from cliffwatch.dashboard.limits_controls import WHATIF_DEFAULT_CAP, limits_controls

selected = filters.current()
st.title("What-if")
st.caption(f"{ui.md_text(selected.describe())} · every run replayed through the "
           "orchestrator's dispatch layer with its recorded per-call costs; no model is called.")

override = limits_controls(default_cap=WHATIF_DEFAULT_CAP)
if override.keeps_everything:
    st.info("Set a cap, a ceiling or a policy to see what it would have done.")
    ui.stop()
with st.spinner("Replaying every run of the window under these limits (once per window, "
                "limits and store version: kept after, for every viewer and restart)...",
                show_time=True):
    what = queries.fetch(replay_queries.load_whatif, selected, override)
if what.runs.is_empty():
    queries.stop_if_no_runs()
    st.info("No runs match these filters: widen the time window or clear the class filter.")
    ui.stop()

totals = what.totals()
saving = totals["saving_usd"]
kpis = st.columns(6)
kpis[0].metric("Runs", f"{totals['runs']:,}")
kpis[1].metric("Affected", f"{totals['runs_affected']:,}")
kpis[2].metric("Tasks not completed", f"{totals['tasks_not_completed']:,}",
               help="Of the affected runs, those the limits reject or cancel (or make "
                    "fail): their task is still to do, and the spend after counts it redone "
                    "within the limits (estimated). A run rejected as recorded and not "
                    "changed is not counted.")
kpis[3].metric("Spend", "unknown" if saving is None else ui.usd(totals["spend_after_usd"]),
               delta=ui.cost_delta(saving),
               delta_color="inverse", help=f"Before: {ui.usd(totals['spend_before_usd'])}")
pct = totals["saving_pct"]
kpis[4].metric("Saving", "unknown" if saving is None else "-" if pct is None else f"{pct:.1f}%")
year = totals["annual_saving_usd"]
kpis[5].metric("Saving a year", "-" if year is None else ui.usd(year),
               help=f"At this window's rate ({what.window_days or 0:.1f} days)")
if saving is None:
    st.warning(f"{totals['tasks_redo_unknown']:,} tasks the limits leave undone have no run "
               "of their class that completed within the limits: their redo cost, and so "
               "the saving, is unknown.")
estimated = ""
if totals["estimated_usd"]:
    redone = (f", {ui.usd(totals['redo_usd'])} of it tasks left undone, redone within the "
              "limits at the mean cost of their class's runs that completed within them"
              if totals["redo_usd"] else "")
    estimated = (f"; {ui.usd(totals['estimated_usd'])} of the spend after is estimated "
                 f"(sub-tasks the record does not hold{redone})")
# All text (class names in per-class limits, dollar amounts Streamlit would read as math)
st.caption(ui.md_text(f"Limits: {what.describe()}. Replayed {totals['runs']:,} runs in "
                      f"{what.elapsed_s:.2f} s{estimated}."))

st.subheader("Per task class")
st.caption(f"{COUNTS_NOTE} (the rejected, truncated and "
           "cancelled counts are in the CSV).")
# The saving first, the run counts after, P99 before and after last; the limits (one
# long line, said in the caption above) and the finer counts are in the CSV, which keeps
# every column in analytics' order.
tables.show(
    what.by_class, key="whatif_by_class",
    column_order=["task_class", "runs", "runs_affected", "tasks_not_completed",
                  "spend_before_usd", "spend_after_usd", "saving_usd", "saving_pct",
                  "annual_saving_usd", "p99_before_usd", "p99_after_usd"],
)
downloads.csv_button(what.by_class, "whatif_by_class")
# The charts after the browser drew the table above (dashboard/paint_gate.py).
charts_now = paint_gate.painted("whatif", paint_gate.DATAFRAME_SELECTOR)
paint_gate.chart(st.empty(), replay_charts.whatif_spend(what.by_class), charts_now,
                 key="whatif_spend")

st.subheader("Cost per run before and after")
drawn = what.runs
if drawn.height > (most := queries.RUN_POINTS_LIMIT // 2):
    # two points a run (before, after): the Overview's bound on points drawn
    drawn = drawn.sample(most, seed=0).sort("started_at")
    st.caption(f"Boxes and points: a uniform sample of {drawn.height:,} of the "
               f"{what.runs.height:,} runs (the table above and the CSV use every run).")
paint_gate.chart(st.empty(), replay_charts.whatif_distribution(drawn), charts_now,
                 key="whatif_distribution")

st.subheader("Runs the limits change")
changed = what.runs.filter(pl.col("affected"))
shown = changed
if changed.height > (most := replay_queries.CHANGED_ROWS_SHOWN):
    shown = changed.sort(pl.col("cost_before_usd") - pl.col("cost_after_usd"),
                         descending=True, nulls_last=True).head(most)
shown = shown.with_columns(
    pl.col("run_id").map_elements(lambda r: links.replay_link(r, override),
                                  return_dtype=pl.String).alias("replay")
)
st.caption(f"{changed.height:,} of {what.runs.height:,} runs"
           + (f" (the {shown.height:,} with the largest saving shown; the CSV below has "
              "every run)" if shown.height < changed.height else "")
           + "; open one to replay it step by step.")
tables.show(
    shown, key="whatif_runs",
    column_order=["started_at", "replay", "task_class", "status_before", "status_after",
                  "dispatched_before", "dispatched_after", "cost_before_usd",
                  "cost_after_usd", "redo_usd", "estimated_usd"],
    column_config={
        "started_at": st.column_config.DatetimeColumn("Started (UTC)",
                                                      format="YYYY-MM-DD HH:mm"),
        "replay": links.REPLAY_LINK_COLUMN,
        "redo_usd": st.column_config.NumberColumn(
            "Task redone", format="$%,.5f",
            help="A task the limits leave undone, redone within them (estimated; part of "
                 "after; blank when nothing can estimate it)"),
    },
    money_format="$%,.5f",
)
downloads.csv_button(what.runs, "whatif_runs", label="Download every run (whatif_runs.csv)")
