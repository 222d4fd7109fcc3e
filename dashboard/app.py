"""cliffwatch's Streamlit entry point: the page navigation and the shared sidebar filters.

Run with ``cliffwatch dashboard`` or ``streamlit run dashboard/app.py``; the store is
``$CLIFFWATCH_DB`` (default ``data/cliffwatch.duckdb``). Pages live in ``pages/`` and
read the filters with :func:`dashboard.filters.current`.
"""

import streamlit as st

from dashboard import filters, queries

st.set_page_config(page_title="cliffwatch", layout="wide")

page = st.navigation(
    [
        st.Page("pages/overview.py", title="Overview", icon=":material/monitoring:", default=True),
        st.Page("pages/incidents.py", title="Incidents", icon=":material/warning:"),
        st.Page("pages/run.py", title="Run", icon=":material/waterfall_chart:"),
    ]
)
filters.render_sidebar(queries.known_task_classes())
page.run()
