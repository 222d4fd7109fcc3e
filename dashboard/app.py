"""cliffwatch's Streamlit entry point: the page navigation and the shared sidebar filters.

Run with ``cliffwatch dashboard`` or ``streamlit run dashboard/app.py``; the store is
``$CLIFFWATCH_DB`` (default ``data/cliffwatch.duckdb``). Pages live in ``views/`` and
read the filters with :func:`dashboard.filters.current`; the sidebar is drawn after the page.

The folder is deliberately not called ``pages/``: Streamlit treats a ``pages/`` folder
beside the entry point as a v1 multipage app until some session has run
``st.navigation``, so the first visitor of a fresh server who opened a deep link such as
``/run?run_id=...`` would get that page without this file (no filters, v1 navigation).
"""

import sys

import streamlit as st
from streamlit.runtime.scriptrunner_utils.exceptions import ScriptControlException

from cliffwatch.dashboard import access, filters, paint_gate, queries, ui

_SESSION_RAN = "cliffwatch_session_ran"

# An emoji favicon is drawn in the browser (a data: URL); a page's :material/...: icon would
# be fetched from fonts.gstatic.com (Streamlit 1.67), and the dashboard is an offline tool.
st.set_page_config(page_title="cliffwatch", page_icon="📉", layout="wide")
access.require_token()

first_run = not st.session_state.get(_SESSION_RAN)
st.session_state[_SESSION_RAN] = True
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
# A session's first run: the page first, then the sidebar's widgets (a page ends early with
# ui.stop(), never st.stop(), which would end this run too), and none at all when the page
# waits for its first paint (dashboard/paint_gate.py: they come in the run the gate asks
# for). The browser loads an element's code when the element arrives and draws what arrived
# together in one pass, so widgets sent with the table delayed it (issue 11). Later runs:
# the browser has the widgets' code; the sidebar first, so its state is kept on every page.
if not first_run:
    filters.render_sidebar(queries.known_task_classes())
else:
    filters.select()
paint_gate.start_run()
try:
    page.run()
except ui.PageStopped:
    pass
finally:
    if not isinstance(sys.exc_info()[1], ScriptControlException):
        paint_gate.end_run()  # a page that ended before its gate: its widgets now
    if not paint_gate.pending():
        paint_gate.page_sent()
    # also after an error in the page (shown by Streamlit): the filters stay in the sidebar
    if (first_run and not paint_gate.pending()
            and not isinstance(sys.exc_info()[1], ScriptControlException)):
        filters.render_sidebar(queries.known_task_classes(), after_page=True)
