"""The simulated provider's prompt caching: who caches what and when, in simulated time, the
usage shape litellm gives the real models, prices by hand from litellm's map, the demo store
carrying cache reads that audit recomputes, and sim calls kept out of litellm's logging only
when no callback listens."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import duckdb
import pytest
from typer.testing import CliRunner
from waits import wait_until

from cliffwatch.cli import app
from cliffwatch.orchestrator import sim_cache
from cliffwatch.orchestrator.clock import VirtualClock
from cliffwatch.orchestrator.demo import run_demo
from cliffwatch.orchestrator.sim_litellm import skip_litellm_logging
from cliffwatch.orchestrator.sim_provider import (
    real_model_of,
    register_sim_model,
    register_sim_provider,
)
from cliffwatch.telemetry.pricing import import_litellm, price_call, usage_of_litellm

TIME_SCALE = 1e-4
NO_FAILURES = {"failure_rate": 0.0}
# a long, stable system prompt (about 2,300 tokens), as a cache-friendly app has
SYSTEM = "You are a careful worker. " + " ".join(
    f"Rule {i}: keep the sources apart from the edits and cite page {i}." for i in range(150)
)


@pytest.fixture(scope="module")
def litellm() -> Any:
    register_sim_provider(seed=0, time_scale=TIME_SCALE)
    register_sim_model("gpt-4")  # priced, but no cache read price of its own
    return import_litellm()


def call(litellm: Any, run: VirtualClock, model: str, user: str, at_s: float) -> Any:
    """One sim call made by the run ``run`` at ``at_s`` simulated seconds after its start
    (set, not advanced: an earlier time stands for a call made concurrently)."""
    run.root.elapsed_ns = round(at_s * 1e9)
    with run.using():
        return litellm.completion(
            model=model,
            messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}],
            max_tokens=200,
            metadata={
                "cliffwatch": {
                    "role": "worker",
                    "seed": 1,
                    "time_scale": TIME_SCALE,
                    "provider_params": NO_FAILURES,
                }
            },
        )


def by_hand_usd(litellm: Any, model: str, usage: Any) -> float:
    """The bill from litellm's price map, line by line: uncached input, cache reads, cache
    writes, output."""
    entry = litellm.model_cost[real_model_of(model)]
    details = usage.prompt_tokens_details
    read = details.cached_tokens or 0
    written = getattr(details, "cache_creation_tokens", None) or 0
    return (
        (usage.prompt_tokens - read - written) * entry["input_cost_per_token"]
        + read * entry.get("cache_read_input_token_cost", entry["input_cost_per_token"])
        + written
        * entry.get("cache_creation_input_token_cost", entry["input_cost_per_token"])
        + usage.completion_tokens * entry["output_cost_per_token"]
    )


def cost_usd(response: Any) -> float | None:
    tokens, _ = usage_of_litellm(response.usage)
    return price_call(response.model, tokens).cost_usd


def test_styles_follow_the_price_map(litellm: Any) -> None:
    for model in ("gpt-4.1", "gpt-4.1-mini", "gpt-4o-mini", "sim/gpt-4.1"):
        assert sim_cache.cache_style(model) is sim_cache.CacheStyle.AUTOMATIC
    for model in ("claude-sonnet-4-5", "claude-haiku-4-5", "sim/claude-sonnet-4-5"):
        assert sim_cache.cache_style(model) is sim_cache.CacheStyle.BREAKPOINT
    assert sim_cache.cache_style("gpt-4") is sim_cache.CacheStyle.NONE
    assert sim_cache.min_prefix_tokens("claude-haiku-4-5", sim_cache.CacheStyle.BREAKPOINT) == 4096
    assert sim_cache.min_prefix_tokens("claude-sonnet-4-5", sim_cache.CacheStyle.BREAKPOINT) == 1024
    steps = [sim_cache.openai_cached_tokens(n) for n in (0, 1023, 1024, 1151, 1152, 2265)]
    assert steps == [0, 0, 1024, 1024, 1152, 2176]


def test_openai_models_read_a_shared_prefix_after_its_first_use(litellm: Any) -> None:
    run = VirtualClock(0, TIME_SCALE)
    first = call(litellm, run, "sim/gpt-4.1", "Sub-task one: the pricing page.", 0)
    second = call(litellm, run, "sim/gpt-4.1", "Sub-task two: the release notes.", 30)
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    read = second.usage.prompt_tokens_details.cached_tokens
    assert read >= 1024 and (read - 1024) % 128 == 0 and read < second.usage.prompt_tokens
    # OpenAI bills no cache writes: the shape has no creation count
    assert not getattr(second.usage.prompt_tokens_details, "cache_creation_tokens", None)
    by_hand = by_hand_usd(litellm, "gpt-4.1", second.usage)
    assert cost_usd(second) == pytest.approx(by_hand, rel=1e-9)
    assert cost_usd(second) < cost_usd(first)


def test_anthropic_models_write_then_read_the_system_prompt(litellm: Any) -> None:
    run = VirtualClock(0, TIME_SCALE)
    first = call(litellm, run, "sim/claude-sonnet-4-5", "Sub-task one.", 0)
    second = call(litellm, run, "sim/claude-sonnet-4-5", "Sub-task two.", 30)
    written = first.usage.prompt_tokens_details.cache_creation_tokens
    assert written >= 1024 and first.usage.prompt_tokens_details.cached_tokens == 0
    assert first.usage._cache_creation_input_tokens == written  # litellm's Anthropic shape
    assert second.usage.prompt_tokens_details.cached_tokens == written
    assert second.usage.prompt_tokens_details.cache_creation_tokens == 0
    for response in (first, second):
        by_hand = by_hand_usd(litellm, "claude-sonnet-4-5", response.usage)
        assert cost_usd(response) == pytest.approx(by_hand, rel=1e-9)
    entry = litellm.model_cost["claude-sonnet-4-5"]
    assert entry["cache_creation_input_token_cost"] > entry["input_cost_per_token"]


def test_entries_live_from_the_first_token_until_five_idle_minutes(litellm: Any) -> None:
    model = "sim/claude-sonnet-4-5"
    run = VirtualClock(0, TIME_SCALE)
    call(litellm, run, model, "a", 0)
    # sent while the first is still being read: the prefix is not cached yet
    assert call(litellm, run, model, "b", 0.1).usage.prompt_tokens_details.cached_tokens == 0
    assert call(litellm, run, model, "c", 200).usage.prompt_tokens_details.cached_tokens > 0
    # 290 s after the last hit: still live (every hit renews it)
    assert call(litellm, run, model, "d", 490).usage.prompt_tokens_details.cached_tokens > 0
    late = call(litellm, run, model, "e", 490 + sim_cache.CACHE_TTL_S + 1)
    assert late.usage.prompt_tokens_details.cached_tokens == 0
    assert late.usage.prompt_tokens_details.cache_creation_tokens > 0


def test_no_cache_below_the_minimum_outside_a_run_or_across_runs(litellm: Any) -> None:
    # Claude Haiku 4.5 caches from 4,096 tokens: this system prompt is too short
    run = VirtualClock(0, TIME_SCALE)
    for at_s in (0, 30):
        details = call(litellm, run, "sim/claude-haiku-4-5", "x", at_s).usage.prompt_tokens_details
        assert details.cached_tokens == 0 and details.cache_creation_tokens == 0
    # another run does not see this run's entries
    call(litellm, run, "sim/gpt-4.1", "one", 0)
    other = VirtualClock(0, TIME_SCALE)
    elsewhere = call(litellm, other, "sim/gpt-4.1", "two", 30)
    assert elsewhere.usage.prompt_tokens_details.cached_tokens == 0
    # no run, no simulated clock: nothing cached
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "x"}]
    for _ in range(2):
        response = litellm.completion(
            model="sim/gpt-4.1",
            messages=messages,
            max_tokens=50,
            metadata={"cliffwatch": {"time_scale": TIME_SCALE, "provider_params": NO_FAILURES}},
        )
        assert response.usage.prompt_tokens_details.cached_tokens == 0


def test_a_model_without_a_cache_price_never_gets_cache_tokens(litellm: Any) -> None:
    run = VirtualClock(0, TIME_SCALE)
    for at_s in (0, 30, 60):
        response = call(litellm, run, "sim/gpt-4", f"call at {at_s}", at_s)
        assert response.usage.prompt_tokens_details.cached_tokens == 0
        assert cost_usd(response) == pytest.approx(by_hand_usd(litellm, "gpt-4", response.usage))


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sim_cache") / "demo.duckdb"
    run_demo(path, runs=80, days=10, seed=11, time_scale=2e-4)
    return path


def test_the_demo_store_carries_cache_reads_priced_as_litellms_map(
    litellm: Any, demo_db: Path
) -> None:
    with duckdb.connect(str(demo_db), read_only=True) as con:
        rows = con.sql(
            """
            SELECT price_model_key, input_tokens, cache_read_tokens,
                   coalesce(cache_creation_tokens, 0), output_tokens, cost_usd
            FROM spans WHERE is_llm_call AND cache_read_tokens > 0
            """
        ).fetchall()
        cached_models = con.sql(
            "SELECT DISTINCT price_model_key FROM spans "
            "WHERE cache_read_tokens > 0 OR cache_creation_tokens > 0"
        ).fetchall()
    assert rows, "the demo should exercise cache pricing"
    for model, input_tokens, read, written, output_tokens, stored_usd in rows:
        entry = litellm.model_cost[real_model_of(model)]
        by_hand = (
            (input_tokens - read - written) * entry["input_cost_per_token"]
            + read * entry["cache_read_input_token_cost"]
            + written * entry.get("cache_creation_input_token_cost", 0.0)
            + output_tokens * entry["output_cost_per_token"]
        )
        assert stored_usd == pytest.approx(by_hand, rel=1e-9)
    for (model,) in cached_models:
        assert "cache_read_input_token_cost" in litellm.model_cost[real_model_of(model)]


def test_audit_recomputes_every_cost_of_the_demo_store(demo_db: Path) -> None:
    result = CliRunner().invoke(app, ["audit", "--db", str(demo_db)], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    assert "recomputes" in result.output


def test_sim_calls_skip_litellms_logging_only_when_no_callback_listens(litellm: Any) -> None:
    details: dict[str, Any] = {}
    claimed: list[bool] = []
    logging_obj = SimpleNamespace(
        model_call_details=details, claim_async_success_log=lambda: claimed.append(True)
    )
    assert skip_litellm_logging(logging_obj) is True
    assert details["has_logged_async_success"] is True and claimed == [True]

    from litellm.integrations.custom_logger import CustomLogger

    seen: list[dict[str, Any]] = []

    class Listener(CustomLogger):  # type: ignore[misc]
        def log_success_event(
            self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
        ) -> None:
            seen.append(kwargs)

    listener = Listener()
    litellm.callbacks = [listener]
    try:
        assert skip_litellm_logging(SimpleNamespace(model_call_details={})) is False
        run = VirtualClock(0, TIME_SCALE)
        call(litellm, run, "sim/gpt-4.1", "one", 0)
        response = call(litellm, run, "sim/gpt-4.1", "two", 30)
        # litellm runs sync success callbacks in a background thread
        wait_until(lambda: len(seen) >= 2, 30, "the callback's two success events")
    finally:
        litellm.callbacks = []
    assert seen[-1]["response_cost"] == pytest.approx(cost_usd(response), rel=1e-9)


def test_a_prompt_is_counted_once_and_exactly_as_litellm_counts_it(litellm: Any) -> None:
    from cliffwatch.orchestrator import tokens

    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "count me"}]
    before = tokens._cached_count.cache_info()
    counted = [tokens.count_prompt_tokens("sim/gpt-4o-mini", messages) for _ in range(3)]
    after = tokens._cached_count.cache_info()
    assert counted == [litellm.token_counter(model="gpt-4o-mini", messages=messages)] * 3
    assert after.misses - before.misses == 1 and after.hits - before.hits == 2
    # a message with more than role and content is counted afresh, still litellm's count
    named = [{"role": "user", "content": "count me", "name": "ops"}]
    assert tokens.count_prompt_tokens("gpt-4o-mini", named) == litellm.token_counter(
        model="gpt-4o-mini", messages=named
    )
    assert tokens._cached_count.cache_info().currsize == after.currsize
