"""The simulated provider's text reads like the task it answers: titles taken from the
task input, answers in sentences, no word salad; deterministic; real token counts.

Plans, worker answers, syntheses and critiques come through litellm from the real ``sim``
provider, on prompts built by orchestrator.prompts from the bundled workload's inputs."""

from __future__ import annotations

import json
import random
import re
from typing import Any

import pytest

from cliffwatch.orchestrator import prompts, sim_text
from cliffwatch.orchestrator.dispatch import Difficulty
from cliffwatch.orchestrator.sim_material import TITLE_TEMPLATE_WORDS, material, plan_titles
from cliffwatch.orchestrator.sim_provider import real_model_of, register_sim_provider
from cliffwatch.orchestrator.workload import Task, load_workload
from cliffwatch.telemetry.pricing import import_litellm

TIME_SCALE = 1e-5
QUIET = {"failure_rate": 0.0, "malformed_plan_rate": 0.0, "runaway_rate": 0.0}
TASKS: list[Task] = [t for c in load_workload().classes for t in c.tasks]
ONE_PER_CLASS: list[Task] = [c.tasks[0] for c in load_workload().classes]

_WORD_RE = re.compile(r"[\w][\w'./%>=+&-]*")


def words(text: str) -> list[str]:
    """Lower-case words, trailing punctuation and a possessive 's dropped."""
    found = [w.lower().rstrip(".':").removesuffix("'s") for w in _WORD_RE.findall(text)]
    return [w for w in found if w]


def repeated_word(text: str) -> str | None:
    """The first word written twice in a row ("reconciling reconciling"), if any."""
    match = re.search(r"\b(\w+)\s+\1\b", text, re.IGNORECASE)
    return match.group(0) if match else None


def assert_reads_as_sentences(text: str) -> None:
    assert text.strip(), "empty text"
    assert repeated_word(text) is None, repeated_word(text)
    for line in text.splitlines():
        if not line.strip():
            continue
        assert re.match(r"""^(?:\d+\. )?["A-Z0-9]""", line), f"line starts oddly: {line!r}"
        assert line.rstrip()[-1] in '.?!"', f"line does not end a sentence: {line!r}"


@pytest.fixture(scope="module")
def litellm() -> Any:
    register_sim_provider(seed=0, time_scale=TIME_SCALE)
    return import_litellm()


def complete(litellm: Any, model: str, messages: list, role: str, seed: int, **params: Any) -> Any:
    return litellm.completion(
        model=model,
        messages=messages,
        max_tokens=8000,
        timeout=60.0,
        metadata={
            "cliffwatch": {
                "role": role,
                "seed": seed,
                "time_scale": TIME_SCALE,
                "provider_params": {**QUIET, **params},
            }
        },
    )


def text_of(response: Any) -> str:
    return str(response.choices[0].message.content)


@pytest.mark.parametrize("task", TASKS, ids=[t.task_id for t in TASKS])
def test_every_title_is_taken_from_the_task_input(task: Task) -> None:
    allowed = set(words(task.input_text)) | TITLE_TEMPLATE_WORDS
    for n in (1, 2, 3, 5, 8, 13, 25, 50):
        titles = plan_titles(task.input_text, n)
        assert len(titles) == n
        if n <= 8:
            assert len(set(titles)) == n, titles
        for title in titles:
            assert set(words(title)) <= allowed, (title, set(words(title)) - allowed)
            assert repeated_word(title) is None, title
            numbers = re.findall(r"(?<![\w.])\d+(?![\w.])", title)
            assert len(numbers) == len(set(numbers)), f"a bare number repeated: {title!r}"
            assert re.search(r"[A-Za-z]{3,}", title), title


def test_the_input_is_read_into_its_steps_items_and_sources() -> None:
    found = material(
        "Our 14 bakery franchise sites show Sunday hours as 08:00-14:00 (source: ops memo "
        "of 12 Nov). Update the opening-hours page, the footer and the schema.org data on "
        "every site, and keep the old hours in the changelog."
    )
    (step,) = found.steps
    assert step.title == "Update the opening-hours page"
    assert step.items == ("the footer", "the schema.org data on every site")
    assert found.sources == ("the ops memo of 12 Nov",)
    assert found.constraints == ("keep the old hours in the changelog",)
    assert found.context == ("Our 14 bakery franchise sites show Sunday hours as 08:00-14:00",)
    assert plan_titles("", 2)  # an input that asks for nothing still gets a plan


def test_a_runaway_plan_of_a_one_line_input_has_distinct_titles() -> None:
    titles = plan_titles("Summarise this article.", 50)
    assert len(set(titles)) == 50
    allowed = {"summarise", "this", "article"} | TITLE_TEMPLATE_WORDS
    assert all(set(words(t)) <= allowed for t in titles)


@pytest.mark.parametrize(
    "odd",
    [
        "",
        " ",
        ":",
        "?",
        "((",
        ")) and ,, ;",
        "a, b; c: d",
        ": deploy",
        "Ünïcödé — «test» ✓",
        "Deploy " * 300,
        "'" + "x" * 40 + "'",
        "Check: (a, b), (c, d)?",
    ],
)
def test_any_input_gives_titles_and_text(odd: str) -> None:
    titles = plan_titles(odd, 7)
    assert len(titles) == 7 and all(t.strip() for t in titles)
    prompt = prompts.worker_messages(
        odd,
        prompts.PlanItem(titles[0], Difficulty.ROUTINE, "x"),
        position=0,
        total=1,
        task_class="x",
    )[-1]["content"]
    answer = sim_text.worker_text(random.Random(1), prompt, 120)
    assert len(answer.split()) >= 60


def _chain(litellm: Any, task: Task, seed: int) -> dict[str, Any]:
    """Plan, work and synthesise ``task`` through the provider, as the runner would."""
    plan_messages = prompts.planner_messages(
        task.input_text, task_class=task.task_class, max_workers=8
    )
    plan = complete(litellm, "sim/gpt-4.1", plan_messages, "plan", seed)
    items = prompts.parse_plan(text_of(plan))
    results, workers = [], []
    for k, item in enumerate(items):
        messages = prompts.worker_messages(
            task.input_text, item, position=k, total=len(items), task_class=task.task_class
        )
        response = complete(litellm, "sim/gpt-4o-mini", messages, "worker", seed)
        workers.append(response)
        results.append(prompts.WorkerResult(k, item.title, text_of(response)))
    synthesis_messages = prompts.synthesis_messages(
        task.input_text, results, task_class=task.task_class
    )
    synthesis = complete(litellm, "sim/gpt-4.1-mini", synthesis_messages, "synthesis", seed)
    critic_messages = prompts.critic_messages(
        task.input_text, text_of(synthesis), task_class=task.task_class
    )
    critic = complete(
        litellm, "sim/gpt-4.1-mini", critic_messages, "critic", seed, critic_pass_rate=0.0
    )
    return {
        "plan": plan,
        "items": items,
        "workers": workers,
        "synthesis": synthesis,
        "critic": critic,
    }


@pytest.mark.parametrize("task", ONE_PER_CLASS, ids=[t.task_class for t in ONE_PER_CLASS])
def test_a_run_reads_like_work_on_its_task(litellm: Any, task: Task) -> None:
    chain = _chain(litellm, task, seed=3)
    allowed = set(words(task.input_text)) | TITLE_TEMPLATE_WORDS
    for item in chain["items"]:
        assert set(words(item.title)) <= allowed, item.title
        assert repeated_word(item.instructions) is None
        assert_reads_as_sentences(item.instructions)
    for item, worker in zip(chain["items"], chain["workers"], strict=True):
        answer = text_of(worker)
        assert_reads_as_sentences(answer)
        assert f'"{item.title}"' in answer  # it answers its own sub-task
        assert len(set(words(answer)) & set(words(task.input_text))) >= 5
    summary = text_of(chain["synthesis"])
    assert_reads_as_sentences(summary)
    for k, item in enumerate(chain["items"], 1):
        assert f'{k}. "{item.title}"' in summary  # every worker result is referenced
    verdict = prompts.parse_critic(text_of(chain["critic"]))
    assert not verdict.passed
    assert_reads_as_sentences(verdict.feedback)


def test_the_text_is_deterministic_per_seed(litellm: Any) -> None:
    task = ONE_PER_CLASS[0]

    def texts(seed: int) -> list[str]:
        chain = _chain(litellm, task, seed)
        responses = [chain["plan"], *chain["workers"], chain["synthesis"], chain["critic"]]
        return [text_of(r) for r in responses]

    assert texts(5) == texts(5)
    assert texts(5) != texts(6)


def test_token_counts_are_litellms_counts_of_the_returned_text(litellm: Any) -> None:
    for task in ONE_PER_CLASS:
        chain = _chain(litellm, task, seed=9)
        responses = [chain["plan"], *chain["workers"], chain["synthesis"], chain["critic"]]
        for response in responses:
            model = real_model_of(response.model)
            counted = litellm.token_counter(
                model=model, text=text_of(response), count_response_tokens=True
            )
            assert response.usage.completion_tokens == counted > 0


def test_a_runaway_plan_over_decomposes_the_same_input(litellm: Any) -> None:
    task = ONE_PER_CLASS[0]
    messages = prompts.planner_messages(task.input_text, task_class="x", max_workers=8)
    response = complete(litellm, "sim/gpt-4.1", messages, "plan", 1, runaway_rate=1.0)
    plan = json.loads(text_of(response))["subtasks"]
    assert len(plan) >= 20
    allowed = set(words(task.input_text)) | TITLE_TEMPLATE_WORDS
    assert all(set(words(s["title"])) <= allowed for s in plan)
    assert len({s["title"] for s in plan}) == len(plan)  # fragments, not copies
