"""cliffwatch: Cost Cliff control for orchestrator-worker LLM pipelines.

The public API, for an app that embeds cliffwatch (everything else is internal and may
change between minor versions)::

    from cliffwatch import cliffwatch_guard, CliffwatchLogger, configure_tracing

- :func:`cliffwatch_guard`, :class:`Guard`, :class:`SubTask`, :class:`PlanCheck`: the
  max-workers cap and per-task cost ceiling for your own orchestrator (``docs/guard.md``).
- :class:`CliffwatchLogger`: a litellm callback that records every call into the store.
- :func:`configure_tracing`, :class:`Tracing`: OpenTelemetry set-up, spans into the DuckDB
  store (and OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set).
- :func:`orchestrate`, :func:`aorchestrate`, :class:`RunResult`: cliffwatch's own capped
  orchestrator.
- :func:`db_path`, :data:`CLIFFWATCH_DB`: the store path (explicit, else
  ``$CLIFFWATCH_DB``, else ``data/cliffwatch.duckdb``).
- :class:`CliffwatchError` and its subclasses: every error cliffwatch raises on purpose.

Errors: :class:`CostCliffError` (a plan over the cap), :class:`CostCeilingError` (spend
over the ceiling), :class:`StoreError` (a missing, foreign or busy store),
:class:`SettingError` (a bad environment variable).

Names are imported on first use (PEP 562), so ``import cliffwatch`` stays cheap: the CLI's
``--help`` and read commands never import litellm.

Layers (subpackages; imports run one way): ``cliffwatch.orchestrator`` ->
``cliffwatch.telemetry``; ``cliffwatch.dashboard`` -> ``cliffwatch.analytics`` ->
``cliffwatch.telemetry.store``.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from cliffwatch.errors import CliffwatchError

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "cliffwatch_guard": "cliffwatch.orchestrator.guard",
    "Guard": "cliffwatch.orchestrator.guard",
    "SubTask": "cliffwatch.orchestrator.guard",
    "PlanCheck": "cliffwatch.orchestrator.guard",
    "CliffwatchLogger": "cliffwatch.telemetry.litellm_callback",
    "configure_tracing": "cliffwatch.telemetry.tracing",
    "Tracing": "cliffwatch.telemetry.tracing",
    "orchestrate": "cliffwatch.orchestrator.runner",
    "aorchestrate": "cliffwatch.orchestrator.runner",
    "RunResult": "cliffwatch.orchestrator.runner",
    "db_path": "cliffwatch.settings",
    "CLIFFWATCH_DB": "cliffwatch.settings",
    "SettingError": "cliffwatch.settings",
    "CostCliffError": "cliffwatch.orchestrator.errors",
    "CostCeilingError": "cliffwatch.orchestrator.errors",
    "OrchestratorError": "cliffwatch.orchestrator.errors",
    "StoreError": "cliffwatch.telemetry.store",
}

__all__ = [
    "CLIFFWATCH_DB",
    "CliffwatchError",
    "CliffwatchLogger",
    "CostCeilingError",
    "CostCliffError",
    "Guard",
    "OrchestratorError",
    "PlanCheck",
    "RunResult",
    "SettingError",
    "StoreError",
    "SubTask",
    "Tracing",
    "__version__",
    "aorchestrate",
    "cliffwatch_guard",
    "configure_tracing",
    "db_path",
    "orchestrate",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cliffwatch' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:
    from cliffwatch.orchestrator.errors import CostCeilingError, CostCliffError, OrchestratorError
    from cliffwatch.orchestrator.guard import Guard, PlanCheck, SubTask, cliffwatch_guard
    from cliffwatch.orchestrator.runner import RunResult, aorchestrate, orchestrate
    from cliffwatch.settings import CLIFFWATCH_DB, SettingError, db_path
    from cliffwatch.telemetry.litellm_callback import CliffwatchLogger
    from cliffwatch.telemetry.store import StoreError
    from cliffwatch.telemetry.tracing import Tracing, configure_tracing
