"""Map OpenTelemetry spans to :class:`~telemetry.records.SpanRecord`, at the boundary.

:func:`record_from_sdk_span` converts an SDK ``ReadableSpan`` (our own orchestrator's
spans, on their way to the DuckDB exporter). The field rules live in one pure function,
:func:`record_from_otel_fields`, which takes the span's parts as plain Python values so
that an OTLP protobuf or OTLP/JSON decoder can produce the very same record from its
own input (STYLE.md item 4: one mapping, round-trip tested).

Attribute rules (names in :mod:`telemetry.conventions`; fallbacks are the names other
producers use, ../shared/NOTES.md "Attribute names other producers use"):

- ``role``: ``cliff.role`` when it is a :class:`~telemetry.conventions.Role`, else
  ``other`` (or ``call`` for a span that looks like an LLM call when
  ``infer_llm_calls``); ``is_llm_call`` = role in ``LLM_CALL_ROLES``.
- tokens: ``gen_ai.usage.input_tokens`` | ``gen_ai.usage.prompt_tokens`` |
  ``llm.token_count.prompt`` (and output / completion likewise).
- models: ``gen_ai.request.model`` (| ``llm.model_name``) and ``gen_ai.response.model``.
- provider: ``gen_ai.provider.name`` | ``gen_ai.system`` | ``llm.provider``.
- cost: ``cliff.cost_usd`` with ``cliff.cost_source``; else a producer's own cost
  (``gen_ai.usage.cost.amount`` | ``gen_ai.cost.total_cost`` | ``llm.cost.total``) with
  source ``provider``; an LLM call with no cost is ``unpriced`` (never $0).
- prices: ``cliff.price.input_usd_per_token`` / ``cliff.price.output_usd_per_token``.
- ``task_class``: ``cliff.task_class``; ``service_name``: resource ``service.name``.
- ``attributes`` / ``resource_attributes``: JSON objects (sequences become arrays; values
  JSON cannot hold become strings); ``events``: a JSON array of
  ``{name, time_unix_nano, attributes}``.
- status: ``unset`` | ``ok`` | ``error`` and its description.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan

from telemetry import conventions as cv
from telemetry.conventions import LLM_CALL_ROLES, CostSource, Role
from telemetry.records import SpanRecord

INPUT_TOKEN_KEYS = (cv.GEN_AI_USAGE_INPUT_TOKENS, "gen_ai.usage.prompt_tokens",
                    "llm.token_count.prompt")
OUTPUT_TOKEN_KEYS = (cv.GEN_AI_USAGE_OUTPUT_TOKENS, "gen_ai.usage.completion_tokens",
                     "llm.token_count.completion")
REQUEST_MODEL_KEYS = (cv.GEN_AI_REQUEST_MODEL, "llm.model_name")
RESPONSE_MODEL_KEYS = (cv.GEN_AI_RESPONSE_MODEL,)
PROVIDER_KEYS = (cv.GEN_AI_PROVIDER_NAME, "gen_ai.system", "llm.provider")
PRODUCER_COST_KEYS = ("gen_ai.usage.cost.amount", "gen_ai.cost.total_cost", "llm.cost.total")
"""Cost attributes of other producers (there is no official OTel cost attribute yet)."""

LLM_OPERATIONS = frozenset({"chat", "text_completion", "generate_content", "completion"})
"""``gen_ai.operation.name`` values that mark a model call (for ``infer_llm_calls``)."""

_ROLES = frozenset(r.value for r in Role)
_COST_SOURCES = frozenset(c.value for c in CostSource)
_STATUS_CODES = frozenset({"unset", "ok", "error"})


def _first(attrs: Mapping[str, Any], keys: Iterable[str]) -> Any:
    for key in keys:
        value = attrs.get(key)
        if value is not None:
            return value
    return None


def _int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if math.isfinite(number) else None


def _float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN / Infinity
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    return value


def to_json(value: Any) -> str:
    """JSON text of attribute values: tuples as arrays, bytes as hex, NaN as a string,
    anything else JSON cannot hold via ``str``."""
    return json.dumps(_jsonable(value), default=str, separators=(",", ":"))


def record_from_otel_fields(
    *,
    trace_id: int | str,
    span_id: int | str,
    parent_span_id: int | str | None,
    name: str,
    start_time_unix_nano: int,
    end_time_unix_nano: int | None,
    status_code: str,
    status_message: str | None,
    attributes: Mapping[str, Any],
    resource_attributes: Mapping[str, Any],
    events: Iterable[Mapping[str, Any]] = (),
    source: str = "cliffwatch",
    infer_llm_calls: bool = False,
) -> SpanRecord:
    """The one mapping from a span's OTel parts to a :class:`SpanRecord` (pure).

    Args:
        trace_id: the 128-bit trace id, as an int or as hex text.
        span_id: the 64-bit span id, as an int or as hex text.
        parent_span_id: the parent's span id, or None (0 and ``""`` also mean none).
        name: span name.
        start_time_unix_nano: start, ns since the Unix epoch.
        end_time_unix_nano: end, ns; None (a span not ended) counts as the start.
        status_code: ``unset`` | ``ok`` | ``error`` (case-insensitive; OTLP's
            ``STATUS_CODE_OK`` style is accepted too); anything else counts as unset.
        status_message: the status description, if any.
        attributes: span attributes.
        resource_attributes: resource attributes (``service.name``).
        events: each ``{"name", "time_unix_nano", "attributes"}``.
        source: the producer recorded on the row (``cliffwatch``, ``otlp``, ...).
        infer_llm_calls: give role ``call`` to a span without ``cliff.role`` that has a
            model-call ``gen_ai.operation.name`` or token counts (for ingested traces).

    Returns:
        The record; ids as lowercase hex (32 / 16 characters).
    """
    attrs = dict(attributes)
    raw_role = attrs.get(cv.CLIFF_ROLE)
    input_tokens = _int(_first(attrs, INPUT_TOKEN_KEYS))
    output_tokens = _int(_first(attrs, OUTPUT_TOKEN_KEYS))
    operation = _str(attrs.get(cv.GEN_AI_OPERATION_NAME))
    if raw_role is not None and str(raw_role) in _ROLES:
        role = str(raw_role)
    elif infer_llm_calls and (
        operation in LLM_OPERATIONS or input_tokens is not None or output_tokens is not None
    ):
        role = Role.CALL.value
    else:
        role = Role.OTHER.value
    is_llm_call = role in LLM_CALL_ROLES

    cost_usd = _float(attrs.get(cv.CLIFF_COST_USD))
    raw_source = attrs.get(cv.CLIFF_COST_SOURCE)
    cost_source = str(raw_source) if raw_source is not None and str(raw_source) in (
        _COST_SOURCES) else None
    if cost_usd is None and cost_source != CostSource.UNPRICED:
        cost_usd = _float(_first(attrs, PRODUCER_COST_KEYS))
        if cost_usd is not None:
            cost_source = CostSource.PROVIDER.value
    if cost_usd is not None and cost_source is None:
        cost_source = CostSource.PROVIDER.value
    if is_llm_call and cost_usd is None:
        cost_source = CostSource.UNPRICED.value

    status = str(status_code).lower().removeprefix("status_code_")
    resource = dict(resource_attributes)
    end = start_time_unix_nano if end_time_unix_nano is None else end_time_unix_nano
    return SpanRecord(
        trace_id=_hex_id(trace_id, 32),
        span_id=_hex_id(span_id, 16),
        parent_span_id=_hex_id(parent_span_id, 16) if parent_span_id else None,
        name=name,
        start_time_unix_nano=int(start_time_unix_nano),
        end_time_unix_nano=int(end),
        status_code=status if status in _STATUS_CODES else "unset",
        status_message=status_message or None,
        role=role,
        task_class=_str(attrs.get(cv.CLIFF_TASK_CLASS)),
        is_llm_call=is_llm_call,
        operation=operation,
        provider=_str(_first(attrs, PROVIDER_KEYS)),
        request_model=_str(_first(attrs, REQUEST_MODEL_KEYS)),
        response_model=_str(_first(attrs, RESPONSE_MODEL_KEYS)),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=cost_usd,
        cost_source=cost_source,
        price_input_usd_per_token=_float(attrs.get(cv.CLIFF_PRICE_INPUT)),
        price_output_usd_per_token=_float(attrs.get(cv.CLIFF_PRICE_OUTPUT)),
        service_name=_str(resource.get("service.name")),
        source=source,
        attributes=to_json(attrs),
        resource_attributes=to_json(resource),
        events=to_json(
            [
                {
                    "name": e.get("name"),
                    "time_unix_nano": e.get("time_unix_nano"),
                    "attributes": dict(e.get("attributes") or {}),
                }
                for e in events
            ]
        ),
    )


def _hex_id(value: int | str, width: int) -> str:
    if isinstance(value, int):
        return format(value, f"0{width}x")
    return value.lower().rjust(width, "0")


def record_from_sdk_span(span: ReadableSpan, source: str = "cliffwatch") -> SpanRecord:
    """Map a finished SDK span to a :class:`SpanRecord` (pure; rules in the module doc).

    Args:
        span: an SDK ``ReadableSpan`` (what span processors hand to exporters).
        source: the producer recorded on the row.

    Returns:
        The record.

    Raises:
        ValueError: the span has no span context (never the case for SDK spans).
    """
    ctx = span.context
    if ctx is None:
        raise ValueError(f"span {span.name!r} has no span context")
    return record_from_otel_fields(
        trace_id=ctx.trace_id,
        span_id=ctx.span_id,
        parent_span_id=span.parent.span_id if span.parent is not None else None,
        name=span.name,
        start_time_unix_nano=span.start_time or 0,
        end_time_unix_nano=span.end_time,
        status_code=span.status.status_code.name,
        status_message=span.status.description,
        attributes=span.attributes or {},
        resource_attributes=span.resource.attributes if span.resource is not None else {},
        events=(
            {"name": e.name, "time_unix_nano": e.timestamp, "attributes": e.attributes or {}}
            for e in span.events
        ),
        source=source,
    )
