"""Values made ready for JSON and CSV: the one rule the CLI's ``--format json|csv`` and the
report's JSON both write by, and :func:`json_text`, the one JSON writer of both.

ISO 8601 text for dates and datetimes, a datetime always with its UTC offset as ``Z``
(the store holds naive UTC: ``2026-11-06T00:00:00Z``), and None for a missing number, NaN
and infinities included (JSON has no NaN). Code that builds data for JSON hands over
datetime objects, never ISO text of its own: :func:`json_text` writes them.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime
from typing import Any

import polars as pl

from cliffwatch.formatting import csv_cell


def plain_value(value: Any) -> Any:
    """``value`` ready for JSON or CSV: ISO text for a date, ISO text ending in ``Z`` (UTC)
    for a datetime, None for a non-finite float, anything else unchanged. Also usable as
    ``json.dumps(..., default=plain_value)``.
    """
    if isinstance(value, datetime):
        utc = value.astimezone(UTC) if value.tzinfo is not None else value
        return utc.replace(tzinfo=None).isoformat() + "Z"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def plain_tree(data: Any) -> Any:
    """``data`` (dicts, lists and tuples, nested) with every leaf passed through
    :func:`plain_value` (tuples become lists)."""
    if isinstance(data, dict):
        return {key: plain_tree(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [plain_tree(value) for value in data]
    return plain_value(data)


def json_text(data: Any) -> str:
    """``data`` as indented JSON text, every value through :func:`plain_value` (datetimes
    as ISO 8601 UTC ending in ``Z``, NaN as null): the CLI's ``--format json``
    (:func:`cliffwatch.cli.output.json_out`) and the report's JSON are written by it."""
    return json.dumps(plain_tree(data), indent=2, default=plain_value)


def plain_rows(df: pl.DataFrame) -> list[dict[str, Any]]:
    """Every row of ``df`` as ``{column: plain_value(cell)}``, in order."""
    return [{k: plain_value(v) for k, v in row.items()} for row in df.iter_rows(named=True)]


def csv_safe_frame(df: pl.DataFrame) -> pl.DataFrame:
    """``df`` with every text (String) column passed through
    :func:`cliffwatch.formatting.csv_cell` (no formula in a CSV cell); numeric columns are
    left as they are. For ``DataFrame.write_csv``: the report's and the dashboard's CSV."""
    text = [c for c, t in df.schema.items() if t == pl.String]
    return df.with_columns(
        pl.col(c).map_elements(csv_cell, return_dtype=pl.String, skip_nulls=True)
        for c in text
    )
