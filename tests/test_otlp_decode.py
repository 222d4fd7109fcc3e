"""The protobuf decode against a plain walk of opentelemetry-proto's own messages.

:func:`telemetry.otlp_decode.decode_protobuf` reads attributes from their raw ``KeyValue``
bytes (each distinct one parsed once per request, the common shapes without building
messages). Here every body, good or mutated, must decode to what a walk of the declared
message types gives, or be refused when those types refuse it.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from bench.otlp_decode import make_payloads
from cliffwatch.telemetry import otlp_decode
from cliffwatch.telemetry.otlp_decode import (
    MAX_ATTRIBUTE_VALUE_CHARS,
    DecodedRequest,
    OtlpDecodeError,
    SpanError,
    SpanRejection,
    _pb_attributes,
    _simple_key_value,
    checked_span,
    decode_protobuf,
)
from cliffwatch.telemetry.otlp_fuzz import _flip, good_request, to_protobuf

SEED = 20261201


def reference_decode(body: bytes) -> DecodedRequest:
    """The decode as a walk of the declared message types (each attribute read through
    its ``AnyValue``), with the same per-span checks."""
    try:
        request = ExportTraceServiceRequest.FromString(body)
    except Exception as exc:
        raise OtlpDecodeError(str(exc)) from None
    spans, rejections = [], []
    for rs in request.resource_spans:
        resource = _pb_attributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            for span in ss.spans:
                events = tuple(
                    {"name": ev.name, "time_unix_nano": ev.time_unix_nano,
                     "attributes": _pb_attributes(ev.attributes)}
                    for ev in span.events
                )
                try:
                    spans.append(checked_span(
                        span.trace_id, span.span_id, span.parent_span_id, span.name,
                        span.kind, span.start_time_unix_nano, span.end_time_unix_nano,
                        span.status.code, span.status.message,
                        _pb_attributes(span.attributes), resource,
                        (ss.scope.name, ss.scope.version), events,
                    ))
                except SpanError as exc:
                    rejections.append(
                        SpanRejection(span.trace_id.hex(), span.span_id.hex(), str(exc))
                    )
    return DecodedRequest(tuple(spans), tuple(rejections))


def outcome(decode: Any, body: bytes) -> Any:
    try:
        return decode(body)
    except OtlpDecodeError:
        return "refused"


def test_bench_payloads_decode_as_the_walk() -> None:
    for body in make_payloads(2):
        ours = decode_protobuf(body)
        assert len(ours.spans) == 512
        assert ours == reference_decode(body)


def test_mutated_bodies_decode_or_are_refused_as_the_walk() -> None:
    rng = random.Random(SEED)
    bodies = [to_protobuf(good_request(rng, rng.randint(1, 4))) for _ in range(40)]
    bodies.append(make_payloads(1)[0][:20_000])
    refused = decoded = 0
    for i in range(1500):
        _, mutated = _flip(rng, bodies[i % len(bodies)])
        expected = outcome(reference_decode, mutated)
        assert outcome(decode_protobuf, mutated) == expected, i
        refused += expected == "refused"
        decoded += expected != "refused"
    assert refused > 100 and decoded > 100  # both outcomes reached


def _value(rng: random.Random) -> AnyValue:
    pick = rng.randrange(7)
    if pick == 0:
        return AnyValue(string_value="".join(rng.choice("ab\u00e9\u4e2d\U0001f600 .")
                                             for _ in range(rng.randrange(70))))
    if pick == 1:
        return AnyValue(int_value=rng.choice((0, 1, 127, 128, 2**31, 2**62, 2**63 - 1,
                                              -1, -(2**63), rng.randrange(10**6))))
    if pick == 2:
        return AnyValue(double_value=rng.random())
    if pick == 3:
        return AnyValue(bool_value=rng.random() < 0.5)
    if pick == 4:
        out = AnyValue()
        out.array_value.values.extend([AnyValue(string_value="stop"), AnyValue(int_value=3)])
        return out
    if pick == 5:
        return AnyValue(bytes_value=rng.randbytes(5))
    return AnyValue()


def test_the_common_key_value_shapes_parse_as_protobuf_over_mutated_bytes() -> None:
    rng = random.Random(SEED)
    parsed_here = 0
    for _ in range(20_000):
        key = "".join(rng.choice("gen_ai.usage.tokens\u00e9") for _ in range(rng.randrange(40)))
        raw = KeyValue(key=key, value=_value(rng)).SerializeToString()
        if rng.random() < 0.5:
            out = bytearray(raw)
            for _ in range(rng.randint(1, 3)):
                out[rng.randrange(len(out))] = rng.randrange(256)
            raw = bytes(out)
        ours = _simple_key_value(raw)
        try:
            kv = KeyValue.FromString(raw)
        except Exception:
            assert ours is None, raw  # protobuf refuses it: left to protobuf
            continue
        expected = (kv.key, _pb_attributes((kv,))[kv.key])
        if ours is not None:
            parsed_here += 1
            assert ours == expected and type(ours[1]) is type(expected[1]), raw
    assert parsed_here > 2_000  # the fast path is taken, not only skipped


def _expected(raw: bytes) -> tuple[str, Any]:
    kv = KeyValue.FromString(raw)
    return kv.key, _pb_attributes((kv,))[kv.key]


def _int_raw(key: str, value: int) -> bytes:
    return KeyValue(key=key, value=AnyValue(int_value=value)).SerializeToString()


def test_an_int_made_of_parts_seen_before_is_looked_up_and_equals_protobuf() -> None:
    key_in, key_out = "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"
    three_bytes = _int_raw(key_in, 300)  # a two-byte varint: the value's length is 3
    assert _simple_key_value(three_bytes) == (key_in, 300)
    assert _simple_key_value(_int_raw(key_out, 70)) == (key_out, 70)
    # The input key with the output's count: both parts known, the pair never seen.
    raw = _int_raw(key_in, 70)
    tag_at = 2 + raw[1] + 2  # the value's tag, after the key and both lengths
    assert raw[:tag_at] in otlp_decode._INT_KEYS  # the key is looked up, not parsed
    for value in (0, 1, 127, 128, 300, 16_383, 16_384, 2**21 - 1, 2**21, 2**40):
        one = _int_raw(key_in, value)
        assert _simple_key_value(one) == _expected(one) == (key_in, value)
    # Known key bytes that do not make a KeyValue: the first's lengths (a 3-byte value)
    # with a 1-byte count; bytes added or cut after a count; a varint that ends early or
    # runs past the end; a tag with no varint.
    mismatched = three_bytes[:tag_at + 1] + raw[tag_at + 1:]
    early = three_bytes[:tag_at + 1] + b"\x05\x01"
    for bad in (mismatched, early, raw + b"\x00", raw[:-1], raw[:-1] + b"\x80\x01",
                three_bytes[:-1] + b"\x82", raw[:tag_at - 1] + b"\x01\x18"):
        ours = _simple_key_value(bad)
        try:
            expected = _expected(bad)
        except Exception:  # noqa: BLE001 - protobuf refuses it: it must be left to protobuf
            assert ours is None, bad
            continue
        assert ours is None or ours == expected, bad


@pytest.mark.parametrize("value", [0.2, -1.5e-7, 1e300, 0.0, -0.0, float("nan"), float("inf")])
def test_a_double_parses_here_as_protobuf_gives_it(value: float) -> None:
    raw = KeyValue(key="gen_ai.cost.total_cost", value=AnyValue(double_value=value))
    ours = _simple_key_value(raw.SerializeToString())
    assert ours is not None  # parsed here, not by protobuf
    expected = _expected(raw.SerializeToString())
    assert repr(ours) == repr(expected)  # -0.0 kept, NaN and infinity as their names


@pytest.mark.parametrize("raw", [
    b"\x0a\x01k\x12\x04\x0a\x02\xed\xa0",  # half a surrogate
    b"\x0a\x01k\x12\x05\x0a\x03\xed\xa0\x80",  # a surrogate encoded in UTF-8
    b"\x0a\x01k\x12\x06\x0a\x04\xf4\x90\x80\x80",  # past U+10FFFF
    b"\x0a\x01k\x12\x04\x0a\x02\xc0\x80",  # overlong
    b"\x0a\x02\xc0\x80\x12\x02\x18\x01",  # an overlong key
])
def test_text_protobuf_refuses_is_never_read_here(raw: bytes) -> None:
    assert _simple_key_value(raw) is None
    with pytest.raises(Exception):  # noqa: B017 (protobuf's own DecodeError)
        KeyValue.FromString(raw)


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field (protobuf wire format), for bodies protobuf's own
    messages refuse to build (nested past its depth limit)."""
    size, length = len(payload), b""
    while size > 0x7F:
        length += bytes([size & 0x7F | 0x80])
        size >>= 7
    return bytes([tag]) + length + bytes([size]) + payload


def _nested_key_value(depth: int, kvlist_every: int) -> bytes:
    value = AnyValue(string_value="leaf").SerializeToString()
    for level in range(depth):
        if kvlist_every and level % kvlist_every == 0:  # kvlist_value > values > KeyValue
            value = _field(0x32, _field(0x0A, _field(0x0A, b"k") + _field(0x12, value)))
        else:  # array_value > values
            value = _field(0x2A, _field(0x0A, value))
    return _field(0x0A, b"deep") + _field(0x12, value)


@pytest.mark.parametrize("where", ["resource", "span", "event"])
def test_values_nested_past_protobufs_depth_limit_are_refused_as_before(where: str) -> None:
    # Parsed alone, a KeyValue may nest deeper than inside the whole request: the whole
    # request decides, as it did.
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    seen = set()
    for kvlist_every in (0, 3):
        for depth in range(28, 56):
            kv = _nested_key_value(depth, kvlist_every)
            span = Span(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="s",
                        start_time_unix_nano=1, end_time_unix_nano=2).SerializeToString()
            resource = b""
            if where == "resource":
                resource = _field(0x0A, kv)  # Resource.attributes
            elif where == "span":
                span += _field(0x4A, kv)  # Span.attributes
            else:
                span += _field(0x5A, _field(0x12, b"e") + _field(0x1A, kv))  # an event's
            resource_spans = _field(0x0A, resource) + _field(0x12, _field(0x12, span))
            body = _field(0x0A, resource_spans)
            expected = outcome(reference_decode, body)
            assert outcome(decode_protobuf, body) == expected, (depth, kvlist_every)
            seen.add(expected == "refused")
    assert seen == {True, False}


def test_long_values_are_cut_and_lists_are_not_shared_between_spans() -> None:
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    for i in range(2):
        span = spans.add(trace_id=b"\x01" * 16, span_id=bytes([0] * 7 + [i + 1]), name="s",
                         start_time_unix_nano=1, end_time_unix_nano=2)
        span.attributes.append(KeyValue(key="long", value=AnyValue(
            string_value="x" * (MAX_ATTRIBUTE_VALUE_CHARS + 5))))
        reasons = AnyValue()
        reasons.array_value.values.append(AnyValue(string_value="stop"))
        span.attributes.append(KeyValue(key="reasons", value=reasons))
    body = request.SerializeToString()
    decoded = decode_protobuf(body)
    assert decoded == reference_decode(body)
    first, second = (s.attributes for s in decoded.spans)
    assert first["long"].endswith("...[truncated 5 chars]")
    assert first["reasons"] == second["reasons"] == ["stop"]
    assert first["reasons"] is not second["reasons"]
