"""cliffwatch's Streamlit entry point: the page navigation and the shared sidebar filters.

Run with ``cliffwatch dashboard`` or ``streamlit run dashboard/app.py``; the store is
``$CLIFFWATCH_DB`` (default ``data/cliffwatch.duckdb``). Pages live in ``views/`` and
read the filters with :func:`dashboard.filters.current`.

The folder is deliberately not called ``pages/``: Streamlit treats a ``pages/`` folder
beside the entry point as a v1 multipage app until some session has run
``st.navigation``, so the first visitor of a fresh server who opened a deep link such as
``/run?run_id=...`` would get that page without this file (no filters, v1 navigation).
"""

import streamlit as st

from cliffwatch.dashboard import access, filters, queries

# An emoji favicon is drawn in the browser (a data: URL); a page's :material/...: icon would
# be fetched from fonts.gstatic.com (Streamlit 1.67), and the dashboard is an offline tool.
st.set_page_config(page_title="cliffwatch", page_icon="📉", layout="wide")
access.require_token()

page = st.navigation(
    [
        st.Page("views/overview.py", title="Overview", icon=":material/monitoring:", default=True),
        st.Page("views/runs.py", title="Runs", icon=":material/list:"),
        st.Page("views/incidents.py", title="Incidents", icon=":material/warning:"),
        st.Page("views/alerts.py", title="Alerts", icon=":material/notifications:"),
        st.Page("views/findings.py", title="Findings", icon=":material/lightbulb:"),
        st.Page("views/run.py", title="Run", icon=":material/waterfall_chart:"),
        st.Page("views/replay.py", title="Replay", icon=":material/replay:"),
        st.Page("views/compare.py", title="Compare", icon=":material/compare_arrows:"),
        st.Page("views/whatif.py", title="What-if", icon=":material/tune:"),
        st.Page("views/report.py", title="Report", icon=":material/description:"),
        st.Page("views/cost_truth.py", title="Cost truth", icon=":material/fact_check:"),
    ]
)
filters.render_sidebar(queries.known_task_classes())
page.run()
