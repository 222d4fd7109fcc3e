"""What the Alerts page reads: the alerts and their webhook deliveries, cached like
:mod:`dashboard.queries` and called through :func:`dashboard.queries.fetch`."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import streamlit as st

from cliffwatch.analytics.alert_view import alert_deliveries, delivery_counts
from cliffwatch.analytics.store_access import read_store
from cliffwatch.dashboard.queries import CACHE_TTL_S


@dataclass(frozen=True, slots=True)
class AlertsData:
    """The Alerts page's data.

    Attributes:
        deliveries: :func:`analytics.alert_view.alert_deliveries` rows, newest first.
        counts: deliveries per status over every alert (not only those shown).
    """

    deliveries: pl.DataFrame
    counts: dict[str, int]


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def load_alerts(
    db: str, version: tuple[int, ...], status: str | None, limit: int
) -> AlertsData:
    """The newest ``limit`` deliveries (with ``status`` only, when given) and the counts.

    Raises:
        StoreError: the store is missing, not a store, or busy.
    """
    with read_store(db) as con:
        return AlertsData(alert_deliveries(con, status=status, limit=limit),
                          delivery_counts(con))
