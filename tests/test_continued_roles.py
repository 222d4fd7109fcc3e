"""A call's role does not depend on how its trace was cut into batches.

An SDK's batch span processor exports spans as they end, children before parents, on a
timer: a call can reach the store before the agent span that names its role
(telemetry/continued_roles.py). Whatever the cut, the stored roles and the run must be
those of the whole trace written in one batch.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from cliffwatch.telemetry.otlp_decode import OtlpSpan
from cliffwatch.telemetry.otlp_mapping import map_spans
from cliffwatch.telemetry.store import open_store
from cliffwatch.telemetry.write_pipeline import write_spans

TRACE = "ab" * 16
T0 = 1_764_000_000 * 10**9
STEPS = (("planner", "gpt-4o"), ("worker-0", "gpt-4o-mini"), ("worker-1", "gpt-4o-mini"),
         ("synthesize", "gpt-4o-mini"))


def _span(span_id: str, parent: str | None, name: str, attributes: dict, at: int,
          ms: int = 1) -> OtlpSpan:
    return OtlpSpan(
        trace_id=TRACE, span_id=span_id, parent_span_id=parent, name=name, kind=1,
        start_time_unix_nano=T0 + at * 10**6, end_time_unix_nano=T0 + (at + ms) * 10**6,
        status_code="OK", status_message=None, attributes=attributes,
        resource_attributes={"service.name": "tides-app"},
    )


def _trace() -> list[OtlpSpan]:
    """A GenAI-conventions workflow as an app sends it: the root names the task class,
    each step is an ``invoke_agent`` span named for its role, each call under one says no
    role of its own; plus a call that states ``cliff.role`` and one whose name says it.
    Each span ends after those below it, as an SDK ends them."""
    root = _span("0" * 16, None, "tides", {
        "gen_ai.operation.name": "invoke_workflow", "gen_ai.workflow.name": "tides"}, 0, 100)
    spans = [root]
    for i, (step, model) in enumerate(STEPS, start=1):
        agent_id, call_id = f"{i:x}".rjust(16, "a"), f"{i:x}".rjust(16, "c")
        spans.append(_span(agent_id, root.span_id, step, {
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": step}, i, 20))
        spans.append(_span(call_id, agent_id, f"chat {model}", {
            "gen_ai.operation.name": "chat", "gen_ai.request.model": model,
            "gen_ai.system": "openai", "gen_ai.usage.input_tokens": 100 * i,
            "gen_ai.usage.output_tokens": 10 * i}, i))
    stated = dict(spans[-1].attributes, **{"cliff.role": "critic"})
    spans.append(_span("e" * 16, spans[-2].span_id, "chat gpt-4o-mini", stated, 9))
    spans.append(_span("f" * 16, spans[4].span_id, "summarize", dict(spans[4].attributes), 9))
    return spans


def _stored(db: Path) -> tuple[dict[str, str], tuple]:
    with open_store(db, read_only=True) as con:
        roles = dict(con.execute("SELECT span_id, role FROM spans").fetchall())
        run = con.execute(
            "SELECT llm_calls, round(cost_usd, 12), planner_model, synthesis_model FROM runs"
        ).fetchall()
    return roles, tuple(run)


def _write(db: Path, batches: list[list[OtlpSpan]]) -> None:
    for batch in batches:
        records, rejected = map_spans(batch)
        assert not rejected
        write_spans(db, records)


@pytest.fixture(scope="module")
def whole(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], tuple]:
    db = tmp_path_factory.mktemp("whole") / "one-batch.duckdb"
    _write(db, [_trace()])
    return _stored(db)


def test_one_batch_gives_each_call_its_steps_role(whole) -> None:
    roles, run = whole
    calls = {f"{i:x}".rjust(16, "c"): role for i, role in
             enumerate(("plan", "worker", "worker", "synthesis"), start=1)}
    assert {k: roles[k] for k in calls} == calls
    assert roles["e" * 16] == "critic"  # stated: kept
    assert roles["f" * 16] == "synthesis"  # its own name says it, under a worker's call
    assert run[0][2:] == ("gpt-4o", "gpt-4o-mini")


def _cuts() -> dict[str, list[list[OtlpSpan]]]:
    spans = _trace()
    calls = [s for s in spans if "gen_ai.request.model" in s.attributes]
    others = [s for s in spans if s not in calls]
    shuffled = list(spans)
    random.Random(20261203).shuffle(shuffled)
    return {
        "calls before their agents": [calls, others],
        "agents before their calls": [others, calls],
        "each span alone, children first": [[s] for s in reversed(spans)],
        "each span alone, shuffled": [[s] for s in shuffled],
        "root last": [spans[1:], spans[:1]],
    }


@pytest.mark.parametrize("cut", list(_cuts()))
def test_any_cut_into_batches_stores_the_roles_and_run_of_one_batch(
    tmp_path: Path, whole, cut: str
) -> None:
    db = tmp_path / "cut.duckdb"
    _write(db, _cuts()[cut])
    assert _stored(db) == whole


def test_without_the_resolution_a_call_before_its_agent_is_only_a_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the store held before telemetry/continued_roles.py: the cut decided the role.
    from cliffwatch.telemetry import write_pipeline

    monkeypatch.setattr(write_pipeline, "resolve_continued_roles", lambda *a, **k: 0)
    db = tmp_path / "unresolved.duckdb"
    _write(db, _cuts()["calls before their agents"])
    roles, _ = _stored(db)
    assert roles["c" * 15 + "2"] == "call"
