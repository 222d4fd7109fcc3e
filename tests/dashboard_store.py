"""The store the dashboard tests (AppTest and browser) run against, with known figures.

Two task classes over ten days, written through the real write path
(:func:`telemetry.write_pipeline.write_spans`), so runs and incidents are materialised exactly as
in production:

- ``research``: 40 runs with a heavy tail (P99 / P50 well above 10: the Cost Cliff), no
  cap for the first five days and a cap of 8 from the sixth (the trend's cap marker), plus
  one cap breach (47 workers proposed, cap 8, rejected) and one ceiling breach
  (spend crossed the ceiling, workers cancelled);
- ``extract``: 25 runs of nearly equal cost (P99 / P50 about 1.2), never capped.

:func:`build_store` returns the expected per-class costs so tests compare the dashboard's
P50/P95/P99 with numpy over the same raw numbers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from cliffwatch.telemetry.records import SpanRecord
from cliffwatch.telemetry.testing import make_run_records, make_runs_costing, ns_at
from cliffwatch.telemetry.write_pipeline import write_spans

HOUR_S = 3600.0
FIRST_DAY = "2026-11-01"
CAP_DAY = "2026-11-06"


@dataclass
class StoreFixture:
    """What :func:`build_store` wrote.

    Attributes:
        path: the DuckDB file.
        costs_usd: every run's cost per task class (the figures numpy is checked on).
        cap_breach_run_id: the run that proposed 47 workers against a cap of 8.
        ceiling_run_id: the run whose spend crossed its ceiling.
        some_run_id: an ordinary ``research`` run (capped, status ok).
    """

    path: Path
    costs_usd: dict[str, list[float]] = field(default_factory=dict)
    cap_breach_run_id: str = ""
    ceiling_run_id: str = ""
    some_run_id: str = ""


def build_store(path: Path) -> StoreFixture:
    """Write the fixture store to ``path`` (a new file) and return its expected figures."""
    rng = random.Random(7)
    # Heavy-tailed: most runs cost around 2 cents, a few 20-60x that, all of those
    # before the cap came in (the story the trend chart tells).
    research = [round(0.02 * rng.lognormvariate(0, 0.3), 6) for _ in range(36)]
    research[3:3] = [0.45, 0.8, 1.2, 0.6]
    extract = [round(0.005 + 0.001 * rng.random(), 6) for _ in range(25)]

    half = len(research) // 2
    records: list[SpanRecord] = []
    # 20 uncapped runs from day 1, 4-hourly (to day 4), then capped runs from CAP_DAY.
    records += make_runs_costing(
        research[:half], task_class="research", seed=1, max_workers=None,
        started_at_ns=ns_at(f"{FIRST_DAY}T00:30:00"), interval_s=4 * HOUR_S,
    )
    records += make_runs_costing(
        research[half:], task_class="research", seed=2, max_workers=8,
        started_at_ns=ns_at(f"{CAP_DAY}T00:30:00"), interval_s=4 * HOUR_S,
    )
    records += make_runs_costing(
        extract, task_class="extract", seed=3, max_workers=None,
        started_at_ns=ns_at(f"{FIRST_DAY}T02:00:00"), interval_s=8 * HOUR_S,
    )
    cap_breach = make_run_records(
        task_class="research", worker_cost_usds=[], plan_cost_usd=0.004, max_workers=8,
        proposed=47, dispatched=0, status="rejected", breach="cap", seed=11,
        started_at_ns=ns_at("2026-11-07T10:00:00"),
    )
    ceiling = make_run_records(
        task_class="research", worker_cost_usds=[0.05, 0.05], plan_cost_usd=0.004,
        synthesis_cost_usd=None, with_synthesis=False, max_workers=8, proposed=5,
        dispatched=5, workers_cancelled=3, status="cancelled", breach="ceiling",
        ceiling_usd=0.1, estimate_usd=0.09, seed=12,
        started_at_ns=ns_at("2026-11-08T10:00:00"),
    )
    records += cap_breach + ceiling
    write_spans(path, records)

    costs = {
        "research": [*research, 0.004, 0.004 + 0.05 + 0.05],
        "extract": extract,
    }
    capped_research = [r for r in records if r.task_class == "research"
                       and r.parent_span_id is None and '"cliff.max_workers": 8' in r.attributes
                       and '"cliff.status": "ok"' in r.attributes]
    return StoreFixture(
        path=path,
        costs_usd=costs,
        cap_breach_run_id=cap_breach[0].trace_id,
        ceiling_run_id=ceiling[0].trace_id,
        some_run_id=capped_research[0].trace_id,
    )
