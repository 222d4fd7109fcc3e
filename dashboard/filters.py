"""The shared sidebar filters (time window, task classes), kept in session state and the URL.

Every widget here is bound to a query parameter (Streamlit's ``bind="query-params"``), so
the URL always holds the current filters and can be shared; the widget keys are the
parameter names:

- ``since``: ``24h``, ``7d``, ``30d`` (last N hours/days), ``range`` (the ``dates``
  widget) or absent (all time). For links written by hand or by the CLI, ``since`` may
  also be a date or anything :func:`analytics.window.parse_when` reads
  (``?since=2026-11-01&until=2026-11-08``): it is turned into a date range on the
  session's first run (``until`` exclusive, as on the CLI).
- ``dates``: the first and last day (inclusive, UTC) of a date range.
- ``task_class``: repeated, one per selected class (``?task_class=a&task_class=b``).

Pages read the result with :func:`current`; they never read these widgets themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import streamlit as st

from analytics.window import Window, WindowError, parse_when, utc_now

ALL_TIME = "all"
DATE_RANGE = "range"
TIME_CHOICES: dict[str, str] = {
    ALL_TIME: "All time",
    "24h": "Last 24 hours",
    "7d": "Last 7 days",
    "30d": "Last 30 days",
    DATE_RANGE: "Date range",
}
"""``since`` values the sidebar offers, with their labels. The durations are read by
:func:`analytics.window.parse_when`, back from the time of the query."""

SINCE_KEY = "since"
DATES_KEY = "dates"
CLASSES_KEY = "task_class"
UNTIL_PARAM = "until"
_STATE_KEY = "cliffwatch_filters"


@dataclass(frozen=True, slots=True)
class Filters:
    """What the sidebar selected.

    Attributes:
        since: a key of :data:`TIME_CHOICES`.
        first_day, last_day: the inclusive UTC days of a ``range`` (``last_day`` None
            while only the first is picked: open-ended); None otherwise.
        task_classes: the selected classes, sorted; empty means every class.
    """

    since: str = ALL_TIME
    first_day: date | None = None
    last_day: date | None = None
    task_classes: tuple[str, ...] = ()

    def window(self) -> Window:
        """The :class:`~analytics.window.Window` to query (durations end now).

        Raises:
            WindowError: the range is empty (cannot happen from the date picker).
        """
        if self.since == ALL_TIME:
            return Window()
        if self.since == DATE_RANGE:
            until = self.last_day + timedelta(days=1) if self.last_day else None
            return Window(self.first_day, until)
        return Window.parse(self.since)

    def only_class(self) -> str | None:
        """The class to pass to analytics when exactly one is selected, else None."""
        return self.task_classes[0] if len(self.task_classes) == 1 else None

    def describe(self) -> str:
        """One line for captions: ``"Last 7 days, classes a, b"``."""
        if self.since == DATE_RANGE and self.first_day:
            end = self.last_day.isoformat() if self.last_day else "now"
            when = f"{self.first_day.isoformat()} to {end}"
        else:
            when = TIME_CHOICES.get(self.since, self.since)
        classes = ", ".join(self.task_classes) if self.task_classes else "all classes"
        return f"{when}; {classes}"


def _adopt_since_from_link() -> str | None:
    """Turn a hand-written ``?since=<date>[&until=<date>]`` into the range widgets' state.

    Runs once per session, before the widgets exist (a bound widget drops a value that is
    not one of its options). Returns a one-line problem to show, or None.
    """
    raw = st.query_params.get(SINCE_KEY)
    if not raw or raw in TIME_CHOICES or SINCE_KEY in st.session_state:
        return None
    raw_until = st.query_params.get(UNTIL_PARAM)
    try:
        window = Window(parse_when(raw), parse_when(raw_until) if raw_until else None)
    except WindowError as exc:
        return f"Ignored the link's time filter: {exc}"
    assert window.since is not None
    # `until` is exclusive (as on the CLI); the picker's last day is inclusive.
    last = (window.until - timedelta(microseconds=1)).date() if window.until else None
    st.session_state[SINCE_KEY] = DATE_RANGE
    st.session_state[DATES_KEY] = (window.since.date(), last or utc_now().date())
    if UNTIL_PARAM in st.query_params:
        del st.query_params[UNTIL_PARAM]
    return None


def render_sidebar(class_options: Sequence[str]) -> Filters:
    """Draw the filter widgets in the sidebar and remember the selection for the pages.

    Args:
        class_options: the task classes the store knows (the multiselect's options).

    Returns:
        The selected :class:`Filters` (also kept in session state for :func:`current`).
    """
    problem = _adopt_since_from_link()
    with st.sidebar:
        st.header("Filters")
        if problem:
            st.warning(problem)
        since = st.selectbox(
            "Time window",
            list(TIME_CHOICES),
            format_func=TIME_CHOICES.__getitem__,
            key=SINCE_KEY,
            bind="query-params",
        )
        first_day = last_day = None
        if since == DATE_RANGE:
            today = utc_now().date()
            # A value set through session state (a link's ?since=<date>) must not be
            # given again as the widget's default (Streamlit warns about both).
            default = {} if DATES_KEY in st.session_state else {
                "value": (today - timedelta(days=7), today)
            }
            picked = st.date_input(
                "Days (UTC)", key=DATES_KEY, bind="query-params", **default
            )
            days = list(picked) if isinstance(picked, tuple | list) else [picked]
            first_day = days[0] if days else None
            last_day = days[1] if len(days) > 1 else None
        classes = st.multiselect(
            "Task classes",
            sorted(class_options),
            key=CLASSES_KEY,
            bind="query-params",
            placeholder="All classes",
        )
    filters = Filters(
        since=since or ALL_TIME,
        first_day=first_day,
        last_day=last_day,
        task_classes=tuple(sorted(classes)),
    )
    if filters.since == DATE_RANGE and filters.first_day is None:
        filters = Filters(task_classes=filters.task_classes)
    st.session_state[_STATE_KEY] = filters
    return filters


def current() -> Filters:
    """The filters the sidebar selected in this run (all data when it has not run)."""
    return st.session_state.get(_STATE_KEY, Filters())
