"""Cost truth: what ``cliffwatch audit`` shows (spend by cost source, reported vs computed
drift, unpriced calls, calls missing cache detail, duplicates dropped, the one-line
verdict) and the prompt cache's hit ratio and savings per model and task class.

Deep link: ``/cost_truth?since=7d&task_class=research`` (see :mod:`dashboard.filters`).
"""

import polars as pl
import streamlit as st

from cliffwatch.analytics import cost_truth_charts
from cliffwatch.analytics.upper_bound import upper_bound_note
from cliffwatch.dashboard import (
    cost_truth_queries,
    downloads,
    filters,
    paint_gate,
    queries,
    tables,
    ui,
)

selected = filters.current()
st.title("Cost truth")
st.caption(f"{ui.md_text(selected.describe())} · store {ui.md_text(queries.store_label())}")

current_map = st.toggle(
    "Also price every call from the current litellm price map", key="current_map",
    help="As `cliffwatch audit` does by default: shows calls whose price changed since "
    "they were stored. Loads litellm (a few seconds, once).",
)
truth = queries.fetch(cost_truth_queries.load_cost_truth, selected, current_map)
if not truth.calls:
    queries.stop_if_no_runs()
    st.info("No LLM calls match these filters: widen the time window or clear the class "
            "filter.")
    ui.stop()

if truth.not_recomputing:
    st.error(ui.md_text(truth.verdict))
else:
    st.success(ui.md_text(truth.verdict))

audited = truth.check("calls audited")
drift = truth.check("reported vs computed drift")
kpis = st.columns(6)
kpis[0].metric("Calls audited", f"{truth.calls:,}")
kpis[1].metric("Spend", ui.usd(audited["amount_usd"]))
kpis[2].metric("Drift calls", f"{drift['calls']:,}",
               help="Calls whose reported cost differs from litellm's computation.")
kpis[3].metric("Drift", ui.usd(drift["amount_usd"], signed=True),
               help="Reported minus computed, summed over the drifting calls.")
kpis[4].metric("Unpriced calls", f"{truth.check('spend unpriced')['calls']:,}")
kpis[5].metric("Duplicates dropped", f"{truth.check('duplicates dropped')['calls']:,}")
upper_bound = upper_bound_note(truth.check("cache detail missing")["calls"])
if upper_bound:
    st.warning(f"Spend is an {ui.md_text(upper_bound)}: those calls were priced as "
               "uncached input.")

st.subheader("Spend by cost source")
source_chart = ui.chart_slot()  # drawn after the audit table (dashboard/paint_gate.py)
st.caption("provider: the cost the producer reported (litellm's computation kept beside "
           "it, so drift shows); computed: litellm's price of the stored tokens; unpriced: "
           "no price for the model (no cost, never $0). Duplicates dropped are checked "
           "but never in the spend.")

CALL_MONEY = "$%,.6f"  # a call's cost: sub-cent amounts need 6 decimals
st.subheader("Audit")
tables.show(
    truth.summary, key="audit_summary", money_format=CALL_MONEY,
    column_config={"share": st.column_config.NumberColumn("Share of spend", format="percent")},
)
drawn = paint_gate.painted("cost_truth", paint_gate.DATAFRAME_SELECTOR)
paint_gate.chart(source_chart, cost_truth_charts.spend_by_source(truth.summary), drawn,
                 key="spend_by_source")
if not drawn:  # the problem calls and the prompt cache (a second scan) once this is drawn
    ui.stop()
downloads.csv_button(truth.summary, "cost_audit")
if truth.problems.height:
    st.subheader("Problem calls")
    if truth.problem_rows > truth.problems.height:
        st.caption(f"The first {truth.problems.height:,} of {truth.problem_rows:,} problem "
                   "rows (by run and span); `cliffwatch audit --format csv` lists them all.")
    tables.show(truth.problems, key="audit_problems", money_format=CALL_MONEY)
    downloads.csv_button(truth.problems, "cost_audit_problems")

st.subheader("Prompt cache")
# read in the run after the audit above was drawn (a second scan of the calls)
savings = queries.fetch(cost_truth_queries.load_cache_savings, selected)
total = savings.total.to_dicts()
if total:
    row = total[0]
    cache = st.columns(4)
    cache[0].metric("Cache hit ratio",
                    "-" if row["hit_ratio"] is None else f"{row['hit_ratio']:.1%}")
    cache[1].metric("Net cache saving", ui.usd(row["net_saving_usd"], signed=True))
    cache[2].metric("Cache reads saved", ui.usd(row["read_saving_usd"]))
    cache[3].metric("Cache write premium", ui.usd(row["write_premium_usd"]))
SAVINGS_COLUMNS = {  # what differs from tables.show's defaults
    "calls_not_in_hit_ratio": st.column_config.NumberColumn(
        "Not in hit ratio", format="%,d",
        help="Calls that stored no cache read or write token count, for any reason (a model "
        "without a prompt cache, a producer that leaves zero counts out, a failed call): "
        "left out of the hit ratio. Not the audit's \"cache detail missing\", which "
        "counts only the calls whose computed cost is an upper bound (a caching model, "
        "a producer that would have reported the split)."),
    "cache_read_tokens": st.column_config.NumberColumn("Cache reads", format="%,d"),
    "cache_creation_tokens": st.column_config.NumberColumn("Cache writes", format="%,d"),
    "hit_ratio": st.column_config.NumberColumn("Hit ratio", format="percent"),
    "read_saving_usd": st.column_config.NumberColumn("Reads saved", format=CALL_MONEY),
}
for key, label, frame in (("model", "Per model", savings.by_model),
                          ("task_class", "Per task class", savings.by_class)):
    st.markdown(f"**{label}**")
    tables.show(frame, key=f"savings_{key}", column_config=SAVINGS_COLUMNS,
                money_format=CALL_MONEY)
    if frame.filter(pl.col("net_saving_usd").is_not_null()).height:
        st.plotly_chart(cost_truth_charts.cache_savings_bars(frame, key),
                        key=f"savings_chart_{key}")
st.caption(
    "Hit ratio = cache read tokens / input tokens (cache reads and writes included, as "
    "the GenAI conventions count them), over the calls that reported a cache split "
    "(the others are counted in Not in hit ratio). "
    "Reads saved = cache reads x (input rate - cache read rate); write premium = cache "
    "writes x (cache write rate - input rate); net saving = the difference, against the "
    "same calls without caching. Rates: those stored on each call (litellm's price map)."
)
