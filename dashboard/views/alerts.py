"""Alerts: the alert rules in force, and every alert with its webhook deliveries: status,
attempts, last HTTP status and error, when it is due again or was delivered. What
``cliffwatch alerts`` shows, read-only (``cliffwatch alerts --retry`` sends again).

Deep link: ``/alerts?delivery=failed&shown=200``.
"""

import polars as pl
import streamlit as st

from cliffwatch.analytics.alert_view import DELIVERY_STATUSES, alert_rules
from cliffwatch.dashboard import cells, downloads, links, queries, tables, ui
from cliffwatch.dashboard.alerts_queries import load_alerts

STATUS_LABELS = {
    "pending": "Pending (queued or waiting to retry)",
    "sending": "Sending",
    "delivered": "Delivered",
    "failed": "Failed (gave up)",
    "unknown": "Unknown (cut off mid-send)",
    "no_webhook": "No webhook configured",
}
# A bound select box writes the option shown into the URL: the filter's options are the
# statuses in words (``?delivery=no+webhook``), mapped back to the stored status.
FILTER_OPTIONS = {status.replace("_", " "): status for status in DELIVERY_STATUSES}
SHOWN_CHOICES = (50, 200, 1000)
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

st.title("Alerts")
st.subheader("Rules")
st.caption("As configured for this dashboard's process (environment); a writer process "
           "with other settings raises alerts by its own.")
rules = alert_rules()
tables.show(
    rules.with_columns(pl.col("value").map_elements(cells.text, return_dtype=pl.String)),
    key="alert_rules",
    column_config={"rule": st.column_config.TextColumn("Alert when", width="large"),
                   "value": st.column_config.TextColumn("Threshold", width="large")},
)

st.subheader("Deliveries")
controls = st.columns(2)
picked = controls[0].selectbox(
    "Delivery status", tuple(FILTER_OPTIONS), index=None, placeholder="All statuses",
    key="delivery", bind="query-params",
)
status = FILTER_OPTIONS.get(picked or "")
shown = controls[1].selectbox("Newest", SHOWN_CHOICES, key="shown", bind="query-params")
data = queries.fetch(load_alerts, status, int(shown or SHOWN_CHOICES[0]))
total = sum(data.counts.values())
if total == 0:
    queries.stop_if_no_runs()
    st.info("No alert has been raised yet: incidents and threshold rules raise them when "
            "runs are written.")
    ui.stop()

counts = st.columns(len(DELIVERY_STATUSES))
for column, name in zip(counts, DELIVERY_STATUSES, strict=True):
    column.metric(STATUS_LABELS[name].split(" (")[0], f"{data.counts.get(name, 0):,}")

found = data.deliveries
if found.is_empty():
    st.info(f"No delivery is {STATUS_LABELS[status or 'pending'].lower()}.")
    ui.stop()
st.caption(f"{found.height:,} newest of {data.counts.get(status, 0) if status else total:,} "
           "· times UTC · the webhook's path is hidden (it is its secret)")


def _when(column: str) -> pl.Expr:
    return pl.col(column).dt.strftime(TIME_FORMAT).fill_null("-").alias(column)


table = cells.text_columns(
    found.with_columns(pl.col(c).cast(pl.String) for c in ("task_class", "run_id", "webhook",
                                                            "last_error", "text")),
    "kind", "source", "task_class", "webhook", "last_error", "text",
).with_columns(
    _when("raised_at"), _when("next_attempt_at"), _when("delivered_at"),
    pl.col("status").replace_strict(STATUS_LABELS, default=pl.col("status")),
    pl.col("attempts").map_elements(cells.count, return_dtype=pl.String),
    pl.col("last_http_status").cast(pl.String).fill_null("-"),
    links.run_link_column("run_link"),
)
tables.show(
    table, key="alerts",
    column_order=["raised_at", "run_link", "kind", "task_class", "status", "attempts",
                  "last_http_status", "last_error", "next_attempt_at", "delivered_at",
                  "webhook", "text"],
    column_config={
        "raised_at": st.column_config.TextColumn("Raised (UTC)"),
        "status": st.column_config.TextColumn("Delivery"),
        "last_http_status": st.column_config.TextColumn("Last HTTP status"),
        "last_error": st.column_config.TextColumn("Last error", width="medium"),
        "next_attempt_at": st.column_config.TextColumn("Next attempt (UTC)"),
        "delivered_at": st.column_config.TextColumn("Delivered (UTC)"),
        "text": st.column_config.TextColumn("Alert", width="large"),
        "run_link": links.RUN_LINK_COLUMN,
    },
)
downloads.csv_button(found, "alerts")
