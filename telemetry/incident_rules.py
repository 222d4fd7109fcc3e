"""Write-side incident detection: cap breaches, cost-ceiling breaches and runaway runs.

Called by :func:`telemetry.write_pipeline.write_spans` inside its transaction, after the touched
runs are materialised (:data:`telemetry.materialise.TOUCHED_RUNS` holds them). Each rule is
one set-based ``SELECT``; a write runs them as one ``INSERT`` (:func:`all_rules_sql`) of the
incidents they find into the temporary table :data:`NEW_INCIDENTS`; they are then added to
``incidents`` in one statement (``ON CONFLICT DO NOTHING``), those recorded before are
left out of :data:`NEW_INCIDENTS` (by the ids the insert returns, or, when a class's P50
was just recomputed and all its runs judged, by a check before), and the alert rules read
them from there. A write that materialised no run
runs no rule; a rule none of the write's runs can fire on (no run over its cap, none over
its ceiling, none over ``k`` x a fresh class's P50 and no class refreshed:
:func:`refresh_class_p50` looks, in the statement that sorts the classes) is left out of
the statement; and a write whose rules found nothing inserts nothing. The
id is deterministic (``f"{kind}-{run_id[:16]}"``), so a rule firing again for the same run
adds nothing and never overwrites the triage ``status`` / ``note`` a person has set.
``detected_at`` is the run's ``ended_at``; ``detail`` is one human line; ``data`` is a
JSON object with the figures behind it.

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
  above zero. The P50 is kept per class in table ``class_p50`` and recomputed over the
  class's whole history only when stale: the class had fewer than
  :data:`RUNAWAY_MIN_RUNS` runs, or got :data:`P50_REFRESH_FRACTION` (10%) more runs since,
  or the figure is older than ``settings.runaway_p50_refresh_s()`` (300 s). A write judges
  its own runs against the kept P50; when it recomputes a class's P50 it judges every run
  of that class (a P50 that moved can make an older run a runaway). So a write costs the
  same whatever the history, and the P50 a run is judged by is at most 10% of the class's
  runs, or 5 minutes, behind. ``k`` defaults to ``settings.runaway_k()`` (10: the
  handbook's P99 is about 10 x P50).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import duckdb

from cliffwatch import settings
from cliffwatch.telemetry import conventions as cv
from cliffwatch.telemetry import estimate_inputs
from cliffwatch.telemetry.conventions import IncidentKind
from cliffwatch.telemetry.materialise import TOUCHED_ROOTS, TOUCHED_RUNS

RUNAWAY_MIN_RUNS = 20
"""A class's P50 is trusted for the runaway rule only over at least this many runs."""

P50_REFRESH_FRACTION = 0.1
"""A class's kept P50 is recomputed once the runs written to it since reach this fraction
of the runs it was computed over."""

NEW_INCIDENTS = "cliff_new_incidents"
"""Temporary table of the incidents a write recorded (the columns of ``incidents`` but
the triage ones): what :mod:`telemetry.alert_rules` raises alerts for."""

_NEW_INCIDENTS_DDL = f"""
CREATE OR REPLACE TEMP TABLE {NEW_INCIDENTS} (
    incident_id VARCHAR, kind VARCHAR, run_id VARCHAR, task_class VARCHAR,
    detected_at TIMESTAMP, detail VARCHAR, data JSON
)
"""

def _usd(expr: str) -> str:
    # Dollar amounts with four decimals ($0.0123); "unknown" when the figure is missing.
    return f"coalesce('$' || printf('%.4f', {expr}), 'unknown')"


def _new(select_sql: str, *, checked: bool = True) -> str:
    """``INSERT`` into :data:`NEW_INCIDENTS` of what ``select_sql`` finds (incident_id
    first) but, when ``checked``, those already recorded."""
    where = ("WHERE NOT EXISTS (SELECT 1 FROM incidents AS i "
             "WHERE i.incident_id = found.incident_id)") if checked else ""
    return f"""
INSERT INTO {NEW_INCIDENTS}
SELECT * FROM ({select_sql}) AS found
{where}
"""


def cap_breach_sql() -> str:
    """``INSERT`` of ``cap_breach`` incidents for the touched runs."""
    return _new(_cap_breach_select())


def _cap_breach_select() -> str:
    return (f"""
SELECT
    '{IncidentKind.CAP_BREACH}-' || left(r.run_id, 16) AS incident_id,
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
FROM {TOUCHED_RUNS} AS r
LEFT JOIN (
    SELECT trace_id,
        TRY_CAST(attributes->>'$."{cv.CLIFF_PLAN_ATTEMPTS}"' AS INTEGER) AS plan_attempts
    FROM {TOUCHED_ROOTS}
) AS p ON p.trace_id = r.run_id
WHERE r.workers_proposed > r.max_workers
""")


def cost_ceiling_sql() -> str:
    """``INSERT`` of ``cost_ceiling`` incidents for the touched runs."""
    return _new(_cost_ceiling_select())


def _cost_ceiling_select() -> str:
    return (f"""
SELECT
    '{IncidentKind.COST_CEILING}-' || left(run_id, 16) AS incident_id,
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
    SELECT *, status = '{cv.RunStatus.REJECTED}' AS estimate_stage FROM {TOUCHED_RUNS}
    WHERE breach = '{cv.Breach.CEILING}'
)
""")


_CLASS_STATE = f"""
CREATE OR REPLACE TEMP TABLE cliff_classes AS
SELECT t.task_class, count(*) AS written,
    p.task_class IS NULL OR p.class_runs < {RUNAWAY_MIN_RUNS}
        OR p.runs_since + count(*) >= {P50_REFRESH_FRACTION} * p.class_runs
        OR p.refreshed_at < $stale_before AS stale,
    -- Which rules a run of the class written now can fire on (RuleWork).
    coalesce(bool_or(t.workers_proposed > t.max_workers), FALSE) AS cap,
    coalesce(bool_or(t.breach = '{cv.Breach.CEILING}'), FALSE) AS ceiling,
    coalesce(p.class_runs >= {RUNAWAY_MIN_RUNS} AND p.p50_usd > 0
        AND bool_or(t.cost_usd > $k * p.p50_usd), FALSE) AS over_p50
FROM {TOUCHED_RUNS} AS t LEFT JOIN class_p50 AS p USING (task_class)
GROUP BY t.task_class, p.task_class, p.class_runs, p.runs_since, p.refreshed_at, p.p50_usd
"""

_REFRESH_P50 = (
    "DELETE FROM class_p50 WHERE task_class IN "
    "(SELECT task_class FROM cliff_classes WHERE stale)",
    """INSERT INTO class_p50
    SELECT task_class, quantile_cont(cost_usd, 0.5), count(*), 0, $now FROM runs
    WHERE task_class IN (SELECT task_class FROM cliff_classes WHERE stale)
    GROUP BY task_class""",
    """UPDATE class_p50 AS p SET runs_since = p.runs_since + c.written
    FROM cliff_classes AS c WHERE NOT c.stale AND c.task_class = p.task_class""",
)


def runaway_sql() -> str:
    """``INSERT`` of ``runaway`` incidents: the touched runs of classes whose kept P50 is
    fresh, and every run of the classes whose P50 was just recomputed (one parameter,
    ``$k``; reads ``class_p50`` and the temporary ``cliff_classes``)."""
    return _new(_runaway_select())


def _runaway_select() -> str:
    return (f"""
WITH judged AS (
    SELECT t.* EXCLUDE ({estimate_inputs.COLUMN}) FROM {TOUCHED_RUNS} AS t
    WHERE t.task_class IN (SELECT task_class FROM cliff_classes WHERE NOT stale)
    UNION ALL
    SELECT r.* EXCLUDE ({estimate_inputs.COLUMN}) FROM runs AS r
    WHERE r.task_class IN (SELECT task_class FROM cliff_classes WHERE stale)
)
SELECT
    '{IncidentKind.RUNAWAY}-' || left(r.run_id, 16) AS incident_id,
    '{IncidentKind.RUNAWAY}',
    r.run_id, r.task_class, r.ended_at,
    format('run cost {{}} is {{}}x the {{}} P50 of {{}} (runaway above {{}}x, {{}} runs)',
           {_usd("r.cost_usd")}, printf('%.1f', r.cost_usd / c.p50_usd), r.task_class,
           {_usd("c.p50_usd")}, printf('%g', $k), c.class_runs),
    json_object('cost_usd', r.cost_usd, 'p50_usd', c.p50_usd,
                'multiple', r.cost_usd / c.p50_usd, 'k', $k, 'class_runs', c.class_runs)
FROM judged AS r JOIN class_p50 AS c USING (task_class)
WHERE c.class_runs >= {RUNAWAY_MIN_RUNS} AND c.p50_usd > 0 AND r.cost_usd > $k * c.p50_usd
""")


def all_rules_sql(*, checked: bool = True, cap: bool = True, ceiling: bool = True,
                  runaway: bool = True) -> str:
    """One ``INSERT`` of what every rule finds (:func:`cap_breach_sql`,
    :func:`cost_ceiling_sql`, :func:`runaway_sql`), less the incidents already recorded
    when ``checked`` (one parameter, ``$k``, when ``runaway``): the statement a write runs.
    ``cap``, ``ceiling``, ``runaway``: which rules it holds (a write leaves out those that
    cannot fire, :func:`refresh_class_p50`); at least one."""
    selects = [select for select, on in ((_cap_breach_select, cap),
                                         (_cost_ceiling_select, ceiling),
                                         (_runaway_select, runaway)) if on]
    if not selects:
        raise ValueError("all_rules_sql: no rule selected")
    return _new(" UNION ALL ".join(f"({select()})" for select in selects), checked=checked)


@dataclass(frozen=True, slots=True)
class RuleWork:
    """What :func:`refresh_class_p50` found for one write's runs.

    Attributes:
        stale: touched classes whose P50 was recomputed (every run of them is judged).
        fresh: the other touched classes (only the write's runs of them are judged).
        cap: some touched run proposed more workers than its cap (``cap_breach`` can fire).
        ceiling: some touched run breached its ceiling (``cost_ceiling`` can fire).
        runaway: ``runaway`` can fire: a class is stale, or a touched run of a fresh class
            costs more than ``k`` x its kept P50 (over at least :data:`RUNAWAY_MIN_RUNS`).
    """

    stale: int
    fresh: int
    cap: bool
    ceiling: bool
    runaway: bool


_RULE_WORK = """
SELECT count(*) FILTER (WHERE stale), count(*) FILTER (WHERE NOT stale),
    coalesce(bool_or(cap), FALSE), coalesce(bool_or(ceiling), FALSE),
    coalesce(bool_or(stale OR over_p50), FALSE)
FROM cliff_classes
"""
"""Counts of the touched classes and which rules can fire on the write's runs (the
conditions of :func:`_cap_breach_select`, :func:`_cost_ceiling_select` and
:func:`_runaway_select`, per class in ``cliff_classes``)."""


def refresh_class_p50(
    con: duckdb.DuckDBPyConnection, now: datetime, runaway_k: float
) -> RuleWork:
    """Recompute the kept P50 of the touched classes that are stale (module docstring),
    count the touched runs against the others, and say which rules can fire on the
    write's runs. Runs only the statements that have work.

    Args:
        con: the write's connection, after the runs were materialised.
        now: naive UTC wall-clock time (the kept P50's age).
        runaway_k: the runaway multiple k (> 0).

    Returns:
        A :class:`RuleWork` (``stale`` and ``fresh`` both 0: the write touched no run).
    """
    stale_before = now - timedelta(seconds=settings.runaway_p50_refresh_s())
    con.execute(_CLASS_STATE, {"stale_before": stale_before, "k": float(runaway_k)})
    stale, fresh, cap, ceiling, runaway = con.execute(_RULE_WORK).fetchall()[0]
    delete, insert, update = _REFRESH_P50
    for sql in ((delete, insert) if stale else ()) + ((update,) if fresh else ()):
        con.execute(sql, {"now": now} if "$now" in sql else None)
    return RuleWork(int(stale), int(fresh), bool(cap), bool(ceiling), bool(runaway))


@functools.cache
def _rules_sql(checked: bool, cap: bool, ceiling: bool, runaway: bool) -> str:
    return all_rules_sql(checked=checked, cap=cap, ceiling=ceiling, runaway=runaway)


_RECORD = (f"INSERT INTO incidents BY NAME SELECT * FROM {NEW_INCIDENTS} "
           "ON CONFLICT DO NOTHING")


def _inserted(result: duckdb.DuckDBPyConnection) -> int:
    rows = result.fetchall()
    return int(rows[0][0]) if rows else 0


def record_incidents(
    con: duckdb.DuckDBPyConnection, runaway_k: float, now: datetime | None = None
) -> int:
    """Run every incident rule over the touched runs and record what they find.

    Args:
        con: a read-write connection; the caller owns the transaction and has already
            materialised the touched runs (:func:`telemetry.materialise.materialise_runs`).
        runaway_k: the runaway multiple k (> 0).
        now: naive UTC wall-clock time (the kept P50's age); default now.

    Returns:
        The number of incidents newly inserted (also left in :data:`NEW_INCIDENTS`).
    """
    when = datetime.now(UTC).replace(tzinfo=None) if now is None else now
    con.execute(_NEW_INCIDENTS_DDL)
    # Leaves cliff_classes, which `watch` reads.
    work = refresh_class_p50(con, when, runaway_k)
    if not (work.cap or work.ceiling or work.runaway):
        return 0  # no run written, or none a rule can fire on: nothing to judge
    params = {"k": float(runaway_k)} if work.runaway else None
    if work.stale:
        # Every run of a class whose P50 moved is judged: most of what is found is
        # recorded already, and is left out before the insert.
        if not _inserted(con.execute(
                _rules_sql(True, work.cap, work.ceiling, work.runaway), params)):
            return 0
        return _inserted(con.execute(_RECORD))
    # Only the write's runs are judged: what is found is nearly always new, so it is
    # inserted as it is and the ids recorded before are dropped after (ON CONFLICT, the
    # key's index), instead of a scan of every incident ever recorded.
    found = _inserted(con.execute(
        _rules_sql(False, work.cap, work.ceiling, work.runaway), params))
    if not found:
        return 0
    recorded = [row[0] for row in con.execute(_RECORD + " RETURNING incident_id").fetchall()]
    if len(recorded) < found:
        con.execute(f"DELETE FROM {NEW_INCIDENTS} "
                    "WHERE NOT list_contains($ids::VARCHAR[], incident_id)", {"ids": recorded})
    return len(recorded)
