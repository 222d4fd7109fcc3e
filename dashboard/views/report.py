"""Report: the sidebar's selection as a file to hand to a team: HTML (self-contained, with
charts), Markdown (for a ticket), JSON, or CSV / Parquet tables (a zip).

The report is built in this process by the same analytics functions as ``cliffwatch
report`` (``dashboard.replay_queries.report_file``), so it is the same file the command
line writes, with the what-if at each class's configured cap (workload config).
"""

import streamlit as st

from cliffwatch.analytics.report import REPORT_TABLES
from cliffwatch.dashboard import filters, queries, replay_queries, ui
from cliffwatch.errors import CliffwatchError

# format -> (label, MIME type, file extension); a bare string here would be drawn on the
# page (Streamlit "magic"), hence a comment
FORMATS = {
    "html": ("HTML, self-contained with charts", "text/html", "html"),
    "md": ("Markdown, to paste into a ticket", "text/markdown", "md"),
    "json": ("JSON, every table in one file", "application/json", "json"),
    "csv": ("CSV, one file per table (zip)", "application/zip", "zip"),
    "parquet": ("Parquet, one file per table (zip)", "application/zip", "zip"),
}

selected = filters.current()
st.title("Report")
st.caption(f"{ui.md_text(selected.describe())} · store {ui.md_text(queries.store_label())}")
queries.stop_if_no_runs()
if len(selected.task_classes) > 1:
    st.info("Several classes are selected: the report covers every class of the window.")
st.markdown("Tables: " + ", ".join(REPORT_TABLES.values()) + ".")

fmt = st.radio("Format", list(FORMATS), format_func=lambda f: FORMATS[f][0], key="report_fmt")
label, mime, extension = FORMATS[fmt]
built_key = f"report_{fmt}_{selected}"
if st.button("Build the report", icon=":material/description:", key="build_report"):
    with st.spinner("Building the report..."):
        try:
            st.session_state[built_key] = replay_queries.report_file(fmt, selected)
        except CliffwatchError as exc:  # store and analytics errors: one line each
            st.error(ui.md_text(exc))
data = st.session_state.get(built_key)
if data is not None:
    st.download_button(f"Download the report ({len(data) / 1024:,.0f} KiB)", data=data,
                       file_name=f"cliffwatch-report.{extension}", mime=mime,
                       key="download_report", icon=":material/download:", on_click="ignore")
