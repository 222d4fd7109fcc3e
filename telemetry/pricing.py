"""Model prices and call costs, from litellm's model price map plus user overrides.

Prices are USD per token, as litellm's ``model_cost`` map holds them. litellm is imported
lazily (it takes about two seconds) and always with ``LITELLM_LOCAL_MODEL_COST_MAP=True``
so the bundled map is used at once and results never depend on the network
(docs/sources.md#litellm-offline-price-map). A model with no price is *unpriced*: its cost
is None, never $0.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from cliffwatch import settings
from cliffwatch.telemetry.conventions import CostSource

_lock = threading.Lock()


def import_litellm() -> Any:
    """Import litellm offline and deterministically; the one place cliffwatch does so.

    Returns the litellm module, with the bundled price map and no tokenizer downloads.
    """
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.disable_hf_tokenizer_download = True
    litellm.suppress_debug_info = True
    return litellm


@dataclass(frozen=True, slots=True)
class Price:
    """A model's price: USD per input token and per output token, and where it came from.

    ``model_key`` is the key it was found under (litellm map or override file).
    """

    input_usd_per_token: float
    output_usd_per_token: float
    model_key: str


@dataclass(frozen=True, slots=True)
class CallCost:
    """A call's cost: ``cost_usd`` None when unpriced; ``price`` None when unpriced."""

    cost_usd: float | None
    source: CostSource
    price: Price | None


@cache
def _overrides(path: str | None) -> dict[str, dict[str, Any]]:
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise settings.SettingError(f"price override file {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise settings.SettingError(f"price override file {path} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise settings.SettingError(f"price override file {path} must hold a JSON object")
    return data


@cache
def _default_overrides(env_value: str | None) -> dict[str, dict[str, Any]]:
    # Keyed on the setting, so the file is read once per value, not on every priced call
    # (it was ~10% of a demo's CPU).
    del env_value
    path = settings.price_overrides_path()
    return _overrides(str(path) if path else None)


def _candidates(model: str) -> list[str]:
    # "openai/gpt-4o-mini" and "gpt-4o-mini" both appear in the wild; litellm's map keys
    # most models without the provider prefix, some with it.
    keys = [model]
    if "/" in model:
        keys.append(model.split("/", 1)[1])
    return keys


def _entry_price(key: str, entry: dict[str, Any]) -> Price | None:
    try:
        return Price(
            float(entry["input_cost_per_token"]), float(entry["output_cost_per_token"]), key
        )
    except (KeyError, TypeError, ValueError):
        return None


def price_for(model: str | None, overrides_path: Path | None = None) -> Price | None:
    """The price of ``model``: overrides first, then litellm's map; None when unknown.

    Args:
        model: a model name as a producer reports it (``gpt-4o-mini``,
            ``openai/gpt-4o-mini``, ``sim/claude-sonnet-4-5``).
        overrides_path: a JSON file in litellm's model_cost format; default from
            :func:`cliffwatch.settings.price_overrides_path`.
    """
    if not model:
        return None
    if overrides_path is not None:
        overrides = _overrides(str(overrides_path))
    else:
        overrides = _default_overrides(os.environ.get(settings.CLIFFWATCH_PRICE_OVERRIDES))
    for key in _candidates(model):
        if key in overrides:
            price = _entry_price(key, overrides[key])
            if price is not None:
                return price
    model_cost = import_litellm().model_cost
    for key in _candidates(model):
        entry = model_cost.get(key)
        if entry is not None:
            price = _entry_price(key, entry)
            if price is not None:
                return price
    return None


def cost_of(
    model: str | None,
    input_tokens: int | None,
    output_tokens: int | None,
    overrides_path: Path | None = None,
) -> CallCost:
    """Cost of one call: tokens x the model's price (source ``computed``), else unpriced.

    Formula: ``input_tokens * input_usd_per_token + output_tokens * output_usd_per_token``,
    litellm's own formula for plain chat calls (no cache or reasoning discounts).
    Missing token counts count as 0 only when the other is present; with neither, the
    call is unpriced.
    """
    price = price_for(model, overrides_path)
    if price is None or (input_tokens is None and output_tokens is None):
        return CallCost(None, CostSource.UNPRICED, price)
    cost = (input_tokens or 0) * price.input_usd_per_token + (
        output_tokens or 0
    ) * price.output_usd_per_token
    return CallCost(cost, CostSource.COMPUTED, price)
