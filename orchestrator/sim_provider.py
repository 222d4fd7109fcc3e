"""The offline simulated provider ``sim``: a litellm CustomLLM priced as real models.

Why one file: it is one litellm ``CustomLLM`` and its registration; the answer builders
for each role share the seeded randomness, token counting and profile of the one handler,
and together they are the simulation a reader checks against the behaviour listed here.

``litellm.acompletion(model="sim/gpt-4o-mini", ...)`` reaches :class:`SimLLM` once
:func:`register_sim_provider` has run. The model after ``sim/`` is a real model from
litellm's bundled price map: its prompt is counted with ``litellm.token_counter`` for that
model, its answer is counted the same way, and the model is registered with litellm at that
model's prices (its whole price map entry), so every cost is a real price x real token
counts of real text. Prompts are cached as the real model's provider caches them, within a
run and in simulated time (:mod:`orchestrator.sim_cache`): the usage reports cache reads
(and writes, for models whose provider bills them) in the shape litellm gives the real
model's, so they are priced by the same path as real traffic.

Behaviour per role (``metadata={"cliffwatch": {"role": ...}}``, set by the runner):

- ``plan``: a JSON plan whose size is drawn from a lognormal around the class's
  ``typical_subtasks``; with a cap stated in the prompt ("You may propose at most N
  sub-tasks") the draw is held to N, except on "surprising" inputs (``runaway_rate``),
  where it ignores the cap and proposes 20-50 sub-tasks (the handbook's 47-worker
  incident). Asked to replan, it complies with probability ``replan_comply_rate``.
- ``worker`` / ``synthesis``: a few hundred tokens of text answering the sub-task, or
  summarising the workers' results, templated from the task's own input
  (:mod:`orchestrator.sim_text`).
- ``critic``: a JSON verdict, ``pass`` with probability ``critic_pass_rate``, with one
  concrete request when it asks for a revision.

Plans are JSON in the planning prompt's shape; their sub-task titles come from the steps,
items and lists the task input names (:func:`orchestrator.sim_text.plan_titles`).

Deterministic: each call's randomness comes from ``seed`` + a hash of the model and the
messages + the attempt number, never from the clock or call order. Failures are injected
at ``failure_rate`` per attempt, half rate limits (billed nothing) and half stalls that
end in ``litellm.Timeout`` when the caller's timeout expires. Latency is simulated from
tokens (``base_latency_s + output_tokens / tokens_per_s``, jittered by the call's seed):
the caller's simulated time (:mod:`orchestrator.clock`) moves by exactly that, and it is
slept for ``latency x time_scale`` real seconds only to pace the run.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import random
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cliffwatch.orchestrator import clock, prompts, sim_cache, sim_material, sim_text
from cliffwatch.orchestrator.errors import ConfigError
from cliffwatch.orchestrator.sim_litellm import sim_usage, skip_litellm_logging
from cliffwatch.orchestrator.tokens import count_prompt_tokens, count_text_tokens
from cliffwatch.telemetry.pricing import TokenUsage, import_litellm, price_for, recompute_cost_usd

TOKENS_PER_WORD = 1.2
"""Tokens per word of the simulated text (measured on its output with litellm's counters),
to turn a target answer length in tokens into words to write."""

PROVIDER = "sim"
"""The litellm provider name: model strings are ``sim/<real model>``."""

DEFAULT_MODELS = (
    "claude-sonnet-4-5",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4o-mini",
    "claude-haiku-4-5",
)
"""Real models registered as ``sim/<model>`` by default (all in litellm's bundled map)."""

@dataclass(frozen=True, slots=True)
class SimProfile:
    """Per-task-class behaviour of the simulated provider.

    Attributes:
        typical_subtasks: median plan size with no cap (sub-tasks).
        subtask_sigma: sigma of the lognormal plan size (heavier tail when larger).
        runaway_rate: share of planning calls on "surprising" inputs that ignore the cap.
        runaway_min: smallest runaway plan (sub-tasks).
        runaway_max: largest runaway plan (sub-tasks).
        hard_share: share of sub-tasks the planner marks hard.
        runaway_hard_share: share marked hard in a runaway plan. A surprised planner
            over-decomposes *and* escalates: each fragment looks like it needs the
            frontier model, which is why the handbook's 47-worker run cost about 100x
            a normal one ($4.20 against low cents), not just 47/3 of it.
        replan_comply_rate: probability a replan request is honoured.
        worker_output_tokens: median worker answer length (tokens).
        synthesis_output_tokens: median synthesis answer length (tokens).
        output_sigma: sigma of the lognormal answer lengths.
        critic_pass_rate: probability the critic passes an answer.
        failure_rate: probability an attempt fails (half rate limit, half timeout).
        failure_roles: the roles whose calls can fail (default every role).
        malformed_plan_rate: probability a first planning answer is not JSON.
        base_latency_s: simulated seconds before the first token.
        tokens_per_s: simulated output speed (tokens per second).
    """

    typical_subtasks: float = 4.0
    subtask_sigma: float = 0.8
    runaway_rate: float = 0.03
    runaway_min: int = 20
    runaway_max: int = 50
    hard_share: float = 0.25
    runaway_hard_share: float = 0.4
    replan_comply_rate: float = 0.8
    worker_output_tokens: int = 350
    synthesis_output_tokens: int = 500
    output_sigma: float = 0.3
    critic_pass_rate: float = 0.75
    failure_rate: float = 0.01
    failure_roles: tuple[str, ...] = ("plan", "worker", "synthesis", "critic")
    malformed_plan_rate: float = 0.005
    base_latency_s: float = 0.4
    tokens_per_s: float = 80.0

    def __post_init__(self) -> None:
        for key in (
            "runaway_rate",
            "hard_share",
            "runaway_hard_share",
            "replan_comply_rate",
            "critic_pass_rate",
            "failure_rate",
            "malformed_plan_rate",
        ):
            value = getattr(self, key)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"sim profile: {key} must be within [0, 1], got {value!r}")
        for key in (
            "typical_subtasks",
            "tokens_per_s",
            "worker_output_tokens",
            "synthesis_output_tokens",
        ):
            if not getattr(self, key) > 0:
                raise ConfigError(f"sim profile: {key} must be > 0")
        if not 1 <= self.runaway_min <= self.runaway_max:
            raise ConfigError("sim profile: need 1 <= runaway_min <= runaway_max")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> SimProfile:
        """Build from a mapping (a workload ``provider_params`` table); unknown keys fail.

        Raises:
            ConfigError: an unknown key or a value out of range.
        """
        if not values:
            return _DEFAULT_PROFILE
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"sim profile: unknown parameter(s) {', '.join(unknown)}")
        kwargs = dict(values)
        if "failure_roles" in kwargs:
            kwargs["failure_roles"] = tuple(kwargs["failure_roles"])
        return cls(**kwargs)


_DEFAULT_PROFILE = SimProfile()


@dataclass(frozen=True, slots=True)
class SimAnswer:
    """What one simulated call produced, before it is slept for and returned.

    ``failure`` is None, ``"rate_limit"`` or ``"timeout"``. ``cache_read_tokens`` and
    ``cache_creation_tokens`` are the part of ``prompt_tokens`` read from and written to
    the provider's prompt cache (:mod:`orchestrator.sim_cache`).
    """

    content: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    finish_reason: str
    failure: str | None = None
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0


def _call_seed(seed: int, model: str, messages: Sequence[Mapping[str, Any]], attempt: int) -> int:
    blob = json.dumps([seed, model, attempt, list(messages)], sort_keys=True, default=str)
    return int.from_bytes(hashlib.blake2b(blob.encode(), digest_size=8).digest(), "big")


def _lognormal(rng: random.Random, median: float, sigma: float) -> float:
    return median * math.exp(sigma * rng.gauss(0.0, 1.0))


class SimLLM:
    """The ``sim`` provider's behaviour; :func:`register_sim_provider` makes the handler.

    The handler litellm calls is a subclass of this and ``litellm.CustomLLM``, built on
    first registration so that importing this module does not import litellm.

    Attributes:
        default_seed: seed for calls that carry none.
        default_time_scale: real seconds slept per simulated second for calls that carry
            no ``time_scale``.
    """

    def __init__(self, seed: int = 0, time_scale: float = 1.0) -> None:
        super().__init__()  # litellm.CustomLLM's, in the registered handler
        self.default_seed = seed
        self.default_time_scale = time_scale
        self._profiles: dict[str, SimProfile] = {}

    # --- what the provider decides -------------------------------------------------------
    def answer(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        role: str | None = None,
        seed: int | None = None,
        attempt: int = 1,
        max_tokens: int | None = None,
        profile: SimProfile | None = None,
    ) -> SimAnswer:
        """Decide one call's answer: content, real token counts, simulated latency.

        Args:
            model: the real model name (without ``sim/``).
            messages: the chat messages.
            role: ``plan`` | ``worker`` | ``synthesis`` | ``critic``; inferred from the
                system prompt when None.
            seed: the run's seed (default :attr:`default_seed`).
            attempt: the attempt number, from 1 (a retry draws afresh).
            max_tokens: the output budget; answers longer than it are cut
                (``finish_reason`` "length"), as a real provider does.
            profile: the task class's behaviour (default :class:`SimProfile`).
        """
        profile = profile or _DEFAULT_PROFILE
        seed = self.default_seed if seed is None else seed
        rng = random.Random(_call_seed(seed, model, messages, attempt))
        role = role or _infer_role(messages)
        # litellm picks the tokenizer from the model name, the same for sim/<model>: counted
        # under the name routing priced the prompt with, the count is reused (issue 11)
        prompt_tokens = count_prompt_tokens(f"{PROVIDER}/{model}", messages)
        if rng.random() < profile.failure_rate and role in profile.failure_roles:
            kind = "rate_limit" if rng.random() < 0.5 else "timeout"
            return SimAnswer("", prompt_tokens, 0, 0.2, "error", kind)
        if role == "plan":
            content = _plan_answer(rng, messages, profile)
        elif role == "critic":
            passed = rng.random() < profile.critic_pass_rate
            feedback = "" if passed else sim_text.critic_feedback(rng, _last_user(messages))
            content = json.dumps({"verdict": "pass" if passed else "revise", "feedback": feedback})
        else:
            median = (
                profile.synthesis_output_tokens
                if role == "synthesis"
                else profile.worker_output_tokens
            )
            target_tokens = _lognormal(rng, median, profile.output_sigma)
            n_words = round(target_tokens / TOKENS_PER_WORD)
            write = sim_text.synthesis_text if role == "synthesis" else sim_text.worker_text
            content = write(rng, _last_user(messages), n_words)
        completion_tokens = count_text_tokens(model, content)
        finish = "stop"
        if max_tokens is not None and completion_tokens > max_tokens:
            content, completion_tokens = _cut_to(model, content, max_tokens)
            finish = "length"
        latency = profile.base_latency_s + completion_tokens / profile.tokens_per_s
        latency *= _lognormal(rng, 1.0, 0.15)
        return SimAnswer(content, prompt_tokens, completion_tokens, latency, finish)

    def profile(self, params: Mapping[str, Any] | None) -> SimProfile:
        """The :class:`SimProfile` for a ``provider_params`` mapping (cached)."""
        if not params:
            return _DEFAULT_PROFILE
        key = json.dumps(dict(params), sort_keys=True, default=str)
        found = self._profiles.get(key)
        if found is None:
            found = self._profiles[key] = SimProfile.from_mapping(params)
        return found

    # --- litellm CustomLLM interface ------------------------------------------------------
    def _decide(
        self,
        model: str,
        messages: list,
        optional_params: dict,
        litellm_params: dict | None,
        timeout: Any,
    ) -> tuple[float, float, SimAnswer]:
        """What one call does, for both entry points:
        ``(simulated seconds it lasts, real seconds to wait, answer)``.

        It lasts the answer's simulated latency, slept for that x the run's time scale; a
        stalled request (failure ``timeout``) lasts the caller's whole ``timeout`` instead
        (real seconds, so ``timeout / time_scale`` simulated), since nothing comes back
        before it expires. After the wait, :meth:`_finish` gives the result. A successful
        answer carries what the run's prompt cache gave it (:mod:`orchestrator.sim_cache`).
        """
        meta = ((litellm_params or {}).get("metadata") or {}).get("cliffwatch") or {}
        seed = meta.get("seed", optional_params.get("seed"))
        time_scale = float(meta.get("time_scale", self.default_time_scale))
        profile = self.profile(meta.get("provider_params"))
        answer = self.answer(
            model,
            messages,
            role=meta.get("role"),
            seed=None if seed is None else int(seed),
            attempt=int(meta.get("attempt", 1)),
            max_tokens=optional_params.get("max_tokens")
            or optional_params.get("max_completion_tokens"),
            profile=profile,
        )
        if answer.failure is None:
            # the run's prompt cache, at the call's simulated start (orchestrator.sim_cache)
            use = sim_cache.cache_use(
                model,
                messages,
                answer.prompt_tokens,
                first_token_after_s=profile.base_latency_s,
                count=functools.partial(count_prompt_tokens, f"{PROVIDER}/{model}"),
            )
            if use != sim_cache.NO_CACHE:
                answer = dataclasses.replace(
                    answer,
                    cache_read_tokens=use.read_tokens,
                    cache_creation_tokens=use.creation_tokens,
                )
        if answer.failure == "timeout":
            real_s = _timeout_s(timeout)
            return real_s / time_scale, real_s, answer
        return answer.latency_s, answer.latency_s * time_scale, answer

    def _finish(self, model: str, answer: SimAnswer, model_response: Any) -> Any:
        """The call's result once its wait is over: its injected failure raised, else the
        filled-in ``model_response``."""
        if answer.failure:
            raise self._failure(model, answer)
        return self._respond(model, answer, model_response)

    def _respond(self, model: str, answer: SimAnswer, model_response: Any) -> Any:
        from litellm.types.utils import Choices, Message

        model_response.model = f"{PROVIDER}/{model}"
        model_response.choices = [
            Choices(
                index=0,
                finish_reason=answer.finish_reason,
                message=Message(role="assistant", content=answer.content),
            )
        ]
        model_response.usage = sim_usage(
            model,
            answer.prompt_tokens,
            answer.completion_tokens,
            answer.cache_read_tokens,
            answer.cache_creation_tokens,
        )
        # The billed cost, put where a provider that reports its own cost puts it: litellm
        # then uses it instead of pricing the response again (a third of its per-call work,
        # whether or not anything logs). It is the bill's lines (uncached input, cache
        # reads and writes, output) at the real model's list rates, which is litellm's
        # cost of these calls (no sim prompt nears a tiered price's threshold); the stored
        # cost is priced apart, by telemetry.pricing.price_call, from the usage.
        price = price_for(f"{PROVIDER}/{model}")
        if price is not None:
            tokens = TokenUsage(
                answer.prompt_tokens,
                answer.completion_tokens,
                answer.cache_read_tokens,
                answer.cache_creation_tokens,
            )
            model_response._hidden_params["response_cost"] = recompute_cost_usd(tokens, price)
        return model_response

    @staticmethod
    def _failure(model: str, answer: SimAnswer) -> Exception:
        litellm = import_litellm()
        if answer.failure == "rate_limit":
            return litellm.RateLimitError(
                "sim: rate limited (429)", llm_provider=PROVIDER, model=model
            )
        return litellm.Timeout("sim: request timed out", llm_provider=PROVIDER, model=model)

    async def acompletion(
        self,
        model: str,
        messages: list,
        api_base: Any,
        custom_prompt_dict: Any,
        model_response: Any,
        print_verbose: Any,
        encoding: Any,
        api_key: Any,
        logging_obj: Any,
        optional_params: dict,
        acompletion: Any = None,
        litellm_params: dict | None = None,
        logger_fn: Any = None,
        headers: Any = None,
        timeout: Any = None,
        client: Any = None,
    ) -> Any:
        """litellm's async entry point: decide, wait the simulated latency, answer.

        The caller's simulated time (:mod:`orchestrator.clock`) moves by the simulated
        latency, whatever the real wait took."""
        skip_litellm_logging(logging_obj)
        sim_s, real_s, answer = self._decide(
            model, messages, optional_params, litellm_params, timeout
        )
        await clock.simulate(sim_s, real_s)
        return self._finish(model, answer, model_response)

    def completion(
        self,
        model: str,
        messages: list,
        api_base: Any,
        custom_prompt_dict: Any,
        model_response: Any,
        print_verbose: Any,
        encoding: Any,
        api_key: Any,
        logging_obj: Any,
        optional_params: dict,
        acompletion: Any = None,
        litellm_params: dict | None = None,
        logger_fn: Any = None,
        headers: Any = None,
        timeout: Any = None,
        client: Any = None,
    ) -> Any:
        """litellm's sync entry point: as :meth:`acompletion`, blocking."""
        skip_litellm_logging(logging_obj)
        sim_s, real_s, answer = self._decide(
            model, messages, optional_params, litellm_params, timeout
        )
        clock.simulate_blocking(sim_s, real_s)
        return self._finish(model, answer, model_response)


def _timeout_s(timeout: Any) -> float:
    """The caller's timeout in real seconds (litellm passes a float or an httpx Timeout)."""
    if isinstance(timeout, int | float):
        return float(timeout)
    value = getattr(timeout, "read", None) or getattr(timeout, "timeout", None)
    return float(value) if isinstance(value, int | float) else 600.0


def _infer_role(messages: Sequence[Mapping[str, Any]]) -> str:
    system = next((str(m.get("content", "")) for m in messages if m.get("role") == "system"), "")
    for role, marker in (
        ("plan", prompts.PLANNER_SYSTEM[:40]),
        ("synthesis", prompts.SYNTHESIS_SYSTEM[:40]),
        ("critic", prompts.CRITIC_SYSTEM[:40]),
    ):
        if system.startswith(marker):
            return role
    return "worker"


def _last_user(messages: Sequence[Mapping[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return str(message.get("content", ""))
    return ""


def _task_text(messages: Sequence[Mapping[str, Any]]) -> str:
    for message in messages:
        if message.get("role") == "user":
            return str(message.get("content", ""))
    return ""


def _cut_to(model: str, text: str, max_tokens: int) -> tuple[str, int]:
    words = text.split(" ")
    tokens = count_text_tokens(model, text)
    while tokens > max_tokens and len(words) > 1:
        keep = max(1, min(len(words) - 1, int(len(words) * max_tokens / tokens)))
        words = words[:keep]
        tokens = count_text_tokens(model, " ".join(words))
    return " ".join(words), tokens


def _plan_size(rng: random.Random, profile: SimProfile, cap: int | None) -> tuple[int, bool]:
    """How many sub-tasks the simulated planner proposes for a first plan, and whether
    the input "surprised" it into a runaway plan."""
    if rng.random() < profile.runaway_rate:
        # a "surprising" input: the planner ignores any cap (the 47-worker incident)
        return rng.randint(profile.runaway_min, profile.runaway_max), True
    size = max(1, round(_lognormal(rng, profile.typical_subtasks, profile.subtask_sigma)))
    return (size if cap is None else min(size, cap)), False


def _plan_answer(
    rng: random.Random, messages: Sequence[Mapping[str, Any]], profile: SimProfile
) -> str:
    text = "\n".join(str(m.get("content", "")) for m in messages)
    cap = prompts.cap_from_prompt(text)
    previous = [m for m in messages if m.get("role") == "assistant"]
    runaway = False
    if previous and cap is not None and prompts.cap_from_prompt(_last_user(messages)):
        # a replan request restating the cap
        if rng.random() < profile.replan_comply_rate:
            size = rng.randint(max(1, cap // 2), cap)
        else:
            size = rng.randint(cap + 1, max(cap + 1, profile.runaway_max))
    elif not previous and rng.random() < profile.malformed_plan_rate:
        return "Here is my plan: first gather the sources, then update each page, then check."
    else:
        size, runaway = _plan_size(rng, profile, cap)
    hard_share = profile.runaway_hard_share if runaway else profile.hard_share
    task = sim_text.task_of(_task_text(messages))
    subtasks = []
    for title in sim_material.plan_titles(task, size):
        subtasks.append(
            {
                "title": title,
                "difficulty": "hard" if rng.random() < hard_share else "routine",
                "instructions": sim_text.plan_instructions(rng, task, title),
            }
        )
    return json.dumps({"subtasks": subtasks}, indent=1)


_lock = threading.Lock()
_handler: SimLLM | None = None


@functools.cache
def _handler_type() -> type[SimLLM]:
    class SimHandler(SimLLM, import_litellm().CustomLLM):  # type: ignore[misc]
        """The ``sim`` handler registered in ``litellm.custom_provider_map``."""

    return SimHandler


def register_sim_model(real_model: str) -> str:
    """Register ``sim/<real_model>`` with litellm at the real model's prices.

    Copies the real model's entry from ``litellm.model_cost`` (so
    ``input_cost_per_token`` / ``output_cost_per_token`` and cache prices match) with
    ``litellm_provider`` set to ``sim``. Returns the sim model string.

    Raises:
        ConfigError: ``real_model`` is not in litellm's price map.
    """
    litellm = import_litellm()
    entry = litellm.model_cost.get(real_model)
    if entry is None or "input_cost_per_token" not in entry:
        raise ConfigError(f"sim: {real_model!r} is not a priced model in litellm's price map")
    name = f"{PROVIDER}/{real_model}"
    current = litellm.model_cost.get(name)
    if current is None or current.get("input_cost_per_token") != entry["input_cost_per_token"]:
        litellm.register_model({name: {**entry, "litellm_provider": PROVIDER}})
    return name


def register_sim_provider(
    seed: int = 0, time_scale: float = 1.0, models: Sequence[str] = ()
) -> SimLLM:
    """Make ``sim/<model>`` reachable through litellm; idempotent.

    Args:
        seed: default seed for calls that carry none.
        time_scale: default real seconds slept per simulated second.
        models: extra models to register, real names or ``sim/<name>`` (in addition to
            :data:`DEFAULT_MODELS`).

    Returns:
        The one handler (re-registering updates its defaults).

    Raises:
        ConfigError: a model is not in litellm's price map.
    """
    global _handler
    if not time_scale > 0:
        raise ConfigError(f"time_scale must be > 0, got {time_scale!r}")
    litellm = import_litellm()
    with _lock:
        if _handler is None:
            _handler = _handler_type()(seed, time_scale)
        _handler.default_seed = seed
        _handler.default_time_scale = time_scale
        providers = [
            p for p in (litellm.custom_provider_map or []) if p.get("provider") != PROVIDER
        ]
        litellm.custom_provider_map = [
            *providers,
            {"provider": PROVIDER, "custom_handler": _handler},
        ]
        for model in (*DEFAULT_MODELS, *models):
            register_sim_model(real_model_of(model))
        return _handler


def real_model_of(model: str) -> str:
    """``sim/gpt-4o-mini`` -> ``gpt-4o-mini``; other strings unchanged."""
    prefix = f"{PROVIDER}/"
    return model[len(prefix) :] if model.startswith(prefix) else model


def is_sim_model(model: str) -> bool:
    """Whether ``model`` is served by the simulated provider."""
    return model.startswith(f"{PROVIDER}/")
