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

Speed (issue 11): the protobuf walker reads attributes from their raw ``KeyValue`` bytes
(the request parsed with those fields declared as bytes, the same wire format) and parses
each distinct ``KeyValue`` of a request once, the common shapes without building messages
(:class:`_RawAttributes`); reading every attribute through protobuf's message objects cost
more than the rest of the decode. tests/test_otlp_decode.py holds the result equal to a
walk of the declared types, good bodies and mutated ones alike.
"""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from cliffwatch.errors import CliffwatchError
from cliffwatch.telemetry.frozen_init import fast_frozen_init, positional_builder

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
        return _new_span(
            self.trace_id, self.span_id, self.parent_span_id, self.name, self.kind,
            self.start_time_unix_nano, self.end_time_unix_nano, self.status_code,
            self.status_message, attributes, self.resource_attributes, self.scope_name,
            self.scope_version, events,
        )


_new_span = positional_builder(OtlpSpan)


@dataclass(frozen=True, slots=True)
class SpanRejection:
    """A span left out of a request, with its ids as sent (hex when they decode) and why."""

    trace_id: str
    span_id: str
    reason: str

    def __str__(self) -> str:
        return f"span {self.span_id or '?'} of trace {self.trace_id or '?'}: {self.reason}"

    @classmethod
    def unstorable(cls, trace_id: str, span_id: str, exc: BaseException) -> SpanRejection:
        """The rejection of a span whose values the store (or Arrow) refused: ``exc``'s
        text, printable and cut to 200 characters."""
        return cls(trace_id, span_id, f"cannot be stored: {printable(str(exc))[:200]}")


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
    return _new_span(  # OtlpSpan(...), positional, in field order: keywords cost more
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


def _raw_attributes_request_class() -> Any:
    """``ExportTraceServiceRequest`` as opentelemetry-proto declares it, but for the
    ``attributes`` of resources, spans and span events, read as raw bytes (one
    serialised ``KeyValue`` each; the same wire format, so any body parses alike).

    Built in a private descriptor pool (the same type names, apart from the default pool
    the real types live in). Everything else (ids, names, times, status, links, scopes)
    keeps its declared type, so the parse checks it as before.
    """
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.resource.v1 import resource_pb2
    from opentelemetry.proto.trace.v1 import trace_pb2

    raw = {"Resource", "Span", "Event"}  # Span.Event is the one nested message named so

    def to_bytes(messages: Any) -> None:
        for message in messages:
            if message.name in raw:
                for field in message.field:
                    if field.name == "attributes":
                        field.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
                        field.ClearField("type_name")
            to_bytes(message.nested_type)

    pool = descriptor_pool.DescriptorPool()
    for module in (common_pb2, resource_pb2, trace_pb2, trace_service_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        if module is not common_pb2:
            to_bytes(proto.message_type)
        pool.Add(proto)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName(ExportTraceServiceRequest.DESCRIPTOR.full_name)
    )


_RawRequest = _raw_attributes_request_class()


_INT_KEYS: dict[bytes, str] = {}
"""The key of an int ``KeyValue`` by its bytes up to the value's tag (key and both lengths
included), for those :func:`_simple_key_value` has parsed: a span's counts are new values
under keys every span repeats. At most :data:`_INT_KEYS_MAX` entries (cleared past it)."""

_INT_KEYS_MAX = 4096

_DOUBLE = struct.Struct("<d")


def clear_parse_caches() -> None:
    """Empty :data:`_INT_KEYS` (as in a process that has decoded nothing yet): for
    measuring a cold decode (bench/otlp_decode.py) and for tests."""
    _INT_KEYS.clear()


def _simple_key_value(raw: bytes) -> tuple[str, Any] | None:
    """``(key, value)`` of a serialised ``KeyValue`` in the shape nearly every attribute
    has (under 128 bytes: a key and a string, a non-negative int or a double, each field
    once, nothing else), parsed here without building messages; None for any other bytes
    (parsed by protobuf instead). Gives what :func:`_pb_attributes` gives for the same
    ``KeyValue`` (tests/test_otlp_decode.py holds the two equal over mutated bytes).

    An int under a key parsed before is its key looked up (:data:`_INT_KEYS`) and its
    varint read unrolled: the token counts of a request's spans are new ``KeyValue`` s
    under the keys every span repeats (parsing them was a tenth of decoding and mapping a
    span, bench/otlp_decode.py)."""
    n = len(raw)
    if not 6 <= n < 128 or raw[0] != 0x0A:
        return None  # (under 128 bytes, every length that fits is a one-byte varint)
    end_key = 2 + raw[1]
    tag_at = end_key + 2
    if 2 <= n - tag_at <= 4 and raw[tag_at] == 0x18:
        # An int of up to three varint bytes under a key seen before: the key looked up,
        # the varint read here (what the loop below reads, unrolled).
        key = _INT_KEYS.get(raw[:tag_at])
        if key is not None and raw[end_key + 1] == n - end_key - 2:
            last = raw[n - 1]
            if not last & 0x80:
                if n - tag_at == 2:
                    return key, last
                low = raw[tag_at + 1]
                if n - tag_at == 3 and low & 0x80:
                    return key, last << 7 | low & 0x7F
                mid = raw[tag_at + 2]
                if low & 0x80 and mid & 0x80:
                    return key, (last << 7 | mid & 0x7F) << 7 | low & 0x7F
            return None  # a varint that ends before or after the bytes do
    if end_key + 4 > n or raw[end_key] != 0x12 or raw[end_key + 1] != n - end_key - 2:
        return None  # not a one-byte value length reaching to the end
    tag = raw[tag_at]
    try:
        if tag == 0x0A:  # string_value with a one-byte length, to the end
            if raw[end_key + 3] != n - end_key - 4:
                return None
            return raw[2:end_key].decode(), raw[end_key + 4:].decode()
        if tag == 0x18 and n - end_key - 3 <= 9:  # int_value: a varint of 63 bits at most
            last = n - 1
            value = raw[last]
            if value & 0x80:
                return None  # the bytes end inside the varint
            for i in range(last - 1, end_key + 2, -1):
                byte = raw[i]
                if not byte & 0x80:
                    return None  # the varint ends before the bytes do
                value = (value << 7) | (byte & 0x7F)
            key = raw[2:end_key].decode()
            if len(_INT_KEYS) >= _INT_KEYS_MAX:
                _INT_KEYS.clear()
            _INT_KEYS[raw[:tag_at]] = key
            return key, value
        if tag == 0x21 and n - end_key - 3 == 8:  # double_value: 8 bytes, little-endian
            return raw[2:end_key].decode(), finite_or_text(_DOUBLE.unpack_from(raw, n - 8)[0])
    except UnicodeDecodeError:
        return None  # protobuf refuses it too (the whole request): left to it
    return None


_MIN_DEEP_VALUE_BYTES = 4 * MAX_VALUE_DEPTH
"""Fewest bytes of a ``KeyValue`` whose value nests :data:`MAX_VALUE_DEPTH` deep (each
array or kvlist level takes at least a tag and a length in two messages)."""


def _deeper_than(value: Any, depth: int) -> bool:
    """Whether an ``AnyValue`` message nests arrays or kvlists more than ``depth`` deep."""
    if depth < 0:
        return True
    which = value.WhichOneof("value")
    if which == "array_value":
        return any(_deeper_than(v, depth - 1) for v in value.array_value.values)
    if which == "kvlist_value":
        return any(_deeper_than(kv.value, depth - 1) for kv in value.kvlist_value.values)
    return False


def _copied(value: Any) -> Any:
    """A fresh copy of a decoded list or dict value (scalars are shared: immutable)."""
    if type(value) is list:
        return [_copied(v) if type(v) in (list, dict) else v for v in value]
    return {k: _copied(v) if type(v) in (list, dict) else v for k, v in value.items()}


class _RawAttributes:
    """The attributes of one request's resources, spans and events from their raw
    ``KeyValue`` bytes, each distinct ``KeyValue`` parsed once per request (spans of one
    request repeat most of theirs: names, models, providers, operations)."""

    __slots__ = ("body", "checked", "known", "nested")

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.known: dict[bytes, tuple[str, Any]] = {}
        self.nested: dict[bytes, tuple[str, Any]] = {}
        self.checked = False

    def read(self, raws: Iterable[bytes]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        known = self.known
        for raw in raws:
            pair = known.get(raw)
            if pair is None:
                pair = self._parse(raw)
            out[pair[0]] = pair[1]
        return out

    def _parse(self, raw: bytes) -> tuple[str, Any]:
        shared = self.nested.get(raw)
        if shared is not None:  # a list or dict value: each span gets its own copy
            return shared[0], _copied(shared[1])
        pair = _simple_key_value(raw)
        if pair is None:
            try:
                kv = KeyValue.FromString(raw)
            except (DecodeError, RuntimeError, ValueError):
                self._check_body()
                raise OtlpDecodeError("body is not an OTLP protobuf trace request") from None
            if len(raw) >= _MIN_DEEP_VALUE_BYTES and _deeper_than(kv.value, MAX_VALUE_DEPTH):
                # Nesting this deep may pass here and not in the whole request (protobuf
                # bounds a message's depth): ask the whole request, as before.
                self._check_body()
            pair = (kv.key, _pb_attributes((kv,))[kv.key])
            if type(pair[1]) in (list, dict):
                self.nested[raw] = pair  # copied out, never shared between spans
                return pair[0], _copied(pair[1])
        self.known[raw] = pair
        return pair

    def _check_body(self) -> None:
        """Raise :class:`OtlpDecodeError` as the request's declared types would."""
        if self.checked:
            return
        self.checked = True
        try:
            ExportTraceServiceRequest.FromString(self.body)
        except (DecodeError, RuntimeError, ValueError) as exc:
            raise OtlpDecodeError(f"body is not an OTLP protobuf trace request: {exc}") from None


def decode_protobuf(body: bytes) -> DecodedRequest:
    """Decode an ``ExportTraceServiceRequest`` in protobuf binary encoding.

    Speed (issue 11): attributes are read from their raw ``KeyValue`` bytes, each distinct
    one parsed once per request (:class:`_RawAttributes`); the values are those of the
    declared message types, and a body the declared types refuse is refused.

    Args:
        body: the (decompressed) request body.

    Returns:
        The request's spans that passed the per-span checks, and the rejections.

    Raises:
        OtlpDecodeError: the bytes are not a protobuf ExportTraceServiceRequest
            (truncated, garbage, wrong message).
    """
    try:
        request = _RawRequest.FromString(body)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise OtlpDecodeError(f"body is not an OTLP protobuf trace request: {exc}") from None
    spans: list[OtlpSpan] = []
    rejections: list[SpanRejection] = []
    raw = _RawAttributes(body)
    read = raw.read
    append = spans.append
    for resource_spans in request.resource_spans:
        resource_attributes = read(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope = (scope_spans.scope.name, scope_spans.scope.version)
            for span in scope_spans.spans:
                try:
                    events = tuple(
                        {
                            "name": ev.name,
                            "time_unix_nano": ev.time_unix_nano,
                            "attributes": read(ev.attributes),
                        }
                        for ev in span.events
                    ) if span.events else ()
                    status = span.status
                    append(
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
                            read(span.attributes),
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
