"""telemetry.pricing against litellm's bundled price map, read by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cliffwatch import settings
from cliffwatch.telemetry.conventions import CostSource
from cliffwatch.telemetry.pricing import cost_of, import_litellm, price_for


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
