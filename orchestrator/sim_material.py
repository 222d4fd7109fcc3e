"""What a task input asks for, read for the simulated provider's text.

:func:`material` reads a task input (a workload's ``input``) into the steps it asks for
("Update the opening-hours page, the footer and ... on every site"), the things each step
names (``items``: "the footer", ...; ``details``: a bracketed or colon list such as
"(AWS RDS, Google Cloud SQL, Neon)"), its sources ("Use each vendor's documentation ...",
"(source: ops memo of 12 Nov)"), its constraints ("keep the old price ...") and its
context sentences (facts that ask for nothing). :func:`plan_titles` turns that into
sub-task titles: one per step for a small plan, one per named item for a larger one, and
for a runaway plan the over-decomposition a surprised planner writes.

Everything a title says comes from the input but a few template words
(:data:`TITLE_TEMPLATE_WORDS`). A heuristic reader, not a parser: it only has to make the
simulated text read like the task it answers. Pure functions: same input, same result.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

VERBS = frozenset(
    """add adjust analyse analyze answer apply assess audit build calculate change check
    choose cite collect compare complete confirm convert correct create cut decide deploy
    describe download draft end estimate evaluate explain export extract fill find fix flag
    format gather get identify import investigate keep leave link list make map migrate
    model move name normalise normalize note open prepare publish pull put rank
    recommend refresh release remove rename replace report research return review roll run
    say screenshot send separate set ship show sort split submit summarise summarize
    switch take test translate trigger turn update upload validate verify write""".split()
)
"""Words that start a step when a clause begins with them (imperatives of task inputs)."""

_CONSTRAINT_VERBS = frozenset({"keep", "leave"})
_SOURCE_WORDS = frozenset({"use", "using", "citing", "sources", "source"})
_PREPOSITIONS = (" of ", " for ", " from ", " in ", " on ", " at ", " against ", " to ")
_BOUNDARIES = frozenset((*_PREPOSITIONS, " with ", " and ", " or ", " after ", " before "))
_CUT_BEFORE = re.compile(
    r"\s(?:so|where|that|which|using|because|while|when|whose|as specified|with reasons)\s"
)
_WEAK_END = frozenset(
    "a an and or the of to in on for with at from by as its our their each every any this "
    "these that your".split()
)
_PRONOUNS = frozenset(
    "one it them this these those anything everything what which where whether that".split()
)
_DETERMINERS = frozenset(
    "the a an each every our their its his her your my all both any some at two three four "
    "several recent".split()
)
_ABBREVIATIONS = frozenset({"dr", "mr", "mrs", "ms", "st", "vs", "no", "e.g", "i.e", "etc"})
_QUOTED_RE = re.compile(r"""(?<![A-Za-z])(['"])(?:(?!\1).){25,}?\1(?![A-Za-z])""")
_BRACES_RE = re.compile(r"\{[^{}]*\}")
_SENTENCE_END_RE = re.compile(r"(?<=[.?!])\s+(?=[A-Z0-9'\"(])")
_DOUBLE_WORD_RE = re.compile(r"\b(\w+)(?:\s+\1\b)+", re.IGNORECASE)

TITLE_TEMPLATE_WORDS = frozenset(
    "answer prepare to double-check write up the result of plan how collect what is needed "
    "review pass follow-up second third fourth fifth sixth seventh eighth ninth tenth".split()
)
"""The only words a sub-task title may hold that its task input does not."""

_PASSES = (
    "second",
    "third",
    "fourth",
    "fifth",
    "sixth",
    "seventh",
    "eighth",
    "ninth",
    "tenth",
)
_RUNAWAY_TEMPLATES = (
    "Prepare to {t}",
    "Double-check: {t}",
    "Write up the result of: {t}",
    "Plan how to {t}",
    "Collect what is needed to {t}",
    "Review: {t}",
)


@dataclass(frozen=True, slots=True)
class Step:
    """One thing the task asks for.

    Attributes:
        verb: the imperative as written ("Update", "Build and deploy"; "Answer" for a
            question).
        obj: what it applies to ("the opening-hours page").
        items: alternatives to the object's tail named alongside it ("the footer").
        details: a list the step names in brackets or after a colon ("Neon").
    """

    verb: str
    obj: str
    items: tuple[str, ...] = ()
    details: tuple[str, ...] = ()

    @property
    def title(self) -> str:
        """The step as a sub-task title: verb and object, shortened ("Check: A, B" for a
        step that names only a list)."""
        if not self.obj and self.details:
            return _title(f"{self.verb}:", ", ".join(self.details))
        return _title(self.verb, self.obj)

    def fan_out(self, cross: bool = False) -> list[str]:
        """One title per item (the object's tail swapped for it) or else per detail; with
        ``cross``, one per item and detail. The step's own title when it names neither."""
        titles = [self.title]
        if self.items:
            prefix = _prefix_of(self.obj)
            titles += [_title(self.verb, f"{prefix}{item}") for item in self.items]
        if self.details and not self.obj:
            return [_title(f"{self.verb}:", detail) for detail in self.details]
        if self.details and (cross or not self.items):
            titles = [f"{t} ({shorten(d, 6)})" for t in titles for d in self.details]
        return titles


@dataclass(frozen=True, slots=True)
class Material:
    """What a task input offers the writers.

    Attributes:
        steps: the steps, in input order (at least one).
        sources: the sources it names ("the task material" when none).
        context: its sentences that ask for nothing (facts, background).
        constraints: its "keep ..."/"leave ..." clauses.
    """

    steps: tuple[Step, ...]
    sources: tuple[str, ...]
    context: tuple[str, ...]
    constraints: tuple[str, ...]

    def phrases(self) -> list[str]:
        """Things the task names, for prose: every step's object, items and details
        (shortened, without a leading preposition)."""
        found: list[str] = []
        for step in self.steps:
            for phrase in (step.obj, *step.items, *step.details):
                phrase = re.sub(r"^(?:with|for|from|to|against|in|on|at|of)\s+", "", phrase)
                phrase = shorten(phrase, 8)
                if phrase.split()[:1] and phrase.split()[0].lower() in _PRONOUNS:
                    continue  # "recommend one with reasons": no thing to name
                if phrase and phrase not in found:
                    found.append(phrase)
        return found


def shorten(text: str, max_words: int = 12) -> str:
    """``text`` cut before a subordinate clause and to ``max_words`` (then back to the
    last phrase boundary), never ending on a weak word ("the", "of", ...)."""
    text = re.sub(r"\s*\([^()]*\)", "", text).strip(" ,;:.")
    match = _CUT_BEFORE.search(f" {text} ")
    if match and len(text[: match.start()].split()) >= 3:
        text = text[: match.start() - 1]
    words = text.split()
    if len(words) > max_words:
        words = words[:max_words]
        bounds = [i for i, w in enumerate(words) if f" {w.lower()} " in _BOUNDARIES and i >= 4]
        if bounds:
            words = words[: bounds[-1]]
    while len(words) > 1 and words[-1].lower().strip(",;:") in _WEAK_END:
        words.pop()
    return " ".join(words).strip(" ,;:")


def _title(verb: str, obj: str) -> str:
    text = f"{verb} {shorten(obj)}".strip() if obj else verb
    return tidy(text[0].upper() + text[1:])


def _prefix_of(obj: str) -> str:
    """The part of ``obj`` an item replaces the rest of: up to its last preposition."""
    short = shorten(obj, 14)
    cut = max((short.rfind(p) for p in _PREPOSITIONS), default=-1)
    if cut == -1:
        return ""
    prep = next(p for p in _PREPOSITIONS if short.startswith(p, cut))
    return short[: cut + len(prep)].lstrip()


def tidy(text: str) -> str:
    """One space between words, no word twice in a row."""
    return _DOUBLE_WORD_RE.sub(r"\1", re.sub(r"[ \t]+", " ", text)).strip()


def _split_top(text: str, separators: str) -> list[str]:
    """Split at any of ``separators`` outside brackets."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for at, char in enumerate(text):
        depth += char in "([{"
        depth -= char in ")]}"
        in_number = 0 < at < len(text) - 1 and text[at - 1].isdigit() and text[at + 1].isdigit()
        if char in separators and depth <= 0 and not in_number:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def sentences(text: str) -> list[str]:
    """``text`` split into sentences (not after "Dr.", "St.", ...; no one-word pieces)."""
    pieces = _SENTENCE_END_RE.split(text)
    merged: list[str] = []
    for piece in pieces:
        last = merged[-1].split()[-1].rstrip(".").lower() if merged else ""
        if merged and (last in _ABBREVIATIONS or len(piece.split()) < 2):
            merged[-1] = f"{merged[-1]} {piece}"
        else:
            merged.append(piece)
    return [s.strip() for s in merged if s.strip()]


def _strip_connective(text: str) -> str:
    return re.sub(r"^(?:and then|and|or|plus|then)\s+", "", text.strip())


def _list_items(text: str) -> list[str]:
    """``"A, B and C"`` -> ``[A, B, C]``; a piece without a real word rejoins its left
    neighbour ("checkout at 375 px and 1440 px" stays whole)."""
    items: list[str] = []
    for part in _split_top(text, ",;"):
        for k, piece in enumerate(re.split(r"\s+(?:and|or)\s+", _strip_connective(part))):
            piece = piece.strip(" :;,")
            if items and not re.search(r"[A-Za-z]{3,}", piece):
                items[-1] = f"{items[-1]}{' and' if k else ','} {piece}"
            elif piece:
                items.append(piece)
    return items


def _split_steps(part: str) -> list[str]:
    """``"deploy X and run Y"`` -> ``["deploy X", "run Y"]``: split where "and"/"then" is
    followed by a verb and preceded by more than a bare verb ("Build and deploy X" stays)."""
    clauses, start = [], 0
    for match in re.finditer(r"\s+(?:and then|and|then)\s+(\w+)", part):
        left = part[start : match.start()]
        if match.group(1).lower() in VERBS and len(left.split()) >= 2:
            clauses.append(left)
            start = match.start(1)
    clauses.append(part[start:])
    return [c.strip() for c in clauses if c.strip()]


def _brackets(text: str) -> tuple[str, list[str], list[str]]:
    """``text`` without its brackets, the lists they held, and the sources they named."""
    lists: list[str] = []
    sources: list[str] = []
    for inner in re.findall(r"\(([^()]*)\)", text):
        head, _, rest = inner.partition(":")
        if head.strip().lower() in _SOURCE_WORDS and rest:
            sources.append(rest.strip())
        elif "," in inner:
            lists.extend(_list_items(inner))
    return re.sub(r"\s*\([^()]*\)", "", text).strip(), lists, sources


def _partition_top(text: str, separator: str) -> tuple[str, str, str]:
    """``str.partition`` at the first ``separator`` outside brackets."""
    depth = 0
    for at, char in enumerate(text):
        depth += char in "([{"
        depth -= char in ")]}"
        if depth <= 0 and text.startswith(separator, at):
            return text[:at], separator, text[at + len(separator) :]
    return text, "", ""


def _verb_of(clause: str) -> str | None:
    """The clause's first word, lower case, when it is a verb or names sources."""
    first = clause.split(maxsplit=1)[0].lower() if clause.split() else ""
    return first if first in VERBS or first in _SOURCE_WORDS else None


_SOURCES = -1
"""What :meth:`_Reader._clause` returns after a source clause."""


class _Reader:
    """Reads one input into a :class:`Material` (see :func:`material`)."""

    def __init__(self) -> None:
        self.steps: list[Step] = []
        self.sources: list[str] = []
        self.context: list[str] = []
        self.constraints: list[str] = []

    def sentence(self, sentence: str) -> None:
        """Read one sentence: a question, a colon head with its list, or clauses."""
        text = sentence.strip().rstrip(" .!:")
        question = text.endswith("?")
        head, colon, tail = _partition_top(text.rstrip("?"), ": ")
        if question:
            head, lists, sources = _brackets(head)
            self.sources += sources
            details = tuple(lists + _list_items(_brackets(tail)[0]))
            self.steps.append(Step("Answer:", head, details=details))
            return
        if colon and head.split()[:1] and head.split()[0].lower() in _SOURCE_WORDS:
            self.sources += _split_top(tail, ",;")
            return
        if not colon:
            self.clauses(text)
            return
        made = len(self.steps)
        head_step = self.clauses(head)
        tail_items = _list_items(_brackets(tail)[0])
        if head_step is not None and not any(_verb_of(item) for item in tail_items):
            # "Research X: amounts, eligibility ...": what to cover of the head's last step
            last = self.steps[-1]
            self.steps[-1] = dataclasses.replace(last, details=last.details + tuple(tail_items))
            return
        default = self.steps[made].obj if head_step is not None else ""
        self.clauses(tail, default_obj=default)

    def clauses(self, text: str, default_obj: str = "") -> Step | None:
        """Read clauses (split at commas and semicolons) into steps, items, sources,
        constraints and context; a bracketed list becomes its step's details. The first
        step made, or None."""
        first: Step | None = None
        for sentence_part in _split_top(text, ";"):
            current: int | None = None  # the step later items belong to
            for part in _split_top(sentence_part, ","):
                for clause in _split_steps(_strip_connective(part)):
                    current = self._clause(clause, current, default_obj)
                    if first is None and current is not None and current >= 0:
                        first = self.steps[current]
        return first

    def _clause(self, clause: str, current: int | None, default_obj: str) -> int | None:
        """Read one clause; the index of the step it made or added to, :data:`_SOURCES`
        after a source ("Use A, B and C": B and C are sources too), else None."""
        text, lists, sources = _brackets(clause)
        self.sources += sources
        verb = _verb_of(text)
        first_word = text.split()[0] if text.split() else ""
        if verb in _SOURCE_WORDS or (current == _SOURCES and verb is None):
            source = text.split(" ", 1)[-1] if verb else text
            self.sources.append(re.sub(r"\s+as (?:the )?sources?$", "", source))
            return _SOURCES
        elif verb in _CONSTRAINT_VERBS or (first_word.endswith("ing") and first_word.islower()):
            self.constraints.append(text)
        elif verb is not None:
            step = self._step(text, default_obj)
            self.steps.append(dataclasses.replace(step, details=tuple(lists)))
            return len(self.steps) - 1
        elif current is not None and current >= 0:
            step = self.steps[current]
            items = step.items + tuple(_list_items(text))
            details = step.details + tuple(lists)
            self.steps[current] = dataclasses.replace(step, items=items, details=details)
            return current
        elif text:
            self.context.append(text)
        return None

    @staticmethod
    def _step(clause: str, default_obj: str) -> Step:
        """The step a clause starting with a verb asks for; "it"/nothing as its object
        stands for ``default_obj`` (the colon head's)."""
        verb, _, obj = clause.partition(" ")
        if " " not in obj.strip() and obj.strip().lower() in {"it", "them", "this", ""}:
            obj = default_obj
        # "Build and deploy X": a bare verb joined to the next one stays with it
        joined = re.match(r"^(and|or)\s+(\w+)\s+(.*)$", obj)
        if joined and joined.group(2).lower() in VERBS:
            verb, obj = f"{verb} {joined.group(1)} {joined.group(2)}", joined.group(3)
        return Step(verb[0].upper() + verb[1:], obj.strip())


def _with_article(source: str) -> str:
    """ "ops memo of 12 Nov" -> "the ops memo of 12 Nov" (a bare common noun gets "the")."""
    first = source.split()[0] if source.split() else ""
    return f"the {source}" if first.islower() and first not in _DETERMINERS else source


@functools.lru_cache(maxsize=1024)
def material(task_input: str) -> Material:
    """Read a task input into steps, sources, context and constraints (see the module).

    Quoted material (25+ characters in quotes) and ``{...}`` templates are set aside first:
    they are data for the task, not what it asks. An input that asks for nothing a
    reader can find still gives one step (its first sentence).
    """
    text = _BRACES_RE.sub("", _QUOTED_RE.sub("", " ".join(task_input.split())))
    reader = _Reader()
    for sentence in sentences(text):
        reader.sentence(sentence)
    steps = reader.steps
    if not steps:
        first = (sentences(text) or [task_input.strip() or "the task"])[0]
        steps = [Step("Answer:", first.rstrip(" .?!"))]
    sources = [_with_article(shorten(s, 12)) for s in reader.sources if s.strip()]
    return Material(
        steps=tuple(steps),
        sources=tuple(dict.fromkeys(s for s in sources if s)) or ("the task material",),
        context=tuple(reader.context),
        constraints=tuple(reader.constraints),
    )


def plan_titles(task_input: str, n: int) -> list[str]:
    """``n`` sub-task titles for ``task_input``, in plan order.

    From the coarsest list that has ``n`` titles, spread over it: one per step; one per
    item (or bracketed detail) of each step; one per item and detail. Past those, the
    runaway planner's over-decomposition of the finest list (template words from
    :data:`TITLE_TEMPLATE_WORDS`: "Prepare to ...", "... (second pass)").
    """
    found = material(task_input)
    levels = [
        [s.title for s in found.steps],
        [t for s in found.steps for t in s.fan_out()],
        [t for s in found.steps for t in s.fan_out(cross=True)],
    ]
    for level in levels:
        titles = list(dict.fromkeys(level))
        if n <= len(titles):
            return _pick(titles, n)
    finest = list(titles)
    for template in _RUNAWAY_TEMPLATES:
        titles += [template.format(t=t[0].lower() + t[1:]) for t in finest]
    variants = list(titles)
    for which in _PASSES:
        titles += [f"{t} ({which} pass)" for t in variants]
    while len(titles) < n:  # past 70 per title: a plan far larger than its input
        titles.append(f"{variants[len(titles) % len(variants)]} (follow-up)")
    return titles[:n]


def _pick(titles: Sequence[str], n: int) -> list[str]:
    """``n`` of ``titles`` spread over the list (the first of each of n equal groups)."""
    return [titles[(i * len(titles)) // n] for i in range(n)]
