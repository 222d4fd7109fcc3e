"""Table cells as text: durations in the unit that reads, counts with thousands
separators, missing values as ``-`` (never ``None``), span data made safe to show.

Tables built from these are shown with ``st.dataframe``, which renders every cell as
plain text (no markdown, no HTML), so data needs no escaping there; control characters
are still shown as escapes so a cell never holds a raw newline or terminal escape.
"""

from __future__ import annotations

import math
import re

import polars as pl

from cliffwatch.formatting import MISSING, number

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def text(value: object) -> str:
    """``value`` as one line of plain text: control characters escaped (``\\n``), None
    as ``-``."""
    if value is None:
        return MISSING
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode(), str(value))


def duration(ms: float | None) -> str:
    """Milliseconds in the unit that reads: ``850 ms``, ``12.3 s``, ``4.5 min``, ``2.1 h``;
    ``-`` when missing."""
    if ms is None or math.isnan(ms):
        return MISSING
    if abs(ms) < 1_000:
        return f"{ms:,.0f} ms"
    if abs(ms) < 60_000:
        return f"{ms / 1_000:,.1f} s"
    if abs(ms) < 3_600_000:
        return f"{ms / 60_000:,.1f} min"
    return f"{ms / 3_600_000:,.1f} h"


def count(value: float | None, decimals: int = 1) -> str:
    """A count with thousands separators: whole values without decimals (``1,234``),
    interpolated percentiles with ``decimals`` (``1,234.5``); ``-`` when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if float(value).is_integer():
        return number(int(value))
    return number(float(value), decimals)


def text_columns(df: pl.DataFrame, *columns: str) -> pl.DataFrame:
    """``df`` with ``columns`` (String) through :func:`text`: no null, no control char."""
    return df.with_columns(
        pl.col(c).map_elements(text, return_dtype=pl.String, skip_nulls=False) for c in columns
    )
