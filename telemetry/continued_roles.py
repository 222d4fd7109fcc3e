"""Roles of the LLM calls of a trace that came in more than one batch.

The mapping (:mod:`telemetry.otlp_mapping`, :mod:`telemetry.span_roles`) gives an LLM call
that says no role itself the role its ancestors' names and kinds say, from the ancestors
in the same batch. An OpenTelemetry SDK's batch span processor exports spans as they
end, children before their parents, on a timer: a long run's trace arrives in several
batches, and a call can be mapped before its ancestors arrive (it is then ``call``, or the
role of the part of its ancestry it had). The Python SDK's ``BatchSpanProcessor`` does
this with its defaults (docs/sources.md#otel-batch-span-processor); tests/test_producers.py
saw a worker stored as ``call`` on a slow machine.

So when a batch continues a trace already stored, :func:`resolve_continued_roles` gives
that trace's calls without a role of their own the role of their whole stored ancestry,
by the same rule (:func:`telemetry.span_roles.ancestry_role`), before its run is
materialised. A call with ``cliff.role`` or a role in its own name keeps it; the other
spans' roles (``run``, ``other``) do not depend on ancestry. Only the traces a batch
continues are read: a batch of new traces (most batches) costs nothing here. Measured on
a copy of the bench's 1M-run store (a scratch script, load 0.9): a batch of 110 roots whose
880 calls came in the write before, 0.129-0.219 s against 0.124-0.154 s without this
step; a batch continuing traces first stored an hour before reads their whole window
(``ingested_at`` since the trace's first write) and cost 1.2-2.0 s more with a cold cache.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import duckdb
import orjson

from cliffwatch.telemetry.span_roles import SpanBatch, span_role_hint, stated_role

_CONTINUED_SPANS = """
SELECT trace_id, span_id, parent_span_id, name, attributes::VARCHAR, role, is_llm_call
FROM spans
WHERE ingested_at >= TIMESTAMP '{since}' AND trace_id IN (SELECT trace_id FROM {seen})
"""
"""The stored spans of the traces in the ``seen`` table; the window is a literal so DuckDB
prunes row groups by zone maps (as ``write_pipeline``'s duplicate check does)."""

_SET_ROLES = """
UPDATE spans SET role = u.role
FROM (SELECT unnest($trace_ids::VARCHAR[]) AS trace_id,
             unnest($span_ids::VARCHAR[]) AS span_id,
             unnest($roles::VARCHAR[]) AS role) AS u
WHERE spans.ingested_at >= TIMESTAMP '{since}'
    AND spans.trace_id = u.trace_id AND spans.span_id = u.span_id
"""


class StoredSpan:
    """A stored span as :mod:`telemetry.span_roles` reads it: ids, name, and its
    attributes parsed from the stored JSON text on first use (most are never read)."""

    __slots__ = ("trace_id", "span_id", "parent_span_id", "name", "_text", "_attributes")

    def __init__(self, trace_id: str, span_id: str, parent_span_id: str | None, name: str,
                 attributes_json: str | None) -> None:
        self.trace_id, self.span_id, self.parent_span_id = trace_id, span_id, parent_span_id
        self.name = name
        self._text = attributes_json
        self._attributes: Mapping[str, Any] | None = None

    @property
    def attributes(self) -> Mapping[str, Any]:
        """The span's attributes (``otel.scope.*`` included, as stored)."""
        if self._attributes is None:
            parsed = orjson.loads(self._text) if self._text else {}
            self._attributes = parsed if isinstance(parsed, dict) else {}
        return self._attributes


def resolve_continued_roles(con: duckdb.DuckDBPyConnection, seen_table: str,
                            since: datetime) -> int:
    """Give the calls of the continued traces the role of their whole stored ancestry.

    Args:
        con: the write's connection, inside its transaction, after the batch's spans are
            inserted and before its runs are materialised.
        seen_table: a table of the batch's traces already stored (column ``trace_id``).
        since: naive UTC; every stored span of those traces was ingested at or after it.

    Returns:
        Calls whose role changed (their ``spans.role`` is updated).
    """
    rows = con.execute(_CONTINUED_SPANS.format(since=since.isoformat(sep=" "),
                                               seen=seen_table)).fetchall()
    spans: dict[tuple[str, str], StoredSpan] = {}
    calls: list[tuple[StoredSpan, str]] = []
    for trace_id, span_id, parent_id, name, attributes, role, is_llm_call in rows:
        if (trace_id, span_id) in spans:
            continue  # (a span is stored once: write_pipeline.insert_new_spans)
        span = spans[trace_id, span_id] = StoredSpan(trace_id, span_id, parent_id, name,
                                                     attributes)
        if is_llm_call:
            calls.append((span, role))
    batch = SpanBatch(spans)
    changed: list[tuple[str, str, str]] = []
    for call, stored_role in calls:
        if stated_role(call.attributes) is not None or span_role_hint(call) is not None:
            continue  # a role of its own: not from its ancestry
        role = str(batch.ancestry_role(call))
        if role != stored_role:
            changed.append((call.trace_id, call.span_id, role))
    if changed:
        trace_ids, span_ids, roles = (list(column) for column in zip(*changed, strict=True))
        con.execute(_SET_ROLES.format(since=since.isoformat(sep=" ")),
                    {"trace_ids": trace_ids, "span_ids": span_ids, "roles": roles})
    return len(changed)
