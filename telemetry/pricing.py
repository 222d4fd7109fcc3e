"""Model prices and call costs: litellm's cost logic over litellm's price map plus overrides.

:func:`price_call` is the one function every path prices an LLM call with (the runner, the
guard's ``record_call``, the litellm callback and OTLP ingest, through
:func:`telemetry.otlp_mapping.map_span`). Its arithmetic is litellm's: the cost is
``litellm.cost_per_token`` over a litellm ``Usage`` carrying the whole token breakdown
(cache reads, cache writes, reasoning), so cache discounts, cache-write premiums, reasoning
rates and tiered prices above a prompt size (``input_cost_per_token_above_200k_tokens``)
are litellm's; the per-token rates it billed at come from litellm's
``get_billed_token_rates`` and are returned beside the cost so a stored call can be
explained and recomputed from its row alone (:func:`recompute_cost_usd`). Within a batch
(:class:`PriceMemo`), calls on a flat per-token litellm price are costed from those rates in
litellm's own lines (:func:`flat_cost_usd`), held equal to ``cost_per_token`` for every
such entry of the map by tests/test_pricing_memo.py.

Token counts follow the OpenTelemetry GenAI conventions, as litellm's ``Usage`` does:
``input_tokens`` *includes* cache reads and cache writes, ``output_tokens`` *includes*
reasoning tokens. Producers that count them apart are normalised before pricing
(:func:`telemetry.otlp_mapping.token_usage`).

Prices are USD per token, as litellm's ``model_cost`` map holds them. litellm is imported
lazily (it takes about two seconds) and always with ``LITELLM_LOCAL_MODEL_COST_MAP=True``
so the bundled map is used at once and results never depend on the network
(docs/sources.md#litellm-offline-price-map). A model with no price is *unpriced*: its cost
is None, never $0.

Why one file: the price lookup, the per-request :class:`PriceMemo` and :func:`price_call`
share the private entry and rate helpers and must change together (a memo that shared a
rate the call's usage could change would misprice); split, each half would need the
other's internals.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from cliffwatch import settings
from cliffwatch.telemetry.conventions import CostSource
from cliffwatch.telemetry.frozen_init import fast_frozen_init

logger = logging.getLogger(__name__)


def import_litellm() -> Any:
    """Import litellm offline and deterministically; the one place cliffwatch does so.

    Returns the litellm module, with the bundled price map and no tokenizer downloads.
    """
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.disable_hf_tokenizer_download = True
    litellm.suppress_debug_info = True
    return litellm


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class TokenUsage:
    """The tokens of one call, in the GenAI convention (counts >= 0, None when unknown).

    Attributes:
        input_tokens: prompt tokens *including* ``cache_read_tokens`` and
            ``cache_creation_tokens``.
        output_tokens: completion tokens *including* ``reasoning_tokens``.
        cache_read_tokens: prompt tokens served from the provider's cache.
        cache_creation_tokens: prompt tokens written to the provider's cache.
        reasoning_tokens: completion tokens spent on reasoning.
    """

    input_tokens: int | None
    output_tokens: int | None
    cache_read_tokens: int | None = None
    cache_creation_tokens: int | None = None
    reasoning_tokens: int | None = None

    @property
    def has_cache_detail(self) -> bool:
        """Whether the producer said how many prompt tokens were cache reads or writes."""
        return self.cache_read_tokens is not None or self.cache_creation_tokens is not None


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class Price:
    """The USD-per-token rates a call is (or would be) billed at, and where they came from.

    ``model_key`` is the key the model was found under (override file or litellm map).
    The cache and reasoning rates are litellm's resolution: a model that publishes no cache
    price bills cached tokens at the input rate, no reasoning price at the output rate.
    For :func:`price_call` they are the rates of that call's tier (a prompt above a
    threshold bills every token type at the tier's rate).
    """

    input_usd_per_token: float
    output_usd_per_token: float
    model_key: str
    cache_read_usd_per_token: float | None = None
    cache_creation_usd_per_token: float | None = None
    reasoning_usd_per_token: float | None = None


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class CallCost:
    """A call's cost and how it was reached.

    Attributes:
        cost_usd: the figure to count: ``reported_usd`` when the producer reported one,
            else ``computed_usd``; None when unpriced.
        source: ``provider`` (reported), ``computed`` or ``unpriced``.
        price: the rates ``computed_usd`` was billed at; None when the model is unpriced.
        computed_usd: litellm's cost of the tokens, kept beside a reported cost so drift
            between the two shows; None when unpriced.
        reported_usd: the cost the producer reported, USD; None when none.
        cache_detail_missing: the figure is ``computed`` on a model with a cache price of
            its own but the producer gave no cache split, so every prompt token was priced
            as uncached input: an upper bound when some were cache reads.
    """

    cost_usd: float | None
    source: CostSource
    price: Price | None
    computed_usd: float | None = None
    reported_usd: float | None = None
    cache_detail_missing: bool = False


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


def _is_token_priced(entry: Any) -> bool:
    if not isinstance(entry, Mapping):
        return False
    try:
        float(entry["input_cost_per_token"])
        float(entry["output_cost_per_token"])
    except (KeyError, TypeError, ValueError):
        return False
    return True


@dataclass(frozen=True, slots=True)
class _Entry:
    key: str
    entry: Mapping[str, Any]
    override: bool


def _find_entry(model: str | None, overrides_path: Path | None) -> _Entry | None:
    """The price entry of ``model``: the override file first, then litellm's map."""
    if not model:
        return None
    if overrides_path is not None:
        overrides = _overrides(str(overrides_path))
    else:
        overrides = _default_overrides(os.environ.get(settings.CLIFFWATCH_PRICE_OVERRIDES))
    for key in _candidates(model):
        if _is_token_priced(overrides.get(key)):
            return _Entry(key, overrides[key], True)
    model_cost = import_litellm().model_cost
    for key in _candidates(model):
        if _is_token_priced(model_cost.get(key)):
            return _Entry(key, model_cost[key], False)
    return None


def _rate(entry: Mapping[str, Any], key: str, default: float) -> float:
    try:
        value = entry[key]
        return default if value is None else float(value)
    except (KeyError, TypeError, ValueError):
        return default


def price_for(model: str | None, overrides_path: Path | None = None) -> Price | None:
    """The list price of ``model`` (no tier): overrides first, then litellm's map.

    For estimates before a call exists (routing, the guard's plan check, findings). A
    call's own cost goes through :func:`price_call`.

    Args:
        model: a model name as a producer reports it (``gpt-4o-mini``,
            ``openai/gpt-4o-mini``, ``sim/claude-sonnet-4-5``).
        overrides_path: a JSON file in litellm's model_cost format; default from
            :func:`cliffwatch.settings.price_overrides_path`.

    Returns:
        The price (cache rates default to the input rate, reasoning to the output rate,
        as litellm bills a model that publishes none), or None when the model is unknown.
    """
    found = _find_entry(model, overrides_path)
    if found is None:
        return None
    entry = found.entry
    input_rate = float(entry["input_cost_per_token"])
    output_rate = float(entry["output_cost_per_token"])
    return Price(
        input_rate,
        output_rate,
        found.key,
        _rate(entry, "cache_read_input_token_cost", input_rate),
        _rate(entry, "cache_creation_input_token_cost", input_rate),
        _rate(entry, "output_cost_per_reasoning_token", output_rate),
    )


def caches_prompts(price: Price) -> bool:
    """Whether a model bills cache reads at a rate of their own (so a missing cache split
    changes its cost)."""
    return (
        price.cache_read_usd_per_token is not None
        and price.cache_read_usd_per_token != price.input_usd_per_token
    )


def litellm_usage(usage: TokenUsage) -> Any:
    """The litellm ``Usage`` of ``usage``: prompt tokens including cache tokens, their split in
    ``prompt_tokens_details`` (``cached_tokens``, ``cache_creation_tokens``), reasoning tokens in
    ``completion_tokens_details``, as litellm's own provider transformations build it."""
    from litellm.types.utils import Usage

    prompt = usage.input_tokens or 0
    completion = usage.output_tokens or 0
    details: dict[str, int] = {}
    if usage.cache_read_tokens:
        details["cached_tokens"] = usage.cache_read_tokens
    if usage.cache_creation_tokens:
        details["cache_creation_tokens"] = usage.cache_creation_tokens
    completion_details = (
        {"reasoning_tokens": usage.reasoning_tokens} if usage.reasoning_tokens else None
    )
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details=details or None,
        completion_tokens_details=completion_details,
    )


_USAGE_DEPENDENT_RATE_KEY = re.compile(
    r"_above_[\d.]+k?_tokens|tier|peak|provider_specific|geo|speed"
)
"""Price-entry keys under which litellm's billed rates can depend on the call (prompt-size
tiers, service tiers, off-peak hours, per-region or fast-mode multipliers). An entry with
none of them bills every call at the same rates, given which token types it has (checked
against the per-call lookup over every such entry of litellm's map, 13k model x usage
pairs). A cache write's TTL (``..._above_1hr``) is not one: cliffwatch never sends a
TTL split."""


class PriceMemo:
    """Price look-ups shared by the calls of one batch (one OTLP request, say).

    Within a batch each model's price entry is found once, and litellm's billed rates are
    looked up once per entry and token-type mix when the entry has no usage-dependent keys
    (:data:`_USAGE_DEPENDENT_RATE_KEY`). For a litellm map entry that also has no per-unit
    keys (:data:`_PER_UNIT_RATE_KEY`), the calls after the first of a mix are costed from
    those memoised rates (:func:`flat_cost_usd`, litellm's generic per-token lines) instead
    of calling ``litellm.cost_per_token`` again; tests/test_pricing_memo.py holds the two
    equal for every such entry of litellm's map. Keep one per batch, not per process:
    litellm's map can change while a process runs (``register_model``), and a batch is
    short; memoised rates are carried to later batches only while their entry is unchanged
    (:data:`_SHARED_PRICES`). Not thread-safe: one batch, one thread.
    """

    __slots__ = ("calls", "entries", "firsts", "prices", "rates", "unpriced")

    def __init__(self) -> None:
        self.entries: dict[tuple[str, Path | None], _Entry | None] = {}
        self.firsts: dict[tuple[Any, Path | None], _Entry | None] = {}
        self.rates: dict[tuple[Any, ...], Any] = {}
        self.prices: dict[tuple[Any, ...], tuple[Mapping[str, Any], Price]] = {}
        self.calls: dict[tuple[Any, ...], Price] = {}
        """The memoised rates (:attr:`prices`) each candidate list, override file and
        token-type mix was costed from, once one was: later calls of the same go
        straight to :func:`flat_cost_usd`, the path :func:`_litellm_cost` takes for them."""
        self.unpriced: set[tuple[Any, ...]] = set()
        """The :attr:`calls` keys whose models have no price entry in this batch."""

    @staticmethod
    def call_key(
        models: str | Sequence[str | None] | None, overrides_path: Path | None, usage: TokenUsage
    ) -> tuple[Any, ...]:
        """The key of :attr:`calls`: what decides a call's entry and token-type mix."""
        return (
            models if type(models) is tuple or isinstance(models, (str, tuple)) or models is None
            else tuple(models),
            overrides_path,
            bool(usage.cache_read_tokens),
            bool(usage.cache_creation_tokens),
            bool(usage.reasoning_tokens),
        )

    def known_call(
        self, key: tuple[Any, ...], usage: TokenUsage
    ) -> tuple[bool, Price | None, float | None]:
        """A call like one this batch costed before (``key``: :meth:`call_key`):
        ``(settled, price, computed USD)``. Settled when its memoised rates cost it (plain
        arithmetic, :func:`flat_cost_usd`, as :func:`_litellm_cost` would) or the batch
        found its models unpriced (price and cost None); not settled: ``(False, None,
        None)``, the entry is to be looked up."""
        price = self.calls.get(key)
        if price is None:
            return key in self.unpriced, None, None
        computed = flat_cost_usd(usage, price)
        if computed is None:
            return False, None, None
        return True, price, computed

    def remember_call(self, key: tuple[Any, ...], found: _Entry, usage: TokenUsage) -> None:
        """Keep in :attr:`calls` the memoised rates ``found`` is costed from for ``usage``'s
        mix, when :func:`_litellm_cost` costs such calls from memoised rates."""
        if found.override:
            return
        provider = found.entry.get("litellm_provider")
        provider = provider if isinstance(provider, str) and provider else None
        known = self.prices.get(_mix_key(found, provider, usage))
        if known is not None and known[0] is found.entry:
            self.calls[key] = known[1]

    def find_entry(self, model: str, overrides_path: Path | None) -> _Entry | None:
        """:func:`_find_entry`, once per model and override file in this batch."""
        key = (model, overrides_path)
        if key not in self.entries:
            self.entries[key] = _find_entry(model, overrides_path)
        return self.entries[key]

    def first_entry(
        self, models: str | Sequence[str | None] | None, overrides_path: Path | None
    ) -> _Entry | None:
        """The entry :func:`price_call` prices ``models`` by, once per candidate list and
        override file in this batch."""
        key = (models if isinstance(models, str) or models is None else tuple(models),
               overrides_path)
        if key not in self.firsts:
            self.firsts[key] = _first_entry(models, overrides_path, self)
        return self.firsts[key]


def _is_flat(entry: Mapping[str, Any]) -> bool:
    return not any(_USAGE_DEPENDENT_RATE_KEY.search(key) for key in entry)


_PER_UNIT_RATE_KEY = re.compile(
    r"(?<!search_context_)cost_per_"
    r"(second|request|image|character|query|pixel|page|minute|hour|video|audio)(?!_token)"
)
"""Price-entry keys litellm bills by something other than the tokens of a text call (per
request, second, image, character...). An entry with one of them is always costed by
``litellm.cost_per_token``, never from memoised rates. (A web search's
``search_context_cost_per_query`` is billed only for search requests, which a
:class:`TokenUsage` never carries.)"""


def memoisable(key: str, entry: Mapping[str, Any]) -> bool:
    """Whether :class:`PriceMemo` may cost calls on litellm map entry ``key`` from memoised
    rates: the entry's rates cannot depend on the call (:data:`_USAGE_DEPENDENT_RATE_KEY`),
    it bills nothing but tokens (:data:`_PER_UNIT_RATE_KEY`), it names its provider, and
    ``litellm.cost_per_token`` resolves ``key`` to this same entry (it strips a repeated
    ``provider/provider/`` prefix and prefers a ``provider/key`` entry)."""
    provider = entry.get("litellm_provider")
    if not isinstance(provider, str) or not provider:
        return False
    prefix = provider + "/"
    if key.startswith(prefix + prefix):
        return False
    if not (_is_flat(entry) and not any(_PER_UNIT_RATE_KEY.search(k) for k in entry)):
        return False
    joined = key if key.startswith(prefix) else prefix + key
    other = import_litellm().model_cost.get(joined)
    return other is None or other is entry or other == entry


def flat_cost_usd(usage: TokenUsage, price: Price) -> float | None:
    """A call's cost from per-token rates, in the lines and order litellm's
    ``generic_cost_per_token`` bills a text call by; None when the counts are not
    consistent (cache tokens above the input count, reasoning above the output count),
    which litellm must settle.

    ``(uncached input x input rate + cache reads x cache read rate + cache writes x cache
    creation rate) + (text output x output rate + reasoning x reasoning rate)``, with
    missing counts 0 and a missing cache or reasoning rate the input or output rate.
    """
    cache_read = usage.cache_read_tokens or 0
    cache_creation = usage.cache_creation_tokens or 0
    reasoning = usage.reasoning_tokens or 0
    uncached = (usage.input_tokens or 0) - cache_read - cache_creation
    text_out = (usage.output_tokens or 0) - reasoning
    if uncached < 0 or text_out < 0:
        return None
    input_rate = price.input_usd_per_token
    output_rate = price.output_usd_per_token
    prompt_usd = float(uncached) * input_rate
    if cache_read:
        rate = price.cache_read_usd_per_token
        prompt_usd += float(cache_read) * (input_rate if rate is None else rate)
    if cache_creation:
        rate = price.cache_creation_usd_per_token
        prompt_usd += cache_creation * (input_rate if rate is None else rate)
    completion_usd = float(text_out) * output_rate
    if reasoning:
        rate = price.reasoning_usd_per_token
        completion_usd += float(reasoning) * (output_rate if rate is None else rate)
    return float(prompt_usd) + float(completion_usd)


def _mix_key(found: _Entry, provider: str | None, usage: TokenUsage) -> tuple[Any, ...]:
    return (
        found.key, found.override, provider,
        bool(usage.cache_read_tokens), bool(usage.cache_creation_tokens),
        bool(usage.reasoning_tokens),
    )


def _billed_rates(
    found: _Entry,
    provider: str | None,
    info: Any,
    lite_usage: Any,
    usage: TokenUsage,
    memo: PriceMemo | None,
) -> Any:
    """litellm's ``get_billed_token_rates`` for the call; through ``memo`` once per entry
    and token-type mix when the entry's rates cannot depend on the call."""
    from litellm.litellm_core_utils.llm_cost_calc.utils import get_billed_token_rates

    key: tuple[Any, ...] | None = None
    if memo is not None:
        key = _mix_key(found, provider, usage)
        cached = memo.rates.get(key)
        if cached is not None and cached[0] is found.entry:
            return cached[1]
    rates = get_billed_token_rates(
        model=found.key, custom_llm_provider=provider, usage=lite_usage, model_info=info
    )
    if key is not None and memo is not None and _is_flat(found.entry):
        memo.rates[key] = (found.entry, rates)
    return rates


def _litellm_cost(
    found: _Entry, usage: TokenUsage, memo: PriceMemo | None = None
) -> tuple[float, Price]:
    """(cost USD, billed rates) of ``usage`` on the model of ``found``, both from litellm
    (the cost from rates memoised in ``memo`` when :class:`PriceMemo` allows it)."""
    provider = found.entry.get("litellm_provider")
    provider = provider if isinstance(provider, str) and provider else None
    memo_key: tuple[Any, ...] | None = None
    if memo is not None and not found.override:
        memo_key = _mix_key(found, provider, usage)
        known = memo.prices.get(memo_key)
        if known is None:
            shared = _SHARED_PRICES.get(memo_key)
            if shared is not None and shared[0] == found.entry:  # unchanged since memoised
                known = memo.prices[memo_key] = (found.entry, shared[1])
        if known is not None and known[0] is found.entry:
            cost_usd = flat_cost_usd(usage, known[1])
            if cost_usd is not None:
                return cost_usd, known[1]
    litellm = import_litellm()
    info: Any = dict(found.entry) if found.override else None  # a litellm ModelInfo
    lite_usage = litellm_usage(usage)
    prompt_usd, completion_usd = litellm.cost_per_token(
        model=found.key,
        custom_llm_provider=provider,
        usage_object=lite_usage,
        requested_model_info_override=info,
    )
    rates = _billed_rates(found, provider, info, lite_usage, usage, memo)
    if rates is None:  # litellm priced it but cannot say at which rates: the list rates
        listed = price_for(found.key) if not found.override else None
        price = listed or Price(
            float(found.entry["input_cost_per_token"]),
            float(found.entry["output_cost_per_token"]),
            found.key,
        )
    else:
        price = Price(
            rates.input_cost_per_token,
            rates.output_cost_per_token,
            found.key,
            rates.cache_read_input_token_cost,
            rates.cache_creation_input_token_cost,
            rates.output_cost_per_reasoning_token,
        )
        cost_usd = float(prompt_usd) + float(completion_usd)
        if (
            memo_key is not None
            and memo is not None
            and memoisable(found.key, found.entry)
            and _agrees(flat_cost_usd(usage, price), cost_usd)
        ):
            memo.prices[memo_key] = (found.entry, price)
            if len(_SHARED_PRICES) >= _SHARED_PRICES_MAX:
                _SHARED_PRICES.clear()
            _SHARED_PRICES[memo_key] = (dict(found.entry), price)
    return float(prompt_usd) + float(completion_usd), price


_SHARED_PRICES: dict[tuple[Any, ...], tuple[dict[str, Any], Price]] = {}
"""Memoised rates carried from batch to batch, each with a copy of the price entry they were
read from: a batch's :class:`PriceMemo` takes one only when the entry still equals the copy
(checked once per batch and mix), so a ``register_model`` between batches is seen."""
_SHARED_PRICES_MAX = 4096


def _agrees(memo_usd: float | None, litellm_usd: float) -> bool:
    # The rates are memoised only when they rebuild the cost litellm just gave: a guard
    # against a provider's cost logic that is not tokens x rates.
    return memo_usd is not None and abs(memo_usd - litellm_usd) <= 1e-12 * abs(litellm_usd)


def price_call(
    models: str | Sequence[str | None] | None,
    usage: TokenUsage,
    *,
    reported_usd: float | None = None,
    cache_detail_known: bool | None = None,
    overrides_path: Path | None = None,
    memo: PriceMemo | None = None,
) -> CallCost:
    """Cost of one LLM call: the reported cost if any, litellm's cost of its tokens beside it.

    Args:
        models: the model, or models to try in order (response model, then request model:
            providers answer with dated snapshots the map may lack); the first priced one
            is used.
        usage: the call's tokens in the GenAI convention (see :class:`TokenUsage`).
        reported_usd: the cost the producer reported (USD), None when it reported none.
        cache_detail_known: whether the producer would have reported a cache split had
            there been one; None means "when it reported any" (``usage.has_cache_detail``).
        overrides_path: a price override file; default from the settings.
        memo: look-ups shared with the other calls of a batch (:class:`PriceMemo`);
            None looks everything up for this call alone. Same result either way.

    Returns:
        A :class:`CallCost`. Source ``provider`` when ``reported_usd`` is given, else
        ``computed`` when the model is priced and some token count is known, else
        ``unpriced`` (cost None, never $0).

    Raises:
        SettingError: the price override file is missing or malformed.
    """
    computed: float | None = None
    price: Price | None = None
    has_tokens = usage.input_tokens is not None or usage.output_tokens is not None
    call_key = None
    settled = False  # the batch already knows this call's rates, or that it has none
    if memo is not None and has_tokens:
        # A call like one costed before in the batch: its memoised rates, as _litellm_cost
        # would use them (the entry found for these models is the batch's).
        call_key = memo.call_key(models, overrides_path, usage)
        settled, price, computed = memo.known_call(call_key, usage)
    if not settled:
        found = (
            _first_entry(models, overrides_path)
            if memo is None
            else memo.first_entry(models, overrides_path)
        )
        if found is not None and has_tokens:
            try:
                computed, price = _litellm_cost(found, usage, memo)
            except Exception as exc:  # litellm raises bare Exceptions for what it cannot price
                logger.warning("cliffwatch: litellm could not price %s: %s", found.key, exc)
                computed, price = None, None
            if memo is not None and call_key is not None and price is not None:
                memo.remember_call(call_key, found, usage)
        elif memo is not None and call_key is not None and found is None:
            memo.unpriced.add(call_key)  # no entry for these models in this batch
    if reported_usd is not None:
        return CallCost(reported_usd, CostSource.PROVIDER, price, computed, reported_usd)
    if computed is None:
        return CallCost(None, CostSource.UNPRICED, price)
    known = usage.has_cache_detail if cache_detail_known is None else cache_detail_known
    missing = not known and price is not None and caches_prompts(price)
    return CallCost(computed, CostSource.COMPUTED, price, computed, None, missing)


def _first_entry(
    models: str | Sequence[str | None] | None,
    overrides_path: Path | None,
    memo: PriceMemo | None = None,
) -> _Entry | None:
    """The entry of the first of ``models`` that has a price (see :func:`price_call`)."""
    candidates = [models] if isinstance(models, str) or models is None else list(models)
    for model in dict.fromkeys(m for m in candidates if m):
        found = (
            _find_entry(model, overrides_path)
            if memo is None
            else memo.find_entry(model, overrides_path)
        )
        if found is not None:
            return found
    return None


def cost_of(
    model: str | None,
    input_tokens: int | None,
    output_tokens: int | None,
    overrides_path: Path | None = None,
) -> CallCost:
    """Cost of a call known only by its input and output tokens (no cache or reasoning
    split): :func:`price_call` with those two counts."""
    return price_call(model, TokenUsage(input_tokens, output_tokens), overrides_path=overrides_path)


def recompute_cost_usd(usage: TokenUsage, price: Price) -> float:
    """A call's cost from its stored tokens and rates alone (to check a stored cost).

    ``uncached input x input rate + cache reads x cache read rate + cache writes x cache
    creation rate + (output - reasoning) x output rate + reasoning x reasoning rate``: the
    lines litellm bills a text call by, each at the rate :func:`price_call` stored (the
    tier's rate when the prompt was above a threshold). Missing counts are 0; a missing
    cache or reasoning rate is the input or output rate.
    """
    cache_read = usage.cache_read_tokens or 0
    cache_creation = usage.cache_creation_tokens or 0
    reasoning = usage.reasoning_tokens or 0
    uncached = max((usage.input_tokens or 0) - cache_read - cache_creation, 0)
    text_out = max((usage.output_tokens or 0) - reasoning, 0)
    read_rate = price.cache_read_usd_per_token
    creation_rate = price.cache_creation_usd_per_token
    reasoning_rate = price.reasoning_usd_per_token
    return (
        uncached * price.input_usd_per_token
        + cache_read * (price.input_usd_per_token if read_rate is None else read_rate)
        + cache_creation * (price.input_usd_per_token if creation_rate is None else creation_rate)
        + text_out * price.output_usd_per_token
        + reasoning * (price.output_usd_per_token if reasoning_rate is None else reasoning_rate)
    )


def usage_of_litellm(usage: Any) -> tuple[TokenUsage, float | None]:
    """The tokens and the provider-reported cost of a litellm response's ``usage``.

    litellm's ``Usage`` is already in the GenAI convention (its provider transformations
    add Anthropic's cache reads and writes into ``prompt_tokens``): cache reads are
    ``prompt_tokens_details.cached_tokens``, writes ``prompt_tokens_details
    .cache_creation_tokens`` (``cache_write_tokens`` for some providers), reasoning
    ``completion_tokens_details.reasoning_tokens``. A response with prompt details but no
    cached count had no cache tokens (0); one without prompt details says nothing (None).

    Args:
        usage: ``response.usage`` (a litellm ``Usage``, an OpenAI-shaped object or dict),
            or None.

    Returns:
        ``(tokens, reported_usd)``: ``reported_usd`` is ``usage.cost`` when the provider
        put its own cost in the response (OpenRouter and other gateways do), else None.
    """

    def get(obj: Any, key: str) -> Any:
        return obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)

    def count(value: Any) -> int | None:
        return int(value) if isinstance(value, int | float) and value >= 0 else None

    if usage is None:
        return TokenUsage(None, None), None
    prompt_details = get(usage, "prompt_tokens_details")
    completion_details = get(usage, "completion_tokens_details")
    cache_read = cache_creation = None
    if prompt_details is not None:
        cache_read = count(get(prompt_details, "cached_tokens")) or 0
        written = get(prompt_details, "cache_creation_tokens")
        cache_creation = count(written or get(prompt_details, "cache_write_tokens"))
    reasoning = (
        count(get(completion_details, "reasoning_tokens"))
        if completion_details is not None
        else None
    )
    tokens = TokenUsage(
        count(get(usage, "prompt_tokens")),
        count(get(usage, "completion_tokens")),
        cache_read,
        cache_creation,
        reasoning,
    )
    cost = get(usage, "cost")
    reported = float(cost) if isinstance(cost, int | float) and cost >= 0 else None
    return tokens, reported
