"""What an LLM-call span says it used and cost: token breakdown and reported cost, normalised.

Producers name the same counts differently and disagree on what ``input_tokens`` holds.
This module reads every name listed below (first present wins) and normalises the counts to
the OpenTelemetry GenAI conventions (``gen_ai.usage.input_tokens`` *includes* cache reads
and writes; ``gen_ai.usage.output_tokens`` *includes* reasoning tokens), so that
:func:`telemetry.pricing.price_call` prices every producer's span the same way.

What each producer reports, checked against the real packages calling a stub of the
provider APIs (tests/test_cost_producers.py; docs/cost-truth.md):

================================================  =====================================  ==========
producer (instrumentation scope)                  cache / reasoning attributes           input has
                                                                                         the cache
================================================  =====================================  ==========
anthropic SDK 2.14 own tracing                    ``gen_ai.usage.cache_read.input_tokens``  yes
(``com.anthropic.sdk.python``)                    ``gen_ai.usage.cache_write.input_tokens``
OpenLLMetry anthropic 0.62.4                      ``gen_ai.usage.cache_read.input_tokens``  yes
(``opentelemetry.instrumentation.anthropic``)     ``gen_ai.usage.cache_creation.input_tokens``
OpenInference anthropic 3.1.0                     ``llm.token_count.prompt_details.cache_read`` yes
                                                  ``..cache_write`` (only when non-zero)
OpenLLMetry openai 0.62.4                         ``gen_ai.usage.cache_read.input_tokens``  yes
                                                  ``gen_ai.usage.reasoning_tokens``
OpenInference openai 0.1.66                       ``llm.token_count.prompt_details.cache_read`` yes
                                                  ``llm.token_count.completion_details.reasoning``
================================================  =====================================  ==========

Every producer checked includes the cache tokens in its input count, as the conventions say
it SHOULD. Anthropic's API itself reports them apart (``input_tokens`` excludes
``cache_read_input_tokens`` and ``cache_creation_input_tokens``), so a producer that copies
the API's count would not: :data:`INPUT_EXCLUDES_CACHE_SCOPES` names producers known to do
that, and any span whose input count is smaller than its cache reads plus writes cannot
include them and is normalised the same way. Reasoning tokens are inside the output count
for every producer checked (OpenAI's ``completion_tokens`` holds them); a reasoning count
larger than the output count can only be apart from it and is added.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from cliffwatch.telemetry import conventions as cv
from cliffwatch.telemetry.frozen_init import fast_frozen_init
from cliffwatch.telemetry.pricing import TokenUsage

INPUT_TOKEN_KEYS = (
    cv.GEN_AI_USAGE_INPUT_TOKENS,
    "gen_ai.usage.prompt_tokens",  # legacy GenAI conventions, OpenLLMetry before 0.4x
    "llm.token_count.prompt",  # OpenInference
    "llm.usage.prompt_tokens",
)
OUTPUT_TOKEN_KEYS = (
    cv.GEN_AI_USAGE_OUTPUT_TOKENS,
    "gen_ai.usage.completion_tokens",
    "llm.token_count.completion",
    "llm.usage.completion_tokens",
)
CACHE_READ_KEYS = (
    cv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,  # GenAI conventions, OpenLLMetry, Pydantic AI
    "gen_ai.usage.cache_read_input_tokens",  # legacy (Anthropic's field name)
    "gen_ai.usage.input_tokens.cached",  # Sentry
    "llm.token_count.prompt_details.cache_read",  # OpenInference
    "llm.usage.cache_read_input_tokens",
)
CACHE_CREATION_KEYS = (
    cv.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS,  # GenAI conventions, OpenLLMetry, Pydantic AI
    "gen_ai.usage.cache_write.input_tokens",  # the anthropic SDK's own tracing
    "gen_ai.usage.cache_creation_input_tokens",  # legacy (Anthropic's field name)
    "gen_ai.usage.input_tokens.cache_write",  # Sentry
    "llm.token_count.prompt_details.cache_write",  # OpenInference
    "llm.usage.cache_creation_input_tokens",
)
REASONING_KEYS = (
    cv.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,  # GenAI conventions
    "gen_ai.usage.reasoning_tokens",  # OpenLLMetry
    "gen_ai.usage.output_tokens.reasoning",  # Sentry
    "llm.token_count.completion_details.reasoning",  # OpenInference
    "gen_ai.usage.details.reasoning_tokens",  # Pydantic AI
    "llm.usage.reasoning_tokens",
)

INPUT_EXCLUDES_CACHE_SCOPES: tuple[str, ...] = ()
"""Instrumentation scope names (prefixes) whose input count leaves the cache tokens out.
None of the producers checked does (module docstring); the impossibility rule still catches
one that does."""

OMITS_ZERO_CACHE_SCOPES: tuple[str, ...] = (
    "openinference.instrumentation",
    "pydantic-ai",
    "pydantic_ai",
)
"""Scope names (prefixes) of producers that leave a cache attribute out when it is 0: their
spans without one had no cache tokens, not an unknown split."""

COST_AMOUNT = "gen_ai.usage.cost.amount"
COST_CURRENCY = "gen_ai.usage.cost.currency"
COST_SOURCE = "gen_ai.usage.cost.source"
TOTAL_COST_KEYS = (
    COST_AMOUNT,  # proposed GenAI convention (semantic-conventions-genai PR 443)
    "operation.cost",  # Pydantic AI (priced with genai-prices)
    "gen_ai.cost.total_cost",  # litellm's OTel callback
    "llm.cost.total",  # OpenInference
)
SPLIT_COST_KEYS = (
    ("gen_ai.cost.input_cost", "gen_ai.cost.output_cost"),
    ("llm.cost.prompt", "llm.cost.completion"),
)

_COST_KEYS = frozenset(TOTAL_COST_KEYS) | {key for pair in SPLIT_COST_KEYS for key in pair}


def first_value(attrs: Mapping[str, Any], keys: Iterable[str]) -> Any:
    """The value of the first of ``keys`` set (not None, not "") on ``attrs``; else None."""
    for key in keys:
        value = attrs.get(key)
        if value is not None and value != "":
            return value
    return None


_Plan = tuple[tuple[int, tuple[str, ...]], ...]
"""For each synonym list a span has keys of: its index and those keys, best-ranked first."""


class KeyGroups:
    """:func:`first_value` for several synonym lists at once, in one pass over a span's keys.

    Built once per set of lists (a module constant): for each key, the lists it is in and
    its rank there. :meth:`firsts` looks a span's keys up once per distinct key sequence
    (spans of one producer share theirs), keeping a plan: for each list, the span's keys
    that are in it, best-ranked first. The span's values are then read in the plan's order
    and the first set one (not None, not "") kept per list, exactly as :func:`first_value`
    would. A sequence seen again is read by its plan compiled to straight-line code
    (:meth:`_reader`: our own template, the keys passed as arguments), about half the
    loop's time (issue 11).
    """

    __slots__ = ("_places", "_plans", "keys", "size")

    MAX_PLANS = 4096
    """Key sequences whose plan is kept; past it the plans are dropped and made again."""

    def __init__(self, groups: Sequence[Sequence[str]]) -> None:
        places: dict[str, list[tuple[int, int]]] = {}
        for group_index, group in enumerate(groups):
            for rank, key in enumerate(group):
                places.setdefault(key, []).append((group_index, rank))
        self._places = {key: tuple(where) for key, where in places.items()}
        self._plans: dict[tuple[str, ...], _Plan | Callable[[Mapping[str, Any]], list[Any]]] = {}
        self.keys = frozenset(places)
        self.size = len(groups)

    def _plan(self, shape: tuple[str, ...]) -> _Plan:
        ranked: dict[int, list[tuple[int, str]]] = {}
        for key in self.keys.intersection(shape):
            for group_index, rank in self._places[key]:
                ranked.setdefault(group_index, []).append((rank, key))
        plan = tuple(
            (group_index, tuple(key for _, key in sorted(ranked[group_index])))
            for group_index in sorted(ranked)
        )
        if len(self._plans) >= self.MAX_PLANS:
            self._plans.clear()
        self._plans[shape] = plan
        return plan

    def _reader(self, plan: _Plan) -> Callable[[Mapping[str, Any]], list[Any]]:
        """The plan as straight-line code: for each list, its keys read in turn until one
        is set, the values returned as one list (the loop of :meth:`firsts`, unrolled).
        The keys are bound as default arguments, never written into the source."""
        keys = [key for _, group_keys in plan for key in group_keys]
        names = {i: f"k{i}" for i in range(len(keys))}
        lines = ["def read(attrs, " + ", ".join(f"{name}=_k[{i}]" for i, name in
                                                names.items()) + "):"]
        lines.append("    " + " = ".join(f"g{i}" for i in range(self.size)) + " = None")
        n = 0
        for group_index, group_keys in plan:
            indent = "    "
            for _ in group_keys:
                lines += [
                    f"{indent}v = attrs[{names[n]}]",
                    f"{indent}if v is not None and v != '':",
                    f"{indent}    g{group_index} = v",
                    f"{indent}else:",
                ]
                indent += "    "
                n += 1
            lines.append(f"{indent}pass")
        lines.append("    return [" + ", ".join(f"g{i}" for i in range(self.size)) + "]")
        namespace: dict[str, Any] = {"_k": tuple(keys)}
        exec("\n".join(lines), namespace)  # noqa: S102 (our own source; keys are arguments)
        reader: Callable[[Mapping[str, Any]], list[Any]] = namespace["read"]
        return reader

    def firsts(self, attrs: Mapping[str, Any]) -> list[Any]:
        """One value per list (None when the span sets none of its keys), in list order.

        A key sequence's plan is read by a loop the first time it is seen and by its
        compiled reader (:meth:`_reader`) from the second on: a sequence seen once (a
        malformed or fuzzed span) costs no compilation."""
        shape = tuple(attrs)
        entry = self._plans.get(shape)
        if entry is None:
            plan = self._plan(shape)
        elif not isinstance(entry, tuple):
            return entry(attrs)
        else:
            reader = self._plans[shape] = self._reader(entry)
            return reader(attrs)
        values: list[Any] = [None] * self.size
        for group_index, keys in plan:
            for key in keys:
                value = attrs[key]
                if value is not None and value != "":
                    values[group_index] = value
                    break
        return values


_EXACT_FLOAT_INT = 2**53
"""Largest int every smaller one of which a float holds exactly."""


def non_negative(value: Any) -> float | None:
    """A finite number >= 0 from a number or numeric string; None otherwise (bools too)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number >= 0 else None


def token_count(value: Any) -> int | None:
    """A token count from an int, a float with no fraction or a numeric string; else None."""
    if type(value) is int and 0 <= value <= _EXACT_FLOAT_INT:
        return value  # the common case; the same as the float round trip below
    number = non_negative(value)
    return int(number) if number is not None and number.is_integer() else None


def reported_cost_usd(attrs: Mapping[str, Any]) -> float | None:
    """The cost the producer reported on the span, in USD, or None.

    Looks at :data:`TOTAL_COST_KEYS` first, then sums a pair of :data:`SPLIT_COST_KEYS`.
    A ``gen_ai.usage.cost.currency`` other than USD makes the proposed cost unusable here.
    """
    if _COST_KEYS.isdisjoint(attrs):  # most spans: no cost of their own
        return None
    currency = attrs.get(COST_CURRENCY)
    for key in TOTAL_COST_KEYS:
        if key == COST_AMOUNT and currency not in (None, "", "USD", "usd"):
            continue
        cost = non_negative(attrs.get(key))
        if cost is not None:
            return cost
    for input_key, output_key in SPLIT_COST_KEYS:
        parts = (non_negative(attrs.get(input_key)), non_negative(attrs.get(output_key)))
        if parts != (None, None):
            return (parts[0] or 0.0) + (parts[1] or 0.0)
    return None


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class CallUsage:
    """A span's usage: normalised tokens, the input count as reported, and whether a missing
    cache split means "none" (the producer omits zeros) rather than "unknown"."""

    tokens: TokenUsage
    input_tokens_reported: int | None
    cache_detail_known: bool


def _scope_in(scope_name: str | None, prefixes: tuple[str, ...]) -> bool:
    return bool(scope_name) and any(str(scope_name).startswith(p) for p in prefixes)


@lru_cache(maxsize=1024)
def _scope_rules(scope_name: str | None) -> tuple[bool, bool]:
    # (input excludes the cache, omits zero cache counts): a batch has few scopes
    return (
        _scope_in(scope_name, INPUT_EXCLUDES_CACHE_SCOPES),
        _scope_in(scope_name, OMITS_ZERO_CACHE_SCOPES),
    )


USAGE_KEY_GROUPS = (
    INPUT_TOKEN_KEYS, OUTPUT_TOKEN_KEYS, CACHE_READ_KEYS, CACHE_CREATION_KEYS, REASONING_KEYS,
)
"""The synonym lists :func:`call_usage` reads, in the order :func:`usage_from_values`
takes their values."""
_USAGE_KEYS = KeyGroups(USAGE_KEY_GROUPS)


def normalised_tokens(
    input_tokens: int | None,
    output_tokens: int | None,
    cache_read_tokens: int | None = None,
    cache_creation_tokens: int | None = None,
    reasoning_tokens: int | None = None,
    *,
    input_excludes_cache: bool = False,
) -> TokenUsage:
    """Counts as a producer reported them, in the GenAI convention (module docstring).

    The cache reads and writes are added to ``input_tokens`` when the producer is known to
    leave them out (``input_excludes_cache``) or when ``input_tokens`` is smaller than them
    (it cannot include them); reasoning is added to ``output_tokens`` when larger than it.
    A missing input count with cache counts becomes their sum.
    """
    cached = (cache_read_tokens or 0) + (cache_creation_tokens or 0)
    if input_tokens is not None and cached and (input_excludes_cache or input_tokens < cached):
        input_tokens += cached
    elif input_tokens is None and cached:
        input_tokens = cached
    if (
        reasoning_tokens is not None
        and output_tokens is not None
        and reasoning_tokens > output_tokens
    ):
        output_tokens += reasoning_tokens
    return TokenUsage(
        input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, reasoning_tokens
    )


def call_usage(attrs: Mapping[str, Any], scope_name: str | None = None) -> CallUsage:
    """Read and normalise a span's token breakdown (rules in the module docstring).

    Args:
        attrs: the span's attributes.
        scope_name: its instrumentation scope name (the producer), None when unknown.

    Returns:
        The :class:`CallUsage`; counts the span does not carry are None.
    """
    return usage_from_values(_USAGE_KEYS.firsts(attrs), scope_name)


def usage_from_values(values: Sequence[Any], scope_name: str | None = None) -> CallUsage:
    """:func:`call_usage` from the first values of :data:`USAGE_KEY_GROUPS` (input, output,
    cache read, cache creation, reasoning; raw attribute values or None), for a caller
    that read them in its own pass (:class:`KeyGroups`)."""
    return CallUsage(*usage_parts(values, scope_name))


def usage_parts(
    values: Sequence[Any], scope_name: str | None = None
) -> tuple[TokenUsage, int | None, bool]:
    """The fields of :func:`usage_from_values`'s :class:`CallUsage` (tokens, input count
    as reported, cache detail known) as a tuple, for the mapping's hot path."""
    raw_in, raw_out, raw_read, raw_creation, raw_reasoning = values[:5]
    input_excludes_cache, omits_zero_cache = _scope_rules(scope_name)
    if raw_in is None and raw_out is None and raw_read is None and raw_creation is None and (
        raw_reasoning is None
    ):
        return _NO_TOKENS, None, omits_zero_cache
    # token_count's common case (an int in range, itself) inline; None stays None.
    limit = _EXACT_FLOAT_INT
    reported_in = raw_in if raw_in is None or (
        type(raw_in) is int and 0 <= raw_in <= limit) else token_count(raw_in)
    out = raw_out if raw_out is None or (
        type(raw_out) is int and 0 <= raw_out <= limit) else token_count(raw_out)
    if raw_read is None and raw_creation is None and raw_reasoning is None:
        # normalised_tokens with no cache or reasoning counts: the counts as they are
        tokens = TokenUsage(reported_in, out, None, None, None)
        return tokens, reported_in, omits_zero_cache
    tokens = normalised_tokens(
        reported_in,
        out,
        None if raw_read is None else token_count(raw_read),
        None if raw_creation is None else token_count(raw_creation),
        None if raw_reasoning is None else token_count(raw_reasoning),
        input_excludes_cache=input_excludes_cache,
    )
    known = (
        tokens.cache_read_tokens is not None
        or tokens.cache_creation_tokens is not None
        or omits_zero_cache
    )  # tokens.has_cache_detail, inline
    return tokens, reported_in, known


_NO_TOKENS = TokenUsage(None, None)
