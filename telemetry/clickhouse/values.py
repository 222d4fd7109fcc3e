"""Small conversions at the ClickHouse boundary shared by ``watch`` and its delivery."""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa


def quoted(values: Iterable[object]) -> str:
    """A ClickHouse list of string literals (``'a', 'b'``), backslashes and quotes escaped;
    empty for no values."""
    return ", ".join(
        "'" + str(v).replace("\\", "\\\\").replace("'", "\\'") + "'" for v in values
    )


def naive_utc(table: pa.Table) -> pa.Table:
    """``table`` with ClickHouse's UTC-aware timestamps as the naive UTC ones the DuckDB
    store keeps (same instants, zone dropped)."""
    fields = [
        pa.field(f.name, pa.timestamp(f.type.unit)) if pa.types.is_timestamp(f.type) else f
        for f in table.schema
    ]
    return table.cast(pa.schema(fields))
