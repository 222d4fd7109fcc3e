"""call_usage.KeyGroups: one pass over a span's keys gives what first_value gives per list."""

from __future__ import annotations

import random

from cliffwatch.telemetry import call_usage as cu
from cliffwatch.telemetry import otlp_mapping as om
from cliffwatch.telemetry.call_usage import KeyGroups, call_usage, first_value
from cliffwatch.telemetry.pricing import TokenUsage

_GROUPS = (
    *cu.USAGE_KEY_GROUPS,
    om.REQUEST_MODEL_KEYS,  # shares llm.model_name and embedding.model_name with the next
    om.RESPONSE_MODEL_KEYS,
    om.PROVIDER_KEYS,
    om.OPERATION_KEYS,
)
_VALUES = (None, "", " ", "gpt-4o", 0, 7, -3, 2.5, "12", True, [1, 2], {"a": 1})


def test_firsts_equal_first_value_on_every_list_for_random_spans() -> None:
    groups = KeyGroups(_GROUPS)
    keys = sorted({key for group in _GROUPS for key in group} | {"service.name", "other"})
    rng = random.Random(20261201)
    for _ in range(5_000):
        attrs = {rng.choice(keys): rng.choice(_VALUES) for _ in range(rng.randint(0, 14))}
        assert groups.firsts(attrs) == [first_value(attrs, group) for group in _GROUPS], attrs


def test_a_later_synonym_counts_only_when_the_earlier_ones_are_unset() -> None:
    groups = KeyGroups((("a", "b", "c"), ("c", "a")))
    assert groups.firsts({"c": 3, "b": 2, "a": ""}) == [2, 3]
    assert groups.firsts({"c": 3, "a": 1}) == [1, 3]
    assert groups.firsts({"zzz": 1}) == [None, None]


def test_call_usage_reads_a_span_with_no_usage_as_unknown_counts() -> None:
    usage = call_usage({"gen_ai.operation.name": "chat"}, "pydantic-ai")
    assert usage.tokens == TokenUsage(None, None)
    assert usage.input_tokens_reported is None
    assert usage.cache_detail_known is True  # pydantic-ai omits zero cache counts
    assert call_usage({}, "opentelemetry.instrumentation.openai").cache_detail_known is False
