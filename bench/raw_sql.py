"""The raw SQL each scale benchmark compares a command with: ``python -m bench.raw_sql
NAME DB [MEMORY_LIMIT]`` runs one in a process that imports only DuckDB (with a
``memory_limit`` when given).

Each query reads what the command reads (every LLM call of the window with its sub-task
index and the plan's JSON, the runs) and computes the same figures per task class with
a *simplified* counterfactual: a plan over the cap costs its planner calls (policy
reject/replan) or its planner calls, its first ``cap`` workers and the rest (truncate);
no estimates, no redo, no reserve. It is a lower bound on the work, not a second
implementation: the commands' own figures are the ones tested.
"""

from __future__ import annotations

import sys

_PER_RUN = """
    calls AS (
        SELECT trace_id, role, cost_usd, start_time_unix_nano AS s,
            TRY_CAST(attributes->>'$."cliff.subtask.index"' AS INTEGER) AS idx,
            CASE WHEN role = 'plan' THEN attributes->>'$."cliff.plan.subtasks"' END AS plan
        FROM spans WHERE is_leaf_call
    ),
    per_run AS (
        SELECT trace_id, json_array_length(arg_min(plan, s) FILTER (WHERE plan IS NOT NULL)) AS n,
            coalesce(sum(cost_usd) FILTER (WHERE role = 'plan'), 0) AS plan_usd,
            coalesce(sum(cost_usd) FILTER (WHERE role = 'worker' AND idx < {cap}), 0) AS kept_usd,
            coalesce(sum(cost_usd) FILTER (WHERE role NOT IN ('plan', 'worker')), 0) AS rest_usd
        FROM calls GROUP BY trace_id
    ),
    after AS (
        SELECT r.run_id, r.task_class, r.cost_usd AS before,
            CASE WHEN p.n > {cap} AND {policy} <> 'truncate' THEN p.plan_usd
                 WHEN p.n > {cap} THEN p.plan_usd + p.kept_usd + p.rest_usd
                 WHEN r.cost_usd > {ceiling} THEN p.plan_usd
                 ELSE r.cost_usd END AS after
        FROM runs r JOIN per_run p ON p.trace_id = r.run_id
    )"""

_BY_CLASS = """
    SELECT task_class, count(*), sum(before), sum(after),
        quantile_cont(before, [0.5, 0.95, 0.99]), quantile_cont(after, [0.5, 0.95, 0.99])
    FROM after GROUP BY task_class"""

QUERIES: dict[str, list[str]] = {
    # whatif --max-workers 8 (policy as recorded, no ceiling change)
    "whatif": ["WITH " + _PER_RUN.format(cap=8, policy="coalesce(r.policy, 'reject')",
                                         ceiling="'Infinity'::DOUBLE") + _BY_CLASS],
    # findings: the runs' per-class P50, the cap what-if (8, truncate), the ceiling
    # what-if (10 x P50), spend by role and model
    "findings": [
        "SELECT task_class, quantile_cont(cost_usd, 0.5), count(*), sum(cost_usd) "
        "FROM runs GROUP BY task_class",
        "WITH " + _PER_RUN.format(cap=8, policy="'truncate'", ceiling="'Infinity'::DOUBLE")
        + _BY_CLASS,
        "WITH p50 AS (SELECT task_class, 10 * quantile_cont(cost_usd, 0.5) AS c FROM runs "
        "GROUP BY task_class), " + _PER_RUN.format(
            cap="1000000", policy="'reject'",
            ceiling="(SELECT c FROM p50 WHERE p50.task_class = r.task_class)") + _BY_CLASS,
        "SELECT r.task_class, s.role, coalesce(s.request_model, s.response_model), "
        "sum(s.cost_usd), sum(s.input_tokens), sum(s.output_tokens) FROM spans s "
        "JOIN runs r ON r.run_id = s.trace_id WHERE s.is_leaf_call GROUP BY ALL",
    ],
    # report: per-class percentiles, incidents, the what-if at the recorded caps, spend
    # by model and role, and its findings section (findings' P50s and two what-ifs,
    # appended below: the report computes them too)
    "report": [
        "SELECT task_class, count(*), sum(cost_usd), quantile_cont(cost_usd, [0.5, 0.95, 0.99]) "
        "FROM runs GROUP BY task_class",
        "SELECT kind, task_class, count(*) FROM incidents GROUP BY ALL",
        "WITH " + _PER_RUN.format(cap=8, policy="coalesce(r.policy, 'reject')",
                                  ceiling="'Infinity'::DOUBLE") + _BY_CLASS,
        "SELECT coalesce(request_model, response_model), role, sum(cost_usd), count(*) "
        "FROM spans WHERE is_leaf_call GROUP BY ALL",
    ],
}
QUERIES["report"] += QUERIES["findings"][:3]


def main(argv: list[str]) -> int:
    """``NAME DB [MEMORY_LIMIT]``: run NAME's queries on DB; with MEMORY_LIMIT (e.g.
    ``512MB``) under that DuckDB ``memory_limit`` (the commands' bulk-read bound), else
    under DuckDB's default."""
    import duckdb

    name, db, *limit = argv
    con = duckdb.connect(db, read_only=True)
    if limit:
        con.execute("SET memory_limit = $limit", {"limit": limit[0]})
    for query in QUERIES[name]:
        con.sql(query).fetchall()
    con.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
