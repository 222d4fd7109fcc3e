"""Prompt token counts with litellm's counter, each distinct prompt counted once per process.

The orchestrator counts a worker's prompt when it prices the plan
(:func:`orchestrator.routing.route_plan`) and the simulated provider counts the very same
prompt again when it answers it; the reserve for synthesis and the critic counts the same
prompts for every run of the same task. Counting is ``litellm.token_counter`` (tiktoken
underneath) and was the largest single cost of a demo (issue 11: 23 s of its time, half of
it counting prompts already counted), so :func:`count_prompt_tokens` remembers the count of
each ``(model, messages)`` it has seen. The result is exactly litellm's count: the cache is
keyed by the whole content, never by a hash alone.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from cliffwatch.telemetry.pricing import import_litellm

PROMPT_COUNT_CACHE_SIZE = 4096
"""Distinct prompts whose counts are kept (least recently used dropped first). A demo of
500 runs has about 3,000 distinct prompts of a few KB each: a few MB at most."""

_Key = tuple[tuple[str, str], ...]


def _litellm_count(model: str, messages: Sequence[Mapping[str, Any]]) -> int:
    return int(import_litellm().token_counter(model=model, messages=list(messages)))


@functools.lru_cache(maxsize=PROMPT_COUNT_CACHE_SIZE)
def _cached_count(model: str, key: _Key) -> int:
    return _litellm_count(model, [{"role": role, "content": content} for role, content in key])


def _key(messages: Sequence[Mapping[str, Any]]) -> _Key | None:
    """The messages as a hashable key, or None when any is more than a text role + content
    (content blocks, tool calls, names: counted as they are, without the cache)."""
    key = []
    for message in messages:
        role, content = message.get("role"), message.get("content")
        if len(message) != 2 or not isinstance(role, str) or not isinstance(content, str):
            return None
        key.append((role, content))
    return tuple(key)


def count_prompt_tokens(model: str, messages: Sequence[Mapping[str, Any]]) -> int:
    """Tokens of ``messages`` for ``model``: ``litellm.token_counter``'s count, cached by
    content (offline tokenizers; see the module docstring).

    Args:
        model: a litellm model string (``gpt-4o-mini``, ``sim/claude-sonnet-4-5``).
        messages: chat messages; plain ``{"role", "content"}`` text messages are cached,
            anything else is counted afresh.
    """
    key = _key(messages)
    if key is None:
        return _litellm_count(model, messages)
    return _cached_count(model, key)


def count_text_tokens(model: str, text: str) -> int:
    """Tokens of an answer ``text`` for ``model`` (``litellm.token_counter`` of the text as a
    response: no message framing). Not cached: answers are rarely repeated."""
    return int(import_litellm().token_counter(model=model, text=text, count_response_tokens=True))
