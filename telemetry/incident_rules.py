"""Write-side incident detection: cap breaches, cost-ceiling breaches and runaway runs.

Called by :func:`telemetry.write_pipeline.write_spans` inside its transaction, after the touched
runs are materialised. Each rule is one set-based ``INSERT ... SELECT ... ON CONFLICT DO
NOTHING`` into ``incidents``: the id is deterministic (``f"{kind}-{run_id[:16]}"``), so a
rule firing again for the same run adds nothing and never overwrites the triage
``status`` / ``note`` a person has set. ``detected_at`` is the run's ``ended_at``;
``detail`` is one human line; ``data`` is a JSON object with the figures behind it.

Rules:

- ``cap_breach``: a touched run whose ``workers_proposed > max_workers`` (the plan asked
  for more workers than the cap). data: proposed, max_workers, dispatched, policy,
  plan_attempts.
- ``cost_ceiling``: a touched run with ``breach = 'ceiling'``. Stage ``estimate`` when
  nothing was dispatched (status ``rejected``: the dispatch-time estimate was over the
  ceiling), else ``spend`` (spend crossed it while workers ran; pending ones were
  cancelled). data: stage, estimate_usd or spent_usd, ceiling_usd.
- ``runaway``: a run costing more than ``k`` x the P50 of its task class, P50 being
  ``quantile_cont(cost_usd, 0.5)`` over all that class's runs (linear interpolation, as
  numpy's default), for classes with at least :data:`RUNAWAY_MIN_RUNS` runs and a P50
  above zero. Re-evaluated on every write for every run of the classes the write
  touched (only those classes' P50 can have moved) that has no runaway incident yet.
  ``k`` defaults to ``settings.runaway_k()`` (10: the handbook's P99 is about 10 x P50).
"""

from __future__ import annotations

import duckdb

from cliffwatch.telemetry import conventions as cv
from cliffwatch.telemetry.conventions import IncidentKind

RUNAWAY_MIN_RUNS = 20
"""A class's P50 is trusted for the runaway rule only over at least this many runs."""

def _usd(expr: str) -> str:
    # Dollar amounts with four decimals ($0.0123); "unknown" when the figure is missing.
    return f"coalesce('$' || printf('%.4f', {expr}), 'unknown')"


def _touched(batch_view: str) -> str:
    return f"SELECT DISTINCT trace_id FROM {batch_view}"


def cap_breach_sql(batch_view: str) -> str:
    """``INSERT`` of ``cap_breach`` incidents for the runs touched by ``batch_view``."""
    touched = _touched(batch_view)
    return f"""
INSERT INTO incidents (incident_id, kind, run_id, task_class, detected_at, detail, data)
SELECT
    '{IncidentKind.CAP_BREACH}-' || left(r.run_id, 16),
    '{IncidentKind.CAP_BREACH}',
    r.run_id, r.task_class, r.ended_at,
    format('plan proposed {{}} workers, cap {{}}: ', r.workers_proposed, r.max_workers) ||
    CASE r.policy
        WHEN 'reject' THEN 'rejected at dispatch'
        WHEN 'truncate' THEN format('truncated to {{}} at dispatch',
                                    coalesce(r.workers_dispatched, r.max_workers))
        WHEN 'replan' THEN format('replanned ({{}} plan attempts), {{}} dispatched',
                                  coalesce(p.plan_attempts, 1), coalesce(r.workers_dispatched, 0))
        ELSE format('{{}} dispatched', coalesce(r.workers_dispatched, 0))
    END,
    json_object('proposed', r.workers_proposed, 'max_workers', r.max_workers,
                'dispatched', r.workers_dispatched, 'policy', r.policy,
                'plan_attempts', p.plan_attempts)
FROM runs AS r
LEFT JOIN (
    SELECT trace_id,
        TRY_CAST(attributes->>'$."{cv.CLIFF_PLAN_ATTEMPTS}"' AS INTEGER) AS plan_attempts
    FROM spans
    WHERE parent_span_id IS NULL AND trace_id IN ({touched})
) AS p ON p.trace_id = r.run_id
WHERE r.run_id IN ({touched}) AND r.workers_proposed > r.max_workers
ON CONFLICT DO NOTHING
"""


def cost_ceiling_sql(batch_view: str) -> str:
    """``INSERT`` of ``cost_ceiling`` incidents for the runs touched by ``batch_view``."""
    return f"""
INSERT INTO incidents (incident_id, kind, run_id, task_class, detected_at, detail, data)
SELECT
    '{IncidentKind.COST_CEILING}-' || left(run_id, 16),
    '{IncidentKind.COST_CEILING}',
    run_id, task_class, ended_at,
    CASE WHEN estimate_stage
        THEN format('estimated {{}} over the ceiling of {{}}: rejected before dispatch',
                    {_usd("estimate_usd")}, {_usd("ceiling_usd")})
        ELSE format('spent {{}}, over the ceiling of {{}}: {{}} pending workers cancelled',
                    {_usd("cost_usd")}, {_usd("ceiling_usd")}, coalesce(workers_cancelled, 0))
    END,
    CASE WHEN estimate_stage
        THEN json_object('stage', 'estimate', 'estimate_usd', estimate_usd,
                         'ceiling_usd', ceiling_usd)
        ELSE json_object('stage', 'spend', 'spent_usd', cost_usd, 'ceiling_usd', ceiling_usd,
                         'workers_cancelled', workers_cancelled)
    END
FROM (
    SELECT *, status = '{cv.RunStatus.REJECTED}' AS estimate_stage FROM runs
    WHERE run_id IN ({_touched(batch_view)}) AND breach = '{cv.Breach.CEILING}'
)
ON CONFLICT DO NOTHING
"""


def runaway_sql(batch_view: str) -> str:
    """``INSERT`` of ``runaway`` incidents over the classes touched by ``batch_view``.

    One statement: P50 per class by ``quantile_cont`` and the comparison with ``$k``
    (its one parameter) over every run of those classes.
    """
    return f"""
INSERT INTO incidents (incident_id, kind, run_id, task_class, detected_at, detail, data)
WITH classes AS (
    SELECT task_class, quantile_cont(cost_usd, 0.5) AS p50_usd, count(*) AS class_runs
    FROM runs
    WHERE task_class IN (SELECT task_class FROM runs WHERE run_id IN ({_touched(batch_view)}))
    GROUP BY task_class
    HAVING count(*) >= {RUNAWAY_MIN_RUNS}
)
SELECT
    '{IncidentKind.RUNAWAY}-' || left(r.run_id, 16),
    '{IncidentKind.RUNAWAY}',
    r.run_id, r.task_class, r.ended_at,
    format('run cost {{}} is {{}}x the {{}} P50 of {{}} (runaway above {{}}x, {{}} runs)',
           {_usd("r.cost_usd")}, printf('%.1f', r.cost_usd / c.p50_usd), r.task_class,
           {_usd("c.p50_usd")}, printf('%g', $k), c.class_runs),
    json_object('cost_usd', r.cost_usd, 'p50_usd', c.p50_usd,
                'multiple', r.cost_usd / c.p50_usd, 'k', $k, 'class_runs', c.class_runs)
FROM runs AS r JOIN classes AS c USING (task_class)
WHERE c.p50_usd > 0 AND r.cost_usd > $k * c.p50_usd
    AND NOT EXISTS (
        SELECT 1 FROM incidents AS i
        WHERE i.incident_id = '{IncidentKind.RUNAWAY}-' || left(r.run_id, 16))
ON CONFLICT DO NOTHING
"""


def _inserted(result: duckdb.DuckDBPyConnection) -> int:
    rows = result.fetchall()
    return int(rows[0][0]) if rows else 0


def record_incidents(con: duckdb.DuckDBPyConnection, batch_view: str, runaway_k: float) -> int:
    """Run every incident rule over the runs touched by ``batch_view``.

    Args:
        con: a read-write connection; the caller owns the transaction and has already
            materialised the touched runs.
        batch_view: table or view whose ``trace_id`` values name the touched runs.
        runaway_k: the runaway multiple k (> 0).

    Returns:
        The number of incidents newly inserted.
    """
    inserted = _inserted(con.execute(cap_breach_sql(batch_view)))
    inserted += _inserted(con.execute(cost_ceiling_sql(batch_view)))
    inserted += _inserted(con.execute(runaway_sql(batch_view), {"k": float(runaway_k)}))
    return inserted
