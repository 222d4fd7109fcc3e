"""A store with prompt-cache tokens, as real producers send them, and its truth by hand.

Two runs (task classes ``tides`` and ``moons``) of OTLP spans shaped like OpenLLMetry's
(``gen_ai.usage.cache_read.input_tokens``, ``gen_ai.usage.cache_creation.input_tokens``,
input counts that include the cache), ingested through the real mapping and write path
(:func:`telemetry.otlp_mapping.map_spans`, :func:`telemetry.write_pipeline.write_spans`).
Besides cached calls they hold one call on a caching model without cache detail (the
upper bound), one reported cost that drifts from litellm's, one unpriced call and the same
call seen by two sibling instrumentations (a duplicate dropped).

:data:`CALLS` is the list both the store and the oracle are made from; :func:`truth`
prices it by hand from ``litellm.model_cost`` (never through cliffwatch's pricing or SQL).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from test_cost_truth import chat, root, span, store_of

from cliffwatch.telemetry.otlp_decode import OtlpSpan
from cliffwatch.telemetry.pricing import import_litellm

TIDES, MOONS = "a" * 32, "b" * 32
CLASS_OF = {TIDES: "tides", MOONS: "moons"}


@dataclass(frozen=True)
class Call:
    """One LLM call of the store (None: the producer sent no such attribute)."""

    trace_id: str
    model: str
    input_tokens: int
    output_tokens: int
    cache_read: int | None = None
    cache_write: int | None = None
    extra: tuple[tuple[str, Any], ...] = ()
    scope: str = "opentelemetry.instrumentation.openai"
    duplicate: bool = False  # a second instrumentation of the call before it

    def attributes(self) -> dict[str, Any]:
        attrs = dict(self.extra)
        if self.cache_read is not None:
            attrs["gen_ai.usage.cache_read.input_tokens"] = self.cache_read
        if self.cache_write is not None:
            attrs["gen_ai.usage.cache_creation.input_tokens"] = self.cache_write
        return chat(self.model, self.input_tokens, self.output_tokens, **attrs)


_MSG = (("gen_ai.response.id", "msg_dup"),)
CALLS: tuple[Call, ...] = (
    Call(TIDES, "claude-sonnet-4-5", 2000, 50, 0, 1500),
    Call(TIDES, "claude-sonnet-4-5", 2100, 60, 1500, 0),
    Call(TIDES, "gpt-4o", 3000, 70, 2048),
    Call(TIDES, "claude-sonnet-4-5", 1000, 10),  # no cache detail: the upper bound
    Call(TIDES, "gpt-4o", 100, 10, 0, extra=(("gen_ai.usage.cost.amount", 0.5),)),  # drift
    Call(TIDES, "claude-sonnet-4-5", 450, 30, 300, 0, _MSG, "com.anthropic.sdk.python"),
    Call(TIDES, "claude-sonnet-4-5", 450, 30, 300, 0, _MSG,
         "opentelemetry.instrumentation.anthropic", duplicate=True),
    Call(MOONS, "gpt-4o", 1200, 40, 1024),
    Call(MOONS, "gpt-5", 1800, 300, 1024),
    Call(MOONS, "acme-llm-9", 500, 40, 100),  # unpriced
)


def build_cache_store(tmp_path: Path, name: str = "cache.duckdb") -> Path:
    """Write :data:`CALLS` as two runs' spans into a new store; returns its path."""
    return store_of(tmp_path, cache_spans(), name)


def cache_spans() -> list[OtlpSpan]:
    """:data:`CALLS` as two runs' OTLP spans (a root each, then the calls)."""
    spans: list[OtlpSpan] = []
    for trace_id, task_class in CLASS_OF.items():
        spans.append(root(1, trace_id=trace_id, **{"gen_ai.workflow.name": task_class}))
        calls = [c for c in CALLS if c.trace_id == trace_id]
        for n, call in enumerate(calls, start=2):
            # a duplicate overlaps the call before it (a second instrumentation of it)
            start = 100 * (n - 1) - 1 if call.duplicate else 100 * n
            end = 100 * (n - 1) + 51 if call.duplicate else 100 * n + 50
            spans.append(span(n, 1, "chat", call.attributes(), scope=call.scope,
                              start_ms=start, end_ms=end, trace_id=trace_id))
    return spans


def _rates(model: str) -> tuple[float, float, float] | None:
    entry = import_litellm().model_cost.get(model)
    if entry is None:
        return None
    base = entry["input_cost_per_token"]
    return (base, entry.get("cache_read_input_token_cost", base),
            entry.get("cache_creation_input_token_cost", base))


def truth(key: str) -> dict[str | None, dict[str, Any]]:
    """Per ``key`` (``model``, ``task_class`` or ``all``): calls, calls without cache
    detail, hit ratio and read saving / write premium / net saving (None when no call of
    the group is priced), from :data:`CALLS` and ``litellm.model_cost``, by hand."""
    out: dict[str | None, dict[str, Any]] = {}
    for call in CALLS:
        if call.duplicate:
            continue
        group = {"model": call.model, "task_class": CLASS_OF[call.trace_id],
                 "all": None}[key]
        g = out.setdefault(group, {"calls": 0, "no_detail": 0, "input": 0, "read": 0,
                                   "saved": None, "premium": None})
        g["calls"] += 1
        rates = _rates(call.model)
        if rates is not None:  # a call without cache detail saves 0 (it read nothing known)
            base, read_rate, write_rate = rates
            read, write = call.cache_read or 0, call.cache_write or 0
            g["saved"] = (g["saved"] or 0.0) + read * (base - read_rate)
            g["premium"] = (g["premium"] or 0.0) + write * (write_rate - base)
        if call.cache_read is None and call.cache_write is None:
            g["no_detail"] += 1
        else:
            g["input"] += call.input_tokens
            g["read"] += call.cache_read or 0
    for g in out.values():
        g["hit_ratio"] = g["read"] / g["input"] if g["input"] else None
        g["net"] = None if g["saved"] is None else g["saved"] - g["premium"]
    return out
