"""PriceMemo's memoised per-token cost against litellm's ``cost_per_token``, model by model.

For every entry of litellm's bundled map the memo costs from memoised rates (no
usage-dependent key, no per-unit key: ``pricing.memoisable``), the cost of each
usage in a grid must equal litellm's own, relative 1e-12, and the rates must be the ones
litellm bills at.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest

from cliffwatch.telemetry import pricing
from cliffwatch.telemetry.pricing import PriceMemo, TokenUsage, flat_cost_usd, price_call

_INPUTS = (0, 1, 1_234, 150_000)
_OUTPUTS = (0, 7, 5_000)


def _grid() -> list[TokenUsage]:
    """Input, output, cache read, cache creation and reasoning counts, zeros and None
    included, every one consistent (cache within input, reasoning within output)."""
    usages = []
    for tokens_in, tokens_out in itertools.product(_INPUTS, _OUTPUTS):
        usages.append(TokenUsage(tokens_in, tokens_out))
        for read, write, reasoning in itertools.product((0, 3), (0, 2), (0, 5)):
            usages.append(TokenUsage(
                tokens_in + (read * 100 + write * 50 if tokens_in else 0),
                tokens_out + (reasoning * 10 if tokens_out else 0),
                read * 100 if tokens_in else None,
                write * 50 if tokens_in else None,
                reasoning * 10 if tokens_out else None,
            ))
    return usages


def _eligible() -> list[str]:
    model_cost = pricing.import_litellm().model_cost
    return sorted(
        key for key, entry in model_cost.items()
        if pricing._is_token_priced(entry) and pricing.memoisable(key, entry)
    )


def _litellm_cost_usd(key: str, entry: dict[str, Any], usage: TokenUsage) -> float | None:
    litellm = pricing.import_litellm()
    provider = entry.get("litellm_provider") or None
    try:
        prompt_usd, completion_usd = litellm.cost_per_token(
            model=key, custom_llm_provider=provider, usage_object=pricing.litellm_usage(usage)
        )
    except Exception:  # litellm cannot price it: price_call logs and leaves it unpriced
        return None
    return float(prompt_usd) + float(completion_usd)


def test_the_grid_is_large_and_the_eligible_entries_are_most_of_the_map() -> None:
    model_cost = pricing.import_litellm().model_cost
    assert len(_grid()) > 100
    assert len(_eligible()) > 0.5 * len(model_cost)
    assert "gpt-4o-mini" in _eligible() and "claude-sonnet-4-5" in _eligible()
    assert "gemini/gemini-2.5-pro" not in _eligible()  # tiered above 200k tokens
    # litellm strips the repeated prefix and bills perplexity/sonar's rates
    assert "perplexity/perplexity/sonar" not in _eligible()


def test_memoised_cost_equals_litellms_for_every_eligible_model_and_usage() -> None:
    model_cost = pricing.import_litellm().model_cost
    usages = _grid()
    mismatches: list[str] = []
    checked = 0
    for key in _eligible():
        entry = model_cost[key]
        memo = PriceMemo()
        for usage in usages:
            want = _litellm_cost_usd(key, entry, usage)
            got = price_call(key, usage, memo=memo)
            if want is None:
                continue
            checked += 1
            if got.computed_usd is None or not math.isclose(
                got.computed_usd, want, rel_tol=1e-12, abs_tol=0.0
            ):
                mismatches.append(f"{key} {usage}: memo {got.computed_usd} litellm {want}")
        # every call after a mix's first was costed from the memo
        assert memo.prices, key
    assert checked > 100_000
    assert not mismatches, f"{len(mismatches)} mismatches, first: {mismatches[:5]}"


def test_the_memo_is_used_and_agrees_with_pricing_each_call_alone() -> None:
    memo = PriceMemo()
    usages = _grid()
    for usage in usages:
        assert price_call("gpt-4o-mini", usage, memo=memo) == price_call("gpt-4o-mini", usage)
    assert len(memo.prices) == 8  # one per token-type mix


@pytest.mark.parametrize("model", ["gemini/gemini-2.5-pro", "acme-unknown"])
def test_usage_dependent_or_unknown_models_are_never_costed_from_the_memo(model: str) -> None:
    memo = PriceMemo()
    for usage in (TokenUsage(1_000, 50), TokenUsage(250_000, 50), TokenUsage(1_000, 50)):
        assert price_call(model, usage, memo=memo) == price_call(model, usage)
    assert not memo.prices


def test_inconsistent_counts_are_left_to_litellm() -> None:
    price = pricing.price_for("gpt-4o-mini")
    assert price is not None
    assert flat_cost_usd(TokenUsage(10, 5, 20), price) is None  # cache reads above input
    assert flat_cost_usd(TokenUsage(10, 5, None, None, 9), price) is None
    memo = PriceMemo()
    for usage in (TokenUsage(100, 5, 20), TokenUsage(10, 5, 20), TokenUsage(10, 5, 20)):
        assert price_call("gpt-4o-mini", usage, memo=memo) == price_call("gpt-4o-mini", usage)


def test_rates_carried_between_batches_follow_a_changed_entry() -> None:
    litellm = pricing.import_litellm()
    key = "gpt-4o-mini"
    original = litellm.model_cost[key]
    saved = dict(original)
    usage = TokenUsage(1_000, 100)
    first = price_call(key, usage, memo=PriceMemo())
    assert price_call(key, usage, memo=PriceMemo()) == first  # carried from the first batch
    try:
        litellm.register_model(
            {key: {**saved, "input_cost_per_token": saved["input_cost_per_token"] * 3}}
        )
        changed = price_call(key, usage, memo=PriceMemo())
        assert changed == price_call(key, usage)
        assert changed.computed_usd is not None and first.computed_usd is not None
        assert changed.computed_usd > first.computed_usd
    finally:  # the old prices back (register_model clears litellm's caches), then the
        # very entry back: register_model fills every ModelInfo key in, None included
        litellm.register_model({key: saved})
        litellm.model_cost[key] = original
    assert price_call(key, usage, memo=PriceMemo()) == first == price_call(key, usage)
    assert pricing.memoisable(key, litellm.model_cost[key])


def test_a_batchs_repeated_calls_cost_as_each_call_alone() -> None:
    # PriceMemo.calls (rates by candidate list and mix) and .unpriced (lists with no
    # entry) take later calls past the entry look-up: each result must equal pricing
    # the call with no memo at all.
    memo = PriceMemo()
    candidates = [
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"), ("claude-sonnet-4-5", None),
        (None, "text-embedding-3-small"), ("acme-internal-7b", "acme-internal-7b"),
        "gpt-4o", ["gpt-4o", "gpt-4o-mini"], "gemini/gemini-2.5-pro",
    ]
    usages = _grid()[:60] + [TokenUsage(None, None), TokenUsage(40, None)]
    for _ in range(2):
        for models in candidates:
            for i, usage in enumerate(usages):
                reported = 0.25 if i % 7 == 0 else None
                known = None if i % 3 else bool(i % 2)
                got = price_call(models, usage, reported_usd=reported,
                                 cache_detail_known=known, memo=memo)
                assert got == price_call(models, usage, reported_usd=reported,
                                         cache_detail_known=known), (models, usage)
    assert memo.calls and memo.unpriced  # both short cuts were taken
    assert not any("gemini-2.5-pro" in str(key) for key in memo.calls)  # tiered: never
