"""Prompt caching of the simulated provider, as the priced real models do it.

A real provider bills a prompt prefix it has seen recently at its cache read price, and
some bill writing it to the cache; cliffwatch prices those tokens apart
(:func:`telemetry.pricing.price_call`). The simulated provider therefore caches as the
provider of the real model it is priced as, so the demo's stored calls carry cache reads
and writes priced through the same path as real traffic (docs/sources.md#prompt-caching):

- Only a model whose litellm price map entry bills cache reads at a rate of their own
  (``cache_read_input_token_cost``; :func:`telemetry.pricing.caches_prompts`) ever gets a
  cache hit. Others never report a cache token.
- Models whose entry also prices cache *writes* (``cache_creation_input_token_cost``, the
  Anthropic family) cache explicitly, at a breakpoint the caller marks: the simulation
  behaves as a caller that marks the end of its system prompt (what litellm's
  ``cache_control_injection_points=[{"location": "message", "role": "system"}]`` does for
  a real Anthropic call). The leading system messages are the cached prefix: read when an
  entry is live, else written (``cache_creation_tokens``), and only when at least the
  model's minimum (:data:`ANTHROPIC_MIN_PREFIX_TOKENS`: 1,024 tokens, 4,096 for Claude
  Haiku 4.5 and Opus 4.5/4.6, 2,048 for the Haiku 3 family).
- The others (OpenAI) cache automatically and free of charge: a prompt of at least
  :data:`OPENAI_MIN_PREFIX_TOKENS` (1,024) tokens reads the longest prefix it shares with
  a live earlier prompt, in steps of :data:`OPENAI_PREFIX_STEP_TOKENS` (128) from 1,024.
- An entry is live from its writer's start + the time to first token (the provider caches
  the prefix once the response begins, so requests sent at the same moment all miss) until
  :data:`CACHE_TTL_S` (5 minutes, Anthropic's default) after its last use; every hit
  renews it. Time is the run's simulated time (:mod:`orchestrator.clock`), never the
  host's, so a run's cache tokens are a function of its seed.
- Entries are shared within a run (its :class:`orchestrator.clock.VirtualClock`), not
  across runs. Calls of another run within 5 minutes would hit in reality, but sharing
  across concurrently simulated runs would make a run's cost depend on the order the host
  happened to run them; the demo's runs are about 86 minutes apart on average (500 over 30
  days), so this leaves out few hits. A call outside any run caches nothing.
- Failed calls (rate limited, timed out) neither read nor write. Cache hits do not change
  the simulated latency.

Only plain text messages (``{"role", "content": str}``) take part; a prompt with content
blocks is not cached.
"""

from __future__ import annotations

import enum
import functools
import os
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cliffwatch.orchestrator import clock
from cliffwatch.telemetry.pricing import caches_prompts, price_for

CACHE_TTL_S = 300.0
"""Seconds an entry stays live after its last use: Anthropic's default 5-minute lifetime,
refreshed on each hit; OpenAI's prefixes stay 5-10 minutes after their last use
(docs/sources.md#prompt-caching)."""

OPENAI_MIN_PREFIX_TOKENS = 1024
"""OpenAI caches prompts of 1,024 tokens or longer
(docs/sources.md#openai-prompt-caching)."""

OPENAI_PREFIX_STEP_TOKENS = 128
"""OpenAI cache hits grow in increments of 128 tokens above 1,024."""

ANTHROPIC_MIN_PREFIX_TOKENS = 1024
"""The smallest cacheable prefix of an Anthropic model not in
:data:`ANTHROPIC_MIN_PREFIX_TOKENS_BY_MODEL` (Sonnet 4.x, Opus 4 and 4.1, Sonnet 3.7)."""

ANTHROPIC_MIN_PREFIX_TOKENS_BY_MODEL: Mapping[str, int] = {
    "claude-haiku-4-5": 4096,
    "claude-opus-4-5": 4096,
    "claude-opus-4-6": 4096,
    "claude-3-5-haiku": 2048,
    "claude-3-haiku": 2048,
}
"""Smallest cacheable prefix by model name prefix
(docs/sources.md#anthropic-prompt-caching)."""


class CacheStyle(enum.Enum):
    """How a model's provider caches prompts (from its price map entry)."""

    NONE = "none"  # no cache read price of its own: never a cache token
    AUTOMATIC = "automatic"  # cache reads priced, writes free: OpenAI's prefix caching
    BREAKPOINT = "breakpoint"  # reads and writes priced: Anthropic's marked prefix


@dataclass(frozen=True, slots=True)
class CacheUse:
    """What one call read from and wrote to the cache, in prompt tokens (both are part of
    the call's prompt tokens, as in litellm's ``Usage``)."""

    read_tokens: int = 0
    creation_tokens: int = 0


NO_CACHE = CacheUse()

_Key = tuple[tuple[str, str], ...]
Counter = Callable[[Sequence[Mapping[str, str]]], int]


@functools.lru_cache(maxsize=256)
def cache_style(model: str) -> CacheStyle:
    """The :class:`CacheStyle` of a real model (or ``sim/<model>``), from its prices."""
    price = price_for(model)
    if price is None or not caches_prompts(price):
        return CacheStyle.NONE
    creation = price.cache_creation_usd_per_token
    if creation is not None and creation != price.input_usd_per_token:
        return CacheStyle.BREAKPOINT
    return CacheStyle.AUTOMATIC


def min_prefix_tokens(model: str, style: CacheStyle) -> int:
    """The smallest prefix ``model`` caches, in tokens."""
    if style is CacheStyle.BREAKPOINT:
        name = model.rsplit("/", 1)[-1]
        for prefix, tokens in ANTHROPIC_MIN_PREFIX_TOKENS_BY_MODEL.items():
            if name.startswith(prefix):
                return tokens
        return ANTHROPIC_MIN_PREFIX_TOKENS
    return OPENAI_MIN_PREFIX_TOKENS


def openai_cached_tokens(shared_tokens: int) -> int:
    """Tokens OpenAI bills as cached for a shared prefix of ``shared_tokens``: 0 below
    1,024, else 1,024 plus whole steps of 128."""
    if shared_tokens < OPENAI_MIN_PREFIX_TOKENS:
        return 0
    steps = (shared_tokens - OPENAI_MIN_PREFIX_TOKENS) // OPENAI_PREFIX_STEP_TOKENS
    return OPENAI_MIN_PREFIX_TOKENS + steps * OPENAI_PREFIX_STEP_TOKENS


def _key(messages: Sequence[Mapping[str, Any]]) -> _Key | None:
    key = []
    for message in messages:
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or not isinstance(content, str):
            return None
        key.append((role, content))
    return tuple(key)


def _common_prefix(one: _Key, other: _Key) -> _Key:
    """The leading messages both share, then the shared start of the first that differs."""
    shared = 0
    while shared < min(len(one), len(other)) and one[shared] == other[shared]:
        shared += 1
    prefix = one[:shared]
    if shared < min(len(one), len(other)) and one[shared][0] == other[shared][0]:
        text = os.path.commonprefix([one[shared][1], other[shared][1]])
        if text:
            prefix = (*prefix, (one[shared][0], text))
    return prefix


def _messages(key: _Key) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in key]


@dataclass(slots=True)
class _Entry:
    prefix: _Key
    live_from_ns: int  # the writer's start + its time to first token
    last_use_ns: int

    def live_at(self, now_ns: int, ttl_ns: int) -> bool:
        return self.live_from_ns <= now_ns and now_ns - self.last_use_ns <= ttl_ns

    def touch(self, now_ns: int) -> None:
        self.last_use_ns = max(self.last_use_ns, now_ns)


@dataclass(slots=True)
class PromptCache:
    """One run's cache entries, per model (see the module docstring).

    Attributes:
        ttl_s: seconds an entry lives after its last use.
    """

    ttl_s: float = CACHE_TTL_S
    _entries: dict[str, list[_Entry]] = field(default_factory=dict)

    def use(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        prompt_tokens: int,
        *,
        now_ns: int,
        first_token_after_s: float,
        count: Counter,
    ) -> CacheUse:
        """Look ``messages`` up at simulated ``now_ns``, record them, say what was cached.

        Args:
            model: the real model (its style and minimum decide).
            messages: the prompt.
            prompt_tokens: its token count (cache tokens never exceed it).
            now_ns: the call's start, simulated ns since the epoch.
            first_token_after_s: simulated seconds until the response begins (the entry
                this call writes is live from then).
            count: tokens of a list of messages for ``model``.
        """
        style = cache_style(model)
        key = _key(messages)
        if style is CacheStyle.NONE or key is None:
            return NO_CACHE
        call = _Call(
            key,
            prompt_tokens,
            now_ns,
            now_ns + max(0, round(first_token_after_s * 1e9)),
            round(self.ttl_s * 1e9),
            count,
            self._entries.setdefault(model, []),
        )
        if style is CacheStyle.BREAKPOINT:
            return call.breakpoint(min_prefix_tokens(model, style))
        return call.automatic()


@dataclass(frozen=True, slots=True)
class _Call:
    """One call's view of its model's entries in the run's cache."""

    key: _Key
    prompt_tokens: int
    now_ns: int
    live_from_ns: int
    ttl_ns: int
    count: Counter
    entries: list[_Entry]

    def _tokens(self, prefix: _Key) -> int:
        return min(self.count(_messages(prefix)), self.prompt_tokens)

    def _write(self, prefix: _Key) -> None:
        """Record that this call sent ``prefix`` (and so caches it from its first token)."""
        entry = next((e for e in self.entries if e.prefix == prefix), None)
        if entry is None:
            self.entries.append(_Entry(prefix, self.live_from_ns, self.now_ns))
        elif entry.live_at(self.now_ns, self.ttl_ns) or entry.live_from_ns > self.now_ns:
            # live, or written by a request still in flight
            entry.live_from_ns = min(entry.live_from_ns, self.live_from_ns)
            entry.touch(self.now_ns)
        else:  # expired: written afresh
            entry.live_from_ns, entry.last_use_ns = self.live_from_ns, self.now_ns

    def breakpoint(self, min_tokens: int) -> CacheUse:
        """Anthropic: the leading system messages, read when live, else written."""
        system = 0
        while system < len(self.key) and self.key[system][0] == "system":
            system += 1
        prefix = self.key[:system]
        if not prefix:
            return NO_CACHE
        tokens = self._tokens(prefix)
        if tokens < min_tokens:
            return NO_CACHE
        entry = next((e for e in self.entries if e.prefix == prefix), None)
        if entry is not None and entry.live_at(self.now_ns, self.ttl_ns):
            entry.touch(self.now_ns)
            return CacheUse(read_tokens=tokens)
        self._write(prefix)
        return CacheUse(creation_tokens=tokens)

    def automatic(self) -> CacheUse:
        """OpenAI: the longest prefix shared with a live entry, in steps, writes free."""
        if self.prompt_tokens < OPENAI_MIN_PREFIX_TOKENS:
            return NO_CACHE
        best, best_entry = 0, None
        for entry in self.entries:
            if not entry.live_at(self.now_ns, self.ttl_ns):
                continue
            shared = _common_prefix(self.key, entry.prefix)
            # a token is at least one character: too short a text cannot reach the minimum
            if sum(len(text) for _, text in shared) < OPENAI_MIN_PREFIX_TOKENS:
                continue
            tokens = self._tokens(shared)
            if tokens > best:
                best, best_entry = tokens, entry
        cached = openai_cached_tokens(best)
        if best_entry is not None and cached:
            best_entry.touch(self.now_ns)
        self._write(self.key)
        return CacheUse(read_tokens=cached)


_lock = threading.Lock()
_run_caches: weakref.WeakKeyDictionary[clock.VirtualClock, PromptCache] = (
    weakref.WeakKeyDictionary()
)


def cache_use(
    model: str,
    messages: Sequence[Mapping[str, Any]],
    prompt_tokens: int,
    *,
    first_token_after_s: float,
    count: Counter,
) -> CacheUse:
    """What the calling run's cache gives a successful call of ``model`` starting now.

    The run is the one whose simulated clock lane the caller runs in
    (:func:`orchestrator.clock.current_lane`); outside a run nothing is cached.
    Arguments as :meth:`PromptCache.use`.
    """
    lane = clock.current_lane()
    if lane is None or cache_style(model) is CacheStyle.NONE:
        return NO_CACHE
    run_clock = lane.clock
    with _lock:
        cache = _run_caches.get(run_clock)
        if cache is None:
            cache = _run_caches[run_clock] = PromptCache()
        return cache.use(
            model,
            messages,
            prompt_tokens,
            now_ns=run_clock.started_at_ns + lane.elapsed_ns,
            first_token_after_s=first_token_after_s,
            count=count,
        )
