"""Span attribute names and vocabularies: the OTel GenAI semantic conventions plus ``cliff.*``.

GenAI names follow the OpenTelemetry semantic conventions for generative AI
(https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-spans/). The ``cliff.*`` names are
cliffwatch's own; the README's "Span conventions" section documents each one and
``tests/test_docs.py`` keeps the two in step.
"""

from __future__ import annotations

from enum import StrEnum

# --- OpenTelemetry GenAI semantic conventions -------------------------------------------
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS = "gen_ai.usage.cache_read.input_tokens"
"""Prompt tokens served from the provider's cache; included in ``gen_ai.usage.input_tokens``."""
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS = "gen_ai.usage.cache_creation.input_tokens"
"""Prompt tokens written to the provider's cache; included in ``gen_ai.usage.input_tokens``."""
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS = "gen_ai.usage.reasoning.output_tokens"
"""Output tokens spent reasoning; included in ``gen_ai.usage.output_tokens``."""
GEN_AI_USAGE_COST_AMOUNT = "gen_ai.usage.cost.amount"
"""The call's cost (proposed: open-telemetry/semantic-conventions-genai PR 443)."""
GEN_AI_USAGE_COST_CURRENCY = "gen_ai.usage.cost.currency"
"""ISO 4217 code of ``gen_ai.usage.cost.amount`` (cliffwatch: always ``USD``)."""
GEN_AI_USAGE_COST_SOURCE = "gen_ai.usage.cost.source"
"""``provider`` (the cost was in the provider's response) or ``local`` (the recorder computed
it); proposed in the same PR."""
GEN_AI_RESPONSE_ID = "gen_ai.response.id"
GEN_AI_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_SEED = "gen_ai.request.seed"
GEN_AI_INPUT_MESSAGES = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES = "gen_ai.output.messages"
ERROR_TYPE = "error.type"
ERROR_TYPE_CANCELLED = "cancelled"
"""``error.type`` of a call cancelled in flight (the runner's mark when spend crossed the
ceiling and pending workers were cancelled)."""

OPERATION_CHAT = "chat"
OPERATION_INVOKE_AGENT = "invoke_agent"

# --- cliffwatch's own -------------------------------------------------------------------
CLIFF_ROLE = "cliff.role"
CLIFF_TASK_CLASS = "cliff.task_class"
CLIFF_COST_USD = "cliff.cost_usd"
CLIFF_PRICE_INPUT = "cliff.price.input_usd_per_token"
CLIFF_PRICE_OUTPUT = "cliff.price.output_usd_per_token"
CLIFF_COST_SOURCE = "cliff.cost_source"
CLIFF_PRICE_CACHE_READ = "cliff.price.cache_read_usd_per_token"
CLIFF_PRICE_CACHE_CREATION = "cliff.price.cache_creation_usd_per_token"
CLIFF_PRICE_REASONING = "cliff.price.reasoning_usd_per_token"
CLIFF_PRICE_MODEL_KEY = "cliff.price.model_key"
"""The price map key the ``cliff.price.*`` rates were found under."""
CLIFF_COST_COMPUTED_USD = "cliff.cost.computed_usd"
"""litellm's cost of the call's tokens, USD; beside ``cliff.cost_usd`` when that is a cost
the provider reported (equal to it otherwise)."""
CLIFF_COST_CACHE_DETAIL_MISSING = "cliff.cost.cache_detail_missing"
"""True when the cost is computed on a model with a cache price of its own but the provider
gave no cache split: every prompt token was priced as uncached input (an upper bound)."""
# on the run span
CLIFF_MAX_WORKERS = "cliff.max_workers"
CLIFF_CEILING_USD = "cliff.ceiling_usd"
CLIFF_POLICY = "cliff.policy"
CLIFF_WORKERS_PROPOSED = "cliff.workers_proposed"
CLIFF_WORKERS_DISPATCHED = "cliff.workers_dispatched"
CLIFF_WORKERS_FAILED = "cliff.workers_failed"
CLIFF_WORKERS_CANCELLED = "cliff.workers_cancelled"
CLIFF_ESTIMATE_USD = "cliff.estimate_usd"
CLIFF_RESERVE_USD = "cliff.reserve_usd"
"""USD the pre-dispatch estimate held back for the calls after the workers that does not
grow with their number (synthesis prompt and output budget, one critic review): the
dispatch layer's ``reserve_usd``. On run spans; replay re-checks a plan with it."""
CLIFF_RESERVE_USD_PER_SUBTASK = "cliff.reserve_usd_per_subtask"
"""USD the pre-dispatch estimate held back per dispatched sub-task (the synthesis input
one worker's answer adds): the dispatch layer's ``reserve_usd_per_subtask``. On run spans.
``cliff.estimate_usd`` = planner spend + the dispatched sub-tasks' estimates +
``cliff.reserve_usd`` + this x the sub-tasks dispatched."""
CLIFF_STATUS = "cliff.status"
CLIFF_BREACH = "cliff.breach"
CLIFF_PLAN_ATTEMPTS = "cliff.plan_attempts"
CLIFF_REPLAY_OF = "cliff.replay_of"
CLIFF_TASK_INPUT = "cliff.task.input"
CLIFF_TASK_ID = "cliff.task.id"
CLIFF_SEED = "cliff.seed"
CLIFF_PROVIDER = "cliff.provider"
CLIFF_PLAN_SUBTASKS = "cliff.plan.subtasks"
"""JSON array of the plan's sub-tasks as proposed ({index, title, difficulty, model,
max_output_tokens}); on plan spans. Needed to replay a run from its spans alone."""
# on worker spans
CLIFF_SUBTASK_INDEX = "cliff.subtask.index"
CLIFF_SUBTASK_TITLE = "cliff.subtask.title"
CLIFF_SUBTASK_DIFFICULTY = "cliff.subtask.difficulty"
CLIFF_ATTEMPT = "cliff.attempt"


class Role(StrEnum):
    """``cliff.role``: what a span is in an orchestrator-worker run."""

    RUN = "run"
    PLAN = "plan"
    WORKER = "worker"
    SYNTHESIS = "synthesis"
    CRITIC = "critic"
    CALL = "call"
    """An LLM call whose place in a plan/worker/synthesis structure is unknown (ingested)."""
    OTHER = "other"
    """A span that is not an LLM call and not a run (tools, HTTP, agent wrappers)."""


LLM_CALL_ROLES = frozenset({Role.PLAN, Role.WORKER, Role.SYNTHESIS, Role.CRITIC, Role.CALL})


class CostSource(StrEnum):
    """``cliff.cost_source``: where a call's ``cost_usd`` came from."""

    PROVIDER = "provider"
    """The producer reported the cost itself."""
    COMPUTED = "computed"
    """Tokens x the model's price from litellm's price map (or a user override)."""
    UNPRICED = "unpriced"
    """No price known for the model: cost is NULL, counted and shown, never $0."""


class RunStatus(StrEnum):
    """``cliff.status`` of a run span."""

    OK = "ok"
    REJECTED = "rejected"
    """Nothing dispatched: the plan breached the cap (policy reject) or the estimate the ceiling."""
    CANCELLED = "cancelled"
    """Spend crossed the ceiling during dispatch; pending workers were cancelled."""
    FAILED = "failed"
    """A step failed after its retries (provider errors, timeouts, an unparseable plan)."""
    INCOMPLETE = "incomplete"
    """Set by the store, never by a span: the root span never arrived (the process was
    killed); the run holds the calls that did (telemetry/materialise.py)."""


class Breach(StrEnum):
    """``cliff.breach`` of a run span (absent when nothing was breached)."""

    CAP = "cap"
    CEILING = "ceiling"


class CapPolicy(StrEnum):
    """What dispatch does with a plan over ``max_workers``."""

    REJECT = "reject"
    REPLAN = "replan"
    TRUNCATE = "truncate"


class IncidentKind(StrEnum):
    """Kinds of incident in the store's ``incidents`` table."""

    CAP_BREACH = "cap_breach"
    COST_CEILING = "cost_ceiling"
    RUNAWAY = "runaway"
