"""A LangGraph orchestrator-worker graph with cliffwatch's cap and ceiling at its fan-out.

The graph is the pattern of the handbook page on orchestrator-worker: a planner node
splits the task into sub-tasks, a fan-out edge sends each one to a worker node with
``Send`` (LangGraph runs them in parallel), and a synthesis node merges the results on a
cheaper model. cliffwatch adds three things, all through one :class:`cliffwatch.Guard`
per run:

1. the fan-out edge asks ``guard.check_plan(plan)`` before sending anything: a plan over
   ``max_workers`` raises ``CostCliffError`` there (nothing is dispatched), an estimate
   over the ceiling raises ``CostCeilingError``;
2. every model call is reported with ``guard.record_call(...)`` (tokens from the
   message's ``usage_metadata``), so spend is tracked as workers finish and a worker
   started after the ceiling was crossed does nothing (``guard.should_cancel``);
3. the run, its calls and any breach land in the cliffwatch store as spans, a ``runs``
   row and incidents (``cliffwatch incidents``, the dashboard, webhook alerts).

Run it offline (fake chat models, prices of real models)::

    .venv/bin/python examples/langgraph_orchestrator.py --db /tmp/lg.duckdb
    .venv/bin/cliffwatch incidents --db /tmp/lg.duckdb

The guard reaches the nodes through LangGraph's run config
(``config["configurable"]["guard"]``), so one compiled graph serves every run.
"""

from __future__ import annotations

import argparse
import itertools
import operator
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from cliffwatch import CostCeilingError, CostCliffError, Guard, cliffwatch_guard


class RunState(TypedDict, total=False):
    """The graph's state: the task, the plan, the workers' results, the answer."""

    task: str
    plan: list[str]
    results: Annotated[list[tuple[int, str]], operator.add]
    answer: str


class WorkerState(TypedDict):
    """What one ``Send`` hands a worker: its sub-task and its place in the plan."""

    task: str
    subtask: str
    index: int


@dataclass(frozen=True, slots=True)
class Models:
    """The chat models of the graph and the model names they are priced as.

    A real deployment passes e.g. ``ChatOpenAI(model="gpt-4.1")`` and the same name;
    the names are what cliffwatch prices each call with (litellm's price map).
    """

    planner: BaseChatModel
    worker: BaseChatModel
    synthesis: BaseChatModel
    planner_name: str = "gpt-4.1"
    worker_name: str = "gpt-4o-mini"
    synthesis_name: str = "gpt-4.1-mini"


def _guard(config: RunnableConfig) -> Guard:
    return config["configurable"]["guard"]


def _report(
    guard: Guard, message: BaseMessage, model: str, role: str, started_ns: int, **extra: Any
) -> None:
    """Report one chat call to the guard, with the tokens the provider counted."""
    usage = getattr(message, "usage_metadata", None) or {}
    guard.record_call(
        model,
        usage.get("input_tokens"),
        usage.get("output_tokens"),
        role=role,
        started_at_ns=started_ns,
        **extra,
    )


def parse_plan(text: str) -> list[str]:
    """Sub-tasks of a planner answer: one per non-empty line, list markers stripped."""
    items = []
    for line in text.splitlines():
        item = line.strip().lstrip("-*0123456789.) ").strip()
        if item:
            items.append(item)
    return items


def build_graph(models: Models) -> Any:
    """The compiled orchestrator-worker graph (planner -> Send fan-out -> workers ->
    synthesis); invoke it with ``config={"configurable": {"guard": guard}}``."""

    def planner(state: RunState, config: RunnableConfig) -> RunState:
        guard = _guard(config)
        started = time.time_ns()
        reply = models.planner.invoke(
            [
                SystemMessage(
                    f"Split the task into independent sub-tasks, one per line. "
                    f"Use at most {guard.limits.max_workers or 'a few'} sub-tasks."
                ),
                HumanMessage(state["task"]),
            ]
        )
        _report(guard, reply, models.planner_name, "plan", started)
        return {"plan": parse_plan(str(reply.content))}

    def fan_out(state: RunState, config: RunnableConfig) -> list[Send]:
        # The dispatch layer: whatever the planner proposed, the guard decides what runs.
        approved = _guard(config).check_plan(state["plan"])
        return [
            Send("worker", {"task": state["task"], "subtask": subtask, "index": index})
            for index, subtask in enumerate(approved)
        ]

    def worker(state: WorkerState, config: RunnableConfig) -> RunState:
        guard = _guard(config)
        if guard.should_cancel:  # spend crossed the ceiling: pending work is cancelled
            return {"results": []}
        started = time.time_ns()
        reply = models.worker.invoke(
            [SystemMessage(f"Task: {state['task']}"), HumanMessage(state["subtask"])]
        )
        _report(guard, reply, models.worker_name, "worker", started,
                subtask_index=state["index"], title=state["subtask"])
        return {"results": [(state["index"], str(reply.content))]}

    def synthesis(state: RunState, config: RunnableConfig) -> RunState:
        guard = _guard(config)
        guard.check_spend()  # CostCeilingError when workers already crossed the ceiling
        results = "\n".join(f"{i + 1}. {text}" for i, text in sorted(state["results"]))
        started = time.time_ns()
        reply = models.synthesis.invoke(
            [SystemMessage("Merge the results into one answer."), HumanMessage(results)]
        )
        _report(guard, reply, models.synthesis_name, "synthesis", started)
        return {"answer": str(reply.content)}

    graph = StateGraph(RunState)
    graph.add_node("planner", planner)
    graph.add_node("worker", worker)
    graph.add_node("synthesis", synthesis)
    graph.add_edge(START, "planner")
    graph.add_conditional_edges("planner", fan_out, ["worker"])
    graph.add_edge("worker", "synthesis")
    graph.add_edge("synthesis", END)
    return graph.compile()


def run_task(
    graph: Any,
    task: str,
    *,
    task_class: str,
    db: str | Path,
    max_workers: int | None = 8,
    ceiling_usd: float | None = None,
    worker_model: str = "gpt-4o-mini",
    worker_max_output_tokens: int = 800,
) -> tuple[RunState, Guard]:
    """Run one task through ``graph`` under a guard; the run is recorded in ``db``.

    Returns:
        The final state and the (closed) guard: ``guard.run_id``, ``guard.status``.

    Raises:
        CostCliffError: the plan was over ``max_workers`` (rejected at fan-out).
        CostCeilingError: the estimate, or spend, was over ``ceiling_usd``.
    """
    with cliffwatch_guard(
        task_class,
        max_workers=max_workers,
        ceiling_usd=ceiling_usd,
        db=db,
        worker_model=worker_model,
        worker_max_output_tokens=worker_max_output_tokens,
    ) as guard:
        state = graph.invoke({"task": task}, config={"configurable": {"guard": guard}})
    return state, guard


def fake_models(plan_sizes: list[int]) -> Models:
    """Offline chat models from langchain_core's fakes, with token usage on every reply.

    Args:
        plan_sizes: how many sub-tasks the planner proposes on each successive call.
    """
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

    def reply(text: str, tokens_in: int, tokens_out: int) -> AIMessage:
        return AIMessage(
            content=text,
            usage_metadata={"input_tokens": tokens_in, "output_tokens": tokens_out,
                            "total_tokens": tokens_in + tokens_out},
        )

    plans = [
        reply("\n".join(f"- check source {i + 1}" for i in range(n)), 600, 40 * n)
        for n in plan_sizes
    ]
    # itertools.cycle, not a generator: workers call the model from parallel threads.
    make: Callable[..., GenericFakeChatModel] = GenericFakeChatModel
    return Models(
        planner=make(messages=iter(plans)),
        worker=make(messages=itertools.cycle([reply("source checked: no change", 450, 220)])),
        synthesis=make(messages=itertools.cycle([reply("All sources agree.", 900, 160)])),
    )


def main() -> None:
    """Run a normal task and a runaway one (47 sub-tasks) offline, and say what happened."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="data/langgraph-example.duckdb", help="the store")
    args = parser.parse_args()
    graph = build_graph(fake_models([3, 47]))
    state, guard = run_task(graph, "Update the pricing pages", task_class="content_update",
                            db=args.db, ceiling_usd=0.25)
    print(f"run {guard.run_id}: {guard.status}, ${guard.spent_usd:.6f}: {state['answer']}")
    try:
        run_task(graph, "Update every page", task_class="content_update", db=args.db,
                 ceiling_usd=0.25)
    except (CostCliffError, CostCeilingError) as exc:
        print(f"runaway plan rejected at fan-out: {exc}")
    print(f"see: cliffwatch incidents --db {args.db}")


if __name__ == "__main__":
    main()
