"""The OpenTelemetry Collector's ClickHouse trace table (``otel_traces``), both ways.

The Collector's ``clickhouse`` exporter (opentelemetry-collector-contrib,
``exporter/clickhouseexporter``; docs/sources.md#clickhouse-exporter) creates one table of
spans and writes one row per span. This module holds that table's DDL (column names and
types, the Map attribute columns and the Nested ``Events`` / ``Links``, engine, partition
and ORDER BY as the exporter creates it, no TTL) and the two conversions cliffwatch needs:

- :func:`spans_to_rows`: decoded spans (:class:`~telemetry.otlp_decode.OtlpSpan`) to the
  exporter's rows, as an Arrow table (what ``serve``, the orchestrator and ``migrate``
  write when pointed at ClickHouse);
- :func:`rows_to_spans`: the exporter's rows back to :class:`OtlpSpan` values, which then
  go through the one mapping (:func:`telemetry.otlp_mapping.map_spans`): a span gets the
  same LLM-call, cost and task-class verdict whichever way it came in.

How the exporter renders values (``pcommon.Value.AsString`` in the Collector's pdata, what
its ``attributesToMap`` calls): a string as is; an int in decimal; a double as ECMAScript
prints a number (``0.5``, ``1e-7``, ``3`` for 3.0); a bool as ``true`` / ``false``; an
array or map as compact JSON; bytes as base64. ``SpanKind`` is written as the pdata name
(``Internal``, ``Server``, ``Client``, ``Producer``, ``Consumer``, ``Unspecified``) and the
status code likewise (``Unset``, ``Ok``, ``Error``); older exporter releases wrote the
proto names (``SPAN_KIND_SERVER``, ``STATUS_CODE_ERROR``), which are read too.

Reading back, a value's type is not stored, so :func:`parse_value` restores it from the
text: ``true`` / ``false`` become bools, a decimal integer an int, a decimal or exponent
number a float, a JSON array of scalars a list (OTel attribute arrays hold scalars of one
type); everything else stays text (a JSON text of objects, as prompt messages are, stays
text). What that loses: a string attribute that looks like a number or an array of
scalars comes back as one, and a double with an integral value as an int. Neither changes
what the mapping derives (token counts, costs and ids are read through numeric and text
coercion alike); the attributes JSON of the record may show ``3`` where the span said
``3.0``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from cliffwatch.telemetry.otlp_decode import OtlpSpan

DEFAULT_TRACES_TABLE = "otel_traces"
"""The exporter's default ``traces_table_name``."""

_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS {table} (
    Timestamp DateTime64(9) CODEC(Delta, ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    ParentSpanId String CODEC(ZSTD(1)),
    TraceState String CODEC(ZSTD(1)),
    SpanName LowCardinality(String) CODEC(ZSTD(1)),
    SpanKind LowCardinality(String) CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeName String CODEC(ZSTD(1)),
    ScopeVersion String CODEC(ZSTD(1)),
    SpanAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    Duration UInt64 CODEC(ZSTD(1)),
    StatusCode LowCardinality(String) CODEC(ZSTD(1)),
    StatusMessage String CODEC(ZSTD(1)),
    Events Nested (
        Timestamp DateTime64(9),
        Name LowCardinality(String),
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    Links Nested (
        TraceId String,
        SpanId String,
        TraceState String,
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_key mapKeys(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_value mapValues(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_duration Duration TYPE minmax GRANULARITY 1
) ENGINE = MergeTree()
PARTITION BY toDate(Timestamp)
ORDER BY (ServiceName, SpanName, toDateTime(Timestamp))
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1
"""

COLUMNS: tuple[str, ...] = (
    "Timestamp", "TraceId", "SpanId", "ParentSpanId", "TraceState", "SpanName", "SpanKind",
    "ServiceName", "ResourceAttributes", "ScopeName", "ScopeVersion", "SpanAttributes",
    "Duration", "StatusCode", "StatusMessage", "Events.Timestamp", "Events.Name",
    "Events.Attributes", "Links.TraceId", "Links.SpanId", "Links.TraceState",
    "Links.Attributes",
)
"""The exporter's insert columns, in its order (Nested columns as their flattened arrays)."""

_TEXT_MAP = pa.map_(pa.string(), pa.string())
_NS = pa.timestamp("ns", tz="UTC")

ARROW_SCHEMA = pa.schema([
    ("Timestamp", _NS),
    ("TraceId", pa.string()),
    ("SpanId", pa.string()),
    ("ParentSpanId", pa.string()),
    ("TraceState", pa.string()),
    ("SpanName", pa.string()),
    ("SpanKind", pa.string()),
    ("ServiceName", pa.string()),
    ("ResourceAttributes", _TEXT_MAP),
    ("ScopeName", pa.string()),
    ("ScopeVersion", pa.string()),
    ("SpanAttributes", _TEXT_MAP),
    ("Duration", pa.uint64()),
    ("StatusCode", pa.string()),
    ("StatusMessage", pa.string()),
    ("Events.Timestamp", pa.list_(_NS)),
    ("Events.Name", pa.list_(pa.string())),
    ("Events.Attributes", pa.list_(_TEXT_MAP)),
    ("Links.TraceId", pa.list_(pa.string())),
    ("Links.SpanId", pa.list_(pa.string())),
    ("Links.TraceState", pa.list_(pa.string())),
    ("Links.Attributes", pa.list_(_TEXT_MAP)),
])
"""Arrow shape of the exporter's rows (:func:`spans_to_rows`, :func:`rows_to_spans`)."""

SPAN_KIND_NAMES = ("Unspecified", "Internal", "Server", "Client", "Producer", "Consumer")
"""pdata ``SpanKind.String()`` by OTLP kind number (what the exporter writes)."""
_LEGACY_KINDS = ("SPAN_KIND_UNSPECIFIED", "SPAN_KIND_INTERNAL", "SPAN_KIND_SERVER",
                 "SPAN_KIND_CLIENT", "SPAN_KIND_PRODUCER", "SPAN_KIND_CONSUMER")
_KIND_NUMBERS = {
    **{name: n for n, name in enumerate(SPAN_KIND_NAMES)},
    **{name: n for n, name in enumerate(_LEGACY_KINDS)},
}

STATUS_NAMES = {"unset": "Unset", "ok": "Ok", "error": "Error"}
"""The store's status words to pdata ``StatusCode.String()`` (what the exporter writes)."""
_STATUS_WORDS = {
    "Unset": "unset", "Ok": "ok", "Error": "error",
    "STATUS_CODE_UNSET": "unset", "STATUS_CODE_OK": "ok", "STATUS_CODE_ERROR": "error",
}


class TableNameError(ValueError):
    """A traces table name that is not a plain ClickHouse identifier."""


def checked_table_name(name: str) -> str:
    """``name`` when it is a plain identifier (letters, digits, ``_``); it is put into SQL.

    Raises:
        TableNameError: anything else, with a one-line message.
    """
    if not _TABLE_NAME.match(name):
        raise TableNameError(f"traces table name {name!r} is not a plain identifier")
    return name


def create_table_sql(table: str = DEFAULT_TRACES_TABLE) -> str:
    """The exporter's ``CREATE TABLE IF NOT EXISTS`` for the traces table ``table``
    (no TTL: the exporter adds one only when ``ttl`` is configured).

    Raises:
        TableNameError: ``table`` is not a plain identifier.
    """
    return _CREATE_TABLE.format(table=checked_table_name(table))


# --- values ------------------------------------------------------------------------------


def _number_text(value: float) -> str:
    """A double as ECMAScript (and pdata's ``AsString``) prints it."""
    if not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if value == 0:
        return "0"
    if value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    if 1e-6 <= abs(value) < 1e21:
        text = repr(value)
        if "e" not in text:
            return text
        # repr writes exponents below 1e-4 and from 1e16; ECMAScript only below 1e-6 and
        # from 1e21: the same shortest digits, written out.
        return format(Decimal(text), "f")
    mantissa, exponent = repr(value).split("e")
    return f"{mantissa}e{int(exponent):+d}"


def render_value(value: Any) -> str:
    """An attribute value as the exporter writes it into a ``Map(String, String)`` cell
    (module docstring); None becomes the empty string."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _number_text(value)
    if value is None:
        return ""
    if isinstance(value, bytes):
        import base64

        return base64.b64encode(value).decode("ascii")
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True,
                      default=str)


_INT = re.compile(r"-?(?:0|[1-9][0-9]{0,18})")
_FLOAT = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:e[+-][0-9]+)?")
_INT64 = 2**63


def parse_value(text: str) -> Any:
    """The typed value an exporter cell most likely held (module docstring says what is
    lost): bool, int (within int64), float, a list of scalars, or the text itself."""
    if text == "true":
        return True
    if text == "false":
        return False
    if _INT.fullmatch(text):
        number = int(text)
        return number if -_INT64 <= number < _INT64 else text
    if ("." in text or "e" in text) and _FLOAT.fullmatch(text):
        value = float(text)
        return value if math.isfinite(value) else text
    if text.startswith("[") and text.endswith("]"):
        try:
            items = json.loads(text)
        except ValueError:
            return text
        if isinstance(items, list) and all(
            isinstance(item, str | int | float | bool) for item in items
        ):
            return items
    return text


def render_attributes(attributes: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Attributes as the exporter's Map cell: ``(key, rendered value)`` pairs."""
    return [(str(key), render_value(value)) for key, value in attributes.items()]


def parse_attributes(cell: Iterable[tuple[str, str]] | Mapping[str, str] | None) -> dict[str, Any]:
    """A Map cell (pairs, as Arrow gives it, or a dict) back to typed attributes."""
    if cell is None:
        return {}
    pairs = cell.items() if isinstance(cell, Mapping) else cell
    return {key: parse_value(value) for key, value in pairs}


# --- spans -> rows -------------------------------------------------------------------------


def spans_to_rows(spans: Iterable[OtlpSpan]) -> pa.Table:
    """Decoded spans as the exporter's rows (:data:`ARROW_SCHEMA`), one row per span.

    ``Timestamp`` is the start (ns, UTC), ``Duration`` the end minus the start in ns,
    ``ServiceName`` the resource's ``service.name`` when it is text (else empty), the
    scope in ``ScopeName`` / ``ScopeVersion``; ids lowercase hex, a root's parent empty.
    ``TraceState`` and ``Links`` are empty: :class:`OtlpSpan` keeps neither.
    """
    columns: dict[str, list[Any]] = {name: [] for name in ARROW_SCHEMA.names}
    resource_cells: dict[int, tuple[Mapping[str, Any], list[tuple[str, str]]]] = {}
    for span in spans:
        resource = span.resource_attributes
        known = resource_cells.get(id(resource))
        if known is None or known[0] is not resource:
            known = resource_cells[id(resource)] = (resource, render_attributes(resource))
        service = resource.get("service.name")
        columns["Timestamp"].append(span.start_time_unix_nano)
        columns["TraceId"].append(span.trace_id)
        columns["SpanId"].append(span.span_id)
        columns["ParentSpanId"].append(span.parent_span_id or "")
        columns["TraceState"].append("")
        columns["SpanName"].append(span.name)
        kind = span.kind if 0 <= span.kind < len(SPAN_KIND_NAMES) else 0
        columns["SpanKind"].append(SPAN_KIND_NAMES[kind])
        columns["ServiceName"].append(service if isinstance(service, str) else "")
        columns["ResourceAttributes"].append(known[1])
        columns["ScopeName"].append(span.scope_name or "")
        columns["ScopeVersion"].append(span.scope_version or "")
        columns["SpanAttributes"].append(render_attributes(span.attributes))
        columns["Duration"].append(max(0, span.end_time_unix_nano - span.start_time_unix_nano))
        columns["StatusCode"].append(STATUS_NAMES.get(span.status_code, "Unset"))
        columns["StatusMessage"].append(span.status_message or "")
        columns["Events.Timestamp"].append([int(e.get("time_unix_nano") or 0) for e in span.events])
        columns["Events.Name"].append([str(e.get("name") or "") for e in span.events])
        columns["Events.Attributes"].append(
            [render_attributes(e.get("attributes") or {}) for e in span.events]
        )
        for name in ("Links.TraceId", "Links.SpanId", "Links.TraceState", "Links.Attributes"):
            columns[name].append([])
    return pa.table(
        [pa.array(columns[f.name], type=f.type) for f in ARROW_SCHEMA], schema=ARROW_SCHEMA
    )


# --- rows -> spans -------------------------------------------------------------------------


def _ns(column: pa.ChunkedArray | pa.Array) -> list[int | None]:
    """A timestamp column (any unit, zone or none) as integer ns since the epoch."""
    typ = column.type
    if pa.types.is_timestamp(typ):
        if typ.unit != "ns":
            column = pc.cast(column, pa.timestamp("ns", tz=typ.tz))
        column = column.cast(pa.int64())
    return column.to_pylist()


def _event_times(column: pa.ChunkedArray | pa.Array) -> list[list[int]]:
    typ = column.type
    if not (pa.types.is_list(typ) or pa.types.is_large_list(typ)):
        return column.to_pylist()
    inner = typ.value_type
    if pa.types.is_timestamp(inner):
        target = pa.list_(pa.int64())
        if inner.unit != "ns":
            column = pc.cast(column, pa.list_(pa.timestamp("ns", tz=inner.tz)))
        column = column.cast(target)
    return column.to_pylist()


def rows_to_spans(rows: pa.Table) -> list[OtlpSpan]:
    """The exporter's rows (at least the non-``Links`` columns of :data:`COLUMNS`, as read
    from ClickHouse or made by :func:`spans_to_rows`) back to decoded spans, in row order.

    Attribute values are re-typed by :func:`parse_value`; the kind and status accept the
    current and the legacy exporter names. Rows with an empty ``TraceId`` or ``SpanId``
    are skipped (no span to map).
    """
    if rows.num_rows == 0:
        return []
    starts = _ns(rows.column("Timestamp"))
    durations = rows.column("Duration").to_pylist()
    event_times = _event_times(rows.column("Events.Timestamp"))
    plain = {
        name: rows.column(name).to_pylist()
        for name in ("TraceId", "SpanId", "ParentSpanId", "SpanName", "SpanKind",
                     "ResourceAttributes", "ScopeName", "ScopeVersion", "SpanAttributes",
                     "StatusCode", "StatusMessage", "Events.Name", "Events.Attributes")
    }
    resources: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
    spans: list[OtlpSpan] = []
    for i in range(rows.num_rows):
        trace_id, span_id = plain["TraceId"][i], plain["SpanId"][i]
        if not trace_id or not span_id:
            continue
        resource_cell = tuple(plain["ResourceAttributes"][i] or ())
        resource = resources.get(resource_cell)
        if resource is None:
            resource = resources[resource_cell] = parse_attributes(resource_cell)
        start = int(starts[i] or 0)
        names = plain["Events.Name"][i] or []
        times = event_times[i] or []
        attrs = plain["Events.Attributes"][i] or []
        spans.append(OtlpSpan(
            trace_id=trace_id.lower(),
            span_id=span_id.lower(),
            parent_span_id=(plain["ParentSpanId"][i] or "").lower() or None,
            name=plain["SpanName"][i] or "",
            kind=_KIND_NUMBERS.get(plain["SpanKind"][i] or "", 0),
            start_time_unix_nano=start,
            end_time_unix_nano=start + int(durations[i] or 0),
            status_code=_STATUS_WORDS.get(plain["StatusCode"][i] or "", "unset"),
            status_message=plain["StatusMessage"][i] or None,
            attributes=parse_attributes(plain["SpanAttributes"][i]),
            resource_attributes=resource,
            scope_name=plain["ScopeName"][i] or None,
            scope_version=plain["ScopeVersion"][i] or None,
            events=tuple(
                {"name": name, "time_unix_nano": int(when or 0),
                 "attributes": parse_attributes(cell)}
                for name, when, cell in zip(names, times, attrs, strict=False)
            ),
        ))
    return spans


def select_columns_sql(prefix: str = "") -> str:
    """The column list :func:`rows_to_spans` reads, for a ``SELECT`` (``prefix`` is a
    table alias with its dot, or empty); Nested sub-columns are back-quoted."""
    wanted = [c for c in COLUMNS if not c.startswith("Links.")]
    return ", ".join(f"{prefix}`{c}`" for c in wanted)

