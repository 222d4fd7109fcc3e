"""Time windows over the store: ``--since`` / ``--until`` parsing and the SQL they become.

A window is half-open, ``since <= t < until``: ``since`` is inclusive, ``until`` exclusive,
so consecutive windows (``--since 2026-11-01 --until 2026-11-02``, then ``--since
2026-11-02``) never count a run twice. Either end may be open (None). Times are UTC; the
store holds naive UTC timestamps, so aware datetimes are converted to UTC and made naive.

Accepted strings (:func:`parse_when`):

- a date, ``2026-11-01``: midnight UTC at the start of that day;
- a date and time, ``2026-11-01T12:30`` or ``2026-11-01 12:30:00`` (ISO 8601; an offset such
  as ``+02:00`` or ``Z`` is converted to UTC);
- a duration back from now, ``<n><unit>`` with unit ``m`` (minutes), ``h`` (hours), ``d``
  (days) or ``w`` (weeks): ``--since 7d`` is the last seven days;
- ``today``: midnight UTC at the start of the current day.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from cliffwatch.analytics.errors import AnalyticsError

_DURATION = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$", re.IGNORECASE)
_UNIT = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class WindowError(AnalyticsError, ValueError):
    """A ``--since`` / ``--until`` value that cannot be read, or a window that is empty."""


def _naive_utc(value: date | datetime | None) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value
    return datetime.combine(value, time())


def utc_now() -> datetime:
    """The current time as a naive UTC datetime (the store's convention)."""
    return datetime.now(UTC).replace(tzinfo=None)


def parse_when(text: str, *, now: datetime | None = None) -> datetime:
    """Read one window end (see the module docstring for the accepted forms).

    Args:
        text: what the user typed.
        now: the reference for durations and ``today`` (naive UTC); default the clock.

    Returns:
        A naive UTC datetime.

    Raises:
        WindowError: ``text`` is none of the accepted forms, or a time out of datetime's
            range (a duration reaching back before year 1).
    """
    raw = text.strip()
    ref = _naive_utc(now) if now is not None else utc_now()
    assert ref is not None
    if raw.lower() == "today":
        return datetime.combine(ref.date(), time())
    match = _DURATION.match(raw)
    if match:
        amount, unit = int(match.group(1)), match.group(2).lower()
        try:
            return ref - timedelta(**{_UNIT[unit]: amount})
        except OverflowError:  # before year 1, or past timedelta's range (C int days)
            raise WindowError(f"{text!r} reaches back before year 1: give a shorter "
                              "duration or a date") from None
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise WindowError(
            f"cannot read {text!r} as a time: use a date (2026-11-01), a date and time "
            "(2026-11-01T12:30), a duration back from now (30m, 24h, 7d, 2w) or 'today'"
        ) from None
    try:
        result = _naive_utc(parsed)
    except OverflowError:  # an offset that moves year 1 or 9999 out of range in UTC
        raise WindowError(f"{text!r} is out of range in UTC (years 1-9999)") from None
    assert result is not None
    return result


@dataclass(frozen=True, slots=True)
class Window:
    """A half-open time window ``since <= t < until`` in naive UTC; None is an open end.

    Dates are taken as midnight UTC at the start of the day, aware datetimes are converted
    to UTC. ``Window()`` is every time there is.

    Raises:
        WindowError: ``since`` is not before ``until``.
    """

    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        since, until = _naive_utc(self.since), _naive_utc(self.until)
        object.__setattr__(self, "since", since)
        object.__setattr__(self, "until", until)
        if since is not None and until is not None and not since < until:
            raise WindowError(
                f"empty window: since {since.isoformat(sep=' ', timespec='seconds')} UTC "
                f"is not before until {until.isoformat(sep=' ', timespec='seconds')} UTC"
            )

    @classmethod
    def parse(
        cls, since: str | None = None, until: str | None = None, *, now: datetime | None = None
    ) -> Window:
        """The window of a ``--since`` / ``--until`` pair of strings (None or "" = open).

        Raises:
            WindowError: either string cannot be read, or the window is empty.
        """
        return cls(
            parse_when(since, now=now) if since else None,
            parse_when(until, now=now) if until else None,
        )

    def conditions(self, column: str) -> tuple[list[str], dict[str, Any]]:
        """SQL conditions on ``column`` and their named parameters (``$since``, ``$until``).

        Args:
            column: a trusted SQL expression of type TIMESTAMP (never user input).

        Returns:
            ``(conditions, params)``: a list to AND together (empty for an open window)
            and the values for DuckDB's ``params=``.
        """
        conds: list[str] = []
        params: dict[str, Any] = {}
        if self.since is not None:
            conds.append(f"{column} >= $since")
            params["since"] = self.since
        if self.until is not None:
            conds.append(f"{column} < $until")
            params["until"] = self.until
        return conds, params
