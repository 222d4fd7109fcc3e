"""Typed reads of one value from a polars column.

polars types ``Series.max()``, ``.median()``, ``.quantile()`` and ``series[i]`` as any
Python literal (or None) whatever the column's dtype, so mypy cannot see that the max of a
Float64 column is a float. These helpers state what the caller knows about its column and
convert exactly as a bare ``float()`` / ``int()`` would: a None (an empty or all-null
column) still raises TypeError, so callers keep checking for empty columns themselves.
"""

from __future__ import annotations

from datetime import datetime
from typing import cast


def as_float(value: object) -> float:
    """``float(value)`` of an aggregate or item of a numeric column."""
    return float(cast(float, value))


def as_int(value: object) -> int:
    """``int(value)`` of an aggregate or item of an integer column."""
    return int(cast(int, value))


def as_datetime(value: object) -> datetime:
    """An aggregate or item of a Datetime column, unchanged (no conversion at run time)."""
    return cast(datetime, value)
