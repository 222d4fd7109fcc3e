"""The shared sidebar filters (time window, task classes), kept in session state and the URL.

Every widget here is bound to a query parameter (Streamlit's ``bind="query-params"``), so
the URL always holds the current filters and can be shared; the widget keys are the
parameter names, and the time window speaks the CLI's ``--since`` / ``--until`` language
(:func:`analytics.window.parse_when`):

- ``since``: ``24h``, ``7d``, ``30d`` (the last N hours or days, back from the time of the
  query), or anything else ``parse_when`` reads, typed into the box or written in a link:
  a date (``2026-11-01``, midnight UTC), a date and time, a duration (``3d``, ``2w``).
  Absent: all time.
- ``until``: optional end of the window, exclusive (``2026-11-08`` ends with the 7th).
- ``task_class``: repeated, one per selected class (``?task_class=a&task_class=b``).

So ``?since=2026-11-01&until=2026-11-08&task_class=research`` is one week of one class.
Only the user changes these widgets (code-set values of bound widgets do not reach the
URL in Streamlit 1.67), which keeps the URL and what the page shows in step.

Pages read the result with :func:`current`; they never read these widgets themselves.
In a session's first run ``app.py`` reads the selection before the page (:func:`select`:
the widgets' session state, else the URL) and draws the widgets after it
(:func:`render_sidebar`), so the page's content reaches the browser first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import streamlit as st

from cliffwatch.analytics.errors import UnknownTaskClassError
from cliffwatch.analytics.result_cache import reads_clock
from cliffwatch.analytics.window import Window, WindowError, parse_when
from cliffwatch.dashboard.ui import md_text

ALL_TIME = "all"
SINCE_CHOICES: tuple[str, ...] = (ALL_TIME, "24h", "7d", "30d")
"""``since`` values offered in the box; any other value ``parse_when`` reads is accepted.
They are shown as they are because a bound widget writes the *shown* text into the URL:
``?since=7d`` reads the same as the CLI's ``--since 7d``."""

SINCE_KEY = "since"
UNTIL_KEY = "until"
CLASSES_KEY = "task_class"
_STATE_KEY = "cliffwatch_filters"


@dataclass(frozen=True, slots=True)
class Filters:
    """What the sidebar selected.

    Attributes:
        since: ``"all"`` or a ``--since`` string (``7d``, ``2026-11-01``, ...).
        until: ``""`` (open) or an ``--until`` string, exclusive.
        task_classes: the selected classes, sorted; empty means every class.
    """

    since: str = ALL_TIME
    until: str = ""
    task_classes: tuple[str, ...] = ()

    def window(self) -> Window:
        """The :class:`~analytics.window.Window` to query (durations end at this call).

        Raises:
            WindowError: ``since`` or ``until`` cannot be read, or the window is empty.
        """
        return Window.parse(None if self.since == ALL_TIME else self.since, self.until or None)

    def moves_with_clock(self) -> bool:
        """True when an end of the window is read back from now (``24h``, ``7d``,
        ``today``): two readings at different times differ. False for all time and fixed
        dates, and for a value that cannot be read (the page reports it)."""
        return reads_clock(self.until, None if self.since == ALL_TIME else self.since)

    def only_class(self) -> str | None:
        """The class to pass to analytics when exactly one is selected, else None."""
        return self.task_classes[0] if len(self.task_classes) == 1 else None

    def describe(self) -> str:
        """One line for captions: ``"since 7d until 2026-11-08; research"``."""
        if self.since == ALL_TIME:
            when = f"until {self.until}" if self.until else "All time"
        else:
            when = f"since {self.since}" + (f" until {self.until}" if self.until else "")
        classes = ", ".join(self.task_classes) if self.task_classes else "all classes"
        return f"{when}; {classes}"


_RERUN_KEY = "cliffwatch_filters_rerun"
_UNKNOWN_KEY = "cliffwatch_filters_unknown_classes"
"""The classes a link named that the store lacks (the multiselect dropped them) and the
selection that was left: said in the sidebar while that selection stands."""


def _as_filters(since: str | None, until: str | None, classes: Sequence[str]) -> Filters:
    return Filters(since=(since or ALL_TIME).strip(), until=(until or "").strip(),
                   task_classes=tuple(sorted(classes)))


def select() -> Filters:
    """Read the selection before the sidebar is drawn (``app.py`` draws a session's first
    page first, then :func:`render_sidebar`) and keep it for the pages (:func:`current`).

    The widgets' values are their session state when they were drawn in an earlier run of
    this session, else the URL's parameters (what the bound widgets start from). Ends of
    the window that cannot be read are left open, as :func:`readable` says (the sidebar
    shows why).

    Returns:
        The :class:`Filters` the page reads.
    """
    state, params = st.session_state, st.query_params
    since = state[SINCE_KEY] if SINCE_KEY in state else params.get(SINCE_KEY)
    until = state[UNTIL_KEY] if UNTIL_KEY in state else params.get(UNTIL_KEY)
    classes = state[CLASSES_KEY] if CLASSES_KEY in state else params.get_all(CLASSES_KEY)
    filters, _ = readable(_as_filters(since, until, classes))
    st.session_state[_STATE_KEY] = filters
    return filters


def render_sidebar(class_options: Sequence[str], *, after_page: bool = False) -> Filters:
    """Draw the filter widgets in the sidebar and keep the selection for the pages
    (:func:`current`): before the page, or after it (``after_page``; :func:`select` read
    the selection for the page).

    A ``since`` or ``until`` that cannot be read gets ``st.error`` in the sidebar naming
    the value and the forms accepted, and the pages use the other end alone until it is
    fixed (:func:`readable`). A class the URL names that the store does not have is
    dropped by the multiselect: ``st.error`` in the sidebar names it and the known classes
    (as the CLI's ``unknown task class`` error does) while the selection left stands
    (:func:`unknown_classes`). Should the widgets hold another selection than the one the
    page was drawn with, the script runs again once, with the widgets' selection.

    Args:
        class_options: the task classes the store knows (the multiselect's options).
        after_page: the page was drawn before, with :func:`select`'s selection.

    Returns:
        The selected :class:`Filters`.
    """
    state = st.session_state
    asked = state[CLASSES_KEY] if CLASSES_KEY in state else st.query_params.get_all(CLASSES_KEY)
    with st.sidebar:
        st.header("Filters")
        since = st.selectbox(
            "Since",
            SINCE_CHOICES,
            key=SINCE_KEY,
            bind="query-params",
            accept_new_options=True,
            help="The last 24 hours, 7 days or 30 days, or type a date (2026-11-01), "
            "a date and time (2026-11-01T12:30) or a duration (3d, 2w). UTC.",
        )
        until = st.text_input(
            "Until",
            key=UNTIL_KEY,
            bind="query-params",
            placeholder="now",
            help="Optional end of the window, exclusive: 2026-11-08 ends with the 7th.",
        )
        classes = st.multiselect(
            "Task classes",
            sorted(class_options),
            key=CLASSES_KEY,
            bind="query-params",
            placeholder="All classes",
        )
        filters, problems = readable(_as_filters(since, until, classes))
        unknown = unknown_classes(asked, class_options, filters)
        if unknown:  # kept for the run again below, where the URL no longer names them
            state[_UNKNOWN_KEY] = (unknown, filters)
        elif state.get(_UNKNOWN_KEY, ("", None))[1] == filters:
            unknown = state[_UNKNOWN_KEY][0]
        else:
            state.pop(_UNKNOWN_KEY, None)
        for problem in [*([unknown] if unknown else []), *problems]:
            st.error(md_text(problem))
    drawn_with = current()
    st.session_state[_STATE_KEY] = filters
    if after_page and filters != drawn_with and not st.session_state.get(_RERUN_KEY):
        st.session_state[_RERUN_KEY] = True  # once: the next run reads the widgets' state
        st.rerun()
    st.session_state[_RERUN_KEY] = False
    return filters


def unknown_classes(asked: Sequence[str], known: Sequence[str], shown: Filters) -> str:
    """One message naming the classes of ``asked`` that are not ``known`` (the store's),
    with the known ones and what is shown instead (``shown``); "" when every one is known.
    """
    missing = [name for name in dict.fromkeys(asked) if name not in known]
    if not missing:
        return ""
    said = "; ".join(str(UnknownTaskClassError(name, known)) for name in missing)
    left = shown.describe()
    return f"Task classes: {said}. Showing {left[:1].lower()}{left[1:]}."


def readable(filters: Filters) -> tuple[Filters, list[str]]:
    """``filters`` with each end of the window that cannot be read left open, and one
    message per problem (what was typed, the forms accepted, what is shown instead).

    A bad ``until`` keeps a good ``since`` (and the other way round); a window whose ends
    both read but that is empty (``since`` not before ``until``) shows all time.

    Returns:
        ``(filters to use, messages)``; no messages when ``filters`` reads as it is.
    """
    try:
        filters.window()
    except WindowError as exc:
        whole = str(exc)
    else:
        return filters, []
    problems: list[str] = []
    since, until = filters.since, filters.until
    for label, value in (("Since", since), ("Until", until)):
        if value and value != ALL_TIME:
            try:
                parse_when(value)
            except WindowError as exc:
                problems.append(f"{label}: {exc}.")
                since, until = (ALL_TIME, until) if label == "Since" else (since, "")
    if not problems:  # both ends read: the window itself is empty
        problems.append(f"{whole}.")
        since, until = ALL_TIME, ""
    kept = Filters(since=since, until=until, task_classes=filters.task_classes)
    shown = kept.describe()
    return kept, [*problems[:-1], f"{problems[-1]} Showing {shown[:1].lower()}{shown[1:]}."]


def current() -> Filters:
    """The filters the sidebar selected in this run (all data when it has not run)."""
    return st.session_state.get(_STATE_KEY, Filters())
