"""Decode OTLP trace requests into plain :class:`OtlpSpan` values: the shared core and
protobuf.

Why one file: the protobuf and the OTLP/JSON walkers must decode a span identically, and
they share the per-span checks (:func:`_checked_span`) and the errors; one module keeps the
two encodings side by side, where a difference between them shows.

This is the boundary: nothing past it sees a protobuf message or a raw JSON dict. Both
encodings go through their own small walker (protobuf here, OTLP/JSON in
:mod:`telemetry.otlp_json`) into the same frozen record, and the same per-span checks
(:func:`checked_span`), so a span decodes identically whatever it came in. The HTTP side
(content types, gzip) is :mod:`telemetry.otlp_http`.

Failures come at two levels, as the OTLP/HTTP spec separates them
(https://opentelemetry.io/docs/specs/otlp/#otlphttp-response):

- the payload as a whole is unusable (truncated protobuf, invalid JSON, not a trace
  request): :class:`OtlpDecodeError`, and nothing of it is used;
- one span is unusable (an id of the wrong length, a missing or impossible timestamp,
  text that is not valid Unicode): it becomes a :class:`SpanRejection` with its ids and
  reason, and the others go on (reported to the sender as ``partial_success``).

String values longer than :data:`MAX_ATTRIBUTE_VALUE_CHARS` (span names too) are cut, and
attribute values nested deeper than :data:`MAX_VALUE_DEPTH` are replaced by a mark.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from cliffwatch.errors import CliffwatchError
from cliffwatch.telemetry.frozen_init import fast_frozen_init

MAX_ATTRIBUTE_VALUE_CHARS = 32_768
"""Longest string attribute value kept; longer ones are cut and marked. Prompt and output
text can be megabytes, and none of it bears on cost: the cut keeps the store small while
the body size limit (``cliffwatch.settings.otlp_max_body_bytes``) bounds the payload."""

TRUNCATION_MARK = "...[truncated {dropped} chars]"

MAX_VALUE_DEPTH = 32
"""Deepest nesting of array and kvlist attribute values kept; a deeper value becomes
:data:`TOO_DEEP_MARK`. No producer nests attributes this deep, and a bound keeps every walk
over a value (decode, JSON text for the store) far from Python's recursion limit."""

TOO_DEEP_MARK = "[nested too deeply]"

STATUS_CODES = {0: "unset", 1: "ok", 2: "error"}
"""OTLP ``Status.StatusCode`` values to the store's ``status_code`` words."""

STATUS_NAMES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
KIND_NAMES = {
    "SPAN_KIND_UNSPECIFIED": 0,
    "SPAN_KIND_INTERNAL": 1,
    "SPAN_KIND_SERVER": 2,
    "SPAN_KIND_CLIENT": 3,
    "SPAN_KIND_PRODUCER": 4,
    "SPAN_KIND_CONSUMER": 5,
}
INT64_MAX = 2**63 - 1


class OtlpDecodeError(CliffwatchError, ValueError):
    """The payload as a whole is not a usable OTLP trace request (an HTTP 400)."""


class UnsupportedEncodingError(OtlpDecodeError):
    """A content type or content encoding this receiver does not read (an HTTP 415)."""


class PayloadTooLargeError(OtlpDecodeError):
    """The body, once decompressed, is over the size limit (an HTTP 413)."""


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class OtlpSpan:
    """One span as the producer sent it, with OTLP's wrappers removed.

    Ids are lowercase hex (32 chars for ``trace_id``, 16 for span ids); ``parent_span_id``
    is None for a root. Times are integer nanoseconds since the Unix epoch. ``kind`` is the
    OTLP ``SpanKind`` number (0 unspecified ... 5 consumer). Attribute values are plain
    Python values: str, int, float, bool, list or dict (kvlist), bytes as base64 text.
    ``events`` holds ``{"name", "time_unix_nano", "attributes"}`` dicts.
    """

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: int
    start_time_unix_nano: int
    end_time_unix_nano: int
    status_code: str
    status_message: str | None
    attributes: Mapping[str, Any]
    resource_attributes: Mapping[str, Any]
    scope_name: str | None = None
    scope_version: str | None = None
    events: tuple[Mapping[str, Any], ...] = ()

    def with_attributes(
        self, attributes: Mapping[str, Any], events: tuple[Mapping[str, Any], ...]
    ) -> OtlpSpan:
        """This span with other attributes and events (``dataclasses.replace``, without
        its per-call look at the fields)."""
        return OtlpSpan(
            self.trace_id, self.span_id, self.parent_span_id, self.name, self.kind,
            self.start_time_unix_nano, self.end_time_unix_nano, self.status_code,
            self.status_message, attributes, self.resource_attributes, self.scope_name,
            self.scope_version, events,
        )


@dataclass(frozen=True, slots=True)
class SpanRejection:
    """A span left out of a request, with its ids as sent (hex when they decode) and why."""

    trace_id: str
    span_id: str
    reason: str

    def __str__(self) -> str:
        return f"span {self.span_id or '?'} of trace {self.trace_id or '?'}: {self.reason}"


@dataclass(frozen=True, slots=True)
class DecodedRequest:
    """The spans of one request that passed the per-span checks, and those that did not."""

    spans: tuple[OtlpSpan, ...]
    rejections: tuple[SpanRejection, ...] = ()


# --- shared per-span checks ---------------------------------------------------------------


class SpanError(Exception):
    """One span is unusable (raised by the per-span checks); becomes a SpanRejection."""


_ZERO_IDS = {16: bytes(16), 8: bytes(8)}
_ZERO_TRACE_ID = bytes(16)
_ZERO_SPAN_ID = bytes(8)


def _check_id(raw: bytes, what: str, size: int) -> str:
    if len(raw) != size:
        raise SpanError(f"{what} has {len(raw)} bytes, expected {size}")
    if raw == _ZERO_IDS[size]:
        raise SpanError(f"{what} is all zeros (invalid)")
    return raw.hex()


def _check_time(value: int, what: str) -> int:
    if value <= 0:
        raise SpanError(f"{what} is missing")
    if value > INT64_MAX:
        raise SpanError(f"{what} {value} is out of range")
    return value


def checked_span(
    trace_id: bytes,
    span_id: bytes,
    parent_span_id: bytes,
    name: str,
    kind: int,
    start_ns: int,
    end_ns: int,
    status: int,
    status_message: str,
    attributes: dict[str, Any],
    resource_attributes: Mapping[str, Any],
    scope: tuple[str | None, str | None],
    events: tuple[Mapping[str, Any], ...],
) -> OtlpSpan:
    """The one place a decoded span is validated; raises SpanError."""
    # Each check's common case inline; the helpers raise the errors.
    trace_hex = (
        trace_id.hex() if len(trace_id) == 16 and trace_id != _ZERO_TRACE_ID
        else _check_id(trace_id, "trace_id", 16)
    )
    span_hex = (
        span_id.hex() if len(span_id) == 8 and span_id != _ZERO_SPAN_ID
        else _check_id(span_id, "span_id", 8)
    )
    # An empty parent marks a root; an all-zero parent is how some SDKs say the same.
    if not parent_span_id:
        parent_hex = None
    elif len(parent_span_id) == 8 and parent_span_id != _ZERO_SPAN_ID:
        parent_hex = parent_span_id.hex()
    elif not any(parent_span_id):
        parent_hex = None
    else:
        parent_hex = _check_id(parent_span_id, "parent_span_id", 8)
    start = (
        start_ns if 0 < start_ns <= INT64_MAX else _check_time(start_ns, "start_time_unix_nano")
    )
    end = end_ns if 0 < end_ns <= INT64_MAX else _check_time(end_ns, "end_time_unix_nano")
    if end < start:
        raise SpanError(f"end_time_unix_nano {end} is before start_time_unix_nano {start}")
    return OtlpSpan(  # positional, in field order: binding keywords costs more
        trace_hex,
        span_hex,
        parent_hex,
        name if len(name) <= MAX_ATTRIBUTE_VALUE_CHARS else truncated_text(name),
        kind,
        start,
        end,
        STATUS_CODES.get(status, "unset"),
        status_message or None,
        attributes,
        resource_attributes,
        scope[0] or None,
        scope[1] or None,
        events,
    )


def truncated_text(text: str) -> str:
    if len(text) <= MAX_ATTRIBUTE_VALUE_CHARS:
        return text
    dropped = len(text) - MAX_ATTRIBUTE_VALUE_CHARS
    return text[:MAX_ATTRIBUTE_VALUE_CHARS] + TRUNCATION_MARK.format(dropped=dropped)


def finite_or_text(value: float) -> float | str:
    # JSON has no NaN or Infinity: keep such values as their names rather than write
    # invalid JSON into the store's attributes column.
    return value if math.isfinite(value) else str(value)


# --- protobuf -----------------------------------------------------------------------------


def _pb_value(value: Any, depth: int = 0) -> Any:
    which = value.WhichOneof("value")
    if depth >= MAX_VALUE_DEPTH and which in ("array_value", "kvlist_value"):
        return TOO_DEEP_MARK
    if which == "string_value":
        return truncated_text(value.string_value)
    if which == "int_value":
        return value.int_value
    if which == "double_value":
        return finite_or_text(value.double_value)
    if which == "bool_value":
        return value.bool_value
    if which == "array_value":
        return [_pb_value(v, depth + 1) for v in value.array_value.values]
    if which == "kvlist_value":
        return _pb_attributes(value.kvlist_value.values, depth + 1)
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    return None


def _pb_attributes(key_values: Iterable[Any], depth: int = 0) -> dict[str, Any]:
    # One pass; the scalar kinds nearly every attribute is are read inline (the same
    # values _pb_value gives), the rest through it.
    out: dict[str, Any] = {}
    for kv in key_values:
        value = kv.value
        which = value.WhichOneof("value")
        if which == "string_value":
            text = value.string_value
            out[kv.key] = text if len(text) <= MAX_ATTRIBUTE_VALUE_CHARS else truncated_text(text)
        elif which == "int_value":
            out[kv.key] = value.int_value
        else:
            out[kv.key] = _pb_value(value, depth)
    return out


def decode_protobuf(body: bytes) -> DecodedRequest:
    """Decode an ``ExportTraceServiceRequest`` in protobuf binary encoding.

    Args:
        body: the (decompressed) request body.

    Returns:
        The request's spans that passed the per-span checks, and the rejections.

    Raises:
        OtlpDecodeError: the bytes are not a protobuf ExportTraceServiceRequest
            (truncated, garbage, wrong message).
    """
    try:
        request = ExportTraceServiceRequest.FromString(body)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise OtlpDecodeError(f"body is not an OTLP protobuf trace request: {exc}") from None
    spans: list[OtlpSpan] = []
    rejections: list[SpanRejection] = []
    for resource_spans in request.resource_spans:
        resource_attributes = _pb_attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope = (scope_spans.scope.name, scope_spans.scope.version)
            for span in scope_spans.spans:
                try:
                    events = tuple(
                        {
                            "name": ev.name,
                            "time_unix_nano": ev.time_unix_nano,
                            "attributes": _pb_attributes(ev.attributes),
                        }
                        for ev in span.events
                    ) if span.events else ()
                    status = span.status
                    spans.append(
                        checked_span(
                            span.trace_id,
                            span.span_id,
                            span.parent_span_id,
                            span.name,
                            span.kind,
                            span.start_time_unix_nano,
                            span.end_time_unix_nano,
                            status.code,
                            status.message,
                            _pb_attributes(span.attributes),
                            resource_attributes,
                            scope,
                            events,
                        )
                    )
                except SpanError as exc:
                    rejections.append(
                        SpanRejection(span.trace_id.hex(), span.span_id.hex(), str(exc))
                    )
    return DecodedRequest(tuple(spans), tuple(rejections))


def printable(text: str) -> str:
    """``text`` safe to encode as UTF-8: lone surrogates become ``\\udxxx`` escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
