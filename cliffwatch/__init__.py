"""cliffwatch: Cost Cliff control for orchestrator-worker LLM pipelines.

Packages (imports run one way, see DESIGN in the README):
``orchestrator`` (capped plan -> dispatch -> workers -> synthesis) -> ``telemetry``
(spans, DuckDB store, OTLP); ``dashboard`` -> ``analytics`` -> ``telemetry.store``.
This package holds only the settings and the CLI that wires the others together.
"""

__version__ = "0.1.0"
