"""The mapping's short cuts (issue 11) against the general computations they stand for.

- :meth:`KeyGroups.firsts` (a plan per key sequence, then its compiled reader) against
  :func:`first_value` per list;
- :func:`usage_parts` (counts without cache or reasoning taken as they are) against
  :func:`token_count` and :func:`normalised_tokens` on every value;
- the mapping's in-bounds check against :func:`bound_usage` on every record, over the
  bench's payloads and the fuzz corpus (absurd counts and costs included, and the
  rejection reason's name set by a producer or only inside a value or the scope);
- a call costed inline from the batch's memo (rates, or no price) against
  :func:`price_call` without a memo;
- the attributes text with the scope appended against the encoder on the merged dict.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from bench.otlp_decode import make_payloads
from cliffwatch.telemetry import otlp_mapping
from cliffwatch.telemetry.call_usage import (
    USAGE_KEY_GROUPS,
    KeyGroups,
    first_value,
    normalised_tokens,
    token_count,
    usage_parts,
)
from cliffwatch.telemetry.content_capture import without_content
from cliffwatch.telemetry.json_text import JSON_ENCODER
from cliffwatch.telemetry.otlp_body import CONTENT_TYPE_JSON, CONTENT_TYPE_PROTOBUF, decode_body
from cliffwatch.telemetry.otlp_decode import OtlpDecodeError, OtlpSpan
from cliffwatch.telemetry.otlp_fuzz import fuzz_cases
from cliffwatch.telemetry.otlp_mapping import MappingConfig, map_span, map_spans
from cliffwatch.telemetry.pricing import PriceMemo
from cliffwatch.telemetry.records import SpanRecord
from cliffwatch.telemetry.span_roles import SpanBatch

SEED = 20261201
_VALUES: tuple[Any, ...] = (None, "", " ", "gpt-4o", 0, 7, -1, 2**70, 1.5, 3.0, "12", True,
                            [1], {"a": 1}, float("nan"))


def test_firsts_equals_first_value_for_every_list() -> None:
    rng = random.Random(SEED)
    groups = [*USAGE_KEY_GROUPS, ("a", "b", "c"), ("c", "a"), ("b",)]
    keys = KeyGroups(groups)
    names = sorted({k for group in groups for k in group} | {"x", "y"})
    for _ in range(20_000):
        attrs = {name: rng.choice(_VALUES) for name in rng.sample(names, rng.randrange(9))}
        got = keys.firsts(attrs)
        assert got == [first_value(attrs, group) for group in groups], attrs
        assert keys.firsts(dict(reversed(attrs.items()))) == got  # another key order


def test_usage_parts_equals_the_general_normalisation() -> None:
    rng = random.Random(SEED)
    for _ in range(20_000):
        values = [rng.choice(_VALUES) if rng.random() < 0.6 else None for _ in range(5)]
        scope = rng.choice((None, "openinference.instrumentation.openai", "litellm"))
        counts = [None if v is None else token_count(v) for v in values]
        omits_zero = bool(scope) and scope.startswith("openinference.instrumentation")
        if all(v is None for v in values):
            expected = (normalised_tokens(None, None), None, omits_zero)
        else:
            tokens = normalised_tokens(*counts)
            known = (tokens.cache_read_tokens is not None
                     or tokens.cache_creation_tokens is not None or omits_zero)
            expected = (tokens, counts[0], known)
        assert usage_parts(values, scope) == expected, (values, scope)


def _poisoned_counts() -> tuple[OtlpSpan, ...]:
    """Calls with each cache and reasoning count (and the cost) absurd in turn."""
    spans = []
    keys = ("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_creation.input_tokens",
            "gen_ai.usage.reasoning.output_tokens", "gen_ai.usage.cost.amount",
            "gen_ai.usage.input_tokens")
    for n, (key, value) in enumerate(
        (key, value) for key in keys for value in (-1, 2**40, 1.5, "x", 10**10, 1e300, 5)
    ):
        attrs = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini",
                 "gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 10,
                 key: value}
        spans.append(OtlpSpan("1" * 32, f"{n + 1:016x}", None, "chat", 3, 1, 2, "ok", None,
                              attrs, {}))
    return tuple(spans)


def _reason_elsewhere() -> tuple[OtlpSpan, ...]:
    """Spans with the rejection reason's name set by the producer, or only inside a value,
    a nested key or the scope's name (the in-bounds check reads the span's keys, not the
    text), beside values whose text a parse and encoding could change."""
    reason = "cliff.usage_rejected_reason"
    odd = {"f": 0.2, "tiny": 1e-05, "nan": float("nan"), "big": 2**70, "s": 'é \n " \ud800',
           "list": [1, "x", None, 1e-07], "neg": -0.0}
    places: list[tuple[dict[str, Any], str | None]] = [
        ({reason: "tokens_negative"}, None),
        ({reason: ["a", 1]}, None),
        ({"note": f"see {reason}"}, None),
        ({"nested": {reason: "x", "n": 1.5}}, None),
        ({}, reason),
        ({"k": reason}, "scope"),
    ]
    spans = []
    for n, (extra, scope) in enumerate(places * 2):
        usage = {"gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 10}
        if n >= len(places):
            usage = {}  # the same places on spans without counts
        attrs = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini",
                 **usage, **odd, **extra}
        spans.append(OtlpSpan("2" * 32, f"{n + 1:016x}", None, "chat", 3, 1, 2, "ok", None,
                              attrs, {}, scope, "1"))
    return tuple(spans)


def _corpus() -> list[tuple[OtlpSpan, ...]]:
    batches = [without_content(decode_body(body, CONTENT_TYPE_PROTOBUF).spans)
               for body in make_payloads(2)]
    batches.append(_poisoned_counts())
    batches.append(_reason_elsewhere())
    for case in fuzz_cases(SEED, 150, ("json", "protobuf")):
        body = case.request.partition(b"\r\n\r\n")[2]
        kind = CONTENT_TYPE_JSON if case.kind == "json" else CONTENT_TYPE_PROTOBUF
        try:
            batches.append(decode_body(body, kind).spans)
        except OtlpDecodeError:
            continue
    return batches


def test_records_in_bounds_are_decided_as_bound_usage_decides_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    batches = _corpus()
    fast = [map_spans(spans, MappingConfig()) for spans in batches]
    # bounds no count or cost is within: every record with one goes through bound_usage
    monkeypatch.setattr(otlp_mapping, "MAX_TOKENS_PER_SPAN", -1)
    monkeypatch.setattr(otlp_mapping, "MAX_COST_USD_PER_CALL", -1.0)
    general = [map_spans(spans, MappingConfig()) for spans in batches]
    assert fast == general
    records = [r for recs, _ in fast for r in recs]
    assert len(records) > 1_000
    assert any("cliff.usage_rejected_reason" in r.attributes for r in records)
    assert any(r.cost_source == "provider" for r in records)


def _one_by_one(spans: tuple[OtlpSpan, ...]) -> list[SpanRecord]:
    """map_spans's records made by map_span alone: no batch memo, so every call is
    costed by price_call looking its model up."""
    by_key: dict[tuple[str, str], OtlpSpan] = {}
    for span in spans:
        by_key.setdefault((span.trace_id, span.span_id), span)
    batch = SpanBatch(by_key)
    records = []
    for span in by_key.values():
        try:
            records.append(map_span(span, MappingConfig(), batch.ancestors(span)))
        except Exception:  # noqa: BLE001 (map_spans rejects it: compared below)
            continue
    return records


def test_calls_costed_from_the_batch_memo_equal_price_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The mapping's memo hits (memoised rates and flat_cost_usd, or a model the batch
    # found unpriced; a reported cost beside either) against price_call alone.
    batches = _corpus()
    hits = []
    known_call = PriceMemo.known_call

    def counted(self: PriceMemo, *args: Any) -> Any:
        found = known_call(self, *args)
        if found[0]:
            hits.append(1)
        return found

    monkeypatch.setattr(PriceMemo, "known_call", counted)
    fast = [map_spans(spans, MappingConfig())[0] for spans in batches]
    assert len(hits) > 500
    assert fast == [_one_by_one(spans) for spans in batches]
    records = [r for recs in fast for r in recs]
    assert {r.cost_source for r in records} >= {"computed", "provider", "unpriced"}
    assert any(r.cache_detail_missing for r in records)


@pytest.mark.parametrize("scope", [(None, None), ("s", None), (None, "1"), ("s", "1"), ("", "")])
@pytest.mark.parametrize("attrs", [{}, {"a": 1}, {"otel.scope.name": "own", "a": 0.2},
                                   {"otel.scope.version": "9"}, {"a": "null", "b": [1e-5]}])
def test_attributes_text_equals_the_attributes_with_their_scope(
    scope: tuple[str | None, str | None], attrs: dict[str, Any]
) -> None:
    span = OtlpSpan("1" * 32, "2" * 16, None, "x", 1, 1, 2, "ok", None, attrs, {}, *scope)
    expected = dict(attrs)
    if scope[0]:
        expected.setdefault("otel.scope.name", scope[0])
    if scope[1]:
        expected.setdefault("otel.scope.version", scope[1])
    for _ in range(2):  # the scope's text made, then remembered
        assert otlp_mapping._attributes_json(span) == JSON_ENCODER.encode(expected)


def test_firsts_of_a_compiled_plan_equals_first_value() -> None:
    # Each key sequence read three times with other values: the plan's loop, then its
    # compiled reader (made on the second sight, kept for the third).
    rng = random.Random(SEED + 1)
    groups = [*USAGE_KEY_GROUPS, ("a", "b", "c"), ("c", "a"), ("b",), ("it's", 'q"\\')]
    keys = KeyGroups(groups)
    names = sorted({k for group in groups for k in group} | {"x", "y"})
    shapes = [rng.sample(names, rng.randrange(12)) for _ in range(300)]
    for _ in range(3):
        for shape in shapes:
            attrs = {name: rng.choice(_VALUES) for name in shape}
            assert keys.firsts(attrs) == [first_value(attrs, group) for group in groups], attrs
    assert sum(not isinstance(plan, tuple) for plan in keys._plans.values()) >= 250


def test_task_class_equals_task_class_of() -> None:
    # The mapping's inline task class (a text of its own, or the resource's for a span
    # that is not a root) against task_class_of, over the corpus and spans whose own value
    # is blank, odd-typed or missing on roots, agents and children with a resource's.
    config = MappingConfig()
    resource = {"gen_ai.agent.name": " from-resource "}
    own_values = (None, "", "  ", " mine ", 7, ["x"], True)
    extra = []
    for n, (own, parent, res) in enumerate(
        (own, parent, res) for own in own_values for parent in (None, "a" * 16)
        for res in ({}, resource)
    ):
        attrs: dict[str, Any] = {"openinference.span.kind": "AGENT"}
        if own is not None:
            attrs["agent.name"] = own
        extra.append(OtlpSpan("3" * 32, f"{n + 1:016x}", parent, " agent x ", 1, 1, 2, "ok",
                              None, attrs, res))
    checked = 0
    for spans in [*_corpus(), tuple(extra)]:
        records, _ = map_spans(spans, config)
        by_id: dict[tuple[str, str], OtlpSpan] = {}
        for span in spans:
            by_id.setdefault((span.trace_id, span.span_id), span)  # the first, as mapped
        for record in records:
            span = by_id[(record.trace_id, record.span_id)]
            assert record.task_class == otlp_mapping.task_class_of(
                span, config.task_class_attributes), span
            checked += 1
    assert checked > 1_000
