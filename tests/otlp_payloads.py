"""Build OTLP trace requests (OTLP/JSON dicts, protobuf bytes) for tests.

:func:`request_json` turns :class:`~telemetry.records.SpanRecord` objects (say, from
:mod:`telemetry.testing`) back into the OTLP/JSON a producer would have sent, so a test can
check ``map(decode(encode(record))) == record``. :func:`otlp_span` builds one span dict from
scratch with typed attributes, for hand-shaped edge cases (bad ids, missing times). The
protobuf form goes through the OTel SDK's own encoder types, never hand-written bytes.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from cliffwatch.telemetry.records import SpanRecord

_STATUS = {"unset": 0, "ok": 1, "error": 2}


def any_value(value: Any) -> dict[str, Any]:
    """The OTLP/JSON ``AnyValue`` of a Python value (int64 as a string, as the spec allows)."""
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, list | tuple):
        return {"arrayValue": {"values": [any_value(v) for v in value]}}
    if isinstance(value, Mapping):
        return {"kvlistValue": {"values": key_values(value)}}
    return {"stringValue": str(value)}


def key_values(attrs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """OTLP/JSON ``KeyValue`` list of a mapping (None values left out)."""
    return [{"key": k, "value": any_value(v)} for k, v in attrs.items() if v is not None]


def otlp_span(
    *,
    trace_id: str,
    span_id: str,
    name: str = "span",
    parent_span_id: str | None = None,
    start_ns: int | None = 1_793_520_000_000_000_000,
    end_ns: int | None = 1_793_520_001_000_000_000,
    attributes: Mapping[str, Any] | None = None,
    status_code: int = 0,
    kind: int = 1,
) -> dict[str, Any]:
    """One OTLP/JSON span; ``start_ns``/``end_ns`` None leave the field out."""
    span: dict[str, Any] = {"traceId": trace_id, "spanId": span_id, "name": name, "kind": kind}
    if parent_span_id:
        span["parentSpanId"] = parent_span_id
    if start_ns is not None:
        span["startTimeUnixNano"] = str(start_ns)
    if end_ns is not None:
        span["endTimeUnixNano"] = str(end_ns)
    span["attributes"] = key_values(attributes or {})
    span["status"] = {"code": status_code}
    return span


def request_of_spans(
    spans: Sequence[Mapping[str, Any]],
    resource: Mapping[str, Any] | None = None,
    scope_name: str | None = None,
) -> dict[str, Any]:
    """An OTLP/JSON ExportTraceServiceRequest holding ``spans`` under one resource."""
    scope: dict[str, Any] = {"name": scope_name} if scope_name else {}
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": key_values(resource or {"service.name": "test"})},
                "scopeSpans": [{"scope": scope, "spans": list(spans)}],
            }
        ]
    }


def request_json(records: Iterable[SpanRecord]) -> dict[str, Any]:
    """The OTLP/JSON request a producer would have sent for ``records``.

    Records are grouped by their resource attributes; span attributes and events are
    taken from the records' JSON columns.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        span = otlp_span(
            trace_id=rec.trace_id,
            span_id=rec.span_id,
            name=rec.name,
            parent_span_id=rec.parent_span_id,
            start_ns=rec.start_time_unix_nano,
            end_ns=rec.end_time_unix_nano,
            attributes=json.loads(rec.attributes),
            status_code=_STATUS[rec.status_code],
        )
        if rec.status_message:
            span["status"]["message"] = rec.status_message
        events = json.loads(rec.events)
        if events:
            span["events"] = [
                {
                    "name": ev["name"],
                    "timeUnixNano": str(ev["time_unix_nano"]),
                    "attributes": key_values(ev.get("attributes") or {}),
                }
                for ev in events
            ]
        groups.setdefault(rec.resource_attributes, []).append(span)
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": key_values(json.loads(resource))},
                "scopeSpans": [{"scope": {}, "spans": spans}],
            }
            for resource, spans in groups.items()
        ]
    }


def to_protobuf(request: Mapping[str, Any]) -> bytes:
    """Protobuf bytes of an OTLP/JSON request (ids converted from hex, as OTLP/JSON says)."""
    message = json.loads(json.dumps(request))
    for resource_spans in message.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if span.get(key):
                        # protobuf's JSON reads bytes as base64; OTLP/JSON writes hex.
                        span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()
    return json_format.ParseDict(message, ExportTraceServiceRequest()).SerializeToString()


def otlp_json_of(request: ExportTraceServiceRequest) -> dict[str, Any]:
    """The OTLP/JSON form of a protobuf request: hex ids, integer enums (the OTLP spec's)."""
    message = json_format.MessageToDict(request, use_integers_for_enums=True)
    for resource_spans in message.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if span.get(key):
                        span[key] = base64.b64decode(span[key]).hex()
    return message
