"""Alerts for reading: the alert rules as configured, and the alerts with their webhook
deliveries (status, attempts, last error) from the store.

The dashboard reads alerts through here (it never imports telemetry itself). The rules
and the delivery protocol are :mod:`telemetry.alert_rules` and :mod:`telemetry.alerts`;
the deliveries are :func:`telemetry.alerts.list_alerts`, as ``cliffwatch alerts`` shows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import duckdb
import polars as pl

from cliffwatch import settings
from cliffwatch.analytics.runs import scope_filter
from cliffwatch.analytics.window import Window
from cliffwatch.formatting import number, usd
from cliffwatch.telemetry.alert_rules import redact
from cliffwatch.telemetry.alerts import NO_WEBHOOK, STATUSES, list_alerts

T = TypeVar("T")

DELIVERY_STATUSES: tuple[str, ...] = (*STATUSES, NO_WEBHOOK)
"""Every status a row of :func:`alert_deliveries` can have."""

OFF = "off"
"""The setting text of a rule that is switched off."""

__all__ = ["DELIVERY_STATUSES", "alert_deliveries", "alert_rules", "delivery_counts"]


def _setting(read: Callable[[], T | None], show: Callable[[T], str]) -> str:
    try:
        value = read()
    except settings.SettingError as exc:
        return f"cannot be read: {exc}"
    return OFF if value is None else show(value)


def alert_rules() -> pl.DataFrame:
    """The alert rules and delivery settings in force for this process, as text.

    Read from ``cliffwatch.settings`` (the environment) now: a writer process with other
    settings raises alerts by its own. Webhook URLs are secrets: only their redacted form
    (scheme and host) is shown.

    Returns:
        Columns ``rule`` (what it watches), ``setting`` (the environment variable) and
        ``value`` (text: the threshold, :data:`OFF`, or ``cannot be read: ...``).
    """
    window = _setting(settings.alert_window_h, lambda h: f"{number(h, 1)} h")
    rows = [
        ("Every new incident", "-", "always on"),
        ("P99 / P50 of a class over the last "
         f"{window}", settings.CLIFFWATCH_ALERT_CLIFF_RATIO,
         _setting(settings.alert_cliff_ratio, lambda r: f"above {number(r, 1)}x")),
        ("Spend of one UTC day", settings.CLIFFWATCH_ALERT_DAILY_SPEND_USD,
         _setting(settings.alert_daily_spend_usd, lambda u: f"above {usd(u)}")),
        ("Cap or ceiling breaches in one UTC hour", settings.CLIFFWATCH_ALERT_BREACHES_PER_HOUR,
         _setting(settings.alert_breaches_per_hour, lambda n: f"{n} or more")),
        ("Webhooks", settings.CLIFFWATCH_WEBHOOK_URLS,
         _setting(settings.webhook_urls,
                  lambda urls: ", ".join(redact(u) for u in urls) or "none")),
        ("Attempts per delivery", settings.CLIFFWATCH_ALERT_MAX_ATTEMPTS,
         _setting(settings.alert_max_attempts, str)),
        ("First retry after", settings.CLIFFWATCH_ALERT_BACKOFF_S,
         _setting(settings.alert_backoff_s, lambda s: f"{number(s, 1)} s, doubling")),
    ]
    return pl.DataFrame(rows, schema=["rule", "setting", "value"], orient="row")


def alert_deliveries(
    con: duckdb.DuckDBPyConnection,
    window: Window = Window(),  # noqa: B008 - Window is frozen
    task_class: str | None = None,
    *,
    status: str | None = None,
    limit: int | None = None,
) -> pl.DataFrame:
    """Alerts and their deliveries, newest first: :func:`telemetry.alerts.list_alerts`,
    of the alerts raised in ``window`` (on ``raised_at``) and, when given, of
    ``task_class`` (the class an incident's run or a per-class rule names; an alert of
    no class, such as a day's spend, is then left out), with the filters
    ``runs`` and ``incidents`` share (:func:`analytics.runs.scope_filter`).

    Raises:
        ValueError: ``status`` is not one of :data:`DELIVERY_STATUSES`, or ``limit`` < 0.
        UnknownTaskClassError: ``task_class`` has no runs in the store.
    """
    conds, params = scope_filter(con, window, "raised_at", task_class)
    return list_alerts(con, status=status, limit=limit, conditions=conds, params=params)


def delivery_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """How many deliveries have each status (alerts without a webhook counted as
    :data:`NO_WEBHOOK`), over every alert; statuses with none are absent."""
    counts = list_alerts(con).group_by("status").len()
    return dict(zip(counts["status"].to_list(), counts["len"].to_list(), strict=True))
