"""SDK spans as compact pickled batches, and records from them (the process writer's wire).

The exporter's process writer (:mod:`telemetry.export_process`) must take as little of the
application's GIL as it can: :func:`compact_batch` reads each span's fields into one tuple
(private attributes of the SDK's ``ReadableSpan``: no property calls, no copies; an ended
span is immutable) and pickles the batch in C, with reducers that turn the SDK's objects
into plain ones (``BoundedAttributes`` -> dict, ``Status`` -> ``(code, description)``, a
``Resource`` -> its attribute dict, pickled once per batch since pickle memoises shared
objects). Measured on the bench's spans (16,384, 2 cores, load 5): 1.5 us a span to read
and pickle, against ~80 us to map one span and ~50 us to make one.

:func:`records_from_compact` (in the writer process) rebuilds the plain
:class:`~telemetry.otlp_decode.OtlpSpan` of each row exactly as
:func:`telemetry.sdk_mapping.otlp_span_from_sdk` builds it from the SDK span, and maps it
through :func:`telemetry.otlp_mapping.map_span`; ``tests/test_export_process.py`` holds the
two paths equal.

Row layout (one tuple a span, after unpickling): ``(trace_id, span_id, parent_span_id or
None, name, kind value, start ns, end ns or None, (status code value, description),
attributes dict, resource attributes dict, (scope name, version) or None, events)``, each
event ``(name, time ns, attributes dict)``; ids are ints.
"""

from __future__ import annotations

import copyreg
import io
import logging
import pickle
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.status import Status

from cliffwatch.telemetry.otlp_decode import OtlpSpan
from cliffwatch.telemetry.otlp_mapping import MappingConfig, map_span, resource_json_text
from cliffwatch.telemetry.pricing import PriceMemo
from cliffwatch.telemetry.records import SpanRecord
from cliffwatch.telemetry.sdk_mapping import _plain_attributes

logger = logging.getLogger(__name__)

PACE_ROWS = 256
"""Rows :func:`records_from_rows` maps between two calls of its ``pace`` (~5 ms of CPU)."""

Row = tuple[Any, ...]
"""One span as :func:`compact_batch` pickles it (layout in the module doc)."""

_STATUS_TEXT = {code.value: text for code, text in
                ((StatusCode.UNSET, "unset"), (StatusCode.OK, "ok"), (StatusCode.ERROR, "error"))}


def _attributes_dict(attributes: Any) -> tuple[Any, tuple[Any, ...]]:
    inner = getattr(attributes, "_dict", None)
    return dict, (inner if isinstance(inner, dict) else dict(attributes),)


def _bounded_list(items: Any) -> tuple[Any, tuple[Any, ...]]:
    inner = getattr(items, "_dq", None)
    return tuple, (tuple(inner if inner is not None else items),)


def _reducers() -> dict[Any, Callable[[Any], Any]]:
    table: dict[Any, Callable[[Any], Any]] = dict(copyreg.dispatch_table)
    table[BoundedAttributes] = _attributes_dict
    table[MappingProxyType] = lambda m: (dict, (dict(m),))
    table[BoundedList] = _bounded_list
    table[Event] = lambda e: (tuple, ((e.name, e.timestamp, e.attributes),))
    table[Resource] = lambda r: (dict, (dict(r.attributes),))
    table[InstrumentationScope] = lambda s: (tuple, ((s.name, s.version),))
    table[Status] = lambda s: (tuple, ((s.status_code.value, s.description),))
    table[SpanKind] = lambda k: (int, (k.value,))
    return table


class _Pickler(pickle.Pickler):
    dispatch_table = _reducers()


def _dumps(rows: list[Row]) -> bytes:
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(rows)
    return buffer.getvalue()


def _fast_rows(spans: Sequence[ReadableSpan]) -> list[Row]:
    # The SDK's private fields, down to the dict inside BoundedAttributes and the deque
    # inside BoundedList: pickled in C with no reducer call a span, 1.5 us a span against
    # 4.1 through the public properties' objects and their reducers (measured, load 5).
    # A span made otherwise (a plain dict, a tuple of events) raises AttributeError here.
    rows: list[Row] = []
    append = rows.append
    for s in spans:
        c = s._context
        p = s._parent
        append((c.trace_id, c.span_id, p.span_id if p is not None else None, s._name,  # type: ignore[union-attr]
                s._kind, s._start_time, s._end_time, s._status,
                s._attributes._dict,  # type: ignore[union-attr]
                s._resource, s._instrumentation_scope,
                s._events._dq or ()))  # type: ignore[attr-defined]
    return rows


def _public_row(s: ReadableSpan) -> Row:
    c = s.context
    if c is None or s.start_time is None:
        raise ValueError(f"span {s.name!r} has no span context or start time")
    p = s.parent
    return (c.trace_id, c.span_id, p.span_id if p is not None else None, s.name, s.kind,
            s.start_time, s.end_time, s.status, dict(s.attributes or {}), s.resource,
            s.instrumentation_scope, tuple(s.events))


def compact_batch(
    spans: Sequence[ReadableSpan], on_error: Callable[[ReadableSpan], None] | None = None
) -> tuple[bytes, int]:
    """Pickle a batch of finished SDK spans as compact rows (module doc).

    A span the fast read cannot take (an SDK whose private fields differ, a span without
    context or start time) sends its batch through the public properties instead; a span
    that fails there too is left out and passed to ``on_error`` (inside the ``except``;
    None re-raises).

    Returns:
        ``(payload bytes, spans in it)``.
    """
    try:
        rows = _fast_rows(spans)
        if all(row[5] is not None for row in rows):
            return _dumps(rows), len(rows)
    except (AttributeError, TypeError):
        pass
    rows = []
    for span in spans:
        try:
            rows.append(_public_row(span))
        except Exception:
            if on_error is None:
                raise
            on_error(span)
    return _dumps(rows), len(rows)


def load_rows(payload: bytes) -> list[Row]:
    """The rows of a :func:`compact_batch` payload (written by this process or its parent,
    never by anyone else: the pipe is private)."""
    rows: list[Row] = pickle.loads(payload)  # noqa: S301 - our own pipe, our own bytes
    return rows


def row_ids(row: Row) -> tuple[str, str]:
    """``(trace id, span id)`` of a row as hex, for log lines (``?`` when unreadable)."""
    try:
        return format(row[0], "032x"), format(row[1], "016x")
    except (TypeError, ValueError, IndexError):
        return "?", "?"


def _event(event: Any) -> dict[str, Any]:
    name, timestamp, attributes = event
    return {"name": name, "time_unix_nano": timestamp,
            "attributes": _plain_attributes(attributes)}


def otlp_span_from_row(row: Row, resource_attributes: dict[str, Any]) -> OtlpSpan:
    """The plain span of one row, as ``otlp_span_from_sdk`` gives for the SDK span."""
    (trace_id, span_id, parent_id, name, kind, start, end, status, attributes, _resource,
     scope, events) = row
    return OtlpSpan(
        trace_id=format(trace_id, "032x"),
        span_id=format(span_id, "016x"),
        parent_span_id=format(parent_id, "016x") if parent_id is not None else None,
        name=name,
        kind=kind + 1,  # OTLP: SPAN_KIND_UNSPECIFIED is 0, so the SDK's INTERNAL (0) is 1
        start_time_unix_nano=start,
        end_time_unix_nano=end if end is not None else start,
        status_code=_STATUS_TEXT.get(status[0], "unset"),
        status_message=status[1] or None,
        attributes=_plain_attributes(attributes),
        resource_attributes=resource_attributes,
        scope_name=scope[0] if scope is not None else None,
        scope_version=scope[1] if scope is not None else None,
        events=tuple(_event(e) for e in events),
    )


def records_from_rows(
    rows: Iterable[Row],
    source: str = "cliffwatch",
    on_error: Callable[[Row], None] | None = None,
    pace: Callable[[], None] | None = None,
) -> list[SpanRecord]:
    """Map rows as ``sdk_mapping.records_from_sdk_spans`` maps the spans they came from.

    A batch's price look-ups and each resource's plain attributes and JSON are worked out
    once (pickle gives spans of one ``Resource`` one shared dict). A row that cannot be
    mapped goes to ``on_error`` (inside the ``except``; None re-raises) and is left out.
    ``pace`` is called after every :data:`PACE_ROWS` rows (the thread writer gives way to
    the application there: :mod:`telemetry.export_thread`).
    """
    config = MappingConfig(source=source)
    memo = PriceMemo()
    resources: dict[int, tuple[Mapping[str, Any], dict[str, Any], str]] = {}
    records: list[SpanRecord] = []
    for i, row in enumerate(rows, 1):
        if pace is not None and not i % PACE_ROWS:
            pace()
        try:
            resource = row[9]
            known = resources.get(id(resource))
            if known is None or known[0] is not resource:
                plain = _plain_attributes(resource)
                known = (resource, plain, resource_json_text(plain))
                resources[id(resource)] = known
            records.append(map_span(otlp_span_from_row(row, known[1]), config,
                                    price_memo=memo, resource_json=known[2]))
        except Exception:
            if on_error is None:
                raise
            on_error(row)
    return records
