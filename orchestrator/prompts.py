"""The prompts of each role, and the parsers of the answers they ask for.

Each prompt builder returns litellm/OpenAI chat messages (``[{"role", "content"}]``). The
planning prompt states the cap in so many words ("You may propose at most N sub-tasks"):
the handbook's first layer against the Cost Cliff is to make the cap explicit, never
implicit (docs/sources.md#handbook-engineering-faq, "How do I prevent the Cost Cliff?").
The second layer is :mod:`orchestrator.dispatch`, which does not trust the planner to have
read it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cliffwatch.orchestrator.dispatch import Difficulty
from cliffwatch.orchestrator.errors import PlanError

Message = dict[str, str]

PLAN_SHAPE = (
    '{"subtasks": [{"title": "...", "difficulty": "routine" | "hard", "instructions": "..."}]}'
)

CAP_SENTENCE = "You may propose at most {max_workers} sub-tasks."
_CAP_RE = re.compile(r"You may propose at most (\d+) sub-tasks\.")

PLANNER_SYSTEM = """You are the planner of an orchestrator-worker pipeline.
Break the task into independent sub-tasks that workers can run in parallel, each on its own.
{cap_sentence}Propose as few sub-tasks as the task needs.
Mark a sub-task "hard" only when it needs a frontier model (judgement across sources,
ambiguous requirements, careful writing); everything else is "routine".
{guidance}Answer with JSON only, in this shape:
{shape}"""

REPLAN_REQUEST = """Your plan has {proposed} sub-tasks; the limit is {max_workers}.
{cap_sentence} Merge related sub-tasks and answer again with JSON only, in the same shape."""

REPARSE_REQUEST = """That answer is not a usable plan ({reason}).
Answer again with JSON only, in this shape:
{shape}"""

WORKER_SYSTEM = """You are a worker in an orchestrator-worker pipeline.
Do exactly the sub-task you are given, using only the task material. Be concise and concrete;
say plainly what you could not do."""

SYNTHESIS_SYSTEM = """You merge the workers' results into one answer to the task.
Keep what the results support, resolve overlaps, and name any gap a failed sub-task left."""

CRITIC_SYSTEM = """You review an answer against its task before it is returned.
Answer with JSON only: {"verdict": "pass" | "revise", "feedback": "..."}.
Say "revise" only for a concrete, fixable problem, and name it in the feedback."""


@dataclass(frozen=True, slots=True)
class PlanItem:
    """One sub-task as the planner wrote it (before routing)."""

    title: str
    difficulty: Difficulty
    instructions: str


@dataclass(frozen=True, slots=True)
class WorkerResult:
    """One worker's outcome as synthesis sees it: ``output`` None when the worker failed."""

    index: int
    title: str
    output: str | None


@dataclass(frozen=True, slots=True)
class CriticVerdict:
    """The critic's answer: ``passed`` False asks for a revision with ``feedback``."""

    passed: bool
    feedback: str


def cap_sentence(max_workers: int | None) -> str:
    """The sentence that states the cap, or "" with no cap."""
    return "" if max_workers is None else CAP_SENTENCE.format(max_workers=max_workers)


def cap_from_prompt(text: str) -> int | None:
    """The cap a prompt states (the last one, as a reader takes the latest instruction)."""
    found = _CAP_RE.findall(text)
    return int(found[-1]) if found else None


def _task_block(task_class: str, task_input: str) -> str:
    return f"Task class: {task_class}\n\nTask:\n{task_input.strip()}"


def planner_messages(
    task_input: str, *, task_class: str, max_workers: int | None, guidance: str = ""
) -> list[Message]:
    """The planning prompt; states ``max_workers`` explicitly when there is a cap."""
    cap = cap_sentence(max_workers)
    system = PLANNER_SYSTEM.format(
        cap_sentence=f"{cap}\n" if cap else "",
        guidance=f"{guidance.strip()}\n" if guidance.strip() else "",
        shape=PLAN_SHAPE,
    )
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": _task_block(task_class, task_input)},
    ]


def replan_messages(
    previous: Sequence[Message], previous_answer: str, *, proposed: int, max_workers: int
) -> list[Message]:
    """``previous`` plus the planner's answer and a request restating the cap."""
    ask = REPLAN_REQUEST.format(
        proposed=proposed, max_workers=max_workers, cap_sentence=cap_sentence(max_workers)
    )
    return [
        *previous,
        {"role": "assistant", "content": previous_answer},
        {"role": "user", "content": ask},
    ]


def reparse_messages(
    previous: Sequence[Message], previous_answer: str, reason: str
) -> list[Message]:
    """``previous`` plus the unusable answer and a request for the JSON shape again."""
    ask = REPARSE_REQUEST.format(reason=reason, shape=PLAN_SHAPE)
    return [
        *previous,
        {"role": "assistant", "content": previous_answer},
        {"role": "user", "content": ask},
    ]


def worker_messages(
    task_input: str, item: PlanItem, *, position: int, total: int, task_class: str
) -> list[Message]:
    """A worker's prompt: the whole task for context, then its own sub-task.

    Args:
        position: the sub-task's place in the plan, from 0.
        total: sub-tasks in the plan.
    """
    user = (
        f"{_task_block(task_class, task_input)}\n\n"
        f"Your sub-task ({position + 1} of {total}): {item.title}\n{item.instructions}"
    )
    return [{"role": "system", "content": WORKER_SYSTEM}, {"role": "user", "content": user}]


def result_block(result: WorkerResult) -> str:
    """How one worker result appears in the synthesis prompt."""
    body = result.output if result.output is not None else "(failed: no result)"
    return f"### {result.index + 1}. {result.title}\n{body.strip()}"


def synthesis_messages(
    task_input: str,
    results: Sequence[WorkerResult],
    *,
    task_class: str,
    previous_answer: str | None = None,
    feedback: str | None = None,
) -> list[Message]:
    """The synthesis prompt: the task, every worker result, and any critic feedback."""
    parts = [_task_block(task_class, task_input), "Results:"]
    parts.extend(result_block(r) for r in results)
    if previous_answer is not None and feedback:
        parts.append(f"Your previous answer:\n{previous_answer.strip()}")
        parts.append(f"A reviewer asked for these changes:\n{feedback.strip()}")
    return [
        {"role": "system", "content": SYNTHESIS_SYSTEM},
        {"role": "user", "content": "\n\n".join(parts)},
    ]


def critic_messages(task_input: str, answer: str, *, task_class: str) -> list[Message]:
    """The critic's prompt: the task and the synthesised answer."""
    user = f"{_task_block(task_class, task_input)}\n\nAnswer:\n{answer.strip()}"
    return [{"role": "system", "content": CRITIC_SYSTEM}, {"role": "user", "content": user}]


_FENCE_RE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def _json_candidates(text: str) -> list[str]:
    """Places JSON may sit in a model's answer: fenced blocks, the outermost braces, all."""
    candidates = [m.group(1) for m in _FENCE_RE.finditer(text)]
    start, end = text.find("{"), text.rfind("}")
    if start != -1 and end > start:
        candidates.append(text[start : end + 1])
    start, end = text.find("["), text.rfind("]")
    if start != -1 and end > start:
        candidates.append(text[start : end + 1])
    candidates.append(text)
    return candidates


def _load_json(text: str) -> Any:
    for candidate in _json_candidates(text):
        try:
            return json.loads(candidate)
        except ValueError:
            continue
    raise PlanError("no JSON object found")


def parse_plan(text: str | None) -> list[PlanItem]:
    """Read a planner answer into sub-tasks.

    Accepts the JSON object alone, wrapped in prose or a code fence, or a bare list of
    sub-tasks. Sub-tasks may be objects (``title``/``name``/``task``, ``difficulty``,
    ``instructions``/``description``) or plain strings. A difficulty other than ``hard``
    counts as routine (the cheap model is the safe default).

    Raises:
        PlanError: no JSON, no sub-task list, or an empty one.
    """
    if not text or not text.strip():
        raise PlanError("empty answer")
    data = _load_json(text)
    if isinstance(data, dict):
        raw = data.get("subtasks", data.get("sub_tasks", data.get("tasks")))
    else:
        raw = data
    if not isinstance(raw, list):
        raise PlanError('no "subtasks" list')
    items: list[PlanItem] = []
    for position, entry in enumerate(raw):
        if isinstance(entry, str):
            title, difficulty, instructions = entry, "routine", entry
        elif isinstance(entry, dict):
            title = entry.get("title") or entry.get("name") or entry.get("task") or ""
            difficulty = str(entry.get("difficulty", "routine"))
            instructions = entry.get("instructions") or entry.get("description") or title
        else:
            raise PlanError(f"sub-task {position + 1} is neither an object nor text")
        title = str(title).strip() or f"Sub-task {position + 1}"
        level = Difficulty.HARD if difficulty.strip().lower() == "hard" else Difficulty.ROUTINE
        items.append(PlanItem(title, level, str(instructions).strip()))
    if not items:
        raise PlanError("the plan has no sub-tasks")
    return items


def parse_critic(text: str | None) -> CriticVerdict:
    """Read a critic answer; anything unreadable counts as a pass (never loop on noise)."""
    try:
        data = _load_json(text or "")
    except PlanError:
        return CriticVerdict(True, "")
    if not isinstance(data, dict):
        return CriticVerdict(True, "")
    verdict = str(data.get("verdict", "pass")).strip().lower()
    return CriticVerdict(verdict != "revise", str(data.get("feedback", "")).strip())
