"""What the simulated provider writes, templated from the task's own input.

Every writer takes the prompt the runner built (:mod:`orchestrator.prompts`), finds the
task input in it, reads that with :func:`orchestrator.sim_material.material`, and writes
from the task's own steps, items, sources and facts with a seeded
:class:`random.Random`:

- :func:`plan_instructions`: a sub-task's instructions (its titles come from
  :func:`orchestrator.sim_material.plan_titles`);
- :func:`worker_text`: short paragraphs answering the worker's sub-task: what it worked
  from, a finding per thing it covers, an open point;
- :func:`synthesis_text`: a numbered line per worker result quoting its findings, the
  failed ones named as gaps, then the findings across results;
- :func:`critic_feedback`: one concrete request naming something from the task.

Lengths are set in words; the provider counts the tokens of what it returns with
litellm. Pure functions of their arguments: the same seed gives the same text.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from cliffwatch.orchestrator.sim_material import Material, material, sentences, shorten, tidy

_CHANGE_STATUSES = (
    "it matches",
    "one mismatch, now corrected",
    "no change was needed",
    "updated as the brief asks",
    "it needs a decision from the owner",
    "confirmed by a second source",
    "done, with a note for review",
    "two small fixes made",
    "the wording was tightened",
    "left as is, on purpose",
    "the old value is kept in the change log",
    "nothing blocks it",
    "it took two passes",
)
_RESEARCH_STATUSES = (
    "the sources agree",
    "two sources disagree, and both figures are noted",
    "the figure is from the latest version",
    "no reliable figure was found",
    "it is well documented",
    "only one source covers it",
    "the evidence is thin",
    "a second source confirms it",
    "the documentation and the pricing page differ slightly",
    "it needs a follow-up question to the vendor",
    "recent coverage changes the picture a little",
)
_RESEARCH_VERBS = frozenset(
    "answer: assess collect compare explain find gather get identify investigate list map "
    "model note rank research review say summarise summarize".split()
)
"""Steps whose findings read as research ("the sources agree") rather than changes made."""


def _statuses(title: str) -> tuple[str, ...]:
    verb = title.split()[0].lower() if title.split() else ""
    return _RESEARCH_STATUSES if verb in _RESEARCH_VERBS else _CHANGE_STATUSES


_FINDINGS = (
    "{P}: checked against {s}; {t}.",
    "For {p}, {s} and the brief agree, so it goes in as stated.",
    "{P}, for {q}: {t}.",
    "On {p}, {s} is clear about {q}; {t}.",
    "{P} and {q} were checked together; {t}.",
    "I compared {p} with what {s} says about {q}; {t}.",
    "{P}: the current version differs from {s} in one place; {t}.",
    "{P} looks consistent with {q}; {t}.",
    "Evidence on {p} comes from {s}; {t}.",
    "{P} needed more care than expected around {q}; {t}.",
)
_OPEN_POINTS = (
    "Open point: {p} is not settled by {s}, so it is flagged rather than guessed.",
    "Question for the owner: should {p} follow the same rule as {q}?",
    "Not covered here: {q}, which belongs to another sub-task.",
)
_CLOSINGS = (
    "Nothing else is pending on this sub-task.",
    "Ready for synthesis.",
    "That is everything this sub-task asked for.",
)

_WORKER_RE = re.compile(
    r"Task:\n(?P<task>.*?)\n\nYour sub-task \((?P<k>\d+) of (?P<n>\d+)\): (?P<title>[^\n]*)",
    re.DOTALL,
)
_TASK_RE = re.compile(r"Task:\n(?P<task>.*?)(?:\n\n(?:Results:|Answer:|Your sub-task)|\Z)", re.S)
_RESULT_RE = re.compile(
    r"^### (?P<i>\d+)\. (?P<title>[^\n]*)\n(?P<body>.*?)(?=^### |\Z)", re.DOTALL | re.MULTILINE
)


def task_of(prompt: str) -> str:
    """The task input inside a prompt built by :mod:`orchestrator.prompts` (the whole
    prompt when it holds no ``Task:`` block)."""
    match = _TASK_RE.search(prompt)
    return match.group("task").strip() if match else prompt


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _related(found: Material, title: str) -> tuple[list[str], list[str]]:
    """The material's phrases that ``title`` names, and the others."""
    low = title.lower()
    phrases = found.phrases()
    mine = [p for p in phrases if p.lower() in low]
    return mine, [p for p in phrases if p not in mine]


def plan_instructions(rng: random.Random, task_input: str, title: str) -> str:
    """One or two sentences telling a worker how to do the sub-task ``title``."""
    found = material(task_input)
    mine, others = _related(found, title)
    source = rng.choice(found.sources)
    lead = rng.choice((f"Work from {source}", f"Use {source}", f"Base this on {source}"))
    cover = (mine + others)[:2]
    tail = rng.choice(
        (
            "Report what changed and anything that needs a decision.",
            "Say what you checked and what is still open.",
            "List findings with where each came from.",
        )
    )
    return tidy(f"{lead}; cover {' and '.join(cover)}. {tail}" if cover else f"{lead}. {tail}")


def _findings(
    rng: random.Random,
    found: Material,
    mine: Sequence[str],
    others: Sequence[str],
    statuses: Sequence[str],
) -> list[str]:
    """Finding sentences, none twice: the sub-task's own phrases and the others' in turn,
    the task's facts early."""
    groups: list[list[str]] = []
    for subjects in (mine, others):
        group = []
        for p in subjects:
            for template in _FINDINGS:
                pairs = [q for q in others if q != p] if "{q}" in template else [""]
                for q in pairs:
                    source, status = rng.choice(found.sources), rng.choice(statuses)
                    group.append(template.format(P=_cap(p), p=p, q=q, s=source, t=status))
        rng.shuffle(group)
        groups.append(group)
    first, rest = groups
    mixed = [s for pair in zip(first, rest, strict=False) for s in pair]
    mixed += first[len(rest) :] + rest[len(first) :]
    for fact in found.context:
        source = rng.choice(found.sources)
        mixed.insert(rng.randint(0, min(len(mixed), 4)), f"Per {source}: {fact}.")
    return mixed


def _paragraphs(rng: random.Random, lines: Sequence[str]) -> list[str]:
    """``lines`` in paragraphs of three to five sentences."""
    out, at = [], 0
    while at < len(lines):
        size = rng.randint(3, 5)
        out.append(tidy(" ".join(lines[at : at + size])))
        at += size
    return out


def _take(lines: Sequence[str], n_words: int) -> list[str]:
    """The first of ``lines`` that make about ``n_words`` words (at least one)."""
    taken: list[str] = []
    words = 0
    for line in lines:
        if taken and words >= n_words:
            break
        taken.append(line)
        words += len(line.split())
    return taken


def worker_text(rng: random.Random, prompt: str, n_words: int) -> str:
    """A worker's answer to the sub-task in a worker prompt: about ``n_words`` words."""
    match = _WORKER_RE.search(prompt)
    task = match.group("task") if match else task_of(prompt)
    found = material(task)
    title = match.group("title").strip() if match else found.steps[0].title
    mine, others = _related(found, title)
    if not mine:
        mine, others = (found.phrases() or [shorten(title)])[:1], others[1:]
    source = rng.choice(found.sources)
    opening = rng.choice(
        (
            f'Sub-task: "{title}".',
            f'Here is the result for "{title}".',
            f'Result for "{title}", worked from {source}.',
        )
    )
    method = f"I worked from {', '.join(found.sources)}"
    if found.constraints:
        method += f", keeping to the brief: {rng.choice(found.constraints)}"
    q = rng.choice(others) if others else mine[0]
    open_point = rng.choice(_OPEN_POINTS).format(p=mine[0], q=q, s=source)
    ending = [open_point, rng.choice(_CLOSINGS)]
    budget = n_words - sum(len(s.split()) for s in (opening, method, *ending))
    body = _take(_findings(rng, found, mine, others, _statuses(title)), budget)
    paragraphs = [tidy(f"{opening} {method}."), *_paragraphs(rng, body), tidy(" ".join(ending))]
    return "\n\n".join(paragraphs)


def synthesis_text(rng: random.Random, prompt: str, n_words: int) -> str:
    """The merged answer to a synthesis prompt: a numbered line per worker result, the
    failed ones named as gaps, then findings across the results; about ``n_words`` words
    (more when there are many results)."""
    found = material(task_of(prompt))
    section = prompt.split("Results:", 1)[-1].split("\n\nYour previous answer:", 1)[0]
    results = [
        (m["i"], m["title"].strip(), sentences(" ".join(m["body"].split())))
        for m in _RESULT_RE.finditer(section)
    ]
    failed = [title for _, title, body in results if body and body[0].startswith("(failed")]
    lines = []
    feedback = prompt.split("A reviewer asked for these changes:\n", 1)
    if len(feedback) == 2:
        lines.append(f"Revised after review: {shorten(feedback[1], 16)}.")
    done = len(results) - len(failed)
    lines.append(f"{done} of {len(results)} sub-tasks came back with results.")
    findings: list[list[str]] = []
    for index, title, body in results:
        if title in failed:
            lines.append(f'{index}. "{title}": no result; this part is a gap to follow up.')
            continue
        # skip the worker's opening and method sentences
        own = body[2:] or body
        lines.append(f'{index}. "{title}": {own[0]}')
        findings.append(own[1:])
    budget = n_words - sum(len(line.split()) for line in lines)
    rounds = max(map(len, findings), default=0)
    across = [f[k] for k in range(rounds) for f in findings if k < len(f)]  # in turn
    if sum(len(s.split()) for s in across) < budget:
        mine, others = _related(found, " ".join(title for _, title, _ in results))
        statuses = _statuses(found.steps[0].title)
        across += _findings(rng, found, mine or found.phrases()[:1], others, statuses)
    summary = _take(across, budget) if budget > 0 else []
    closing = (
        f"Still open: {'; '.join(failed)}."
        if failed
        else "Every sub-task is covered; the open points above need an owner's decision."
    )
    parts = ["\n".join(lines), *_paragraphs(rng, summary), closing]
    return "\n\n".join(tidy(part) if "\n" not in part else part for part in parts)


def critic_feedback(rng: random.Random, prompt: str) -> str:
    """A reviewer's one concrete request about the answer in a critic prompt."""
    found = material(task_of(prompt))
    phrases = found.phrases() or ["the main finding"]
    first = rng.choice(phrases)
    second = rng.choice([p for p in phrases if p != first] or [first])
    source = rng.choice(found.sources)
    return tidy(
        rng.choice(
            (
                f"Name the source for {first} and say where in {source} it comes from.",
                f"The answer skips {first}; add it, with what {source} says.",
                f"Separate what was checked from what was assumed for {first} and {second}.",
            )
        )
    )
