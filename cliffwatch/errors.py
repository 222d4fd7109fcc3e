"""The one root of every exception cliffwatch raises on purpose.

An app that embeds cliffwatch (the guard, the litellm callback, tracing) can catch
:class:`CliffwatchError` to handle anything cliffwatch refuses, and let everything else
through. Each layer keeps its own, more precise subclasses (``StoreError``,
``CostCliffError``, ``AnalyticsError``, ...); the CLI turns any of them into one line on
stderr and a non-zero exit, the dashboard into ``st.error``.

This module imports nothing, so it is safe to import first from anywhere.
"""

from __future__ import annotations


class CliffwatchError(Exception):
    """Base class of every error cliffwatch raises deliberately (bad input, a refused plan,
    a missing store, a bad setting). Its ``str`` is one line meant for a person."""
