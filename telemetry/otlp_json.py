"""Decode OTLP/JSON trace requests into :class:`~telemetry.otlp_decode.OtlpSpan` values.

OTLP/JSON is not protobuf's canonical JSON: trace and span ids are hex strings, enums are
integers and 64-bit integers may be strings
(https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding). Field names are
lowerCamelCase; the snake_case originals are accepted too, as are base64 ids of the right
length (some older producers wrote protojson).

JSON can say what protobuf cannot, and each such value is caught here rather than deeper
in: a lone UTF-16 surrogate (``"\\ud800"``, not valid Unicode: the span, or every span
under that resource or scope, is rejected), an ``intValue`` outside int64 or a number
Python cannot hold as an int (kept as its text), an integer literal longer than Python's
int parsing limit (the request is malformed: :func:`parse_json`).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from cliffwatch.telemetry.otlp_decode import (
    INT64_MAX,
    KIND_NAMES,
    MAX_VALUE_DEPTH,
    STATUS_NAMES,
    TOO_DEEP_MARK,
    DecodedRequest,
    OtlpDecodeError,
    OtlpSpan,
    SpanError,
    SpanRejection,
    checked_span,
    finite_or_text,
    printable,
    truncated_text,
)


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
        raise SpanError(f"{what} must be a string, got {type(value).__name__}")
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
    raise SpanError(f"{what} {value[:40]!r} is not hex")


def _json_int(value: Any, what: str) -> int:
    if value is None or value == "":
        return 0
    if isinstance(value, bool):
        raise SpanError(f"{what} must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise SpanError(f"{what} {str(value)[:40]!r} is not an integer")


def _json_enum(value: Any, names: Mapping[str, int], what: str) -> int:
    if isinstance(value, str) and value in names:
        return names[value]
    return _json_int(value, what)


def _json_int_value(raw: Any, depth: int) -> Any:
    # An int64 by the spec: anything else (a fraction, a number past int64, Infinity) is
    # kept as its text, never as a Python int no column or JSON reader could hold.
    try:
        value = int(raw)
    except (TypeError, ValueError, OverflowError):
        return truncated_text(str(raw))
    if isinstance(raw, float) and not raw.is_integer():
        return truncated_text(str(raw))
    return value if -INT64_MAX - 1 <= value <= INT64_MAX else truncated_text(str(raw))


def _json_double_value(raw: Any, depth: int) -> Any:
    try:
        return finite_or_text(float(raw))
    except (TypeError, ValueError, OverflowError):
        return truncated_text(str(raw))


def _json_array_value(raw: Any, depth: int) -> Any:
    if depth >= MAX_VALUE_DEPTH:
        return TOO_DEEP_MARK
    values = raw.get("values") if isinstance(raw, dict) else None
    if not isinstance(values, list):
        return []
    return [_json_value(v, depth + 1) for v in values]


def _json_kvlist_value(raw: Any, depth: int) -> Any:
    if depth >= MAX_VALUE_DEPTH:
        return TOO_DEEP_MARK
    values = raw.get("values") if isinstance(raw, dict) else None
    return _json_attributes(values or [], depth + 1)


def _json_string_value(raw: Any, depth: int) -> str:
    return truncated_text(raw if isinstance(raw, str) else str(raw))


def _json_bool_value(raw: Any, depth: int) -> bool:
    return bool(raw)


_JSON_VALUE_READERS: dict[str, Callable[[Any, int], Any]] = {
    "stringValue": _json_string_value,
    "intValue": _json_int_value,
    "doubleValue": _json_double_value,
    "boolValue": _json_bool_value,
    "arrayValue": _json_array_value,
    "kvlistValue": _json_kvlist_value,
    "bytesValue": _json_string_value,  # base64 text already
}
_JSON_VALUE_READERS.update(
    {
        "string_value": _json_string_value,
        "int_value": _json_int_value,
        "double_value": _json_double_value,
        "bool_value": _json_bool_value,
        "array_value": _json_array_value,
        "kvlist_value": _json_kvlist_value,
        "bytes_value": _json_string_value,
    }
)


def _json_value(value: Any, depth: int = 0) -> Any:
    """A plain value from an OTLP/JSON ``AnyValue`` (one key naming its type); None if empty."""
    if not isinstance(value, dict):
        return None
    for key, raw in value.items():
        reader = _JSON_VALUE_READERS.get(key)
        if reader is not None and raw is not None:
            return reader(raw, depth)
    return None


def _json_attributes(key_values: Any, depth: int = 0) -> dict[str, Any]:
    if not isinstance(key_values, list):
        return {}
    out: dict[str, Any] = {}
    for kv in key_values:
        if isinstance(kv, dict) and isinstance(kv.get("key"), str):
            out[kv["key"]] = _json_value(kv.get("value"), depth)
    return out


def lone_surrogate_in(value: Any) -> bool:
    """Whether any string in ``value`` (nested dicts and lists, keys too) holds a lone
    UTF-16 surrogate (U+D800..U+DFFF unpaired).

    Python's JSON reader turns ``"\\ud800"`` into such a string; it is not valid Unicode, so
    it cannot be written as UTF-8 (the store, Arrow, the answer to the sender). Walks
    without recursion, so any nesting depth is safe.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


_SURROGATE_HINT_BYTES = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")
_SURROGATE_HINT_TEXT = re.compile(r"\\u[dD][89a-fA-F]|[\ud800-\udfff]")


def may_hold_lone_surrogates(text: bytes | str) -> bool:
    """False when JSON ``text`` cannot decode to a string holding a lone surrogate: UTF-8
    (not UTF-16 or UTF-32) with no ``\\uD800``-``\\uDFFF`` escape and no surrogate encoded
    in UTF-8 (Python's reader lets those through). A fast check of the raw text (a
    regular expression, in C), so the walk of :func:`lone_surrogate_in` is only paid when
    it can find something.
    """
    if isinstance(text, str):
        return _SURROGATE_HINT_TEXT.search(text) is not None
    if b"\x00" in text[:4] or text[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return True  # UTF-16 or UTF-32, which json.loads also reads
    return _SURROGATE_HINT_BYTES.search(text) is not None


def _surrogate_problem(obj: Mapping[str, Any], what: str) -> str | None:
    """Why ``obj`` (a raw span, resource or scope) is unusable as text, or None."""
    if not lone_surrogate_in(obj):
        return None
    fields = [str(key) for key, value in obj.items() if lone_surrogate_in([key, value])]
    where = f" ({', '.join(ascii(f) for f in fields[:3])})" if fields else ""
    return f"{what}{where} holds a lone UTF-16 surrogate (not valid Unicode)"


def _json_events(span: Mapping[str, Any]) -> tuple[Mapping[str, Any], ...]:
    raw = _get(span, "events")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise SpanError(f"'events' must be an array, got {type(raw).__name__}")
    return tuple(
        {
            "name": truncated_text(str(ev.get("name", ""))),
            "time_unix_nano": _json_int(_get(ev, "timeUnixNano", "time_unix_nano"), "event time"),
            "attributes": _json_attributes(ev.get("attributes")),
        }
        for ev in raw
        if isinstance(ev, dict)
    )


def _json_span(
    span: Any,
    resource_attributes: Mapping[str, Any],
    scope: tuple[str | None, str | None],
    check_text: bool,
) -> OtlpSpan:
    if not isinstance(span, dict):
        raise SpanError("span is not a JSON object")
    problem = _surrogate_problem(span, "span") if check_text else None
    if problem:
        raise SpanError(problem)
    status = _get(span, "status") or {}
    if not isinstance(status, dict):
        status = {}
    return checked_span(
        _json_id(_get(span, "traceId", "trace_id"), "trace_id"),
        _json_id(_get(span, "spanId", "span_id"), "span_id"),
        _json_id(_get(span, "parentSpanId", "parent_span_id"), "parent_span_id"),
        str(span.get("name") or ""),
        _json_enum(span.get("kind"), KIND_NAMES, "kind"),
        _json_int(_get(span, "startTimeUnixNano", "start_time_unix_nano"), "start_time_unix_nano"),
        _json_int(_get(span, "endTimeUnixNano", "end_time_unix_nano"), "end_time_unix_nano"),
        _json_enum(status.get("code"), STATUS_NAMES, "status code"),
        str(status.get("message") or ""),
        _json_attributes(span.get("attributes")),
        resource_attributes,
        scope,
        _json_events(span),
    )


def _raw_ids(span: Any) -> tuple[str, str]:
    """The ids of a span as sent, as printable text (for naming a rejected span)."""
    if not isinstance(span, dict):
        return "", ""
    return (
        printable(str(_get(span, "traceId", "trace_id") or "")[:64]),
        printable(str(_get(span, "spanId", "span_id") or "")[:64]),
    )


_Scope = tuple[str | None, str | None]


def _scope_of(scope_spans: Mapping[str, Any]) -> tuple[Mapping[str, Any], _Scope]:
    scope_obj = scope_spans.get("scope") or _get(
        scope_spans, "instrumentationLibrary", "instrumentation_library"
    )
    scope_obj = scope_obj if isinstance(scope_obj, dict) else {}
    name, version = scope_obj.get("name"), scope_obj.get("version")
    return scope_obj, (
        truncated_text(str(name)) if name is not None else None,
        truncated_text(str(version)) if version is not None else None,
    )


def decode_json_object(request: Any, *, check_text: bool = True) -> DecodedRequest:
    """Decode one OTLP/JSON trace request already parsed from JSON.

    Args:
        request: the parsed ``ExportTraceServiceRequest`` (or ``TracesData``) object:
            ``{"resourceSpans": [{"resource": ..., "scopeSpans": [{"scope": ...,
            "spans": [...]}]}]}``.
        check_text: look for lone surrogates; False only when the JSON text could not
            hold any (:func:`may_hold_lone_surrogates`).

    Returns:
        The spans that passed the per-span checks, and the rejections. A span (or the
        resource or scope it sits under) holding a lone UTF-16 surrogate is rejected.

    Raises:
        OtlpDecodeError: ``request`` is not shaped like a trace request.
    """
    if not isinstance(request, dict):
        raise OtlpDecodeError("an OTLP/JSON trace request must be a JSON object")
    resource_spans_list = _list(request, "resourceSpans", "resource_spans")
    if request and not any(k in request for k in ("resourceSpans", "resource_spans")):
        # ``{}`` is a valid empty request; an object with other keys is something else
        # (a metrics or logs request, say) sent to the wrong place.
        keys = printable(", ".join(str(k)[:40] for k in sorted(request)[:5]))
        raise OtlpDecodeError(
            f"JSON object has no 'resourceSpans' (keys: {keys}): not an OTLP trace request"
        )
    spans: list[OtlpSpan] = []
    rejections: list[SpanRejection] = []
    for resource_spans in resource_spans_list:
        if not isinstance(resource_spans, dict):
            raise OtlpDecodeError("'resourceSpans' items must be objects")
        resource = resource_spans.get("resource") or {}
        resource = resource if isinstance(resource, dict) else {}
        resource_attributes = _json_attributes(resource.get("attributes"))
        resource_problem = _surrogate_problem(resource, "resource") if check_text else None
        scope_spans_list = _list(resource_spans, "scopeSpans", "scope_spans") or _list(
            resource_spans, "instrumentationLibrarySpans", "instrumentation_library_spans"
        )
        for scope_spans in scope_spans_list:
            if not isinstance(scope_spans, dict):
                raise OtlpDecodeError("'scopeSpans' items must be objects")
            scope_obj, scope = _scope_of(scope_spans)
            problem = resource_problem or (
                _surrogate_problem(scope_obj, "scope") if check_text else None
            )
            for span in _list(scope_spans, "spans"):
                try:
                    if problem:
                        raise SpanError(problem)
                    spans.append(_json_span(span, resource_attributes, scope, check_text))
                except SpanError as exc:
                    trace_raw, span_raw = _raw_ids(span)
                    rejections.append(SpanRejection(trace_raw, span_raw, str(exc)))
    return DecodedRequest(tuple(spans), tuple(rejections))


def parse_json(body: bytes | str) -> Any:
    """``json.loads`` with every failure as :class:`OtlpDecodeError`: invalid JSON or
    UTF-8, nesting deeper than Python recurses, an integer literal longer than Python's
    int parsing limit (``sys.get_int_max_str_digits``, 4300 digits by default).
    """
    try:
        return json.loads(body)
    except RecursionError:
        raise OtlpDecodeError("not valid JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, the int digit limit
        raise OtlpDecodeError(f"not valid JSON: {printable(str(exc))[:200]}") from None


def decode_json(body: bytes | str) -> DecodedRequest:
    """Decode one OTLP/JSON trace request from its text.

    Raises:
        OtlpDecodeError: not valid UTF-8 JSON, or not shaped like a trace request.
    """
    try:
        request = parse_json(body)
    except OtlpDecodeError as exc:
        raise OtlpDecodeError(f"body is {exc}") from None
    return decode_json_object(request, check_text=may_hold_lone_surrogates(body))
