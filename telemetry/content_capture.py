"""Prompt and completion content is dropped at the boundary unless capture is on.

Text sent to or written by a model can hold secrets, so cliffwatch stores it only with
``CLIFFWATCH_CAPTURE_CONTENT=true`` (:func:`cliffwatch.settings.capture_content`, off by
default), as the OpenTelemetry GenAI instrumentations keep it opt-in. cliffwatch's own
runner and guard never record it with capture off; spans from other producers (the OTLP
receiver, ``cliffwatch ingest``) go through :func:`without_content` right after decoding,
so nothing past the boundary sees it.

What counts as content, by producer (names from each project's conventions):

- OpenTelemetry GenAI: ``gen_ai.input.messages``, ``gen_ai.output.messages``,
  ``gen_ai.system_instructions``, ``gen_ai.tool.call.arguments``,
  ``gen_ai.tool.call.result``; legacy ``gen_ai.prompt``, ``gen_ai.completion`` and
  OpenLLMetry's ``gen_ai.prompt.<i>.*`` / ``gen_ai.completion.<i>.*``; the events
  ``gen_ai.content.prompt``, ``gen_ai.content.completion``, ``gen_ai.*.message``,
  ``gen_ai.choice`` and ``gen_ai.client.inference.operation.details``.
- OpenInference: ``input.value``, ``output.value``, ``llm.input_messages.*``,
  ``llm.output_messages.*``, ``llm.prompts``, ``llm.prompt_template.*``,
  ``retrieval.documents.*``, ``reranker.*`` documents and query,
  ``embedding.embeddings.*``.
- OpenLLMetry (Traceloop): ``traceloop.entity.input``, ``traceloop.entity.output``.
- cliffwatch: ``cliff.task.input``, ``cliff.subtask.title`` and the ``title`` of each
  sub-task in ``cliff.plan.subtasks`` (model-written); counts, models and ids stay, so
  replay works without them (a missing title reads ``sub-task i``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from cliffwatch.telemetry import conventions as cv
from cliffwatch.telemetry.otlp_decode import OtlpSpan

CONTENT_ATTRIBUTES = frozenset(
    {
        cv.GEN_AI_INPUT_MESSAGES,
        cv.GEN_AI_OUTPUT_MESSAGES,
        "gen_ai.system_instructions",
        "gen_ai.tool.call.arguments",
        "gen_ai.tool.call.result",
        "gen_ai.prompt",
        "gen_ai.completion",
        "input.value",
        "output.value",
        "llm.input_messages",
        "llm.output_messages",
        "llm.prompts",
        "traceloop.entity.input",
        "traceloop.entity.output",
        cv.CLIFF_TASK_INPUT,
        cv.CLIFF_SUBTASK_TITLE,
    }
)
"""Attribute names whose value is content (dropped with capture off)."""

CONTENT_PREFIXES = (
    "gen_ai.prompt.",
    "gen_ai.completion.",
    "llm.input_messages.",
    "llm.output_messages.",
    "llm.prompts.",
    "llm.prompt_template.",
    "retrieval.documents",
    "reranker.input_documents",
    "reranker.output_documents",
    "reranker.query",
    "embedding.embeddings",
)
"""Attribute name prefixes of content (flattened message lists and documents)."""

CONTENT_EVENTS = frozenset(
    {
        "gen_ai.content.prompt",
        "gen_ai.content.completion",
        "gen_ai.system.message",
        "gen_ai.user.message",
        "gen_ai.assistant.message",
        "gen_ai.tool.message",
        "gen_ai.choice",
        "gen_ai.client.inference.operation.details",
    }
)
"""Span event names that carry content (dropped whole with capture off)."""

PLAN_TITLE_KEY = "title"
"""The content field of each sub-task in ``cliff.plan.subtasks``."""


@lru_cache(maxsize=8192)
def is_content(key: str) -> bool:
    """Whether an attribute of this name holds prompt or completion content (cached: a
    batch repeats a few dozen names on every span)."""
    return key in CONTENT_ATTRIBUTES or key.startswith(CONTENT_PREFIXES)


def plan_without_titles(plan_json: Any) -> Any:
    """A ``cliff.plan.subtasks`` JSON array with each sub-task's title removed; other
    values (and text that is not such an array) as given."""
    if not isinstance(plan_json, str) or PLAN_TITLE_KEY not in plan_json:
        return plan_json
    try:
        items = json.loads(plan_json)
    except ValueError:
        return plan_json
    if not isinstance(items, list):
        return plan_json
    return json.dumps(
        [
            {k: v for k, v in item.items() if k != PLAN_TITLE_KEY}
            if isinstance(item, dict)
            else item
            for item in items
        ]
    )


_CLEAN_KEYS: set[str] = set()
"""Attribute names seen and found not to be content (:func:`is_content` False), so a span
whose names are all known is passed in one set test; grown up to :data:`_CLEAN_KEYS_MAX`."""
_CLEAN_KEYS_MAX = 8192


def strip_content(attributes: Mapping[str, Any]) -> Mapping[str, Any]:
    """``attributes`` without content (see the module docstring); the same object when it
    holds none."""
    plan = attributes.get(cv.CLIFF_PLAN_SUBTASKS)
    if plan is None and _CLEAN_KEYS.issuperset(attributes):
        return attributes
    stripped_plan = plan_without_titles(plan)
    if stripped_plan is plan and not any(map(is_content, attributes)):
        if len(_CLEAN_KEYS) < _CLEAN_KEYS_MAX:
            _CLEAN_KEYS.update(attributes)
        return attributes
    kept = {key: value for key, value in attributes.items() if not is_content(key)}
    if plan is not None:
        kept[cv.CLIFF_PLAN_SUBTASKS] = stripped_plan
    return kept


def _events_without_content(
    events: Sequence[Mapping[str, Any]],
) -> tuple[Mapping[str, Any], ...] | None:
    """The events without content, or None when none held any."""
    changed = False
    kept: list[Mapping[str, Any]] = []
    for event in events:
        if event.get("name") in CONTENT_EVENTS:
            changed = True
            continue
        attributes = event.get("attributes")
        if isinstance(attributes, Mapping):
            stripped = strip_content(attributes)
            if stripped is not attributes:
                event = {**event, "attributes": stripped}
                changed = True
        kept.append(event)
    return tuple(kept) if changed else None


def without_content(spans: Sequence[OtlpSpan]) -> tuple[OtlpSpan, ...]:
    """The spans with every content attribute and event dropped (capture off).

    Args:
        spans: decoded spans, as :mod:`telemetry.otlp_decode` gives them.

    Returns:
        The spans in the same order; a span that held no content is the same object.
    """
    out: list[OtlpSpan] = []
    for span in spans:
        attributes = strip_content(span.attributes)
        events = _events_without_content(span.events) if span.events else None
        if attributes is not span.attributes or events is not None:
            span = span.with_attributes(attributes, span.events if events is None else events)
        out.append(span)
    return tuple(out)
