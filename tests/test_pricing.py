"""telemetry.pricing against litellm's bundled price map, read by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cliffwatch import settings
from cliffwatch.telemetry.conventions import CostSource
from cliffwatch.telemetry.pricing import (
    PriceMemo,
    TokenUsage,
    cost_of,
    import_litellm,
    price_call,
    price_for,
    recompute_cost_usd,
)


def test_cost_is_tokens_times_litellms_prices() -> None:
    entry = import_litellm().model_cost["gpt-4o-mini"]
    want = 1234 * entry["input_cost_per_token"] + 567 * entry["output_cost_per_token"]
    got = cost_of("gpt-4o-mini", 1234, 567)
    assert got.source is CostSource.COMPUTED
    assert got.cost_usd == pytest.approx(want, rel=1e-12)
    assert got.price is not None and got.price.model_key == "gpt-4o-mini"


def test_a_provider_prefix_finds_the_bare_model() -> None:
    assert price_for("openai/gpt-4o-mini") == price_for("gpt-4o-mini")


def test_an_unknown_model_is_unpriced_never_zero() -> None:
    got = cost_of("no-such-model-anywhere", 100, 100)
    assert got.source is CostSource.UNPRICED
    assert got.cost_usd is None and got.price is None


def test_no_tokens_at_all_is_unpriced() -> None:
    assert cost_of("gpt-4o-mini", None, None).cost_usd is None


def test_override_file_prices_a_custom_model_and_wins_over_the_map(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({
        "acme-llm": {"input_cost_per_token": 1e-6, "output_cost_per_token": 3e-6},
        "gpt-4o-mini": {"input_cost_per_token": 9e-6, "output_cost_per_token": 9e-6},
    }))
    assert cost_of("acme-llm", 1000, 100, path).cost_usd == pytest.approx(1e-3 + 3e-4)
    assert cost_of("gpt-4o-mini", 1, 1, path).cost_usd == pytest.approx(18e-6)


def test_override_file_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "env-prices.json"
    path.write_text(json.dumps({"acme-env": {"input_cost_per_token": 2e-6,
                                             "output_cost_per_token": 2e-6}}))
    monkeypatch.setenv(settings.CLIFFWATCH_PRICE_OVERRIDES, str(path))
    assert cost_of("acme-env", 10, 10).cost_usd == pytest.approx(40e-6)


def test_a_broken_override_file_is_a_clear_setting_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(settings.SettingError, match="not JSON"):
        price_for("acme", path)


# --- cache, reasoning, tiers: litellm's cost logic, checked against the price map by hand -----


def _entry(model: str) -> dict:
    return import_litellm().model_cost[model]


def test_anthropic_cache_reads_and_writes_are_priced_at_their_own_rates() -> None:
    e = _entry("claude-sonnet-4-5")
    # 1000 prompt tokens in the GenAI convention: 300 uncached + 600 read + 100 written
    got = price_call("claude-sonnet-4-5", TokenUsage(1000, 200, 600, 100, None))
    want = (
        300 * e["input_cost_per_token"]
        + 600 * e["cache_read_input_token_cost"]
        + 100 * e["cache_creation_input_token_cost"]
        + 200 * e["output_cost_per_token"]
    )
    assert got.source is CostSource.COMPUTED and not got.cache_detail_missing
    assert got.cost_usd == pytest.approx(want, rel=1e-12)
    assert got.price is not None
    assert got.price.cache_read_usd_per_token == e["cache_read_input_token_cost"]
    assert got.price.cache_creation_usd_per_token == e["cache_creation_input_token_cost"]
    assert recompute_cost_usd(TokenUsage(1000, 200, 600, 100, None), got.price) == pytest.approx(
        want, rel=1e-12
    )


@pytest.mark.parametrize(("model", "ratio"), [("gpt-4o", 0.5), ("gpt-5-mini", 0.1)])
def test_openai_cached_prompt_tokens_cost_their_discounted_rate(model: str, ratio: float) -> None:
    e = _entry(model)
    assert e["cache_read_input_token_cost"] == pytest.approx(ratio * e["input_cost_per_token"])
    got = price_call(model, TokenUsage(5000, 100, 4000, None, None))
    want = (
        1000 * e["input_cost_per_token"]
        + 4000 * e["cache_read_input_token_cost"]
        + 100 * e["output_cost_per_token"]
    )
    assert got.cost_usd == pytest.approx(want, rel=1e-12)


def test_reasoning_tokens_are_counted_once_inside_the_output() -> None:
    e = _entry("o4-mini")
    assert "output_cost_per_reasoning_token" not in e  # billed as output
    with_split = price_call("o4-mini", TokenUsage(400, 212, 0, None, 192))
    without = price_call("o4-mini", TokenUsage(400, 212, 0, None, None))
    want = 400 * e["input_cost_per_token"] + 212 * e["output_cost_per_token"]
    assert with_split.cost_usd == pytest.approx(want, rel=1e-12)
    assert without.cost_usd == pytest.approx(want, rel=1e-12)


def test_a_prompt_above_200k_tokens_bills_the_tier_rates() -> None:
    e = _entry("gemini-2.5-pro")
    above_in, above_out = (
        e["input_cost_per_token_above_200k_tokens"],
        e["output_cost_per_token_above_200k_tokens"],
    )
    assert above_in > e["input_cost_per_token"]
    got = price_call("gemini/gemini-2.5-pro", TokenUsage(250_000, 1000, None, None, None))
    assert got.cost_usd == pytest.approx(250_000 * above_in + 1000 * above_out, rel=1e-12)
    assert got.price is not None and got.price.input_usd_per_token == above_in
    small = price_call("gemini-2.5-pro", TokenUsage(1000, 1000, None, None, None))
    assert small.cost_usd == pytest.approx(
        1000 * e["input_cost_per_token"] + 1000 * e["output_cost_per_token"], rel=1e-12
    )


@pytest.mark.parametrize(
    ("dated", "alias"),
    [
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
    ],
)
def test_dated_model_ids_are_in_the_price_map(dated: str, alias: str) -> None:
    assert price_for(dated) is not None and price_for(dated).model_key == dated  # type: ignore[union-attr]
    usage = TokenUsage(1000, 100, 400, None, None)
    assert price_call(dated, usage).cost_usd == pytest.approx(
        price_call(alias, usage).cost_usd, rel=1e-12
    )


def test_an_unknown_snapshot_falls_back_to_the_model_asked_for() -> None:
    got = price_call(["gpt-4o-2099-01-01", "gpt-4o"], TokenUsage(10, 10))
    assert got.source is CostSource.COMPUTED and got.price is not None
    assert got.price.model_key == "gpt-4o"


def test_missing_cache_detail_on_a_caching_model_is_flagged_as_an_upper_bound() -> None:
    assert price_call("claude-sonnet-4-5", TokenUsage(1000, 10)).cache_detail_missing
    assert not price_call("claude-sonnet-4-5", TokenUsage(1000, 10, 0)).cache_detail_missing
    # the producer says it omits zeros: no flag
    assert not price_call(
        "claude-sonnet-4-5", TokenUsage(1000, 10), cache_detail_known=True
    ).cache_detail_missing


def test_a_reported_cost_wins_and_the_computed_one_stays_beside_it() -> None:
    got = price_call("gpt-4o", TokenUsage(100, 10), reported_usd=0.5)
    assert (got.cost_usd, got.source, got.reported_usd) == (0.5, CostSource.PROVIDER, 0.5)
    e = _entry("gpt-4o")
    want = 100 * e["input_cost_per_token"] + 10 * e["output_cost_per_token"]
    assert got.computed_usd == pytest.approx(want)
    unpriced = price_call("acme-unknown", TokenUsage(100, 10), reported_usd=0.25)
    assert (unpriced.cost_usd, unpriced.source, unpriced.computed_usd) == (
        0.25,
        CostSource.PROVIDER,
        None,
    )


def test_override_cache_prices_are_used(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"acme-cache": {
        "input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6,
        "cache_read_input_token_cost": 1e-7, "litellm_provider": "openai",
    }}))
    got = price_call("acme-cache", TokenUsage(1000, 10, 800), overrides_path=path)
    assert got.cost_usd == pytest.approx(200e-6 + 800e-7 + 20e-6, rel=1e-12)


@pytest.mark.parametrize(
    ("model", "rates_memoised"),
    [
        ("gpt-4o-mini", True),
        ("claude-sonnet-4-5", True),
        ("o3", True),
        ("gemini/gemini-2.5-pro", False),  # tiered above 200k: rates looked up per call
        ("acme-unknown", False),
    ],
)
def test_a_batch_memo_gives_each_call_the_same_cost_and_rates_as_pricing_it_alone(
    model: str, rates_memoised: bool
) -> None:
    # One memo across calls whose prompts straddle the 200k tier and whose token mixes
    # differ: a rate looked up for one call must never be reused where litellm bills
    # another rate.
    usages = [
        TokenUsage(1_000, 50),
        TokenUsage(250_000, 50),
        TokenUsage(1_000, 50, 600),
        TokenUsage(250_000, 40, 100_000, 2_000),
        TokenUsage(1_000, 900, None, None, 300),
        TokenUsage(1_000, 50),
    ]
    memo = PriceMemo()
    for usage in usages:
        assert price_call(model, usage, memo=memo) == price_call(model, usage)
    assert bool(memo.rates or memo.prices) is rates_memoised
