"""Replay: one run step by step as recorded, beside what other limits would have done, and
a live re-run of its task under them.

Deep link: ``/replay?run_id=<id or a unique prefix>`` plus, optionally, the limits to
replay under: ``&max_workers=8&ceiling_usd=0.05&policy=truncate`` (0 switches a limit off;
absent: as the run recorded it). Reached from every incident and run.
"""

import polars as pl
import streamlit as st

from cliffwatch.analytics import charts, replay_charts
from cliffwatch.dashboard import downloads, links, paint_gate, queries, replay_queries, tables, ui
from cliffwatch.dashboard.limits_controls import limits_controls


def _limit(value: object, none: str) -> str:
    return none if value is None else str(value)


run_id = (st.query_params.get("run_id") or "").strip()
st.title("Replay")

if not run_id:
    queries.stop_if_no_runs()
    st.info("No run chosen: pick one on the Runs page (each row has a replay link), or "
            "open one from an incident or a run page.")
    st.page_link(links.RUNS_PAGE, label="Pick a run", icon=":material/list:")
    ui.stop()

st.caption("Limits to replay under (empty: as the run recorded them; 0 switches one off). "
           "No model is called: the recorded plan goes through the orchestrator's dispatch "
           "layer with the recorded per-call costs.")
override = limits_controls(page="replay")
rp = queries.fetch(replay_queries.load_replay, run_id, override)
run, cf = rp.run, rp.counterfactual

st.subheader(f"{ui.md_text(run.task_class)} · {ui.md_text(run.run_id)}")
link_row = st.container(horizontal=True)
with link_row:
    st.page_link(ui.RUN_PAGE, label="Open its run page", icon=":material/waterfall_chart:",
                 query_params={"run_id": run.run_id})
    if run.replay_of:
        st.page_link(links.REPLAY_PAGE, label=f"Replay of {ui.md_text(run.replay_of[:12])}",
                     icon=":material/history:", query_params={"run_id": run.replay_of})
st.caption(
    f"Task {ui.md_text(run.task_id)} · started {run.started_at:%Y-%m-%d %H:%M:%S} UTC · recorded "
    f"under cap {_limit(run.limits.max_workers, 'none')}, ceiling "
    f"{ui.md_text(ui.usd(run.limits.ceiling_usd)) if run.limits.ceiling_usd else 'none'}, "
    f"policy {ui.md_text(run.limits.policy.value)} · replaying under "
    f"{ui.md_text(override.describe())}"
)

# Widths shared by every table of the page (a column a table lacks is ignored); headings
# and formats are the dashboard's (dashboard.tables), money to a millionth of a dollar.
COLUMNS = {
    "detail": st.column_config.TextColumn("Detail", width="large"),
    "recorded": st.column_config.TextColumn("Recorded", width="medium"),
    "counterfactual": st.column_config.TextColumn("Counterfactual", width="large"),
}
CALL_MONEY = "$%,.6f"
# The timeline's reading order: what happened and why before the model and tokens (its
# kind and sub-task index are in the name, "worker 3"; the CSV keeps every column).
TIMELINE_ORDER = ["step", "offset_ms", "duration_ms", "name", "status", "cost_usd",
                  "detail", "model", "input_tokens", "output_tokens"]

# The plan's: what each sub-task was and what became of it, as recorded and in the
# counterfactual (tokens and attempts are on the timeline and in the CSV).
PLAN_ORDER = ["index", "title", "difficulty", "model", "outcome", "cost_usd", "duration_ms",
              "cf_outcome", "cf_cost_usd", "cf_basis"]


def _status(status: str, breach: str | None) -> None:
    with st.container(horizontal=True):
        st.badge(ui.md_text(status), color=ui.STATUS_COLOURS.get(status, "gray"))
        if breach:
            st.badge(f"{ui.md_text(breach)} breach", icon=":material/error:", color="red")


left, right = st.columns(2)
with left:
    st.markdown("**As recorded**")
    _status(run.status, run.breach)
    facts = st.columns(2)
    facts[0].metric("Dispatched", f"{run.workers_dispatched or 0} of "
                                  f"{_limit(run.workers_proposed, '-')}")
    facts[1].metric("Cost", ui.usd(run.cost_usd))
    st.caption(ui.md_text(rp.as_recorded.reason))
with right:
    st.markdown("**Counterfactual**")
    _status(cf.status.value, cf.breach.value if cf.breach else None)
    facts = st.columns(2)
    facts[0].metric("Dispatched", f"{cf.dispatched} of {_limit(cf.proposed, '-')}")
    if cf.saving_usd is None:  # a task left undone whose redo nothing can estimate
        facts[1].metric("Cost", "unknown", help=ui.md_text(cf.redo.note) if cf.redo else None)
    else:
        facts[1].metric("Cost", ui.usd(cf.cost_usd), delta_color="inverse",
                        delta=ui.cost_delta(cf.saving_usd, cf.saving_pct),
                        help="With the task redone within the limits (estimated)"
                        if cf.redo else None)
    st.caption(ui.md_text(cf.reason))

if not cf.replayable:
    st.warning(ui.md_text(cf.reason))
elif not rp.reproduces_record:
    st.warning("Under its recorded limits this replay does not reproduce the record.")
stages = ui.chart_slot()  # drawn after the table (see ui.chart_slot)
notes = sorted({(i.stage, i.note) for i in cf.items if i.basis == "estimated"})
if notes:
    st.caption("Estimated figures (not in the record): " + "; ".join(
        f"{ui.md_text(stage)}: {ui.md_text(note)}" for stage, note in notes))
comparison = rp.comparison()
tables.show(comparison, key="comparison", height="content", column_config=COLUMNS,
            money_format=CALL_MONEY)
drawn = paint_gate.painted("replay", paint_gate.DATAFRAME_SELECTOR)  # charts after the table
paint_gate.chart(stages, replay_charts.counterfactual_stages(rp.counterfactual_items(),
                                                             rp.timeline), drawn, key="stages")
if not drawn:  # the rest of the page (three more tables, a chart) once this one is drawn
    ui.stop()
downloads.csv_button(comparison, "replay_comparison")

st.subheader("Timeline as recorded")
_, spans = queries.fetch(queries.load_run, run.run_id)
waterfall = ui.chart_slot()
# The detail narrower than elsewhere: the timeline's eleven columns fit 1440 px whole.
tables.show(rp.timeline, key="timeline", column_order=TIMELINE_ORDER,
            column_config=COLUMNS | {"detail": st.column_config.TextColumn("Detail", width=240)},
            money_format=CALL_MONEY)
paint_gate.chart(waterfall, charts.run_waterfall(spans), drawn, key="waterfall")
downloads.csv_button(rp.timeline, "replay_timeline")

st.subheader("Plan")
beside = rp.plan_beside_counterfactual()
plan = beside if beside is not None else rp.subtasks
st.caption("Each proposed sub-task, the model it was routed to and what became of it"
           + (", as recorded and in the counterfactual (cf)." if beside is not None else "."))
tables.show(plan, key="plan", column_config=COLUMNS, money_format=CALL_MONEY,
            column_order=[c for c in PLAN_ORDER if c in plan.columns])
downloads.csv_button(plan, "replay_plan")
if beside is None and cf.subtasks:
    st.markdown("**The counterfactual's plan**")
    cf_plan = rp.counterfactual_subtasks()
    tables.show(cf_plan, key="cf_plan", column_config=COLUMNS, money_format=CALL_MONEY)
    downloads.csv_button(cf_plan, "replay_counterfactual_plan")

st.subheader("Live re-run")
st.caption("Runs the same task again through the orchestrator under the limits above (same "
           "models and seed), recorded as a new run linked to this one. This calls the "
           "models: real spend unless the run used the offline simulated provider.")
live_key = f"live_{run.run_id}_{override.cli_args()}"
if st.button("Run it again live", icon=":material/play_arrow:", key="live_button"):
    with st.spinner("Running the task through the orchestrator..."):
        try:
            st.session_state[live_key] = replay_queries.live_rerun(run.run_id, override)
        except replay_queries.ActionError as exc:
            st.error(ui.md_text(exc))
live = st.session_state.get(live_key)
if live:
    st.success(ui.md_text(f"New run {live['run_id']}: {live['status']}, "
                          f"{ui.usd(live['cost_usd'])} "
                          f"(task from {live['task_source']}, seed {live['seed']})"))
    st.page_link(ui.RUN_PAGE, label="Open the new run", icon=":material/waterfall_chart:",
                 query_params={"run_id": live["run_id"]})
    side = pl.DataFrame(live["comparison"])
    tables.show(side, key="live_comparison", column_config=COLUMNS, money_format=CALL_MONEY)
    downloads.csv_button(side, "replay_live_comparison")
