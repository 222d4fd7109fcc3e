"""Settings of one task class: its models, its limits and how its calls are run.

A task class is a kind of task run many times (``content_update``, ``research``...); its
cost percentiles are what cliffwatch watches. Settings come from ``data/workload.toml``
(:mod:`orchestrator.workload`) or are built in code.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cliffwatch.orchestrator.dispatch import Limits
from cliffwatch.orchestrator.errors import ConfigError
from cliffwatch.telemetry.conventions import CapPolicy

DEFAULT_PLANNER_MODEL = "sim/claude-sonnet-4-5"
DEFAULT_ROUTINE_MODEL = "sim/gpt-4o-mini"
DEFAULT_HARD_MODEL = "sim/claude-sonnet-4-5"
# Synthesis does not need the planner's context budget: a smaller, cheaper model
# (the handbook's anti-pattern "synthesis on the same model as planning").
DEFAULT_SYNTHESIS_MODEL = "sim/gpt-4.1-mini"

NO_LIMIT_WORDS = frozenset({"none", "off", "no", ""})
"""Values of ``max_workers`` / ``ceiling_usd`` in a workload file that switch it off."""


@dataclass(frozen=True, slots=True)
class TaskClassConfig:
    """How one task class is orchestrated.

    Attributes:
        name: the task class (``cliff.task_class`` on every span).
        planner_model: litellm model string of the planner.
        routine_model: model for sub-tasks the plan marks routine (cheap).
        hard_model: model for sub-tasks the plan marks hard (frontier).
        synthesis_model: model that merges worker outputs (cheaper than the planner).
        critic_model: model that reviews the synthesis (evaluator-optimiser); None: no
            critic.
        max_workers: most sub-tasks dispatched per run (default 8, the handbook's cap);
            None: no cap.
        ceiling_usd: most a run may cost, USD; None: no ceiling.
        policy: what dispatch does with a plan over the cap.
        planner_max_output_tokens: output budget of a planner call, tokens.
        worker_max_output_tokens: output budget of a worker call, tokens.
        synthesis_max_output_tokens: output budget of a synthesis call, tokens.
        critic_max_output_tokens: output budget of a critic call, tokens.
        critic_max_rounds: most critic reviews per run (each "revise" costs one more
            synthesis and one more review).
        concurrency: most worker calls in flight at once within a run.
        max_retries: retries of a failed call (rate limit, timeout, connection) after the
            first attempt.
        timeout_s: per-attempt timeout, simulated seconds (real seconds at time_scale 1).
        backoff_base_s: first retry delay, simulated seconds; doubles each retry.
        description: one line on what the class is.
        planner_guidance: class-specific text added to the planning prompt.
        provider_params: opaque parameters handed to the provider through litellm's
            ``metadata`` (the simulated provider reads its per-class profile from here;
            real providers never see metadata).
    """

    name: str
    planner_model: str = DEFAULT_PLANNER_MODEL
    routine_model: str = DEFAULT_ROUTINE_MODEL
    hard_model: str = DEFAULT_HARD_MODEL
    synthesis_model: str = DEFAULT_SYNTHESIS_MODEL
    critic_model: str | None = None
    max_workers: int | None = 8
    ceiling_usd: float | None = None
    policy: CapPolicy = CapPolicy.REJECT
    planner_max_output_tokens: int = 8192
    worker_max_output_tokens: int = 800
    synthesis_max_output_tokens: int = 1200
    critic_max_output_tokens: int = 300
    critic_max_rounds: int = 2
    concurrency: int = 8
    max_retries: int = 2
    timeout_s: float = 60.0
    backoff_base_s: float = 1.0
    description: str = ""
    planner_guidance: str = ""
    provider_params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("a task class needs a name")
        for key in ("planner_model", "routine_model", "hard_model", "synthesis_model"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                raise ConfigError(f"{self.name}: {key} must be a model string")
        positive_ints = (
            "planner_max_output_tokens",
            "worker_max_output_tokens",
            "synthesis_max_output_tokens",
            "critic_max_output_tokens",
            "critic_max_rounds",
            "concurrency",
        )
        for key in positive_ints:
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{self.name}: {key} must be a whole number >= 1")
        if (
            isinstance(self.max_retries, bool)
            or not isinstance(self.max_retries, int)
            or (self.max_retries < 0)
        ):
            raise ConfigError(f"{self.name}: max_retries must be a whole number >= 0")
        for key in ("timeout_s", "backoff_base_s"):
            value = getattr(self, key)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{self.name}: {key} must be a number > 0")
        try:
            object.__setattr__(self, "policy", CapPolicy(self.policy))
        except ValueError:
            choices = ", ".join(p.value for p in CapPolicy)
            raise ConfigError(
                f"{self.name}: policy {self.policy!r} is not one of {choices}"
            ) from None
        self.limits  # noqa: B018 - validates max_workers and ceiling_usd

    @property
    def limits(self) -> Limits:
        """The dispatch limits of this class."""
        try:
            return Limits(self.max_workers, self.ceiling_usd, self.policy)
        except ConfigError as exc:
            raise ConfigError(f"{self.name}: {exc}") from None

    def models(self) -> tuple[str, ...]:
        """Every model this class can route a call to: planner, routine and hard workers,
        synthesis, and the critic when there is one (repeats removed, in that order)."""
        found = (self.planner_model, self.routine_model, self.hard_model,
                 self.synthesis_model, self.critic_model)
        return tuple(dict.fromkeys(m for m in found if m))

    def uncapped(self) -> TaskClassConfig:
        """The same class with no cap and no ceiling (how pipelines ran before the cap)."""
        return dataclasses.replace(self, max_workers=None, ceiling_usd=None)

    def replace(self, **changes: Any) -> TaskClassConfig:
        """A copy with ``changes`` applied (any field), validated again."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_mapping(cls, name: str, values: Mapping[str, Any]) -> TaskClassConfig:
        """Build from a workload-file table; unknown keys are an error (typos caught).

        ``max_workers`` and ``ceiling_usd`` accept ``"none"`` to switch them off.

        Raises:
            ConfigError: an unknown key or a bad value, naming the class and the key.
        """
        known = {f.name for f in dataclasses.fields(cls)} - {"name"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{name}: unknown setting(s) {', '.join(unknown)}")
        kwargs = dict(values)
        for key in ("max_workers", "ceiling_usd"):
            raw = kwargs.get(key)
            if isinstance(raw, str):
                if raw.strip().lower() not in NO_LIMIT_WORDS:
                    raise ConfigError(f'{name}: {key} must be a number or "none", got {raw!r}')
                kwargs[key] = None
        if "ceiling_usd" in kwargs and isinstance(kwargs["ceiling_usd"], int):
            kwargs["ceiling_usd"] = float(kwargs["ceiling_usd"])
        if "provider_params" in kwargs and not isinstance(kwargs["provider_params"], Mapping):
            raise ConfigError(f"{name}: provider_params must be a table")
        try:
            return cls(name=name, **kwargs)
        except TypeError as exc:
            raise ConfigError(f"{name}: {exc}") from None
