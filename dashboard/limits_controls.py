"""The limits form the Replay and What-if pages share: cap, ceiling and cap policy.

Each widget is bound to a query parameter (``max_workers``, ``ceiling_usd``, ``policy``:
the names :func:`dashboard.links.limit_params` writes), so a link carries the limits and
both pages read the same link the same way. An empty widget keeps the limit each run was
recorded with; 0 switches a limit off (:meth:`analytics.replay.LimitsOverride.parse`).
"""

from __future__ import annotations

import streamlit as st

from cliffwatch.analytics.replay import LimitsOverride
from cliffwatch.dashboard import paint_gate

POLICIES: tuple[str, ...] = ("reject", "replan", "truncate")
"""The cap policies offered (``telemetry.conventions.CapPolicy``'s values)."""

WHATIF_DEFAULT_CAP = 8
"""The What-if page's cap until the user (or the URL) sets one: the handbook's cap (the
dashboard's start-up computes the page's analysis under it, :mod:`dashboard.serve`)."""

AS_RECORDED = "as recorded"
"""What an empty widget shows: the run's own limit is kept."""

LIMIT_KEYS: tuple[str, ...] = ("max_workers", "ceiling_usd", "policy")
"""The widgets' keys, each its query parameter."""

CONTROLS_HEIGHT_PX = 68
"""The height the row of widgets takes: their place while they wait for the first paint."""


def limits_controls(*, default_cap: int | None = None,
                    page: str | None = None) -> LimitsOverride:
    """Draw the three limit widgets in a row and read them.

    Args:
        default_cap: the max-workers value shown before the user (or the URL) sets one;
            None leaves the box empty (as recorded).
        page: the gated page (:mod:`dashboard.paint_gate`) drawing them: before its first
            paint, with none of the limits set (:func:`paint_gate.widgets_wait`), only
            their place is drawn and their defaults read; the widgets come in the run
            the gate asks for. None: always drawn.

    Returns:
        The limits asked for.

    Raises:
        ReplayError: a value :meth:`LimitsOverride.parse` rejects (the widgets' own
            bounds already keep the cap and ceiling at 0 or above).
    """
    if page is not None:
        return paint_gate.widgets(page, LIMIT_KEYS, CONTROLS_HEIGHT_PX,
                                  lambda: limits_controls(default_cap=default_cap),
                                  LimitsOverride.parse(default_cap, None, None))
    controls = st.columns(3)
    cap = controls[0].number_input("Max workers", min_value=0, step=1, value=default_cap,
                                   placeholder=AS_RECORDED, key="max_workers",
                                   bind="query-params")
    ceiling = controls[1].number_input("Ceiling (USD per run)", min_value=0.0, step=0.01,
                                       value=None, format="%.4f", placeholder=AS_RECORDED,
                                       key="ceiling_usd", bind="query-params")
    policy = controls[2].selectbox("Cap policy", POLICIES, index=None, placeholder=AS_RECORDED,
                                   key="policy", bind="query-params")
    return LimitsOverride.parse(cap, ceiling, policy)
