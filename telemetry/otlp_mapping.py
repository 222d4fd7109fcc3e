"""The one mapping from an OTLP span to the store's :class:`~telemetry.records.SpanRecord`.

Why one file: this is *the* one mapping from any producer's span to a record; its
synonym tables, call detection, cost and role rules interact (a role depends on the kind,
the cost on the tokens and model), and the docstring below states them as one rule set.
The role's word and ancestry rules live in :mod:`telemetry.span_roles` (re-exported here)
and the JSON text in :mod:`telemetry.json_text`, so this file stays readable.

Speed (issue 11): a span's attributes are looked at in one pass for every synonym list
and the task class (:class:`~telemetry.call_usage.KeyGroups`, precomputed key sets);
what comes from a resource is worked out once per resource, a call's ancestry role once
per parent, prices once per model and token mix (:class:`~telemetry.pricing.PriceMemo`); a
call like one the batch already costed (or found unpriced) is costed here from the
memoised rates, a reported cost beside them (what :func:`~telemetry.pricing.price_call`
does on that memo hit, without its layers; a test holds the two equal).

Whatever produced the span (the current or legacy OpenTelemetry GenAI conventions,
OpenInference, OpenLLMetry, litellm's OTel callback, cliffwatch itself, or cliffwatch's
litellm callback) it goes through :func:`map_span`. The function is pure: no I/O, no
clock; prices come from :func:`telemetry.pricing.price_call` (litellm's cost logic over its
bundled map plus overrides, both fixed for a process).

What it decides, and from which attributes (names in docs/sources.md#genai-attribute-names;
what each producer emits: docs/cost-truth.md):

- **tokens**: the breakdown :func:`telemetry.call_usage.call_usage` reads and normalises
  (input including cache reads and writes, output including reasoning; the input count as
  reported is kept too).
- **model, provider**: the first of the synonyms in :data:`REQUEST_MODEL_KEYS`,
  :data:`RESPONSE_MODEL_KEYS`, :data:`PROVIDER_KEYS` that the span carries.
- **is it an LLM call**: a span with an LLM-ish kind (:func:`llm_kind`) and a model or
  token usage; a span with no kind marker at all counts when it has both. Agent, workflow,
  chain and tool spans are never calls, even when they repeat their children's summed usage,
  so a run's cost (the store sums leaf calls only) never counts tokens twice.
- **cost**: litellm's cost of the tokens (``computed``), with the rates it billed at; a
  cost the span reports (:data:`telemetry.call_usage.TOTAL_COST_KEYS`) wins (source
  ``provider``) and the computed one is kept beside it; a model with no price is
  ``unpriced`` (cost None, counted by the store, never $0). cliffwatch's own spans keep the
  figure they recorded (``cliff.cost_usd``, ``cliff.cost_source``).
- **task class**: the first attribute of :attr:`MappingConfig.task_class_attributes`
  found on the span, then on its resource, then the name of a root agent span; None
  otherwise, and the store then falls back to the run's other spans and to
  ``service.name``.
- **role**: ``cliff.role`` when the producer set it (cliffwatch's own spans); else, for a
  call, plan / worker / synthesis / critic when its own or an ancestor's name says so
  (:func:`role_from_words`), worker when it sits under a tool or a nested agent, and
  ``call`` otherwise; a non-call root is ``run``, any other non-call ``other``. The
  ancestors are those of the batch; when a later batch continues the trace, the write
  works its calls' roles out again over the whole stored trace
  (:mod:`telemetry.continued_roles`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from cliffwatch.settings import SettingError
from cliffwatch.telemetry import conventions as cv
from cliffwatch.telemetry.call_usage import (
    SPLIT_COST_KEYS,
    TOTAL_COST_KEYS,
    USAGE_KEY_GROUPS,
    KeyGroups,
    first_value,
    non_negative,
    reported_cost_usd,
    usage_parts,
)
from cliffwatch.telemetry.conventions import LLM_CALL_ROLES, CostSource, Role
from cliffwatch.telemetry.frozen_init import positional_builder
from cliffwatch.telemetry.json_text import json_text as _json_text
from cliffwatch.telemetry.otlp_decode import OtlpSpan, SpanRejection
from cliffwatch.telemetry.pricing import (
    CallCost,
    Price,
    PriceMemo,
    TokenUsage,
    caches_prompts,
    price_call,
)
from cliffwatch.telemetry.records import SpanRecord
from cliffwatch.telemetry.span_roles import (
    OPENINFERENCE_SPAN_KIND,
    TRACELOOP_SPAN_KIND,
    SpanBatch,
    ancestry_role,
    span_role_hint,
    stated_role,
    structure_kind,
)
from cliffwatch.telemetry.span_roles import call_role as call_role  # the mapping's API too
from cliffwatch.telemetry.span_roles import role_from_words as role_from_words
from cliffwatch.telemetry.usage_bounds import (
    MAX_COST_USD_PER_CALL,
    MAX_TOKENS_PER_SPAN,
    USAGE_REJECTED_REASON,
    bound_usage,
)

logger = logging.getLogger(__name__)

# --- attribute synonyms, most specific first -----------------------------------------------

REQUEST_MODEL_KEYS = (
    cv.GEN_AI_REQUEST_MODEL,
    "llm.request.model_name",  # OpenInference
    "llm.model_name",
    "embedding.model_name",
)
RESPONSE_MODEL_KEYS = (
    cv.GEN_AI_RESPONSE_MODEL,
    "llm.response.model_name",  # OpenInference
    "llm.model_name",
    "embedding.model_name",
)
PROVIDER_KEYS = (
    cv.GEN_AI_PROVIDER_NAME,
    "gen_ai.system",  # legacy GenAI conventions, litellm, OpenLLMetry before 0.4x
    "llm.provider",  # OpenInference
    "llm.system",
)
OPERATION_KEYS = (cv.GEN_AI_OPERATION_NAME, "llm.request.type")

REPORTED_COST_KEYS = (*TOTAL_COST_KEYS, *(key for pair in SPLIT_COST_KEYS for key in pair))
"""Every attribute :func:`telemetry.call_usage.reported_cost_usd` reads a cost from: a
span that sets none of them (not None, not "") reported no cost."""

_SPAN_GROUPS = (
    *USAGE_KEY_GROUPS, REQUEST_MODEL_KEYS, RESPONSE_MODEL_KEYS, PROVIDER_KEYS, OPERATION_KEYS,
    REPORTED_COST_KEYS,
)
"""Every synonym list :func:`map_span` reads, looked up in one pass over a span's keys
(with the task class attributes, last: :func:`_span_keys`)."""

DEFAULT_TASK_CLASS_ATTRIBUTES: tuple[str, ...] = (
    cv.CLIFF_TASK_CLASS,
    "gen_ai.workflow.name",
    "traceloop.workflow.name",  # OpenLLMetry
    "gen_ai.agent.name",
    "agent.name",  # OpenInference
)
"""Where the task class is looked for, in order (span attributes, then resource ones)."""

_new_record = positional_builder(SpanRecord)
_CLIFF_ROLE, _CLIFF_COST_SOURCE, _CLIFF_COST_USD = (
    cv.CLIFF_ROLE, cv.CLIFF_COST_SOURCE, cv.CLIFF_COST_USD
)
_COMPUTED, _PROVIDER, _UNPRICED = (
    str(CostSource.COMPUTED), str(CostSource.PROVIDER), str(CostSource.UNPRICED)
)

# --- kind markers ----------------------------------------------------------------------------

LLM_OPERATIONS = frozenset(
    {"chat", "text_completion", "generate_content", "embeddings", "completion", "embedding"}
)
"""``gen_ai.operation.name`` (and OpenLLMetry's ``llm.request.type``) values of a model call.
Embeddings count: they are billed calls, priced per input token."""
OPENINFERENCE_CALL_KINDS = frozenset({"LLM", "EMBEDDING"})
@dataclass(frozen=True, slots=True)
class MappingConfig:
    """How spans are mapped; the defaults suit every producer docs/cost-truth.md lists.

    Attributes:
        task_class_attributes: attribute names tried in order for the task class.
        source: the ``source`` column of the records (the route they came in by).
        overrides_path: a price override file (litellm model_cost format); None uses
            :func:`cliffwatch.settings.price_overrides_path`.
    """

    task_class_attributes: tuple[str, ...] = DEFAULT_TASK_CLASS_ATTRIBUTES
    source: str = "otlp"
    overrides_path: Path | None = None


# --- small readers -----------------------------------------------------------------------------


_first = first_value


def _usd(value: Any) -> float | None:
    """A cost in USD from a number or numeric string; None when absent, negative or NaN."""
    return non_negative(value)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = (value if type(value) is str else str(value)).strip()
    return text or None


def llm_kind(attrs: Mapping[str, Any]) -> bool | None:
    """Whether the span's kind markers say it is a model call: True, False, or None (no marker).

    Markers, first present wins: ``cliff.role`` (a call role), ``openinference.span.kind``
    (LLM or EMBEDDING), ``traceloop.span.kind`` (anything but ``llm`` is a workflow, task,
    agent or tool), ``gen_ai.operation.name`` / ``llm.request.type`` (:data:`LLM_OPERATIONS`).
    """
    return _llm_kind(attrs, _first(attrs, OPERATION_KEYS))


def _llm_kind(attrs: Mapping[str, Any], operation: Any) -> bool | None:
    """:func:`llm_kind` with the first of :data:`OPERATION_KEYS` already read."""
    role = attrs.get(cv.CLIFF_ROLE)
    if isinstance(role, str):  # another type (a list, a number) is no role marker
        return role in LLM_CALL_ROLES
    oi_kind = attrs.get(OPENINFERENCE_SPAN_KIND)
    if oi_kind is not None:
        return str(oi_kind).upper() in OPENINFERENCE_CALL_KINDS
    tl_kind = attrs.get(TRACELOOP_SPAN_KIND)
    if tl_kind is not None and str(tl_kind).lower() != "llm":
        return False
    if operation is not None:
        return str(operation).lower() in LLM_OPERATIONS
    return True if tl_kind is not None else None


# --- the mapping ---------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _task_class_keys(attribute_names: tuple[str, ...]) -> KeyGroups:
    return KeyGroups((attribute_names,))


@lru_cache(maxsize=64)
def _span_keys(task_class_attributes: tuple[str, ...]) -> KeyGroups:
    """Every synonym list :func:`map_span` reads on a span (:data:`_SPAN_GROUPS`) and, last,
    the task class attributes: one pass over the span's keys for all of them."""
    return KeyGroups((*_SPAN_GROUPS, task_class_attributes))


def _task_class(
    span: OtlpSpan, own_value: Any, resource_task_class: str | None
) -> str | None:
    """:func:`task_class_of` from the first task class attribute value the span carries
    and the one its resource gives."""
    value = _text(own_value)
    if value is not None:
        return value
    if resource_task_class is not None:
        return resource_task_class
    if span.parent_span_id is None and structure_kind(span.attributes) == "agent":
        return _text(span.name)
    return None


def task_class_of(span: OtlpSpan, attribute_names: Sequence[str]) -> str | None:
    """The first of ``attribute_names`` set on the span, then on its resource; else, for a
    root span marked as an agent, its name (the OpenAI Agents SDK under OpenInference names
    its workflow only there); else None."""
    keys = _task_class_keys(tuple(attribute_names))
    return _task_class(
        span, keys.firsts(span.attributes)[0], _text(keys.firsts(span.resource_attributes)[0])
    )


def resource_json_text(attributes: Mapping[str, Any]) -> str:
    """The ``resource_attributes`` column's JSON text of a span's resource attributes."""
    return _json_text(dict(attributes))


@lru_cache(maxsize=1024)
def _scope_json(scope_name: str | None, scope_version: str | None) -> str:
    """The JSON members ``"otel.scope.name":..,"otel.scope.version":..`` of the set ones
    (a batch has few scopes)."""
    extra = []
    if scope_name:
        extra.append('"otel.scope.name":' + _json_text(scope_name))
    if scope_version:
        extra.append('"otel.scope.version":' + _json_text(scope_version))
    return ",".join(extra)


_SCOPE_TAILS: dict[tuple[str | None, str | None], str] = {}
"""``,`` + :func:`_scope_json` + ``}`` by scope name and version (a batch has few)."""


def _attributes_json(span: OtlpSpan) -> str:
    attrs = span.attributes
    if (
        type(attrs) is dict and attrs
        and "otel.scope.name" not in attrs and "otel.scope.version" not in attrs
    ):
        # The common case of the branch below: the scope members, set ones, appended.
        scope = (span.scope_name, span.scope_version)
        tail = _SCOPE_TAILS.get(scope)
        if tail is None:
            extra = _scope_json(*scope)
            tail = _SCOPE_TAILS[scope] = ("," + extra if extra else "") + "}"
            if len(_SCOPE_TAILS) > 1024:
                _SCOPE_TAILS.clear()
                _SCOPE_TAILS[scope] = tail
        return _json_text(attrs)[:-1] + tail
    if type(attrs) is dict:
        # The JSON of the attributes with otel.scope.* appended as they would be by
        # setdefault on a copy (last, name before version), without copying the dict.
        extra = _scope_json(
            span.scope_name if "otel.scope.name" not in attrs else None,
            span.scope_version if "otel.scope.version" not in attrs else None,
        )
        text = _json_text(attrs)
        if not extra:
            return text
        return text[:-1] + ("," if attrs else "") + extra + "}"
    attrs = dict(attrs)
    # otel.scope.* are the OTel names for the scope outside OTLP (as exporters to Zipkin use);
    # kept so the producer of an ingested span can be told later.
    if span.scope_name:
        attrs.setdefault("otel.scope.name", span.scope_name)
    if span.scope_version:
        attrs.setdefault("otel.scope.version", span.scope_version)
    return _json_text(attrs)


def _own_price(attrs: Mapping[str, Any]) -> Price | None:
    price_in = _usd(attrs.get(cv.CLIFF_PRICE_INPUT))
    price_out = _usd(attrs.get(cv.CLIFF_PRICE_OUTPUT))
    if price_in is None or price_out is None:
        return None
    return Price(
        price_in,
        price_out,
        _text(attrs.get(cv.CLIFF_PRICE_MODEL_KEY)) or "",
        _usd(attrs.get(cv.CLIFF_PRICE_CACHE_READ)),
        _usd(attrs.get(cv.CLIFF_PRICE_CACHE_CREATION)),
        _usd(attrs.get(cv.CLIFF_PRICE_REASONING)),
    )


def _own_cost(attrs: Mapping[str, Any]) -> CallCost:
    """The cost a cliffwatch span recorded: the figure it counted against the ceiling, its
    source, the rates it was priced at and litellm's computation beside a provider cost."""
    own_source = attrs.get(cv.CLIFF_COST_SOURCE)
    cost = _usd(attrs.get(cv.CLIFF_COST_USD))
    price = _own_price(attrs)
    if own_source == CostSource.UNPRICED or cost is None:
        return CallCost(None, CostSource.UNPRICED, price)
    source = CostSource(own_source) if own_source in set(CostSource) else CostSource.PROVIDER
    computed = _usd(attrs.get(cv.CLIFF_COST_COMPUTED_USD))
    if source is CostSource.COMPUTED:
        computed = cost
    reported = cost if source is CostSource.PROVIDER else None
    missing = attrs.get(cv.CLIFF_COST_CACHE_DETAIL_MISSING) is True
    return CallCost(cost, source, price, computed, reported, missing)


def _cost(
    attrs: Mapping[str, Any],
    models: Sequence[str | None],
    tokens: TokenUsage,
    cache_detail_known: bool,
    overrides_path: Path | None,
    price_memo: PriceMemo | None = None,
    any_reported: bool = True,
) -> CallCost:
    """A call's cost (see the module docstring): litellm's through
    :func:`telemetry.pricing.price_call`, a reported cost winning with the computed one
    kept beside it; cliffwatch's own spans as they recorded it. ``any_reported`` False:
    the span sets none of :data:`REPORTED_COST_KEYS` (so it reported no cost)."""
    if cv.CLIFF_COST_SOURCE in attrs or cv.CLIFF_COST_USD in attrs:
        return _own_cost(attrs)
    return price_call(
        models,
        tokens,
        reported_usd=reported_cost_usd(attrs) if any_reported else None,
        cache_detail_known=cache_detail_known,
        overrides_path=overrides_path,
        memo=price_memo,
    )


@dataclass(frozen=True, slots=True)
class _Resource:
    """What a span's record takes from its resource, worked out once per resource."""

    json_text: str
    task_class: str | None
    service_name: str | None


def _resource_of(
    attributes: Mapping[str, Any], keys: KeyGroups, json_text: str | None = None
) -> _Resource:
    return _Resource(
        resource_json_text(attributes) if json_text is None else json_text,
        _text(keys.firsts(attributes)[-1]),
        _text(attributes.get("service.name")),
    )


def map_span(
    span: OtlpSpan,
    config: MappingConfig = MappingConfig(),  # noqa: B008 (frozen, immutable default)
    ancestors: Sequence[OtlpSpan] = (),
    *,
    price_memo: PriceMemo | None = None,
    resource_json: str | None = None,
) -> SpanRecord:
    """Map one OTLP span to the store's record.

    Args:
        span: the decoded span.
        config: the task class rule, the source label and the price overrides.
        ancestors: the span's ancestors known to the caller, nearest first; only used to
            tell a call's role (see :func:`call_role`), so partial or empty is fine.
        price_memo: price look-ups shared with the rest of a batch
            (:class:`telemetry.pricing.PriceMemo`); the same result without.
        resource_json: the JSON text of ``span.resource_attributes`` when the caller has
            it (shared by a batch's spans of one resource); computed when None.

    Returns:
        The record; ``cost_usd`` and ``cost_source`` are None unless it is an LLM call.
        Usage out of bounds is rejected (:func:`telemetry.usage_bounds.bound_usage`).
    """
    keys = _span_keys(config.task_class_attributes)
    resource = _resource_of(span.resource_attributes, keys, resource_json)
    return _map_span(span, config, keys, resource, price_memo, ancestors, None)


def _map_span(
    span: OtlpSpan,
    config: MappingConfig,
    keys: KeyGroups,
    resource: _Resource,
    price_memo: PriceMemo | None,
    ancestors: Sequence[OtlpSpan],
    batch: SpanBatch | None,
) -> SpanRecord:
    """:func:`map_span` with the key groups of ``config`` (:func:`_span_keys`) and the
    span's resource worked out; a call's ancestors are looked up in ``batch`` when given,
    else taken from ``ancestors``."""
    attrs = span.attributes
    values = keys.firsts(attrs)
    raw_request_model, raw_response_model, raw_provider, raw_operation = values[5:9]
    tokens, input_tokens_reported, cache_detail_known = usage_parts(values, span.scope_name)
    input_tokens, output_tokens = tokens.input_tokens, tokens.output_tokens
    # _text, its common case (a str) inline
    request_model = (
        (raw_request_model.strip() or None) if type(raw_request_model) is str
        else _text(raw_request_model)
    )
    response_model = (
        (raw_response_model.strip() or None) if type(raw_response_model) is str
        else _text(raw_response_model)
    )
    kind = _llm_kind(attrs, raw_operation)
    has_model = bool(request_model or response_model)
    has_usage = input_tokens is not None or output_tokens is not None
    own_role = None if _CLIFF_ROLE not in attrs else stated_role(attrs)
    if own_role is not None:
        is_llm_call = own_role in LLM_CALL_ROLES
    else:
        # A marked call counts with a model or usage (an unknown model is then unpriced,
        # never dropped); an unmarked span needs both, as hand-written spans carry them.
        is_llm_call = (kind is True and (has_model or has_usage)) or (
            kind is None and has_model and has_usage
        )

    price: Price | None = None
    cost_usd = computed_usd = reported_usd = None
    cost_source: str | None = None
    cache_detail_missing: bool | None = None
    if is_llm_call:
        models = (response_model, request_model)
        if (
            price_memo is not None and has_usage
            and _CLIFF_COST_SOURCE not in attrs and _CLIFF_COST_USD not in attrs
        ):
            # price_call's memo hit, inline: a call like one the batch costed before (its
            # memoised rates and plain arithmetic, flat_cost_usd) or found unpriced.
            settled, price, computed_usd = price_memo.known_call(
                price_memo.call_key(models, config.overrides_path, tokens), tokens)
            if settled:
                reported_usd = None if values[9] is None else reported_cost_usd(attrs)
                cache_detail_missing = False
                if reported_usd is not None:
                    cost_usd, cost_source = reported_usd, _PROVIDER
                elif price is not None and computed_usd is not None:
                    cost_usd, cost_source = computed_usd, _COMPUTED
                    cache_detail_missing = not cache_detail_known and caches_prompts(price)
                else:
                    cost_source = _UNPRICED
        if cost_source is None:
            cost = _cost(
                attrs, models, tokens, cache_detail_known,
                config.overrides_path, price_memo, values[9] is not None,
            )
            cost_usd, cost_source, price = cost.cost_usd, str(cost.source), cost.price
            computed_usd, reported_usd = cost.computed_usd, cost.reported_usd
            cache_detail_missing = cost.cache_detail_missing
        role = own_role or span_role_hint(span) or (
            ancestry_role(ancestors) if batch is None else batch.ancestry_role(span)
        )
    elif own_role is not None:
        role = own_role
    else:
        role = Role.RUN if span.parent_span_id is None else Role.OTHER

    attributes_json = _attributes_json(span)
    # _task_class, its common cases (a text of its own; none on a span that is not a root)
    # inline
    own_task_class = values[-1]
    task_class = own_task_class.strip() if type(own_task_class) is str else None
    if not task_class:
        task_class = (
            resource.task_class if own_task_class is None and span.parent_span_id is not None
            else _task_class(span, own_task_class, resource.task_class)
        )
    if price is None:
        price_in = price_out = price_cache_read = price_cache_creation = price_reasoning = None
        price_model_key = None
    else:
        price_in, price_out = price.input_usd_per_token, price.output_usd_per_token
        price_cache_read = price.cache_read_usd_per_token
        price_cache_creation = price.cache_creation_usd_per_token
        price_reasoning = price.reasoning_usd_per_token
        price_model_key = price.model_key or None
    # SpanRecord(...) by its positional builder, in its field order: binding 37 keywords
    # costs more than the rest of building the record (tests hold every field against
    # the mapping).
    record = _new_record(
        span.trace_id,  # trace_id
        span.span_id,  # span_id
        span.parent_span_id,  # parent_span_id
        span.name,  # name
        span.start_time_unix_nano,  # start_time_unix_nano
        span.end_time_unix_nano,  # end_time_unix_nano
        span.status_code,  # status_code
        span.status_message,  # status_message
        str(role),  # role
        task_class,  # task_class
        is_llm_call,  # is_llm_call
        (raw_operation.strip() or None) if type(raw_operation) is str
        else _text(raw_operation),  # operation
        (raw_provider.strip() or None) if type(raw_provider) is str
        else _text(raw_provider),  # provider
        request_model,  # request_model
        response_model,  # response_model
        input_tokens,  # input_tokens
        output_tokens,  # output_tokens
        cost_usd,  # cost_usd
        cost_source,  # cost_source
        price_in,  # price_input_usd_per_token
        price_out,  # price_output_usd_per_token
        resource.service_name,  # service_name
        config.source,  # source
        attributes_json,  # attributes
        resource.json_text,  # resource_attributes
        _json_text(list(span.events)) if span.events else "[]",  # events
        input_tokens_reported,  # input_tokens_reported
        tokens.cache_read_tokens,  # cache_read_tokens
        tokens.cache_creation_tokens,  # cache_creation_tokens
        tokens.reasoning_tokens,  # reasoning_tokens
        price_cache_read,  # price_cache_read_usd_per_token
        price_cache_creation,  # price_cache_creation_usd_per_token
        price_reasoning,  # price_reasoning_usd_per_token
        price_model_key,  # price_model_key
        reported_usd,  # reported_cost_usd
        computed_usd,  # computed_cost_usd
        cache_detail_missing,  # cache_detail_missing
    )
    raw_in, raw_out = values[0], values[1]
    cache_read, cache_creation, reasoning = (
        tokens.cache_read_tokens, tokens.cache_creation_tokens, tokens.reasoning_tokens
    )  # token_count's: None or an int >= 0, so only the upper bound is left to check
    if (  # bound_usage's common case, decided here: every count and cost in bounds
        (raw_in is None or (type(raw_in) is int and 0 <= raw_in <= MAX_TOKENS_PER_SPAN))
        and (raw_out is None or (type(raw_out) is int and 0 <= raw_out <= MAX_TOKENS_PER_SPAN))
        and (cache_read is None or cache_read <= MAX_TOKENS_PER_SPAN)
        and (cache_creation is None or cache_creation <= MAX_TOKENS_PER_SPAN)
        and (reasoning is None or reasoning <= MAX_TOKENS_PER_SPAN)
        and (cost_usd is None or 0 <= cost_usd <= MAX_COST_USD_PER_CALL)
        and (reported_usd is None or 0 <= reported_usd <= MAX_COST_USD_PER_CALL)
        and (computed_usd is None or 0 <= computed_usd <= MAX_COST_USD_PER_CALL)
        # bound_usage takes the key out of the text when the span set it; when the text
        # holds it anywhere else (a value, a nested key) its parse and encoding gives the
        # text back as it was (tests/test_otlp_mapping_paths.py), so the span's keys say it
        and USAGE_REJECTED_REASON not in attrs
    ):
        return record
    return bound_usage(record, raw_in, raw_out)


def map_spans(
    spans: Sequence[OtlpSpan],
    config: MappingConfig = MappingConfig(),  # noqa: B008 (frozen, immutable default)
) -> tuple[list[SpanRecord], list[SpanRejection]]:
    """Map a batch, giving each span its in-batch ancestors for role hints.

    Spans that share a (trace_id, span_id) are kept once (the first), so a batch never
    holds the same key twice. Order is kept. A span whose mapping fails is logged with
    its ids, rejected and left out; the others go on.

    Returns:
        ``(records, rejections)``.

    Raises:
        SettingError: a setting the mapping reads is bad (the price override file): a
            fault of the whole process, not of one span.
    """
    by_key: dict[tuple[str, str], OtlpSpan] = {}
    for span in spans:
        by_key.setdefault((span.trace_id, span.span_id), span)
    records: list[SpanRecord] = []
    rejections: list[SpanRejection] = []
    price_memo = PriceMemo()
    keys = _span_keys(config.task_class_attributes)
    batch = SpanBatch(by_key)
    resources: dict[int, tuple[Mapping[str, Any], _Resource]] = {}  # decode shares a resource
    for span in by_key.values():
        try:
            attributes = span.resource_attributes
            known = resources.get(id(attributes))
            if known is None or known[0] is not attributes:
                known = resources[id(attributes)] = (attributes, _resource_of(attributes, keys))
            records.append(_map_span(span, config, keys, known[1], price_memo, (), batch))
        except SettingError:
            raise
        except Exception as exc:
            logger.warning(
                "cliffwatch: span %s of trace %s not mapped: %r", span.span_id, span.trace_id, exc
            )
            rejections.append(SpanRejection(span.trace_id, span.span_id, f"cannot map: {exc}"))
    return records, rejections
