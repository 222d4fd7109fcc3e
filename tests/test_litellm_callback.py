"""The litellm callback, driven by real ``litellm.completion`` calls to a fake OpenAI server.

Costs are checked by hand against ``litellm.model_cost``; token counts against what the
fake server reports (``fake_openai.usage_for``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_openai import serve_fake_openai, usage_for
from waits import scaled, wait_until

from cliffwatch.telemetry.litellm_callback import CliffwatchLogger, call_span, run_trace_id
from cliffwatch.telemetry.pricing import import_litellm
from cliffwatch.telemetry.store import open_store

litellm = import_litellm()


def by_hand_usd(model: str, input_tokens: int, output_tokens: int) -> float:
    entry = litellm.model_cost[model]
    return (
        input_tokens * entry["input_cost_per_token"]
        + output_tokens * entry["output_cost_per_token"]
    )


@pytest.fixture(scope="module")
def api_base() -> Iterator[str]:
    with serve_fake_openai() as url:
        yield url


@pytest.fixture
def logger(tmp_path: Path) -> Iterator[CliffwatchLogger]:
    cb = CliffwatchLogger(tmp_path / "cb.duckdb", linger_s=0.05, run_idle_s=60)
    litellm.callbacks = [cb]
    try:
        yield cb
    finally:
        cb.close()  # leaves all of litellm's callback lists
        assert cb not in litellm.logging_callback_manager.get_all_callbacks()


def _call(api_base: str, model: str, words: str, max_tokens: int, **metadata) -> None:
    litellm.completion(
        model=f"openai/{model}",
        api_base=api_base,
        api_key="test-key",
        messages=[{"role": "user", "content": words}],
        max_tokens=max_tokens,
        metadata=metadata,
    )


def wait_for_calls(cb: CliffwatchLogger, n: int) -> None:
    """litellm runs success hooks after the call returns, on its own threads: wait (bounded)."""
    wait_until(lambda: cb.calls_recorded >= n, 30, f"{n} calls recorded", interval_s=0.02)
    assert cb.calls_recorded == n


def _rows(db: Path, sql: str) -> list[tuple]:
    with open_store(db, read_only=True) as con:
        return con.execute(sql).fetchall()


def test_calls_of_one_run_become_one_run_with_the_right_cost(
    logger: CliffwatchLogger, api_base: str
) -> None:
    plan = ("gpt-4o", "plan the work please", 40, "plan")
    workers = [("gpt-4o-mini", f"do part {i} of it", 25, "worker") for i in range(3)]
    synth = ("gpt-4o-mini", "combine the parts", 15, "synthesis")
    expected_usd = 0.0
    expected_in = expected_out = 0
    for model, words, max_tokens, role in [plan, *workers, synth]:
        _call(
            api_base,
            model,
            words,
            max_tokens,
            cliff_task_class="research",
            cliff_run_id="ticket-42",
            cliff_role=role,
        )
        tin, tout = usage_for([{"content": words}], max_tokens)
        expected_in += tin
        expected_out += tout
        expected_usd += by_hand_usd(model, tin, tout)
    wait_for_calls(logger, 5)
    logger.end_run("ticket-42")
    assert logger.flush(scaled(30))
    db = logger.db_path
    runs = _rows(
        db,
        "SELECT run_id, task_class, cost_usd, input_tokens, output_tokens, "
        "llm_calls, planner_model, synthesis_model, source FROM runs",
    )
    assert runs == [
        (
            run_trace_id("ticket-42"),
            "research",
            pytest.approx(expected_usd, rel=1e-9),
            expected_in,
            expected_out,
            5,
            "gpt-4o",
            "gpt-4o-mini",
            "litellm",
        )
    ]
    roles = _rows(db, "SELECT role, count(*) FROM spans GROUP BY role ORDER BY role")
    assert roles == [("plan", 1), ("run", 1), ("synthesis", 1), ("worker", 3)]
    sources = _rows(db, "SELECT DISTINCT cost_source FROM spans WHERE is_llm_call")
    assert sources == [("computed",)]  # the provider reported no cost: litellm's cost logic


def test_a_call_without_run_id_is_a_run_of_its_own(logger, api_base: str) -> None:
    _call(api_base, "gpt-4o-mini", "one two three", 9, cliff_task_class="qa")
    _call(api_base, "gpt-4o-mini", "four five", 7)
    wait_for_calls(logger, 2)
    assert logger.flush(scaled(30))
    rows = _rows(
        logger.db_path, "SELECT task_class, cost_usd, llm_calls FROM runs ORDER BY task_class"
    )
    # no task class in the metadata: the run falls back to the logger's service name
    assert rows == [
        ("litellm", pytest.approx(by_hand_usd("gpt-4o-mini", 9, 7)), 1),
        ("qa", pytest.approx(by_hand_usd("gpt-4o-mini", 10, 9)), 1),
    ]


def test_failed_calls_are_recorded_as_failed(logger, api_base: str) -> None:
    with pytest.raises(Exception):  # noqa: B017 (litellm maps the refusal to its own classes)
        litellm.completion(
            model="openai/gpt-4o-mini",
            api_base="http://127.0.0.1:9/v1",
            api_key="k",
            messages=[{"role": "user", "content": "x"}],
            max_retries=0,
            metadata={"cliff_task_class": "qa", "cliff_run_id": "r-fail"},
        )
    _call(api_base, "gpt-4o-mini", "retry it", 5, cliff_task_class="qa", cliff_run_id="r-fail")
    wait_for_calls(logger, 2)
    logger.end_run("r-fail", status="failed")
    assert logger.flush(scaled(30))
    rows = _rows(logger.db_path, "SELECT status, llm_calls, failed_calls, cost_usd FROM runs")
    assert rows == [("failed", 2, 1, pytest.approx(by_hand_usd("gpt-4o-mini", 9, 5)))]
    (error,) = _rows(logger.db_path, "SELECT status_message FROM spans WHERE status_code = 'error'")
    assert "Connection" in error[0] or "connect" in error[0].lower()


def test_async_calls_are_recorded(logger, api_base: str) -> None:
    async def main() -> None:
        await asyncio.gather(
            *(
                litellm.acompletion(
                    model="openai/gpt-4o-mini",
                    api_base=api_base,
                    api_key="k",
                    messages=[{"role": "user", "content": f"async call {i}"}],
                    max_tokens=11,
                    metadata={"cliff_task_class": "async", "cliff_run_id": "r-async"},
                )
                for i in range(4)
            )
        )
        # litellm's async hooks run as tasks on this loop, after the calls return: let them
        # finish before asyncio.run() cancels what is left (bounded wait).
        deadline = time.monotonic() + scaled(30)
        while logger.calls_recorded < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    asyncio.run(main())
    wait_for_calls(logger, 4)
    assert logger.flush(scaled(30))
    rows = _rows(logger.db_path, "SELECT llm_calls, input_tokens, output_tokens FROM runs")
    assert rows == [(4, 4 * 10, 4 * 11)]


def test_an_idle_run_is_closed_by_itself(tmp_path: Path, api_base: str) -> None:
    cb = CliffwatchLogger(tmp_path / "idle.duckdb", linger_s=0.01, run_idle_s=0.2)
    litellm.callbacks = [cb]
    try:
        _call(api_base, "gpt-4o-mini", "a b", 3, cliff_run_id="r-idle")
        wait_for_calls(cb, 1)

        def closed() -> bool:
            cb._writer.flush(scaled(5))
            return _rows(cb.db_path, "SELECT count(*) FROM runs") == [(1,)]

        wait_until(closed, 30, "the idle run closed and written", interval_s=0.1)
    finally:
        cb.close()


def test_the_same_call_logged_twice_is_stored_once() -> None:
    kwargs = {
        "standard_logging_object": {
            "litellm_call_id": "call-1",
            "model": "gpt-4o-mini",
            "prompt_tokens": 3,
            "completion_tokens": 4,
            "response_cost": 1e-6,
            "startTime": 1.0e9,
            "endTime": 1.0e9 + 1,
            "call_type": "completion",
            "custom_llm_provider": "openai",
        },
        "litellm_params": {"metadata": {"cliff_run_id": "00" * 15 + "ab"}},
    }
    a = call_span(kwargs, None, None, None, failed=False)
    b = call_span(kwargs, None, None, None, failed=False)
    assert a == b
    assert a.trace_id == "00" * 15 + "ab"  # a 32-hex run id is the trace id itself
    assert a.attributes["litellm.response_cost"] == 1e-6  # kept for reference, not a cost
    assert "gen_ai.usage.cost.amount" not in a.attributes
    assert a.attributes["gen_ai.usage.input_tokens"] == 3
    assert a.start_time_unix_nano == 10**18
