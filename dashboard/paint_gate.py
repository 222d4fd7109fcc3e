"""Charts after the first paint: a page's plotly charts are sent in the script run that
follows the browser's first paint of the page's table.

Streamlit's browser code loads plotly.js (4.7 MB; 0.8 s of main-thread evaluation on this
machine) when the first chart element arrives. A chart sent in the same script run as the
table, even after it (:func:`dashboard.ui.chart_slot`), arrives while the table's own
JavaScript is still loading; plotly's evaluation then ran before the table was drawn or
straight after, holding the page's main thread (the Overview at a million runs: the table
in the DOM at 1.8-2.9 s after navigation and the page unresponsive until 2.7-3.7 s, the
result cache warm). Here the page draws its table and a small component
(:func:`painted`, ``st.components.v2``: JavaScript in the page, no iframe) that waits for
the table to be drawn and a frame painted, then asks for a rerun; that rerun, and every
later one in the session, draws the charts (the table is unchanged, so the browser keeps
it). The Run, Replay and What-if pages hold their charts' place meanwhile (:func:`chart`),
so nothing drawn moves when they come. Without the browser's signal (a component that
never loads) the component asks anyway after :data:`FALLBACK_MS`, so the charts always
come.
"""

from __future__ import annotations

import threading

import plotly.graph_objects as go
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

FALLBACK_MS = 10_000
"""Milliseconds after the component is mounted at which it asks for the charts even when no
table was seen (a page that drew none, a browser that never showed it)."""

_JS = """
export default function(component) {
  const { data, setTriggerValue } = component;
  let sent = false;
  const send = () => { if (!sent) { sent = true; setTriggerValue("painted", true); } };
  // after the next frame is painted: a rAF callback runs before that frame's paint
  const afterPaint = () => requestAnimationFrame(() => setTimeout(send, 0));
  const drawn = () => document.querySelector(data.selector) !== null;
  const timer = setTimeout(send, data.fallback_ms);
  if (drawn()) {
    afterPaint();
    return () => clearTimeout(timer);
  }
  const seen = new MutationObserver(() => {
    if (drawn()) { seen.disconnect(); afterPaint(); }
  });
  seen.observe(document.body, { childList: true, subtree: true });
  return () => { seen.disconnect(); clearTimeout(timer); };
}
"""

_COMPONENT = st.components.v2.component("cliffwatch_paint_gate", js=_JS)

PAGES = ("overview", "run", "replay", "whatif")
"""The pages that send their charts after their first paint (their ``page`` names)."""

TABLE_SELECTOR = "[data-testid='stMain'] [data-testid='stTable']"
"""An ``st.table`` drawn in the page's main area (the Overview's percentile table)."""

DATAFRAME_SELECTOR = "[data-testid='stMain'] [data-testid='stDataFrame']"
"""An ``st.dataframe`` drawn in the page's main area (the Run, Replay and What-if pages'
tables, :mod:`dashboard.tables`)."""

DEFAULT_CHART_HEIGHT_PX = 450
"""The height plotly gives a figure whose layout sets none."""


FIRST_PAINT = threading.Event()
"""Set once, in this server process, when a session's page was drawn in its browser (its
gate asked for the charts) or sent whole without a gate (:func:`page_sent`):
``dashboard/serve.py`` starts its start-up analyses after it, so they do not take the CPU
from the first visitor's first paint."""

_PENDING_KEY = "cliffwatch_paint_pending"


def page_sent() -> None:
    """Note that this script run sent a page whose first paint waits for nothing more
    (``app.py``, after a page that placed no gate): sets :data:`FIRST_PAINT`."""
    FIRST_PAINT.set()


def start_run() -> None:
    """Forget whether a gate waited in the previous script run (``app.py`` calls this
    before the page; :func:`pending`)."""
    st.session_state[_PENDING_KEY] = False


def pending() -> bool:
    """Whether the page placed its gate in this script run (:func:`painted` was False): its
    first paint is still to come, and ``app.py`` leaves what can wait to the run the gate
    asks for."""
    return bool(st.session_state.get(_PENDING_KEY))


def state_key(page: str) -> str:
    """The session-state key that holds whether ``page`` has had its first paint."""
    return f"cliffwatch_painted_{page}"


def painted(page: str, selector: str = TABLE_SELECTOR) -> bool:
    """Whether ``page`` may send its charts in this script run: True once the browser has
    drawn an element matching ``selector`` (a CSS selector) on it in this session; until
    then False, and the gate component is placed here (call it after the table).

    ``page``: a name of the page (its session-state key, :func:`state_key`).
    """
    key = state_key(page)
    if st.session_state.get(key):
        return True

    def opened() -> None:  # before the rerun the component asked for
        st.session_state[key] = True
        FIRST_PAINT.set()

    _COMPONENT(key=f"{key}_gate", data={"selector": selector, "fallback_ms": FALLBACK_MS},
               on_painted_change=opened, height=0)
    st.session_state[_PENDING_KEY] = True
    return False


def chart(slot: DeltaGenerator, figure: go.Figure, drawn: bool, *, key: str) -> None:
    """Fill ``slot`` (:func:`dashboard.ui.chart_slot`, above the table) with ``figure`` when
    ``drawn`` (:func:`painted` of the page), else with an empty box of the figure's height,
    so the table does not move when the chart comes in the next run."""
    if drawn:
        slot.plotly_chart(figure, key=key)
    else:
        slot.container(height=int(figure.layout.height or DEFAULT_CHART_HEIGHT_PX),
                       border=False)
