"""The public guard: the dispatch layer around any orchestrator, recorded as a cliffwatch run.

Every test records into a real DuckDB store in tmp_path and reads back the ``runs`` row,
the spans and the incidents that :func:`telemetry.write_pipeline.write_spans` derived; costs are
checked against litellm's bundled price map by hand.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cliffwatch.orchestrator.dispatch import Action, DispatchGuard, Limits
from cliffwatch.orchestrator.errors import ConfigError, CostCeilingError, CostCliffError
from cliffwatch.orchestrator.guard import Guard, SubTask, cliffwatch_guard, tracing_for
from cliffwatch.telemetry.pricing import import_litellm
from cliffwatch.telemetry.store import open_store
from cliffwatch.telemetry.tracing import Tracing, configure_tracing


def usd(model: str, tokens_in: int, tokens_out: int) -> float:
    """A call's cost from litellm's bundled map, by hand."""
    entry = import_litellm().model_cost[model]
    return tokens_in * entry["input_cost_per_token"] + tokens_out * entry["output_cost_per_token"]


@pytest.fixture()
def db(tmp_path: Path) -> Path:
    return tmp_path / "guard.duckdb"


@pytest.fixture()
def tracing(db: Path) -> Iterator[Tracing]:
    t = configure_tracing(db, otlp_endpoint=None)  # batched: the guard flushes on close
    yield t
    t.shutdown()


def rows(db: Path, sql: str, **params: Any) -> list[dict[str, Any]]:
    with open_store(db, read_only=True) as con:
        rel = con.sql(sql, params=params or None)
        return [dict(zip(rel.columns, r, strict=True)) for r in rel.fetchall()]


def run_row(db: Path, run_id: str) -> dict[str, Any]:
    found = rows(db, "SELECT * FROM runs WHERE run_id = $id", id=run_id)
    assert len(found) == 1
    return found[0]


def incidents(db: Path, run_id: str) -> dict[str, dict[str, Any]]:
    found = rows(db, "SELECT *, data::VARCHAR AS data FROM incidents WHERE run_id = $id",
                 id=run_id)
    return {r["kind"]: r for r in found}


def test_a_guarded_run_is_recorded_like_an_orchestrated_one(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CLIFFWATCH_CAPTURE_CONTENT", raising=False)
    # Through the default path: the process-wide tracing of the store given as `db`.
    with cliffwatch_guard("research", max_workers=8, ceiling_usd=0.5, db=db,
                          worker_model="gpt-4o-mini", worker_max_output_tokens=500,
                          task_id="t-1") as guard:
        guard.record_call("gpt-4.1", 1000, 300, role="plan")
        approved = guard.check_plan(["sources", "prices", "dates"])
        assert list(approved) == ["sources", "prices", "dates"]
        assert approved.action is Action.DISPATCH
        for index, title in enumerate(approved):
            guard.record_call("gpt-4o-mini", 400, 200, subtask_index=index, title=title)
        guard.record_call("gpt-4.1-mini", 900, 300, role="synthesis")
    assert guard.status == "ok"
    assert guard.tracing is tracing_for(db)
    expected = usd("gpt-4.1", 1000, 300) + 3 * usd("gpt-4o-mini", 400, 200) + usd(
        "gpt-4.1-mini", 900, 300)
    run = run_row(db, guard.run_id or "")
    assert run["cost_usd"] == pytest.approx(expected, rel=1e-12)
    assert guard.spent_usd == pytest.approx(expected, rel=1e-12)
    assert (run["status"], run["breach"], run["task_class"]) == ("ok", None, "research")
    assert (run["workers_proposed"], run["workers_dispatched"]) == (3, 3)
    assert (run["max_workers"], run["ceiling_usd"], run["policy"]) == (8, 0.5, "reject")
    assert (run["planner_model"], run["synthesis_model"]) == ("gpt-4.1", "gpt-4.1-mini")
    assert (run["llm_calls"], run["unpriced_calls"]) == (5, 0)
    # the estimate: spend so far (the plan) + 3 x (0 prompt + 500 output tokens)
    assert run["estimate_usd"] == pytest.approx(
        usd("gpt-4.1", 1000, 300) + 3 * usd("gpt-4o-mini", 0, 500), rel=1e-12)
    assert incidents(db, guard.run_id or "") == {}
    plan = rows(db, """SELECT attributes->>'$."cliff.plan.subtasks"' AS plan FROM spans
                       WHERE trace_id = $id AND role = 'plan'""", id=guard.run_id)
    # the app's sub-task titles are content: recorded only with CLIFFWATCH_CAPTURE_CONTENT
    assert [(s["index"], s.get("title")) for s in json.loads(plan[0]["plan"])] == [
        (0, None), (1, None), (2, None)]
    names = rows(db, "SELECT name FROM spans WHERE trace_id = $id ORDER BY name", id=guard.run_id)
    assert [r["name"] for r in names] == [
        "plan", "run research", "synthesis", "worker 0", "worker 1", "worker 2"]


def test_sub_task_titles_are_recorded_with_capture_on(
    db: Path, tracing: Tracing, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLIFFWATCH_CAPTURE_CONTENT", "true")
    with cliffwatch_guard("research", max_workers=8, tracing=tracing) as guard:
        guard.record_call("gpt-4.1", 1000, 300, role="plan")
        approved = guard.check_plan(["sources", "prices"])
        for index, title in enumerate(approved):
            guard.record_call("gpt-4o-mini", 400, 200, subtask_index=index, title=title)
    tracing.flush()
    plan = rows(db, """SELECT attributes->>'$."cliff.plan.subtasks"' AS plan FROM spans
                       WHERE trace_id = $id AND role = 'plan'""", id=guard.run_id)
    assert [s["title"] for s in json.loads(plan[0]["plan"])] == ["sources", "prices"]
    titles = rows(db, """SELECT attributes->>'$."cliff.subtask.title"' AS title FROM spans
                         WHERE trace_id = $id AND role = 'worker' ORDER BY name""",
                  id=guard.run_id)
    assert [r["title"] for r in titles] == ["sources", "prices"]


def test_a_runaway_plan_is_rejected_and_recorded_as_a_cap_breach(
    db: Path, tracing: Tracing
) -> None:
    with pytest.raises(CostCliffError) as raised, cliffwatch_guard(
        "research", max_workers=8, tracing=tracing
    ) as guard:
        guard.record_call("gpt-4.1", 1200, 2000, role="plan")
        guard.check_plan(47)
        pytest.fail("check_plan must raise")  # pragma: no cover
    assert (raised.value.proposed, raised.value.max_workers) == (47, 8)
    run = run_row(db, guard.run_id or "")
    assert (run["status"], run["breach"], run["workers_dispatched"]) == ("rejected", "cap", 0)
    assert run["cost_usd"] == pytest.approx(usd("gpt-4.1", 1200, 2000), rel=1e-12)
    found = incidents(db, guard.run_id or "")
    assert set(found) == {"cap_breach"}
    assert json.loads(found["cap_breach"]["data"]) == {
        "proposed": 47, "max_workers": 8, "dispatched": 0, "policy": "reject",
        "plan_attempts": 1,
    }


def test_the_verdict_is_the_dispatch_layers_own(tracing: Tracing) -> None:
    plan = [SubTask(f"s{i}", model="gpt-4o-mini", max_output_tokens=800) for i in range(5)]
    with cliffwatch_guard("x", max_workers=3, policy="truncate", tracing=tracing) as guard:
        checked = guard.check_plan(plan)
    direct = DispatchGuard(Limits(3, None, "truncate")).check_plan(guard._planned(plan))
    assert checked.verdict == direct
    assert checked.approved == tuple(plan[:3])
    assert checked.breach == "cap"


def test_truncate_dispatches_the_first_max_workers_and_records_the_breach(
    db: Path, tracing: Tracing
) -> None:
    with cliffwatch_guard("x", max_workers=3, policy="truncate", tracing=tracing) as guard:
        guard.record_call("gpt-4.1", 500, 100, role="plan")
        approved = guard.check_plan([{"title": f"t{i}"} for i in range(10)])
        assert [s["title"] for s in approved] == ["t0", "t1", "t2"]
        for index in range(len(approved)):
            guard.record_call("gpt-4o-mini", 100, 100, subtask_index=index)
    run = run_row(db, guard.run_id or "")
    assert (run["status"], run["breach"]) == ("ok", "cap")
    assert (run["workers_proposed"], run["workers_dispatched"]) == (10, 3)
    assert incidents(db, guard.run_id or "")["cap_breach"]["detail"] == (
        "plan proposed 10 workers, cap 3: truncated to 3 at dispatch")


def test_replan_asks_once_then_checks_the_new_plan(db: Path, tracing: Tracing) -> None:
    with cliffwatch_guard("x", max_workers=4, policy="replan", tracing=tracing) as guard:
        first = guard.check_plan(20)
        assert first.replan and len(first) == 0
        second = guard.check_plan(3)
        assert second.action is Action.DISPATCH and list(second) == [0, 1, 2]
    run = run_row(db, guard.run_id or "")
    assert (run["workers_proposed"], run["workers_dispatched"]) == (20, 3)
    # the runner's rule (dispatch.survived_breach): the replanned run still breached
    assert (run["status"], run["breach"]) == ("ok", "cap")
    assert json.loads(incidents(db, guard.run_id or "")["cap_breach"]["data"])[
        "plan_attempts"] == 2


def test_a_second_breach_after_replan_is_rejected(tracing: Tracing) -> None:
    with pytest.raises(CostCliffError), cliffwatch_guard(
        "x", max_workers=4, policy="replan", tracing=tracing
    ) as guard:
        guard.check_plan(20)
        guard.check_plan(12)
    assert guard.status == "rejected"


def test_an_estimate_over_the_ceiling_is_rejected_before_dispatch(
    db: Path, tracing: Tracing
) -> None:
    # 10 sub-tasks x 4000 output tokens of gpt-4.1 is far over a 5-cent ceiling.
    with pytest.raises(CostCeilingError) as raised, cliffwatch_guard(
        "x", ceiling_usd=0.05, tracing=tracing, worker_model="gpt-4.1",
        worker_max_output_tokens=4000,
    ) as guard:
        guard.check_plan(["a"] * 6)
    expected = 6 * usd("gpt-4.1", 0, 4000)
    assert raised.value.stage == "estimate"
    assert raised.value.estimate_usd == pytest.approx(expected, rel=1e-12)
    run = run_row(db, guard.run_id or "")
    assert (run["status"], run["breach"]) == ("rejected", "ceiling")
    data = json.loads(incidents(db, guard.run_id or "")["cost_ceiling"]["data"])
    assert data["stage"] == "estimate"
    assert data["estimate_usd"] == pytest.approx(expected, rel=1e-12)


def test_the_reserve_an_estimate_held_back_is_recorded(db: Path, tracing: Tracing) -> None:
    def reserve(run_id: str | None) -> tuple[Any, Any]:
        (found,) = rows(db, """SELECT attributes->>'$."cliff.reserve_usd"' AS fixed,
                                  attributes->>'$."cliff.reserve_usd_per_subtask"' AS per
                               FROM spans WHERE trace_id = $id AND role = 'run'""", id=run_id)
        return found["fixed"], found["per"]

    with cliffwatch_guard("x", ceiling_usd=1.0, tracing=tracing, worker_model="gpt-4o-mini",
                          worker_max_output_tokens=100, reserve_usd=0.002) as guard:
        guard.check_plan(["a", "b"], reserve_usd=0.003)  # this check's reserve wins
    assert tuple(map(float, reserve(guard.run_id))) == (0.003, 0.0)
    run = run_row(db, guard.run_id or "")
    assert run["estimate_usd"] == pytest.approx(2 * usd("gpt-4o-mini", 0, 100) + 0.003,
                                                rel=1e-12)
    with cliffwatch_guard("x", tracing=tracing, reserve_usd=0.002) as counted:
        counted.check_plan(3)  # a count: no estimate, so nothing held back
    assert reserve(counted.run_id) == (None, None)


def test_spend_over_the_ceiling_says_cancel_and_is_recorded(db: Path, tracing: Tracing) -> None:
    one = usd("gpt-4o", 1000, 1000)  # $0.0125
    with cliffwatch_guard("x", ceiling_usd=2.5 * one, tracing=tracing) as guard:
        approved = guard.check_plan(5)
        done = 0
        for index in approved:
            if guard.should_cancel:
                break
            guard.record_call("gpt-4o", 1000, 1000, subtask_index=index)
            done += 1
        assert done == 3 and guard.should_cancel
        with pytest.raises(CostCeilingError) as raised:
            guard.check_spend()
        assert raised.value.stage == "spend"
    run = run_row(db, guard.run_id or "")
    assert (run["status"], run["breach"]) == ("cancelled", "ceiling")
    assert (run["workers_dispatched"], run["workers_cancelled"]) == (5, 2)
    assert run["cost_usd"] == pytest.approx(3 * one, rel=1e-12)
    assert json.loads(incidents(db, guard.run_id or "")["cost_ceiling"]["data"])[
        "stage"] == "spend"


def test_an_unpriced_model_is_counted_never_zero(db: Path, tracing: Tracing) -> None:
    with cliffwatch_guard("x", tracing=tracing) as guard:
        assert guard.record_call("my-private-model", 100, 100, role="plan") is None
        assert guard.record_call("anything", 10, 10, cost_usd=0.25) == 0.25
    run = run_row(db, guard.run_id or "")
    assert (run["unpriced_calls"], run["cost_usd"]) == (1, 0.25)


def test_calls_from_many_threads_all_count(db: Path, tracing: Tracing) -> None:
    with cliffwatch_guard("x", max_workers=None, tracing=tracing) as guard:
        approved = guard.check_plan(32)
        threads = [
            threading.Thread(target=guard.record_call, args=("gpt-4o-mini", 300, 150),
                             kwargs={"subtask_index": i})
            for i in approved
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    run = run_row(db, guard.run_id or "")
    assert run["llm_calls"] == 32
    assert run["cost_usd"] == pytest.approx(32 * usd("gpt-4o-mini", 300, 150), rel=1e-9)
    assert run["max_workers"] is None


def test_an_exception_in_the_block_fails_the_run(db: Path, tracing: Tracing) -> None:
    with pytest.raises(KeyError), cliffwatch_guard("x", tracing=tracing) as guard:
        guard.record_call("gpt-4o-mini", 10, 10, role="plan")
        raise KeyError("boom")
    assert run_row(db, guard.run_id or "")["status"] == "failed"


def test_no_raise_mode_returns_the_rejection(db: Path, tracing: Tracing) -> None:
    with cliffwatch_guard("x", max_workers=2, tracing=tracing, raise_on_breach=False) as guard:
        checked = guard.check_plan(["a", "b", "c"])
        assert checked.action is Action.REJECT and list(checked) == []
    assert run_row(db, guard.run_id or "")["status"] == "rejected"


@pytest.mark.parametrize(
    "kwargs",
    [{"max_workers": 0}, {"ceiling_usd": -1.0}, {"policy": "maybe"}, {"task_class": ""}],
)
def test_bad_limits_are_config_errors(kwargs: dict[str, Any]) -> None:
    task_class = kwargs.pop("task_class", "x")
    with pytest.raises(ConfigError):
        Guard(task_class, **kwargs)


def test_a_guard_is_used_once(tracing: Tracing) -> None:
    guard = Guard("x", tracing=tracing).start()
    with pytest.raises(RuntimeError):
        guard.start()
    guard.close()
    with pytest.raises(RuntimeError):
        guard.record_call("gpt-4o-mini", 1, 1)
    with pytest.raises(ValueError):
        Guard("x", tracing=tracing).start().record_call("gpt-4o-mini", 1, 1, role="run")


def test_the_five_lines_in_the_docs_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = (Path(__file__).resolve().parent.parent / "docs" / "guard.md").read_text()
    snippet = docs.split("```python\n", 1)[1].split("```", 1)[0]
    assert len([line for line in snippet.splitlines() if "guard" in line]) == 5
    db = tmp_path / "docs.duckdb"
    monkeypatch.setenv("CLIFFWATCH_DB", str(db))
    calls: list[str] = []

    def call_worker(subtask: str) -> Any:
        calls.append(subtask)
        return type("Reply", (), {"input_tokens": 500, "output_tokens": 200})()

    namespace: dict[str, Any] = {"subtasks": ["a", "b", "c"], "call_worker": call_worker}
    exec(compile(snippet, "docs/guard.md", "exec"), namespace)  # noqa: S102 - our own docs
    guard = namespace["guard"]
    assert calls == ["a", "b", "c"]
    run = run_row(db, guard.run_id)
    assert (run["status"], run["workers_dispatched"], run["max_workers"]) == ("ok", 3, 8)
    assert run["cost_usd"] == pytest.approx(3 * usd("gpt-4o-mini", 500, 200), rel=1e-12)
    namespace["subtasks"] = [str(i) for i in range(47)]
    with pytest.raises(CostCliffError):
        exec(compile(snippet, "docs/guard.md", "exec"), namespace)  # noqa: S102


def test_record_call_prices_cache_reads_writes_and_reasoning_and_says_so_on_its_spans(
    db: Path,
) -> None:
    claude = import_litellm().model_cost["claude-sonnet-4-5"]
    o4 = import_litellm().model_cost["o4-mini"]
    with cliffwatch_guard("cached", max_workers=4, db=db) as guard:
        # Anthropic's own counts: input_tokens (150) excludes the 300 read and 100 written
        guard.record_call("anthropic/claude-sonnet-4-5", 150, 30, role="plan",
                          cache_read_tokens=300, cache_creation_tokens=100)
        # OpenAI's: prompt_tokens (400) includes the 200 cached; 192 of 212 reasoned
        guard.record_call("o4-mini", 400, 212, cache_read_tokens=200, reasoning_tokens=192)
        guard.record_call("gpt-4o", 100, 10, cost_usd=0.25)  # the provider's figure wins
        guard.record_call("claude-sonnet-4-5", 1000, 10)  # no split on a caching model
    want_plan = (150 * claude["input_cost_per_token"]
                 + 300 * claude["cache_read_input_token_cost"]
                 + 100 * claude["cache_creation_input_token_cost"]
                 + 30 * claude["output_cost_per_token"])
    want_worker = (200 * o4["input_cost_per_token"] + 200 * o4["cache_read_input_token_cost"]
                   + 212 * o4["output_cost_per_token"])
    upper = usd("claude-sonnet-4-5", 1000, 10)
    run = run_row(db, guard.run_id or "")
    assert run["cost_usd"] == pytest.approx(want_plan + want_worker + 0.25 + upper, rel=1e-12)
    assert run["cache_detail_missing_calls"] == 1
    spans = rows(db, """
        SELECT input_tokens, input_tokens_reported, cache_read_tokens, cache_creation_tokens,
            reasoning_tokens, cost_source, cost_usd, computed_cost_usd, cache_detail_missing,
            attributes->>'$."gen_ai.usage.cost.source"' AS cost_source_attr,
            attributes->>'$."gen_ai.usage.cache_read.input_tokens"' AS read_attr
        FROM spans WHERE trace_id = $id AND is_llm_call ORDER BY start_time_unix_nano, name
        """, id=guard.run_id)
    plan, worker, reported, bare = spans
    assert (plan["input_tokens"], plan["cache_read_tokens"], plan["cache_creation_tokens"]) == (
        550, 300, 100)
    assert plan["read_attr"] == "300" and plan["cost_source_attr"] == "local"
    assert (worker["input_tokens"], worker["reasoning_tokens"]) == (400, 192)
    assert reported["cost_source"] == "provider" and reported["cost_source_attr"] == "provider"
    assert reported["computed_cost_usd"] == pytest.approx(usd("gpt-4o", 100, 10))
    assert bare["cache_detail_missing"] is True and plan["cache_detail_missing"] is False
