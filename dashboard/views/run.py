"""Run: one run's header facts (class, status, breach, cost, workers proposed vs dispatched
vs cap, ceiling) and its spans as a waterfall (plan, workers, synthesis).

Deep link: ``/run?run_id=<trace id or a unique prefix of 6+ characters>``. Without one,
a link to the Runs page, where every run can be found and opened.
"""

import polars as pl
import streamlit as st

from cliffwatch.analytics import charts
from cliffwatch.dashboard import downloads, links, paint_gate, queries, tables, ui

run_id = (st.query_params.get("run_id") or "").strip()
st.title("Run")

if not run_id:
    queries.stop_if_no_runs()
    st.info("No run chosen: pick one on the Runs page (every run, sortable and "
            "filterable), or open one from the overview's chart or an incident.")
    st.page_link(links.RUNS_PAGE, label="Pick a run", icon=":material/list:")
    ui.stop()

run, spans = queries.fetch(queries.load_run, run_id)

st.subheader(f"{ui.md_text(run['task_class'])} · {ui.md_text(run['run_id'])}")
with st.container(horizontal=True):
    st.page_link(links.REPLAY_PAGE, label="Replay this run under other limits",
                 icon=":material/replay:", query_params={"run_id": run["run_id"]})
    st.page_link(links.RUNS_PAGE, label="All runs", icon=":material/list:")
badges = st.container(horizontal=True)
with badges:
    st.badge(ui.md_text(run["status"]), color=ui.STATUS_COLOURS.get(run["status"], "gray"))
    if run["breach"]:
        st.badge(f"{ui.md_text(run['breach'])} breach", icon=":material/error:", color="red")
    if run["replay_of"]:
        st.badge(f"replay of {ui.md_text(run['replay_of'][:12])}", color="violet")
    if run["unpriced_calls"]:
        st.badge(f"{run['unpriced_calls']} unpriced calls", color="orange")

cap = "no cap" if run["max_workers"] is None else f"cap {run['max_workers']}"
facts = st.columns(6)
facts[0].metric("Cost", ui.usd(run["cost_usd"]))
workers = [run["workers_proposed"], run["workers_dispatched"]]
facts[1].metric("Proposed → dispatched", " → ".join("-" if n is None else str(n) for n in workers))
facts[2].metric("Max workers", cap)
facts[3].metric(
    "Ceiling", "none" if run["ceiling_usd"] is None else ui.usd(run["ceiling_usd"])
)
facts[4].metric("Estimate at dispatch", ui.usd(run["estimate_usd"]))
facts[5].metric("Duration", f"{run['duration_ms'] / 1000:,.1f} s")
st.caption(
    f"Started {run['started_at']:%Y-%m-%d %H:%M:%S} UTC · policy {ui.md_text(run['policy'])} · "
    f"planner {ui.md_text(run['planner_model'])} · "
    f"synthesis {ui.md_text(run['synthesis_model'])} · "
    f"{run['llm_calls']} LLM calls ({run['failed_calls']} failed) · "
    f"{run['input_tokens']:,} tokens in, {run['output_tokens']:,} out · "
    f"link: {ui.md_text(ui.run_link(run['run_id']))}"
)

st.subheader("Spans")
waterfall = ui.chart_slot()  # drawn after the table (see ui.chart_slot)
# OTel's "unset" status (no status recorded) is a blank cell, not a word.
tables.show(
    spans.with_columns(pl.col("status_code").replace("unset", None)),
    column_order=["name", "role", "model", "input_tokens", "output_tokens", "cost_usd",
                  "cost_source", "status_code", "offset_ms", "duration_ms"],
    column_config={"name": st.column_config.TextColumn("Span")},
    money_format="$%,.6f",
)
drawn = paint_gate.painted("run", paint_gate.DATAFRAME_SELECTOR)
paint_gate.chart(waterfall, charts.run_waterfall(spans), drawn, key="waterfall")
if drawn:  # the download button too in the run after the table was drawn
    downloads.csv_button(spans, "run_spans")
