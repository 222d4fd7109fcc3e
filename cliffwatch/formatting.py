"""How cliffwatch writes money and numbers as text: one rule for the CLI, the dashboard,
the reports and the charts, so the same cost reads the same everywhere.

Money (:func:`usd`):

- from $1 up: cents, with thousands separators: ``$1,234.50``;
- below $1: three significant digits, so a sub-cent cost keeps its digits instead of
  turning into ``$0.0001`` or ``$0.00``: ``$0.000123``, ``$0.0123``, ``$0.125``; zeros
  past the third digit are dropped, but never the cents: ``$0.50``, ``$0.002``;
- zero is ``$0.00``; a negative amount is ``-$0.0123``; ``signed=True`` also marks a
  positive one (``+$0.0123``), for differences;
- nothing is ever abbreviated (no ``$1.2k``) or cut: the only change is rounding to
  three significant digits below $1 and to the cent above.

Numbers (:func:`number`): thousands separators; whole numbers without decimals, others
with a fixed number of decimals (2 unless told).

Missing values (None, NaN) are :data:`MISSING` in both. This module imports nothing
outside the standard library, so any layer may use it.
"""

from __future__ import annotations

import math

MISSING = "-"
"""The text of a missing value (None or NaN)."""

USD_SIGNIFICANT_DIGITS = 3
"""Significant digits of an amount below $1 (costs per call and per run are fractions
of a cent to cents: three digits tell $0.000123 from $0.000129)."""

NUMBER_DECIMALS = 2
"""Decimals :func:`number` gives a fractional number unless told otherwise."""


def _missing(value: float | int | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def usd(value: float | int | None, *, signed: bool = False) -> str:
    """``value`` (USD) as money text: ``$1,234.50``, ``$0.0123``, ``$0.000123``.

    Args:
        value: an amount in US dollars; None or NaN for a missing one.
        signed: put ``+`` before a positive amount (a difference or a saving).

    Returns:
        The text, by the rule in this module's docstring; :data:`MISSING` for a missing
        value. Infinite amounts are ``$inf`` / ``-$inf``.
    """
    if value is None or _missing(value):
        return MISSING
    amount = float(value)
    sign = "-" if amount < 0 else ("+" if signed and amount > 0 else "")
    return f"{sign}${_usd_digits(abs(amount))}"


def _usd_digits(amount: float) -> str:
    """A non-negative amount's digits (no sign, no ``$``)."""
    if not math.isfinite(amount):
        return "inf"
    rounded = float(f"{amount:.{USD_SIGNIFICANT_DIGITS - 1}e}")
    if rounded == 0 or rounded >= 1:
        return f"{amount:,.2f}"
    decimals = USD_SIGNIFICANT_DIGITS - 1 - math.floor(math.log10(rounded))
    whole, _, fraction = f"{rounded:.{decimals}f}".partition(".")
    return f"{whole}.{fraction.rstrip('0').ljust(2, '0')}"


def number(value: float | int | None, decimals: int = NUMBER_DECIMALS) -> str:
    """``value`` as text with thousands separators: ``1,234`` or ``1,234.57``.

    Args:
        value: any number; None or NaN for a missing one.
        decimals: decimals of a fractional (float) value; a whole number (int) has none.

    Returns:
        The text; :data:`MISSING` for a missing value.
    """
    if value is None or _missing(value):
        return MISSING
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{decimals}f}"


CSV_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet read a CSV cell as a formula (OWASP, "CSV
Injection": https://owasp.org/www-community/attacks/CSV_Injection)."""


def csv_cell(value: object) -> object:
    """``value`` safe to write as a CSV cell: text starting with one of
    :data:`CSV_FORMULA_STARTS` gets a leading single quote (``=1+2`` -> ``'=1+2``), as
    OWASP recommends, so a spreadsheet shows it as text; numbers (a negative one too),
    None and anything not text are returned unchanged. The one rule of every CSV
    cliffwatch writes (CLI ``--format csv``, report csv, dashboard downloads)."""
    if isinstance(value, str) and value.startswith(CSV_FORMULA_STARTS):
        return "'" + value
    return value
