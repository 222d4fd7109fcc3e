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
it). The Run, Replay, What-if and Cost truth pages hold their charts' place meanwhile
(:func:`chart`), so nothing drawn moves when they come. Without the browser's signal (a
component that never loads) the component asks anyway after :data:`FALLBACK_MS`, so the
charts always come.

The same gate holds back what else the first paint does not need (every element's code is
loaded and laid out in the pass that draws the table): the Replay and Cost truth pages
send what lies below their first table in that rerun, the Runs and Compare pages their
download button, and in a session's first run ``app.py`` the sidebar's widgets. The Runs,
Replay and Compare pages' own widgets above the table wait too when none is set (no
parameter in the link, :func:`widgets_wait`): the table is drawn with their defaults, their
place held. At a million runs (load ~4) the Runs page's table was painted at 1.9 s instead
of 2.7 s (median of 6 warm visits side by side).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import TypeVar

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

PAGES = ("overview", "runs", "run", "replay", "compare", "whatif", "cost_truth")
"""The pages that send their charts, or what else can wait, after their first paint (their
``page`` names)."""

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

_RUN = threading.local()
"""This script run's widgets waiting for the gate's run (:func:`widgets`): a script run
keeps to its thread."""

T = TypeVar("T")


def page_sent() -> None:
    """Note that this script run sent a page whose first paint waits for nothing more
    (``app.py``, after a page that placed no gate): sets :data:`FIRST_PAINT`."""
    FIRST_PAINT.set()


def start_run() -> None:
    """Forget whether a gate waited in the previous script run (``app.py`` calls this
    before the page; :func:`pending`)."""
    st.session_state[_PENDING_KEY] = False
    _waiting().clear()


def pending() -> bool:
    """Whether the page placed its gate in this script run (:func:`painted` was False): its
    first paint is still to come, and ``app.py`` leaves what can wait to the run the gate
    asks for."""
    return bool(st.session_state.get(_PENDING_KEY))


def widgets(page: str, keys: Iterable[str], height_px: int, draw: Callable[[], T],
            defaults: T) -> T:
    """Draw a page's widgets above its table, or only their place until its first paint.

    When :func:`widgets_wait` (``page`` not yet drawn in this session and none of the
    widgets ``keys`` set), an empty box of ``height_px`` (their height at 1440 px) holds
    their place and ``defaults`` (what ``draw`` returns with none of them set) are read;
    the widgets come in the run the page's gate asks for. Should the page end before
    placing its gate (nothing matched, a store error), :func:`end_run` draws them in
    that place in this run, so they are never missing. Otherwise ``draw`` is called.

    Args:
        page: the page's :func:`painted` name.
        keys: the widgets' keys (each its query parameter).
        height_px: the height the widgets take.
        draw: draws the widgets and returns what they read.
        defaults: what ``draw`` returns before anyone set a widget.

    Returns:
        What the widgets read (``defaults`` while they wait).
    """
    slot = st.empty()
    if not widgets_wait(page, keys):
        with slot.container():
            return draw()
    slot.container(height=height_px, border=False)
    _waiting().append((slot, draw))
    return defaults


def end_run() -> None:
    """``app.py``, after the page: when the page placed no gate in this run (it ended
    before its table), draw the widgets :func:`widgets` left for the gate's run now, in
    their place."""
    waiting = _waiting()
    if pending():
        waiting.clear()
        return
    while waiting:
        slot, draw = waiting.pop(0)
        with slot.container():
            draw()


def _waiting() -> list[tuple[DeltaGenerator, Callable[[], object]]]:
    if not hasattr(_RUN, "waiting"):
        _RUN.waiting = []
    return _RUN.waiting


def widgets_wait(page: str, keys: Iterable[str]) -> bool:
    """Whether ``page`` may leave its widgets (session-state keys and query parameters
    ``keys``) to the run its gate asks for: True before the page's first paint in this
    session when none of them is set, in the URL or in session state, so each would read
    its default (the page draws its table with the defaults, and the widgets come in the
    next run, in a place of their height). Eight widgets' code and layout delayed the
    Runs page's table by about 0.4 s at 1M runs (issue 11). False once the page was
    drawn, or when a link set one of them: then the widgets come with the table."""
    if st.session_state.get(state_key(page)):
        return False
    return not any(key in st.query_params or key in st.session_state for key in keys)


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
