"""Map SDK spans to :class:`~telemetry.records.SpanRecord` through the one span mapping.

cliffwatch has one mapping from a span to a record, :func:`telemetry.otlp_mapping.map_span`
(whatever a span came in as, it becomes the same record). An SDK
``ReadableSpan`` is first turned into the plain :class:`~telemetry.otlp_decode.OtlpSpan`
that the OTLP decoders produce, with the values OTLP would carry (hex ids, tuples as
lists, bytes as base64 text, NaN and infinities as their names, status ``unset|ok|error``,
events as ``{name, time_unix_nano, attributes}``, the instrumentation scope), and then
mapped. So a span our tracer records lands in the store exactly as it would had it been
exported over OTLP and ingested by the receiver (``tests/test_tracing.py`` checks this).

For cliffwatch's own spans (which always carry ``cliff.role``) the mapping reads:
``role`` from ``cliff.role`` and ``is_llm_call = role in LLM_CALL_ROLES``; ``cost_usd``,
``cost_source`` and the prices from ``cliff.cost_usd``, ``cliff.cost_source`` and
``cliff.price.*``; tokens from ``gen_ai.usage.*``; models from ``gen_ai.request.model`` /
``gen_ai.response.model``; the provider from ``gen_ai.provider.name``; the task class
from ``cliff.task_class``; ``service_name`` from the resource's ``service.name``.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from cliffwatch.telemetry.otlp_decode import OtlpSpan
from cliffwatch.telemetry.otlp_mapping import MappingConfig, map_span, resource_json_text
from cliffwatch.telemetry.pricing import PriceMemo
from cliffwatch.telemetry.records import SpanRecord

_STATUS = {StatusCode.UNSET: "unset", StatusCode.OK: "ok", StatusCode.ERROR: "error"}

# OTLP's SpanKind numbers: SPAN_KIND_UNSPECIFIED is 0, so the SDK's INTERNAL (0) is 1.
_OTLP_KIND = {kind: kind.value + 1 for kind in SpanKind}


_AS_IS = frozenset({str, int, bool})
"""Value types OTLP carries unchanged (checked by exact type first: the common case)."""


def _plain(value: Any) -> Any:
    """An attribute value as OTLP would carry it into the mapping."""
    if type(value) in _AS_IS:
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN / Infinity
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _plain_attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    # Values OTLP carries as they are skip the call (most attributes are text or ints).
    return {
        key: value if type(value) in _AS_IS else _plain(value)
        for key, value in (attributes or {}).items()
    }


def plain_resource(span: ReadableSpan) -> dict[str, Any]:
    return _plain_attributes(span.resource.attributes if span.resource is not None else None)


def otlp_span_from_sdk(
    span: ReadableSpan, resource_attributes: dict[str, Any] | None = None
) -> OtlpSpan:
    """The plain span an OTLP decoder would produce for this SDK span (pure).

    A span not ended yet counts as ending at its start. ``resource_attributes``, when
    given, is the span's resource attributes already made plain (a batch's spans share
    one resource); computed from the span when None.

    Raises:
        ValueError: the span has no span context or no start time (never the case for
            spans the SDK hands to an exporter).
    """
    ctx = span.context
    if ctx is None or span.start_time is None:
        raise ValueError(f"span {span.name!r} has no span context or start time")
    scope = span.instrumentation_scope
    return OtlpSpan(
        trace_id=format(ctx.trace_id, "032x"),
        span_id=format(ctx.span_id, "016x"),
        parent_span_id=format(span.parent.span_id, "016x") if span.parent else None,
        name=span.name,
        kind=_OTLP_KIND.get(span.kind, 0),
        start_time_unix_nano=span.start_time,
        end_time_unix_nano=span.end_time if span.end_time is not None else span.start_time,
        status_code=_STATUS.get(span.status.status_code, "unset"),
        status_message=span.status.description or None,
        attributes=_plain_attributes(span.attributes),
        resource_attributes=(
            plain_resource(span) if resource_attributes is None else resource_attributes
        ),
        scope_name=scope.name if scope is not None else None,
        scope_version=scope.version if scope is not None else None,
        events=tuple(
            {
                "name": event.name,
                "time_unix_nano": event.timestamp,
                "attributes": _plain_attributes(event.attributes),
            }
            for event in span.events
        ),
    )


def record_from_sdk_span(span: ReadableSpan, source: str = "cliffwatch") -> SpanRecord:
    """Map a finished SDK span to a :class:`SpanRecord` (pure; rules in the module doc).

    Args:
        span: an SDK ``ReadableSpan`` (what span processors hand to exporters).
        source: the producer recorded in the row's ``source`` column.

    Returns:
        The record, ids as lowercase hex (32 / 16 characters).

    Raises:
        ValueError: the span has no span context or start time.
    """
    return map_span(otlp_span_from_sdk(span), MappingConfig(source=source))


def records_from_sdk_spans(
    spans: Iterable[ReadableSpan],
    source: str = "cliffwatch",
    on_error: Callable[[ReadableSpan], None] | None = None,
) -> list[SpanRecord]:
    """Map a batch of finished SDK spans, each exactly as :func:`record_from_sdk_span` would.

    What a batch shares is worked out once: the mapping config, price look-ups
    (:class:`telemetry.pricing.PriceMemo`, one per model per batch) and each resource's
    plain attributes and JSON text (the SDK gives every span of a provider the same
    ``Resource`` object).

    Args:
        spans: the batch, in order.
        source: the producer recorded in every row's ``source`` column.
        on_error: called (inside the ``except``) with a span that cannot be mapped; that
            span is left out and the rest go on. None re-raises.

    Returns:
        The records of the spans that mapped, in order.
    """
    config = MappingConfig(source=source)
    memo = PriceMemo()
    resources: dict[int, tuple[object, dict[str, Any], str]] = {}
    records: list[SpanRecord] = []
    for span in spans:
        try:
            resource = span.resource
            known = resources.get(id(resource))
            if known is None or known[0] is not resource:
                plain = plain_resource(span)
                known = (resource, plain, resource_json_text(plain))
                resources[id(resource)] = known
            records.append(map_span(
                otlp_span_from_sdk(span, known[1]), config, price_memo=memo,
                resource_json=known[2],
            ))
        except Exception:
            if on_error is None:
                raise
            on_error(span)
    return records
