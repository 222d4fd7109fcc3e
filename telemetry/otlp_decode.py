"""Decode OTLP trace requests (protobuf or OTLP/JSON) into plain :class:`OtlpSpan` values.

Why one file: the protobuf and the OTLP/JSON walkers must decode a span identically, and
they share the per-span checks (:func:`_checked_span`) and the errors; one module keeps the
two encodings side by side, where a difference between them shows.

This is the boundary: nothing past it sees a protobuf message or a raw JSON dict. Both
encodings go through their own small walker into the same frozen record, and the same
per-span checks (:func:`_checked_span`), so a span decodes identically whatever it came in.

Failures come at two levels, as the OTLP/HTTP spec separates them
(https://opentelemetry.io/docs/specs/otlp/#otlphttp-response):

- the payload as a whole is unusable (truncated protobuf, invalid JSON, not a trace
  request): :class:`OtlpDecodeError`, and nothing of it is used;
- one span is unusable (an id of the wrong length, a missing or impossible timestamp): it
  becomes a :class:`SpanRejection` with its ids and reason, and the others go on
  (reported to the sender as ``partial_success``).

OTLP/JSON is not protobuf's canonical JSON: trace and span ids are hex strings, enums are
integers and 64-bit integers may be strings (https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding).
Field names are lowerCamelCase; the snake_case originals are accepted too, as are base64
ids of the right length (some older producers wrote protojson).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from cliffwatch.errors import CliffwatchError

MAX_ATTRIBUTE_VALUE_CHARS = 32_768
"""Longest string attribute value kept; longer ones are cut and marked. Prompt and output
text can be megabytes, and none of it bears on cost: the cut keeps the store small while
the body size limit (``cliffwatch.settings.otlp_max_body_bytes``) bounds the payload."""

TRUNCATION_MARK = "...[truncated {dropped} chars]"

STATUS_CODES = {0: "unset", 1: "ok", 2: "error"}
"""OTLP ``Status.StatusCode`` values to the store's ``status_code`` words."""

_STATUS_NAMES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
_KIND_NAMES = {
    "SPAN_KIND_UNSPECIFIED": 0,
    "SPAN_KIND_INTERNAL": 1,
    "SPAN_KIND_SERVER": 2,
    "SPAN_KIND_CLIENT": 3,
    "SPAN_KIND_PRODUCER": 4,
    "SPAN_KIND_CONSUMER": 5,
}
_INT64_MAX = 2**63 - 1


class OtlpDecodeError(CliffwatchError, ValueError):
    """The payload as a whole is not a usable OTLP trace request (an HTTP 400)."""


class UnsupportedEncodingError(OtlpDecodeError):
    """A content type or content encoding this receiver does not read (an HTTP 415)."""


class PayloadTooLargeError(OtlpDecodeError):
    """The body, once decompressed, is over the size limit (an HTTP 413)."""


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


class _SpanError(Exception):
    """Internal: one span is unusable; becomes a SpanRejection."""


def _check_id(raw: bytes, what: str, size: int) -> str:
    if len(raw) != size:
        raise _SpanError(f"{what} has {len(raw)} bytes, expected {size}")
    if not any(raw):
        raise _SpanError(f"{what} is all zeros (invalid)")
    return raw.hex()


def _check_time(value: int, what: str) -> int:
    if value <= 0:
        raise _SpanError(f"{what} is missing")
    if value > _INT64_MAX:
        raise _SpanError(f"{what} {value} is out of range")
    return value


def _checked_span(
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
    """The one place a decoded span is validated; raises _SpanError."""
    trace_hex = _check_id(trace_id, "trace_id", 16)
    span_hex = _check_id(span_id, "span_id", 8)
    # An empty parent marks a root; an all-zero parent is how some SDKs say the same.
    parent_hex = (
        _check_id(parent_span_id, "parent_span_id", 8)
        if parent_span_id and any(parent_span_id)
        else None
    )
    start = _check_time(start_ns, "start_time_unix_nano")
    end = _check_time(end_ns, "end_time_unix_nano")
    if end < start:
        raise _SpanError(f"end_time_unix_nano {end} is before start_time_unix_nano {start}")
    return OtlpSpan(
        trace_id=trace_hex,
        span_id=span_hex,
        parent_span_id=parent_hex,
        name=name,
        kind=kind,
        start_time_unix_nano=start,
        end_time_unix_nano=end,
        status_code=STATUS_CODES.get(status, "unset"),
        status_message=status_message or None,
        attributes=attributes,
        resource_attributes=resource_attributes,
        scope_name=scope[0] or None,
        scope_version=scope[1] or None,
        events=events,
    )


def _truncated(text: str) -> str:
    if len(text) <= MAX_ATTRIBUTE_VALUE_CHARS:
        return text
    dropped = len(text) - MAX_ATTRIBUTE_VALUE_CHARS
    return text[:MAX_ATTRIBUTE_VALUE_CHARS] + TRUNCATION_MARK.format(dropped=dropped)


def _finite(value: float) -> float | str:
    # JSON has no NaN or Infinity: keep such values as their names rather than write
    # invalid JSON into the store's attributes column.
    return value if math.isfinite(value) else str(value)


# --- protobuf -----------------------------------------------------------------------------


def _pb_value(value: Any) -> Any:
    which = value.WhichOneof("value")
    if which == "string_value":
        return _truncated(value.string_value)
    if which == "int_value":
        return value.int_value
    if which == "double_value":
        return _finite(value.double_value)
    if which == "bool_value":
        return value.bool_value
    if which == "array_value":
        return [_pb_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return _pb_attributes(value.kvlist_value.values)
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    return None


def _pb_attributes(key_values: Iterable[Any]) -> dict[str, Any]:
    return {kv.key: _pb_value(kv.value) for kv in key_values}


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
                    )
                    spans.append(
                        _checked_span(
                            span.trace_id,
                            span.span_id,
                            span.parent_span_id,
                            span.name,
                            span.kind,
                            span.start_time_unix_nano,
                            span.end_time_unix_nano,
                            span.status.code,
                            span.status.message,
                            _pb_attributes(span.attributes),
                            resource_attributes,
                            scope,
                            events,
                        )
                    )
                except _SpanError as exc:
                    rejections.append(
                        SpanRejection(span.trace_id.hex(), span.span_id.hex(), str(exc))
                    )
    return DecodedRequest(tuple(spans), tuple(rejections))


# --- OTLP/JSON ----------------------------------------------------------------------------


def _get(obj: Mapping[str, Any], camel: str, snake: str | None = None) -> Any:
    value = obj.get(camel)
    if value is None and snake is not None:
        value = obj.get(snake)
    return value


def _list(obj: Mapping[str, Any], camel: str, snake: str | None = None) -> list[Any]:
    value = _get(obj, camel, snake)
    if value is None:
        return []
    if not isinstance(value, list):
        raise OtlpDecodeError(f"'{camel}' must be an array, got {type(value).__name__}")
    return value


def _json_id(value: Any, what: str) -> bytes:
    """Bytes of a JSON id: hex per the OTLP spec; base64 of the right length accepted."""
    if value is None or value == "":
        return b""
    if not isinstance(value, str):
        raise _SpanError(f"{what} must be a string, got {type(value).__name__}")
    try:
        return bytes.fromhex(value)
    except ValueError:
        pass
    # A 16-byte id is 24 base64 chars, an 8-byte id 12: lengths no hex id of the right size
    # has, so accepting them cannot misread a valid hex id.
    if len(value) in (12, 24):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            pass
    raise _SpanError(f"{what} {value[:40]!r} is not hex")


def _json_int(value: Any, what: str) -> int:
    if value is None or value == "":
        return 0
    if isinstance(value, bool):
        raise _SpanError(f"{what} must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise _SpanError(f"{what} {str(value)[:40]!r} is not an integer")


def _json_enum(value: Any, names: Mapping[str, int], what: str) -> int:
    if isinstance(value, str) and value in names:
        return names[value]
    return _json_int(value, what)


def _json_int_value(raw: Any) -> Any:
    try:
        return int(raw)
    except (TypeError, ValueError):
        return str(raw)


def _json_double_value(raw: Any) -> Any:
    try:
        return _finite(float(raw))
    except (TypeError, ValueError):
        return str(raw)


def _json_array_value(raw: Any) -> list[Any]:
    values = raw.get("values") if isinstance(raw, dict) else None
    return [_json_value(v) for v in values or []]


def _json_kvlist_value(raw: Any) -> dict[str, Any]:
    values = raw.get("values") if isinstance(raw, dict) else None
    return _json_attributes(values or [])


_JSON_VALUE_READERS: dict[str, Any] = {
    "stringValue": lambda raw: _truncated(str(raw)),
    "intValue": _json_int_value,
    "doubleValue": _json_double_value,
    "boolValue": bool,
    "arrayValue": _json_array_value,
    "kvlistValue": _json_kvlist_value,
    "bytesValue": str,  # base64 text already
}
_JSON_VALUE_READERS.update(
    {
        "string_value": _JSON_VALUE_READERS["stringValue"],
        "int_value": _json_int_value,
        "double_value": _json_double_value,
        "bool_value": bool,
        "array_value": _json_array_value,
        "kvlist_value": _json_kvlist_value,
        "bytes_value": str,
    }
)


def _json_value(value: Any) -> Any:
    """A plain value from an OTLP/JSON ``AnyValue`` (one key naming its type); None if empty."""
    if not isinstance(value, dict):
        return None
    for key, raw in value.items():
        reader = _JSON_VALUE_READERS.get(key)
        if reader is not None and raw is not None:
            return reader(raw)
    return None


def _json_attributes(key_values: Any) -> dict[str, Any]:
    if not isinstance(key_values, list):
        return {}
    out: dict[str, Any] = {}
    for kv in key_values:
        if isinstance(kv, dict) and isinstance(kv.get("key"), str):
            out[kv["key"]] = _json_value(kv.get("value"))
    return out


def _json_span(
    span: Any, resource_attributes: Mapping[str, Any], scope: tuple[str | None, str | None]
) -> OtlpSpan:
    if not isinstance(span, dict):
        raise _SpanError("span is not a JSON object")
    status = _get(span, "status") or {}
    if not isinstance(status, dict):
        status = {}
    events = tuple(
        {
            "name": str(ev.get("name", "")),
            "time_unix_nano": _json_int(_get(ev, "timeUnixNano", "time_unix_nano"), "event time"),
            "attributes": _json_attributes(ev.get("attributes")),
        }
        for ev in _get(span, "events") or []
        if isinstance(ev, dict)
    )
    return _checked_span(
        _json_id(_get(span, "traceId", "trace_id"), "trace_id"),
        _json_id(_get(span, "spanId", "span_id"), "span_id"),
        _json_id(_get(span, "parentSpanId", "parent_span_id"), "parent_span_id"),
        str(span.get("name") or ""),
        _json_enum(span.get("kind"), _KIND_NAMES, "kind"),
        _json_int(_get(span, "startTimeUnixNano", "start_time_unix_nano"), "start_time_unix_nano"),
        _json_int(_get(span, "endTimeUnixNano", "end_time_unix_nano"), "end_time_unix_nano"),
        _json_enum(status.get("code"), _STATUS_NAMES, "status code"),
        str(status.get("message") or ""),
        _json_attributes(span.get("attributes")),
        resource_attributes,
        scope,
        events,
    )


def _raw_ids(span: Any) -> tuple[str, str]:
    if not isinstance(span, dict):
        return "", ""
    return (
        str(_get(span, "traceId", "trace_id") or "")[:64],
        str(_get(span, "spanId", "span_id") or "")[:64],
    )


def decode_json_object(request: Any) -> DecodedRequest:
    """Decode one OTLP/JSON trace request already parsed from JSON.

    Args:
        request: the parsed ``ExportTraceServiceRequest`` (or ``TracesData``) object:
            ``{"resourceSpans": [{"resource": ..., "scopeSpans": [{"scope": ...,
            "spans": [...]}]}]}``.

    Raises:
        OtlpDecodeError: ``request`` is not shaped like a trace request.
    """
    if not isinstance(request, dict):
        raise OtlpDecodeError("an OTLP/JSON trace request must be a JSON object")
    resource_spans_list = _list(request, "resourceSpans", "resource_spans")
    if request and not any(k in request for k in ("resourceSpans", "resource_spans")):
        # ``{}`` is a valid empty request; an object with other keys is something else
        # (a metrics or logs request, say) sent to the wrong place.
        raise OtlpDecodeError(
            f"JSON object has no 'resourceSpans' (keys: {', '.join(sorted(request)[:5])}): "
            "not an OTLP trace request"
        )
    spans: list[OtlpSpan] = []
    rejections: list[SpanRejection] = []
    for resource_spans in resource_spans_list:
        if not isinstance(resource_spans, dict):
            raise OtlpDecodeError("'resourceSpans' items must be objects")
        resource = resource_spans.get("resource") or {}
        resource_attributes = _json_attributes(
            resource.get("attributes") if isinstance(resource, dict) else None
        )
        scope_spans_list = _list(resource_spans, "scopeSpans", "scope_spans") or _list(
            resource_spans, "instrumentationLibrarySpans", "instrumentation_library_spans"
        )
        for scope_spans in scope_spans_list:
            if not isinstance(scope_spans, dict):
                raise OtlpDecodeError("'scopeSpans' items must be objects")
            scope_obj = scope_spans.get("scope") or _get(
                scope_spans, "instrumentationLibrary", "instrumentation_library"
            )
            scope_obj = scope_obj if isinstance(scope_obj, dict) else {}
            scope = (scope_obj.get("name"), scope_obj.get("version"))
            for span in _list(scope_spans, "spans"):
                try:
                    spans.append(_json_span(span, resource_attributes, scope))
                except _SpanError as exc:
                    trace_raw, span_raw = _raw_ids(span)
                    rejections.append(SpanRejection(trace_raw, span_raw, str(exc)))
    return DecodedRequest(tuple(spans), tuple(rejections))


def decode_json(body: bytes | str) -> DecodedRequest:
    """Decode one OTLP/JSON trace request from its text.

    Raises:
        OtlpDecodeError: not valid UTF-8 JSON, or not shaped like a trace request.
    """
    try:
        request = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise OtlpDecodeError(f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise OtlpDecodeError("body is not valid JSON: nested too deeply") from None
    return decode_json_object(request)


# --- HTTP body handling -------------------------------------------------------------------

CONTENT_TYPE_PROTOBUF = "application/x-protobuf"
CONTENT_TYPE_JSON = "application/json"


def media_type(content_type: str | None) -> str:
    """The bare media type of a Content-Type header, lowercased (parameters dropped)."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def decompress_body(body: bytes, content_encoding: str | None, max_bytes: int) -> bytes:
    """The body with its Content-Encoding undone, refusing to grow past ``max_bytes``.

    Args:
        body: the body as received.
        content_encoding: the Content-Encoding header (``gzip``, ``identity`` or none).
        max_bytes: the largest decompressed size accepted (a gzip bomb stops here).

    Raises:
        UnsupportedEncodingError: an encoding other than gzip or identity.
        PayloadTooLargeError: the decompressed body is over ``max_bytes``.
        OtlpDecodeError: the gzip data is corrupt or truncated.
    """
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        data = body
    elif encoding in ("gzip", "x-gzip"):
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            data = inflater.decompress(body, max_bytes + 1)
            if not inflater.eof and len(data) <= max_bytes:
                raise OtlpDecodeError("gzip body is truncated")
        except zlib.error as exc:
            raise OtlpDecodeError(f"gzip body is corrupt: {exc}") from None
    else:
        raise UnsupportedEncodingError(
            f"Content-Encoding {content_encoding!r} is not supported (use gzip or identity)"
        )
    if len(data) > max_bytes:
        raise PayloadTooLargeError(f"body is over the limit of {max_bytes} bytes")
    return data


def decode_body(body: bytes, content_type: str | None) -> DecodedRequest:
    """Decode a request body by its Content-Type (protobuf or JSON).

    Raises:
        UnsupportedEncodingError: a content type other than application/x-protobuf or
            application/json.
        OtlpDecodeError: the body does not decode as that type.
    """
    kind = media_type(content_type)
    if kind == CONTENT_TYPE_PROTOBUF:
        return decode_protobuf(body)
    if kind == CONTENT_TYPE_JSON:
        return decode_json(body)
    raise UnsupportedEncodingError(
        f"Content-Type {content_type!r} is not supported "
        f"(use {CONTENT_TYPE_PROTOBUF} or {CONTENT_TYPE_JSON})"
    )
