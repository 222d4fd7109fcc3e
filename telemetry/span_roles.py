"""A call's role from the words and kinds of its own and its ancestors' spans.

Part of the one mapping (:mod:`telemetry.otlp_mapping`, whose docstring states the rule):
for an LLM call without ``cliff.role``, plan / worker / synthesis / critic when its own or
an ancestor's name says so (:func:`role_from_words`), worker when it sits under a tool or
a nested agent, and ``call`` otherwise. Kept apart so the mapping module stays readable;
nothing here reads tokens or prices.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, Protocol

from cliffwatch.telemetry import conventions as cv
from cliffwatch.telemetry.conventions import Role

OPENINFERENCE_SPAN_KIND = "openinference.span.kind"
TRACELOOP_SPAN_KIND = "traceloop.span.kind"

AGENT_MARKERS = frozenset({"AGENT", "agent", "invoke_agent", "create_agent"})
TOOL_MARKERS = frozenset({"TOOL", "tool", "execute_tool"})

ROLE_HINT_KEYS = (
    "gen_ai.agent.name",
    "agent.name",
    "traceloop.entity.name",
    "graph.node.name",
    "graph.node.id",
)
"""Attributes (besides the span name) whose words can say a call's role."""

MAX_ANCESTRY = 32
"""Ancestors looked at for role hints; bounds the walk even on a malformed parent cycle."""


class RoleSpan(Protocol):
    """What the role rules read of a span: one being mapped (``otlp_decode.OtlpSpan``) or
    one already stored (:class:`telemetry.continued_roles.StoredSpan`)."""

    @property
    def trace_id(self) -> str: ...
    @property
    def parent_span_id(self) -> str | None: ...
    @property
    def name(self) -> str: ...
    @property
    def attributes(self) -> Mapping[str, Any]: ...


def stated_role(attrs: Mapping[str, Any]) -> Role | None:
    """The role a span states itself in ``cliff.role``, or None (absent or not a role)."""
    raw = attrs.get(cv.CLIFF_ROLE)
    try:
        return Role(raw) if isinstance(raw, str) else None
    except ValueError:
        return None


def structure_kind(attrs: Mapping[str, Any]) -> str | None:
    """'agent', 'tool' or None, from whichever kind marker the span carries."""
    for key in (OPENINFERENCE_SPAN_KIND, TRACELOOP_SPAN_KIND, cv.GEN_AI_OPERATION_NAME):
        marker = attrs.get(key)
        if marker is None:
            continue
        if marker in AGENT_MARKERS or str(marker).upper() == "AGENT":
            return "agent"
        if marker in TOOL_MARKERS or str(marker).upper() == "TOOL":
            return "tool"
    return None


# --- roles from words ----------------------------------------------------------------------------

_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")

_ROLE_EXACT: dict[str, Role] = {
    **dict.fromkeys(
        ("plan", "plans", "planner", "planners", "planning", "decompose", "decomposer"),
        Role.PLAN,
    ),
    **dict.fromkeys(
        ("final", "finalize", "finalise", "finalizer", "combine", "combiner", "reducer"),
        Role.SYNTHESIS,
    ),
    **dict.fromkeys(("review", "reviewer", "judge", "grader"), Role.CRITIC),
    **dict.fromkeys(
        ("worker", "workers", "executor", "subtask", "subtasks", "subagent"), Role.WORKER
    ),
}
_ROLE_PREFIXES: tuple[tuple[str, Role], ...] = (
    ("synthes", Role.SYNTHESIS),
    ("summar", Role.SYNTHESIS),
    ("aggregat", Role.SYNTHESIS),
    ("critic", Role.CRITIC),
    ("critique", Role.CRITIC),
    ("evaluat", Role.CRITIC),
)


@lru_cache(maxsize=4096)
def role_from_words(text: str) -> Role | None:
    """The role a name's words state, or None.

    Words are split at non-letters and camelCase humps (``SynthesizeAnswer`` -> synthesize,
    answer). Exact words: plan/planner/planning/decompose -> plan; worker/executor/subtask/
    subagent -> worker; final/finalize/combine/reducer -> synthesis; review/judge/grader ->
    critic. Prefixes: synthes-, summar-, aggregat- -> synthesis; critic-, evaluat- -> critic.
    The first word with a role wins.
    """
    for word in _WORD.findall(text):
        low = word.lower()
        role = _ROLE_EXACT.get(low)
        if role is not None:
            return role
        for prefix, prefixed_role in _ROLE_PREFIXES:
            if low.startswith(prefix):
                return prefixed_role
    return None


_ROLE_HINT_KEY_SET = frozenset(ROLE_HINT_KEYS)


def span_role_hint(span: RoleSpan) -> Role | None:
    attrs = span.attributes
    # (the keys' view against the set: the five hint names looked up, not every key)
    if not attrs.keys().isdisjoint(_ROLE_HINT_KEY_SET):
        for key in ROLE_HINT_KEYS:
            value = attrs.get(key)
            if isinstance(value, str):
                role = role_from_words(value)
                if role is not None:
                    return role
    return role_from_words(span.name)


def call_role(span: RoleSpan, ancestors: Sequence[RoleSpan] = ()) -> Role:
    """The role of an LLM-call span from its own and its ancestors' names and kinds.

    Args:
        span: the call span.
        ancestors: its known ancestors, nearest first (may be partial or empty).
    """
    own = span_role_hint(span)
    return own if own is not None else ancestry_role(ancestors)


def ancestry_role(ancestors: Sequence[RoleSpan]) -> Role:
    """:func:`call_role` of a call that says no role itself: the same for every call
    under the same parent."""
    for ancestor in ancestors[:MAX_ANCESTRY]:
        role = span_role_hint(ancestor)
        if role is not None:
            return role
    agents = 0
    for ancestor in ancestors[:MAX_ANCESTRY]:
        kind = structure_kind(ancestor.attributes)
        if kind == "tool":
            return Role.WORKER
        if kind == "agent":
            agents += 1
    return Role.WORKER if agents >= 2 else Role.CALL


class SpanBatch:
    """A batch's spans by (trace_id, span_id), and the ancestry role of each parent's
    calls (:func:`ancestry_role`), worked out once per parent."""

    __slots__ = ("by_key", "roles")

    def __init__(self, by_key: Mapping[tuple[str, str], RoleSpan]) -> None:
        self.by_key = by_key
        self.roles: dict[tuple[str, str | None], Role] = {}

    def ancestry_role(self, span: RoleSpan) -> Role:
        key = (span.trace_id, span.parent_span_id)
        role = self.roles.get(key)
        if role is None:
            role = self.roles[key] = ancestry_role(self.ancestors(span))
        return role

    def ancestors(self, span: RoleSpan) -> list[RoleSpan]:
        """The span's in-batch ancestors, nearest first (at most :data:`MAX_ANCESTRY`)."""
        ancestors: list[RoleSpan] = []
        parent_id = span.parent_span_id
        while parent_id is not None and len(ancestors) < MAX_ANCESTRY:
            parent = self.by_key.get((span.trace_id, parent_id))
            if parent is None:
                break
            ancestors.append(parent)
            parent_id = parent.parent_span_id
        return ancestors
