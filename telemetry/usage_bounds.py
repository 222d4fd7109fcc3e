"""Bounds on a span's usage (tokens, cost): an absurd value never reaches a sum or a percentile.

A producer can report anything: ``gen_ai.usage.cost.amount=1e308`` (five such calls made a
run cost ``inf``), 10^15 tokens (priced as a $150M call), ``input_tokens=-1`` (the call
priced from its output alone), 2^62 tokens (the run's token sum overflowed int64). The one
mapping (:func:`telemetry.otlp_mapping.map_span`) hands every record it builds to
:func:`bound_usage`, which checks the usage against the bounds below:

============================  =====================  ====================================
value                         accepted               why this bound
============================  =====================  ====================================
input and output tokens       whole numbers          100x the largest context window in
of one span                   0 .. 10^9              litellm's bundled price map (about
                                                     10.5M tokens, Llama 4 Scout); 10^9
                                                     per span keeps a run's int64 sum
                                                     safe for billions of spans
cost of one call (reported    finite, 0 .. $10,000   over 100x the dearest full-context
or computed)                                         call in that map (o1-pro: 200k input
                                                     + 100k output tokens = $90)
============================  =====================  ====================================

A span out of bounds is **kept** (its ids, times, model, role and task class are sound, and
dropping it would break its run's structure) but its **usage is rejected**: tokens, cost and
prices become NULL, a call becomes ``unpriced`` (counted by the store as an unpriced call,
never $0, never summed), and the reason is recorded on the span as the attribute
:data:`USAGE_REJECTED_REASON` (one of :class:`UsageRejection`). The receiver counts the
reasons in ``GET /health`` and names the spans in ``partial_success`` as a warning
(``rejected_spans`` 0: the spans were stored); ``cliffwatch ingest`` names them in its
problems.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from enum import StrEnum
from typing import Any

from cliffwatch.telemetry.conventions import CostSource
from cliffwatch.telemetry.records import SpanRecord

MAX_TOKENS_PER_SPAN = 1_000_000_000
"""Most input (or output) tokens one span may report; see the module docstring."""

MAX_COST_USD_PER_CALL = 10_000.0
"""Most USD one call may cost, reported or computed; see the module docstring."""

USAGE_REJECTED_REASON = "cliff.usage_rejected_reason"
"""Span attribute naming why the span's usage was rejected (a :class:`UsageRejection`
value); absent when its usage was accepted. Set only by cliffwatch: a producer's own value
is dropped."""


class UsageRejection(StrEnum):
    """Why a span's usage was rejected (the value of :data:`USAGE_REJECTED_REASON`)."""

    TOKENS_NEGATIVE = "tokens_negative"
    """An input or output token count below 0."""
    TOKENS_TOO_LARGE = "tokens_too_large"
    """A token count over :data:`MAX_TOKENS_PER_SPAN` (or infinite)."""
    TOKENS_NOT_A_COUNT = "tokens_not_a_count"
    """A token count that is not a whole number (a fraction, NaN, text, a boolean)."""
    COST_TOO_LARGE = "cost_too_large"
    """A call cost over :data:`MAX_COST_USD_PER_CALL` (or not finite)."""


def _number(raw: Any) -> int | float | None:
    """An int or float from a number or numeric text; None for anything else (bools too)."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        return raw
    if isinstance(raw, str):
        text = raw.strip()
        try:
            return int(text)
        except ValueError:  # not an integer, or longer than Python's int parsing limit
            pass
        try:
            return float(text)
        except ValueError:
            return None
    return None


def token_problem(raw: Any) -> UsageRejection | None:
    """Why a token count as the producer sent it is out of bounds; None when it is fine.

    Args:
        raw: the attribute value (int, float, numeric text, anything), or None when the
            span has no such count (never a problem).
    """
    if type(raw) is int and 0 <= raw <= MAX_TOKENS_PER_SPAN:
        return None  # the common case, decided without the general parse below
    if raw is None or raw == "":
        return None
    number = _number(raw)
    if number is None or (isinstance(number, float) and math.isnan(number)):
        return UsageRejection.TOKENS_NOT_A_COUNT
    if number < 0:
        return UsageRejection.TOKENS_NEGATIVE
    if number > MAX_TOKENS_PER_SPAN:
        return UsageRejection.TOKENS_TOO_LARGE
    if isinstance(number, float) and not number.is_integer():
        return UsageRejection.TOKENS_NOT_A_COUNT
    return None


def cost_problem(cost_usd: float | None) -> UsageRejection | None:
    """Why a call's cost in USD is out of bounds; None when it is fine (or None)."""
    if cost_usd is None:
        return None
    if not (math.isfinite(cost_usd) and 0 <= cost_usd <= MAX_COST_USD_PER_CALL):
        return UsageRejection.COST_TOO_LARGE
    return None


def _with_reason(attributes_json: str, reason: str | None) -> str:
    try:
        attrs = json.loads(attributes_json)
    except ValueError:
        attrs = None
    if not isinstance(attrs, dict):
        return attributes_json
    attrs.pop(USAGE_REJECTED_REASON, None)
    if reason is not None:
        attrs[USAGE_REJECTED_REASON] = reason
    return json.dumps(attrs, ensure_ascii=False, separators=(",", ":"), default=str)


def bound_usage(record: SpanRecord, raw_input_tokens: Any, raw_output_tokens: Any) -> SpanRecord:
    """The record with its usage checked against the bounds (see the module docstring).

    Args:
        record: a mapped span.
        raw_input_tokens: the span's input token count as the producer sent it (before
            any parsing), or None when it has none.
        raw_output_tokens: the same for output tokens.

    Returns:
        ``record`` itself when its usage is in bounds; else a copy with tokens, cost and
        prices None, ``cost_source`` ``unpriced`` for a call, and
        :data:`USAGE_REJECTED_REASON` set in its attributes JSON.
    """
    reason = None
    for count in (raw_input_tokens, raw_output_tokens, record.cache_read_tokens,
                  record.cache_creation_tokens, record.reasoning_tokens,
                  record.input_tokens_reported):
        if count is None or (type(count) is int and 0 <= count <= MAX_TOKENS_PER_SPAN):
            continue  # the common cases, decided without a call
        if (reason := token_problem(count)) is not None:
            break
    if reason is None:
        for cost_usd in (record.cost_usd, record.reported_cost_usd, record.computed_cost_usd):
            if cost_usd is not None and not 0 <= cost_usd <= MAX_COST_USD_PER_CALL:
                reason = cost_problem(cost_usd)
                if reason is not None:
                    break
    if reason is None:
        if USAGE_REJECTED_REASON in record.attributes:  # a producer's own: not ours to keep
            return replace(record, attributes=_with_reason(record.attributes, None))
        return record
    return replace(
        record,
        input_tokens=None,
        output_tokens=None,
        cost_usd=None,
        cost_source=str(CostSource.UNPRICED) if record.is_llm_call else None,
        price_input_usd_per_token=None,
        price_output_usd_per_token=None,
        input_tokens_reported=None,
        cache_read_tokens=None,
        cache_creation_tokens=None,
        reasoning_tokens=None,
        price_cache_read_usd_per_token=None,
        price_cache_creation_usd_per_token=None,
        price_reasoning_usd_per_token=None,
        price_model_key=None,
        reported_cost_usd=None,
        computed_cost_usd=None,
        cache_detail_missing=None,
        attributes=_with_reason(record.attributes, str(reason)),
    )


def usage_rejection(record: SpanRecord) -> UsageRejection | None:
    """The reason :func:`bound_usage` rejected the record's usage, or None (cheap when none)."""
    if USAGE_REJECTED_REASON not in record.attributes:
        return None
    try:
        value = json.loads(record.attributes).get(USAGE_REJECTED_REASON)
        return UsageRejection(value)
    except (ValueError, AttributeError):
        return None
