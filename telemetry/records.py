"""The one plain record every span becomes before anything else touches it.

An SDK span (our own orchestrator), an OTLP protobuf span, an OTLP/JSON span and a litellm
callback all convert at the boundary into :class:`SpanRecord`; the store writes only
records. One mapping, ``telemetry.otlp_mapping.map_span``, turns a decoded OTLP span
(``telemetry.otlp_decode``) into this shape; SDK spans go through it too
(``telemetry.sdk_mapping``) and so do litellm callback calls.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, fields

import pyarrow as pa

from cliffwatch.telemetry.frozen_init import fast_frozen_init


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class SpanRecord:
    """One span, flattened to the columns of the store's ``spans`` table.

    Ids are the OTel lowercase hex ids: ``trace_id`` 32 chars, ``span_id`` and
    ``parent_span_id`` 16 chars (``parent_span_id`` is None for a root). Times are integer
    nanoseconds since the Unix epoch (UTC). ``cost_usd`` is None when the call is unpriced
    or the span is not an LLM call. ``attributes``, ``resource_attributes`` and ``events``
    are JSON text (an object, an object, an array).

    Token counts of an LLM call follow the GenAI conventions: ``input_tokens`` includes
    ``cache_read_tokens`` and ``cache_creation_tokens`` (``input_tokens_reported`` is the
    count as the producer reported it, which some producers keep apart from the cache
    tokens) and ``output_tokens`` includes ``reasoning_tokens``. The ``price_*`` columns
    are the USD-per-token rates ``computed_cost_usd`` was billed at (litellm's, the tier's
    rate above a prompt-size threshold), so ``telemetry.pricing.recompute_cost_usd``
    rebuilds it from the row alone. ``cost_usd`` is ``reported_cost_usd`` when the producer
    reported one (``cost_source`` ``provider``), else ``computed_cost_usd``.
    ``cache_detail_missing`` marks a computed cost on a model that prices cache reads
    apart when the producer gave no cache split: an upper bound.
    """

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    start_time_unix_nano: int
    end_time_unix_nano: int
    status_code: str  # "unset" | "ok" | "error"
    status_message: str | None
    role: str  # telemetry.conventions.Role
    task_class: str | None
    is_llm_call: bool
    operation: str | None
    provider: str | None
    request_model: str | None
    response_model: str | None
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float | None
    cost_source: str | None  # telemetry.conventions.CostSource, None when not a call
    price_input_usd_per_token: float | None
    price_output_usd_per_token: float | None
    service_name: str | None
    source: str  # producer: "cliffwatch" | "otlp" | "litellm" | "guard" | ...
    attributes: str = "{}"
    resource_attributes: str = "{}"
    events: str = "[]"
    input_tokens_reported: int | None = None
    cache_read_tokens: int | None = None
    cache_creation_tokens: int | None = None
    reasoning_tokens: int | None = None
    price_cache_read_usd_per_token: float | None = None
    price_cache_creation_usd_per_token: float | None = None
    price_reasoning_usd_per_token: float | None = None
    price_model_key: str | None = None
    reported_cost_usd: float | None = None
    computed_cost_usd: float | None = None
    cache_detail_missing: bool | None = None

    @property
    def duration_ms(self) -> float:
        """End minus start, in milliseconds."""
        return (self.end_time_unix_nano - self.start_time_unix_nano) / 1e6


SPAN_RECORD_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(SpanRecord))

ARROW_SCHEMA = pa.schema(
    [
        ("trace_id", pa.string()),
        ("span_id", pa.string()),
        ("parent_span_id", pa.string()),
        ("name", pa.string()),
        ("start_time_unix_nano", pa.int64()),
        ("end_time_unix_nano", pa.int64()),
        ("status_code", pa.string()),
        ("status_message", pa.string()),
        ("role", pa.string()),
        ("task_class", pa.string()),
        ("is_llm_call", pa.bool_()),
        ("operation", pa.string()),
        ("provider", pa.string()),
        ("request_model", pa.string()),
        ("response_model", pa.string()),
        ("input_tokens", pa.int64()),
        ("output_tokens", pa.int64()),
        ("cost_usd", pa.float64()),
        ("cost_source", pa.string()),
        ("price_input_usd_per_token", pa.float64()),
        ("price_output_usd_per_token", pa.float64()),
        ("service_name", pa.string()),
        ("source", pa.string()),
        ("attributes", pa.string()),
        ("resource_attributes", pa.string()),
        ("events", pa.string()),
        ("input_tokens_reported", pa.int64()),
        ("cache_read_tokens", pa.int64()),
        ("cache_creation_tokens", pa.int64()),
        ("reasoning_tokens", pa.int64()),
        ("price_cache_read_usd_per_token", pa.float64()),
        ("price_cache_creation_usd_per_token", pa.float64()),
        ("price_reasoning_usd_per_token", pa.float64()),
        ("price_model_key", pa.string()),
        ("reported_cost_usd", pa.float64()),
        ("computed_cost_usd", pa.float64()),
        ("cache_detail_missing", pa.bool_()),
    ]
)
assert tuple(ARROW_SCHEMA.names) == SPAN_RECORD_FIELDS


_RECORD_ROW = operator.attrgetter(*SPAN_RECORD_FIELDS)


def records_to_arrow(records: list[SpanRecord]) -> pa.Table:
    """Column-wise Arrow table of ``records`` in :data:`ARROW_SCHEMA` (for bulk inserts).

    Each record is read as one tuple (``operator.attrgetter``) and the rows are
    transposed with ``zip``: a C loop, not a Python loop over every field of every record.
    """
    if not records:
        return ARROW_SCHEMA.empty_table()
    columns = zip(*map(_RECORD_ROW, records), strict=True)
    return pa.Table.from_arrays(
        [pa.array(column, type=type_) for column, type_ in zip(columns, ARROW_SCHEMA.types,
                                                               strict=True)],
        schema=ARROW_SCHEMA,
    )


def records_from_arrow(table: pa.Table) -> list[SpanRecord]:
    """Inverse of :func:`records_to_arrow` (used to load spilled batches)."""
    return [SpanRecord(**row) for row in table.select(list(SPAN_RECORD_FIELDS)).to_pylist()]
