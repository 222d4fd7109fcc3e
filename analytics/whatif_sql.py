"""The what-if's per-run arithmetic pushed into DuckDB, run by run-id range chunks.

Why one file: this is the SQL twin of :mod:`analytics.counterfactual`, and the two must
agree run for run (``tests/test_whatif_sql.py`` holds them equal on the orchestrated
store, on the demo store and on random plans); keeping it apart keeps both readable, and
the read of the spans (:data:`STAGE_SQL`) beside the arithmetic on what it read
(:data:`RUN_SQL`) keeps their columns in step.

:func:`sql_run_rows` computes :data:`analytics.whatif.RUN_COLUMNS` for every run the
counterfactual's steps (its module docstring) decide without looping over spend: the
plan check (cap, policy ``truncate``/``reject``/``replan``, the ceiling estimate with the
reserve the run recorded), a replan the run did not make under this cap (estimated as the
first ``cap`` sub-tasks), the workers charged as recorded or estimated, synthesis adjusted
by the answer tokens it reads, spend crossing the ceiling while the run goes on (every
charge in the guard's order, a running sum: what is charged up to the crossing, and the
calls the record shows cancelled in flight after it), and the redo of a task left
undone. Every run whose outcome depends on something the SQL does not model is *not*
decided here: it is flagged ``py`` and replayed by the Python counterfactual (the
dispatch layer itself):

- a replan the run made under the same cap (the record's second plan and its calls);
- an estimate, or spend at any charge, within 1e-9 (relative) of the ceiling (where the
  order of float additions could change the verdict);
- a plan answer whose JSON the SQL does not read exactly as :func:`analytics.recorded.
  parse_plan` does (not valid JSON, sub-task ``index`` not its position, a field of an
  unexpected type), a run without a recorded reserve, a negative cost, a status that is
  not one of the four, a cost change within a hair of the "affected" threshold
  (:data:`analytics.counterfactual_result.USD_RESOLUTION`).

Before any of that, a run whose recorded limits and the what-if's decide alike keeps its
record (:data:`ALIKE_SQL`, from the ``runs`` table alone): only the other runs' spans are
read. Memory: the calls of one chunk of runs (:data:`CHUNK_RUNS` runs) are replayed at a
time by a query; DuckDB holds that chunk's LLM calls, never the store's (and
:mod:`analytics.bulk_read` bounds its memory while a what-if runs). The spans are read once
(:data:`STAGE_SQL`: one parse of the attributes per span that needs it): inline per run-id
range chunk (ClickHouse), or, in DuckDB, every chunk's in one read, beforehand, into
Parquet files per chunk (:func:`stage_chunks`). Every run is keyed by a dense integer
(``rk``: its place in run-id order) in the joins and groups, not by its 32-character
id: at 100k runs that took a fifth of :data:`RUN_SQL`'s CPU off and its spill under the
256 MB bound to nothing (issue 11). The charges are ordered against the ceiling only for
the runs whose spend could reach it (``risky``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from cliffwatch.analytics import chunks
from cliffwatch.analytics.chunks import Bounds, ChunkFiles
from cliffwatch.analytics.counterfactual_result import USD_RESOLUTION
from cliffwatch.analytics.recorded import CANCELLED_ERROR, attrs_sql
from cliffwatch.analytics.store_access import frame, where
from cliffwatch.telemetry import conventions as cv
from cliffwatch.telemetry.conventions import Role, RunStatus

CHUNK_RUNS = 25_000
"""Runs per chunk of the pushed-down what-if with one variant (their spans are read at
once; with n variants, a chunk holds a n-th of it): one chunk's groups fit DuckDB's bulk-read
bound (:data:`analytics.bulk_read.MEMORY_LIMIT`)."""

_STATUSES = ", ".join(f"'{s.value}'" for s in RunStatus)

_NUMBER = "IN ('-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9')"
# One plan element (``f``: its fields as JSON text, JSON null read as NULL; ``k`` its
# 1-based position) read as parse_plan reads it: an index that is its position, a number
# (or nothing) for the estimate and the output budget, a plain string (or nothing) for
# the model. Anything else sends the run to Python.
_ELEM_SIMPLE = f"""(
    (f.index IS NULL OR f.index::VARCHAR = (k - 1)::VARCHAR)
    AND (f.estimated_cost_usd IS NULL
        OR substr(f.estimated_cost_usd::VARCHAR, 1, 1) {_NUMBER})
    AND (f.max_output_tokens IS NULL OR substr(f.max_output_tokens::VARCHAR, 1, 1) {_NUMBER})
    AND (f.model IS NULL OR (starts_with(f.model::VARCHAR, '"')
        AND NOT contains(f.model::VARCHAR, chr(92)))))"""
_JSON_SPACE = "' ' || chr(9) || chr(10) || chr(13)"
_PLAN_SCHEMA = ("""'[{"index": "JSON", "estimated_cost_usd": "JSON", "model": "JSON", """
                """"max_output_tokens": "JSON"}]'""")

_STAGE_KEYS = (cv.CLIFF_SUBTASK_INDEX, cv.ERROR_TYPE, cv.CLIFF_PLAN_SUBTASKS, cv.CLIFF_RESERVE_USD,
               cv.CLIFF_RESERVE_USD_PER_SUBTASK)

STAGE_SQL = f"""
SELECT {{chunk}}rk, span_id, role, leaf, root, model, start_ns, end_ns, input_tokens, output_tokens,
    cost_usd, ok, price_in,
    CASE WHEN leaf AND role = '{Role.WORKER}'
        THEN coalesce(a[2] = '{CANCELLED_ERROR}', false) END AS cancelled,
    TRY_CAST(CASE WHEN leaf AND role = '{Role.WORKER}' THEN a[1] END AS INTEGER) AS idx,
    CASE WHEN root THEN TRY_CAST(a[4] AS DOUBLE) END AS rf,
    CASE WHEN root THEN TRY_CAST(a[5] AS DOUBLE) END AS rp,
    -- each plan answer parsed once into its elements' fields (and again, element by
    -- element, only when some element has none of them): usable as parse_plan has it (a
    -- JSON array of objects), and per sub-task its estimate and model
    usable,
    CASE WHEN usable THEN NOT coalesce(list_bool_and(list_transform(
            fields, lambda f, k: {_ELEM_SIMPLE})), true)
        ELSE coalesce(plan_json, '') <> '' AND NOT json_valid(plan_json) END AS weird,
    -- the estimate's JSON text cast as text (a cast of the JSON value parses it again; an
    -- estimate that is not a JSON number makes the plan weird, decided in Python); read
    -- only where usable (a plan that is not has them too, never read)
    list_transform(fields, lambda f: TRY_CAST(f.estimated_cost_usd::VARCHAR AS DOUBLE)) AS ests,
    list_transform(fields, lambda f: coalesce(
        substr(f.model::VARCHAR, 2, length(f.model::VARCHAR) - 2), '')) AS models
FROM (
    -- an element with one of the fields read is a JSON object (json_transform reads a
    -- number, string, array or null element as no fields): the elements' kinds are read
    -- (a second parse) only for a plan with an element without them
    SELECT *, is_array AND CASE WHEN coalesce(list_bool_and(list_transform(fields,
            lambda f: f.index IS NOT NULL OR f.estimated_cost_usd IS NOT NULL
                OR f.model IS NOT NULL OR f.max_output_tokens IS NOT NULL)), true) THEN true
        ELSE coalesce(list_bool_and(list_transform(json_transform(plan_json, '["JSON"]'),
            lambda e: starts_with(e::VARCHAR, '{{'))), true) END AS usable
    FROM (
        -- is_array: a ClickHouse array is never NULL
        SELECT *, CASE WHEN is_array THEN json_transform(plan_json, {_PLAN_SCHEMA}) END AS fields
        FROM (
            SELECT *, coalesce(coalesce(plan_json, '') <> '' AND json_valid(plan_json)
                AND starts_with(ltrim(plan_json, {_JSON_SPACE}), '['), false) AS is_array
            FROM (
                SELECT *, CASE WHEN leaf AND role = '{Role.PLAN}' THEN a[3] END AS plan_json
                FROM (
                    SELECT {{chunk}}k.rk, sp.span_id, sp.role,
                        sp.is_leaf_call AS leaf, sp.parent_span_id IS NULL AS root,
                        coalesce(sp.request_model, sp.response_model) AS model,
                        sp.start_time_unix_nano AS start_ns,
                        sp.end_time_unix_nano AS end_ns, sp.input_tokens,
                        sp.output_tokens, sp.cost_usd, sp.status_code <> 'error' AS ok,
                        sp.price_input_usd_per_token AS price_in,
                        -- one parse of the attributes, of the spans that need it
                        CASE WHEN (sp.is_leaf_call AND sp.role IN ('{Role.WORKER}',
                            '{Role.PLAN}')) OR sp.parent_span_id IS NULL
                            THEN {attrs_sql(_STAGE_KEYS, "sp")} END AS a
                    FROM spans sp JOIN ({{keys}}) k ON k.run_id = sp.trace_id
                    WHERE (sp.is_leaf_call OR sp.parent_span_id IS NULL) {{span_range}}
                )
            )
        )
    )
)
"""
"""Every LLM call and root span of the runs ``{keys}`` (a query of ``run_id`` and ``rk``,
each run's integer key, which the rows carry instead of the run id) within
``{span_range}``, one row each (``{chunk}``: empty, or ``chunk, `` to carry the keys'
chunk number first, for :func:`stage_chunks`), with the attributes the what-if and the
class estimates read from them parsed once: a worker call's sub-task index and whether it
was cancelled, a root's reserve (``rf``, ``rp``), a plan answer read as
:func:`analytics.recorded.parse_plan` reads it (``usable``, ``weird``: left to Python,
its sub-tasks' estimates and models). :data:`RUN_SQL` reads it as its ``staged`` CTE
(inline, or a chunk's file written beforehand: :func:`stage_chunks`)."""

def _stage_calls(delta: str) -> str:
    """The synthesis and critic calls of the runs of ``delta`` (a query of :data:`RUN_SQL`'s
    ``delta`` rows), each with the answer tokens its input changes by (``tokens``)."""
    return f"""
    SELECT x.variant, c.rk, c.cost_usd, x.price, x.ceiling, x.answered, c.start_ns,
        c.span_id,
        CASE WHEN c.role <> '{Role.SYNTHESIS}' OR c.input_tokens = 0 THEN 0
             WHEN c.input_tokens IS NULL OR x.delta >= 0 THEN x.delta
             ELSE greatest(x.delta, -c.input_tokens) END AS tokens
    FROM calls c JOIN {delta} x USING (rk)
    WHERE c.role IN ('{Role.SYNTHESIS}', '{Role.CRITIC}')"""


RUN_SQL = f"""
WITH scope_runs AS (
    SELECT l.variant, r.run_id, r.task_class, r.started_at, r.status, r.breach, r.cost_usd,
        r.workers_proposed, r.workers_dispatched,
        l.cap, l.ceiling, l.policy, l.limits, l.redo_usd AS redo_est,
        l.rec_limits_cap{{run_key}}
    FROM {{runs}} r JOIN {{lim}} l ON l.task_class = r.task_class
        AND l.rec_cap IS NOT DISTINCT FROM r.max_workers
        AND l.rec_ceiling IS NOT DISTINCT FROM r.ceiling_usd
        AND l.rec_policy IS NOT DISTINCT FROM r.policy
    {{where}}
),
-- every run's key in this query: a dense integer (rk) the joins and groups below use, not
-- the 32-character run id (issue 11: a fifth less CPU, and no spill under the bound)
keys AS ({{keys}}),
scope AS ({{scope}}),
staged AS {{materialized}} ({{staged}}),
calls AS (
    SELECT rk, span_id, role, start_ns, end_ns, input_tokens, output_tokens, cost_usd, ok,
        price_in, cancelled, idx
    FROM staged WHERE leaf
),
per_run AS (
    -- per run in one group (one read of the chunk's rows, not four): its reserve (its
    -- first root span's), every call's cost, its planner calls in start order (position,
    -- cost, usable: a list sorted after the group, not an ordered aggregate, which sorted
    -- every group's rows at a quarter of this query's time, issue 11), its first usable
    -- plan and its first synthesis call's input price
    SELECT rk,
        arg_min({{'fixed': rf, 'per': rp}}, pos) FILTER (WHERE root) AS reserve,
        sum(coalesce(cost_usd, 0)) FILTER (WHERE leaf) AS all_cost,
        bool_or(cost_usd < 0) FILTER (WHERE leaf) AS negative,
        -- named apart from `decided`'s columns (ClickHouse's USING joins below)
        count(*) FILTER (WHERE plan) AS plans, bool_or(weird) FILTER (WHERE plan) AS plan_weird,
        count(*) FILTER (WHERE plan AND usable) AS usable_plans,
        list_sort(list({{'p': pos, 'c': cost_usd, 'u': usable}}) FILTER (WHERE plan)) AS l,
        arg_min({{'e': ests, 'm': models}}, pos) FILTER (WHERE plan AND usable) AS first,
        arg_min(price_in, pos) FILTER (WHERE leaf AND role = '{Role.SYNTHESIS}'
            AND price_in IS NOT NULL) AS price
    FROM (
        SELECT rk, role, leaf, root, leaf AND role = '{Role.PLAN}' AS plan, cost_usd, usable,
            weird, ests, models, rf, rp, price_in, {{'s': start_ns, 'i': span_id}} AS pos
        FROM staged
    )
    GROUP BY rk
),
first_plan AS (
    -- every run of per_run, its plan columns NULL without a planner call (a run with one is
    -- replayable), and what the later steps read of per_run (one join of it, not three)
    SELECT rk, plans > 0 AS has_plan, CASE WHEN plans > 0 THEN usable_plans END AS n_usable,
        plan_weird AS weird, first.e AS ests, first.m AS models, p1,
        list_sum(list_transform(l[1:p1], lambda x: coalesce(x.c, 0))) AS spent1,
        l[p1].c AS first_cost, len(l) - p1 AS n_later,
        CASE WHEN plans > 0 THEN coalesce(list_sum(list_transform(l[p1 + 1:],
            lambda x: coalesce(x.c, 0))), 0) END AS later_cost,
        list_bool_or(list_transform(l[p1 + 1:], lambda x: x.c IS NULL)) AS later_unpriced,
        reserve, all_cost AS run_all_cost, negative AS run_negative, price AS run_price
    FROM (
        SELECT *, list_position(list_transform(l, lambda x: x.u), true) AS p1
        FROM per_run
    )
),
checked AS (
    -- rk named explicitly: ClickHouse names it s.rk in s.* after the USING joins
    SELECT s.* EXCLUDE (rk), s.rk AS rk,
        f.n_usable, f.weird, f.spent1, f.ests, f.models, len(f.ests) AS n1,
        coalesce(f.has_plan, false) AS replayable, f.reserve.fixed AS rf, f.reserve.per AS rp,
        f.run_all_cost, f.run_negative, f.run_price,
        coalesce(s.cap IS NOT NULL AND len(f.ests) > s.cap, false) AS cap_breach,
        -- a replan request the run did not make under this cap: the second plan is the
        -- first cap sub-tasks of the first, at the cost of the run's own replan calls
        -- (any unpriced: unknown), else of its first planner call
        coalesce(s.cap IS NOT NULL AND len(f.ests) > s.cap, false) AND s.policy = 'replan'
            AND NOT (f.n_later > 0 AND s.rec_limits_cap IS NOT DISTINCT FROM s.cap)
            AS replan_est,
        coalesce(f.n_later > 0 AND s.rec_limits_cap IS NOT DISTINCT FROM s.cap, false)
            AS same_request,
        CASE WHEN f.n_later > 0 THEN CASE WHEN f.later_unpriced THEN NULL ELSE f.later_cost END
             ELSE f.first_cost END AS replan_cost
    FROM scope s LEFT JOIN first_plan f USING (rk)
),
kept AS (
    SELECT *,
        CASE WHEN cap_breach AND policy = 'truncate' OR replan_est THEN cap ELSE n1 END AS keep,
        CASE WHEN replan_est THEN cap ELSE n1 END AS n_checked,
        spent1 + CASE WHEN replan_est THEN coalesce(replan_cost, 0) ELSE 0 END AS spent
    FROM checked
),
verdict AS (
    SELECT *,
        CASE WHEN NOT cap_breach OR policy = 'truncate' OR replan_est THEN spent + coalesce(
            list_sum(list_transform(ests[1:keep], lambda x: coalesce(x, 0))), 0)
            + rf + rp * keep
        END AS estimate
    FROM kept
),
decided AS (
    SELECT *,
        CASE WHEN cap_breach AND policy = 'replan' AND NOT replan_est THEN 'replan'
             WHEN cap_breach AND policy = 'reject' THEN 'reject'
             WHEN replan_est AND ceiling IS NOT NULL AND spent1 > ceiling THEN 'plan_failed'
             WHEN ceiling IS NOT NULL AND estimate > ceiling THEN 'reject'
             ELSE 'dispatch' END AS action
    FROM verdict
),
elem AS (
    -- the select-list unnest (not a lateral join) reads the same in DuckDB and ClickHouse
    SELECT variant, rk, task_class, n_usable, ceiling, k AS i,
        ests[k + 1] AS est, models[k + 1] AS model,
        -- the run's key where its worker calls are read per sub-task (one usable plan):
        -- an equi-join key, not a condition on one side of an outer join
        CASE WHEN n_usable = 1 THEN rk END AS wrk
    FROM (
        SELECT variant, rk, task_class, n_usable, ceiling, ests, models,
            unnest(range(coalesce(keep, 0))) AS k
        FROM decided
        WHERE replayable AND n_usable > 0 AND action = 'dispatch'
    )
),
widx AS (
    SELECT rk, idx,
        sum(coalesce(cost_usd, 0)) FILTER (WHERE NOT cancelled) AS rec_cost,
        bool_or(ok AND NOT cancelled) AS answered, bool_or(NOT ok AND NOT cancelled) AS attempted,
        bool_or(cancelled) AS has_cancelled,
        arg_max({{'t': output_tokens}}, {{'s': start_ns, 'i': span_id}})
            FILTER (WHERE ok AND NOT cancelled) AS last_answer
    FROM calls WHERE role = '{Role.WORKER}' AND idx IS NOT NULL
    GROUP BY ALL
),
elem_out AS (
    SELECT e.variant, e.rk, e.ceiling, e.i, e.n_usable, w.rec_cost, w.answered AS rec_answered,
        w.last_answer,
        we.output_tokens AS est_tokens, we.task_class IS NOT NULL AS has_est,
        (w.rk IS NULL OR w.has_cancelled) AND NOT coalesce(w.answered, false) AS est_charge,
        CASE WHEN we.cost_usd IS NOT NULL THEN we.cost_usd ELSE e.est END AS est_cost
    FROM elem e
    LEFT JOIN widx w ON w.rk = e.wrk AND w.idx = e.i
    LEFT JOIN {{workers}} we ON we.task_class = e.task_class AND we.model = e.model
),
work AS (
    SELECT variant, rk,
        sum(coalesce(rec_cost, 0) + CASE WHEN est_charge THEN coalesce(est_cost, 0) ELSE 0 END)
            AS worker_cost,
        sum(CASE WHEN est_charge THEN coalesce(est_cost, 0) ELSE 0 END) AS worker_est,
        bool_or(est_charge) AS worker_est_any,
        bool_or(est_charge AND est_cost < 0) AS negative,
        count(*) FILTER (WHERE coalesce(rec_answered, false) OR est_charge) AS answered,
        sum(CASE WHEN NOT (coalesce(rec_answered, false) OR est_charge) THEN 0
                 WHEN last_answer IS NOT NULL THEN coalesce(last_answer.t, 0)
                 WHEN has_est THEN coalesce(est_tokens, 0) ELSE 0 END) AS ans_tokens
    FROM elem_out GROUP BY variant, rk
),
rec_answers AS (
    SELECT rk, sum(coalesce(last_answer.t, 0)) AS tokens
    FROM widx WHERE last_answer IS NOT NULL GROUP BY rk
),
delta AS (
    SELECT d.variant, d.rk, coalesce(w.ans_tokens, 0) - coalesce(ra.tokens, 0) AS delta,
        coalesce(d.run_price, sy.price_input, 0) AS price, d.ceiling,
        coalesce(w.answered, 0) AS answered, sy.synthesis_usd
    FROM decided d
    LEFT JOIN work w USING (variant, rk) LEFT JOIN rec_answers ra USING (rk)
    LEFT JOIN {{synth}} sy ON sy.task_class = d.task_class
    WHERE d.replayable AND d.n_usable > 0 AND d.action = 'dispatch'
),
stage_calls AS ({_stage_calls("delta")}),
stage AS (
    SELECT variant, rk, count(*) AS n,
        sum(CASE WHEN tokens = 0 THEN coalesce(cost_usd, 0)
                 ELSE coalesce(greatest(0, cost_usd + tokens * price), 0) END) AS cost,
        sum(CASE WHEN tokens = 0 THEN 0
                 ELSE coalesce(greatest(0, cost_usd + tokens * price), 0) END) AS est,
        bool_or(tokens <> 0) AS est_any
    FROM stage_calls GROUP BY variant, rk
),
-- The runs whose spend can reach the ceiling: every charge below counted (the worker
-- calls and estimates of `work`, the synthesis and critic charges of `stage` or the
-- estimated synthesis), within a millionth of it or over it. Every other run's running
-- sum stays below the ceiling and its 1e-9 band at every charge (a negative charge sends
-- the run to Python): its charges need no ordering (a third of this query's time at 1M
-- runs, issue 11).
risky AS (
    SELECT d.variant, d.rk, d.ceiling, d.spent
    FROM decided d
    LEFT JOIN work w ON w.variant = d.variant AND w.rk = d.rk
    LEFT JOIN stage st ON st.variant = d.variant AND st.rk = d.rk
    LEFT JOIN {{synth}} sy ON sy.task_class = d.task_class
    WHERE d.ceiling IS NOT NULL AND d.replayable AND d.n_usable > 0 AND d.action = 'dispatch'
        AND NOT coalesce(d.spent + coalesce(w.worker_cost, 0)
            + CASE WHEN coalesce(w.answered, 0) = 0 THEN 0 WHEN st.n > 0 THEN st.cost
                   ELSE greatest(coalesce(sy.synthesis_usd, 0), 0) END
            < d.ceiling - 1e-6 * abs(d.ceiling), false)
),
-- Under a ceiling, every charge in the guard's order: recorded worker calls as they ended
-- (p 1; a call the record shows cancelled is charged only once spend has crossed),
-- estimated sub-tasks in plan order (p 2), then synthesis and critic calls, or the
-- estimated synthesis (p 3). Spend crossing the ceiling ends the run there (cancelled).
events AS (
    SELECT e.variant, e.rk,
        {{'p': 1, 'a': c.end_ns, 'b': e.i, 'c': c.start_ns, 'd': c.span_id}} AS ord,
        coalesce(c.cost_usd, 0) AS c, c.cancelled AS can, false AS est
    FROM elem_out e JOIN risky k ON k.variant = e.variant AND k.rk = e.rk
    JOIN calls c ON e.n_usable = 1 AND c.rk = e.rk
        AND c.role = '{Role.WORKER}' AND c.idx = e.i
    UNION ALL
    SELECT o.variant, o.rk, {{'p': 2, 'a': o.i, 'b': 0, 'c': 0, 'd': ''}},
        coalesce(o.est_cost, 0), false, true
    FROM elem_out o JOIN risky k ON k.variant = o.variant AND k.rk = o.rk
    WHERE o.est_charge
    UNION ALL
    SELECT s.variant, s.rk, {{'p': 3, 'a': s.start_ns, 'b': 0, 'c': 0, 'd': s.span_id}},
        CASE WHEN s.tokens = 0 THEN coalesce(s.cost_usd, 0)
             ELSE coalesce(greatest(0, s.cost_usd + s.tokens * s.price), 0) END, false,
        s.tokens <> 0
    -- the risky runs' synthesis and critic calls read again (not stage_calls' rows kept
    -- for this one reader: 13 MB of a chunk's peak at 1M runs, issue 11)
    FROM ({_stage_calls('''(SELECT x.* FROM delta x
        JOIN risky k ON k.variant = x.variant AND k.rk = x.rk)''')}) s
    WHERE s.answered > 0
    UNION ALL
    SELECT x.variant, x.rk, {{'p': 3, 'a': 0, 'b': 0, 'c': 0, 'd': ''}},
        coalesce(x.synthesis_usd, 0), false, true
    FROM delta x JOIN risky k ON k.variant = x.variant AND k.rk = x.rk
    LEFT JOIN stage st ON st.variant = x.variant AND st.rk = x.rk
    WHERE x.answered > 0 AND st.n IS NULL
),
cum_events AS (
    SELECT ev.*, x.ceiling, x.spent + sum(CASE WHEN ev.can THEN 0 ELSE ev.c END) OVER (
            PARTITION BY ev.variant, ev.rk ORDER BY ev.ord ROWS UNBOUNDED PRECEDING) AS cum
    FROM events ev JOIN risky x USING (variant, rk)
),
crossing AS (
    SELECT variant, rk, min(ord) FILTER (WHERE NOT can AND cum > ceiling) AS cross_ord,
        bool_or(NOT can AND abs(cum - ceiling) <= 1e-9 * ceiling) AS near
    FROM cum_events GROUP BY variant, rk
),
crossed AS (
    SELECT e.variant, e.rk, any_value(k.near) AS near,
        any_value(k.cross_ord) IS NOT NULL AS is_crossed,
        sum(e.c) FILTER (WHERE (NOT e.can AND e.ord <= k.cross_ord)
            OR (e.can AND e.ord > k.cross_ord)) AS charged,
        sum(CASE WHEN e.est THEN e.c ELSE 0 END) FILTER (
            WHERE NOT e.can AND e.ord <= k.cross_ord) AS est,
        bool_or(e.est) FILTER (WHERE NOT e.can AND e.ord <= k.cross_ord) AS est_any
    FROM cum_events e JOIN crossing k USING (variant, rk)
    GROUP BY e.variant, e.rk
),
outcome AS (
    -- d's join keys named explicitly (ClickHouse names them d.* after USING joins)
    SELECT d.* EXCLUDE (variant, rk, task_class), d.variant AS variant,
        d.rk AS rk, d.task_class AS task_class, d.run_all_cost AS all_cost,
        coalesce(d.run_negative, false) OR coalesce(w.negative, false) AS negative,
        coalesce(w.answered, 0) AS answered_n, coalesce(w.worker_cost, 0) AS worker_cost,
        coalesce(w.worker_est, 0) AS worker_est, coalesce(w.worker_est_any, false) AS w_est_any,
        st.n AS stage_n, st.cost AS stage_cost, st.est AS stage_est, st.est_any AS stage_est_any,
        sy.synthesis_usd, coalesce(cr.is_crossed, false) AS is_crossed,
        coalesce(cr.near, false) AS near, cr.charged, cr.est AS cr_est,
        coalesce(cr.est_any, false) AS cr_est_any,
        CASE WHEN d.replan_est THEN coalesce(d.replan_cost, 0) ELSE 0 END AS replan_part,
        CASE WHEN NOT d.replayable THEN coalesce(d.status, 'ok')
             WHEN d.n_usable = 0 THEN coalesce(d.status, 'failed')
             WHEN d.action = 'reject' THEN 'rejected'
             WHEN d.action = 'plan_failed' THEN 'failed'
             WHEN coalesce(cr.is_crossed, false) THEN 'cancelled'
             WHEN coalesce(w.answered, 0) = 0 THEN 'failed'
             WHEN d.status = 'failed' AND st.n > 0 THEN 'failed'
             ELSE 'ok' END AS status_after
    FROM decided d
    LEFT JOIN work w USING (variant, rk) LEFT JOIN stage st USING (variant, rk)
    LEFT JOIN crossed cr USING (variant, rk)
    LEFT JOIN {{synth}} sy ON sy.task_class = d.task_class
),
costed AS (
    SELECT *,
        CASE WHEN NOT replayable THEN cost_usd
             WHEN n_usable = 0 THEN all_cost
             WHEN action = 'plan_failed' THEN spent1
             WHEN action = 'reject' THEN spent
             WHEN is_crossed THEN spent + coalesce(charged, 0)
             WHEN answered_n = 0 THEN spent + worker_cost
             ELSE spent + worker_cost + CASE WHEN stage_n > 0 THEN stage_cost
                                              ELSE coalesce(synthesis_usd, 0) END
        END AS base_cost,
        CASE WHEN NOT replayable OR n_usable = 0 OR action = 'plan_failed' THEN 0
             WHEN action = 'reject' THEN replan_part
             WHEN is_crossed THEN replan_part + coalesce(cr_est, 0)
             WHEN answered_n = 0 THEN replan_part + worker_est
             ELSE replan_part + worker_est + CASE WHEN stage_n > 0 THEN stage_est
                                                  ELSE coalesce(synthesis_usd, 0) END
        END AS base_est,
        CASE WHEN NOT replayable OR n_usable = 0 OR action = 'plan_failed' THEN false
             WHEN action = 'reject' THEN replan_est
             WHEN is_crossed THEN replan_est OR cr_est_any
             WHEN answered_n = 0 THEN replan_est OR w_est_any
             ELSE replan_est OR w_est_any OR coalesce(stage_n = 0 OR stage_est_any, true)
        END AS base_est_any,
        replayable AND n_usable > 0 AND status = 'ok' AND status_after <> 'ok' AS redo_due
    FROM outcome
),
final AS (
    SELECT *,
        base_cost + CASE WHEN redo_due THEN coalesce(redo_est, 0) ELSE 0 END AS cf_cost,
        CASE WHEN NOT replayable THEN coalesce(workers_dispatched, 0)
             WHEN n_usable = 0 OR action IN ('reject', 'plan_failed') THEN 0
             ELSE keep END AS dispatched_after
    FROM costed
)
SELECT variant, run_id, task_class, started_at, limits, status AS status_before, status_after,
    CASE WHEN NOT replayable THEN CASE WHEN breach IN ('cap', 'ceiling') THEN breach END
         WHEN n_usable = 0 THEN NULL
         WHEN action = 'reject' THEN
             CASE WHEN cap_breach AND NOT replan_est THEN 'cap' ELSE 'ceiling' END
         WHEN status_after = 'cancelled' THEN 'ceiling'
         WHEN status_after = 'failed' THEN NULL
         WHEN keep < n1 THEN 'cap' END AS breach_after,
    CASE WHEN NOT replayable THEN workers_proposed
         WHEN n_usable > 0 AND action <> 'plan_failed' THEN n_checked END AS proposed,
    workers_dispatched AS dispatched_before, dispatched_after,
    cost_usd AS cost_before_usd,
    CASE WHEN NOT affected THEN cost_usd WHEN redo_due AND redo_est IS NULL THEN NULL
         ELSE cf_cost END AS cost_after_usd,
    CASE WHEN NOT affected THEN 0.0 WHEN redo_due AND redo_est IS NULL THEN NULL
         ELSE cost_usd - cf_cost END AS saving_usd,
    base_est + CASE WHEN redo_due THEN coalesce(redo_est, 0) ELSE 0 END AS estimated_usd,
    CASE WHEN redo_due THEN redo_est ELSE 0.0 END AS redo_usd,
    status_after IN ('rejected', 'cancelled') OR redo_due AS not_completed,
    replayable, affected,
    replayable AND n_usable > 0 AND action = 'dispatch' AND keep < n_checked AS _truncated,
    base_est_any OR redo_due AS _estimated,
    coalesce(status NOT IN ({_STATUSES}), true) OR negative
        OR (replayable AND (weird OR (n_usable > 0 AND (
            rf IS NULL OR rp IS NULL OR action = 'replan'
            OR (ceiling IS NOT NULL AND estimate IS NOT NULL
                AND abs(estimate - ceiling) <= 1e-9 * ceiling)
            OR (replan_est AND ceiling IS NOT NULL AND abs(spent1 - ceiling) <= 1e-9 * ceiling)
            OR near))))
        OR abs(abs(cf_cost - cost_usd) - {USD_RESOLUTION!r}) < {USD_RESOLUTION / 10!r} AS py
FROM (SELECT *, status_after IS DISTINCT FROM status
        OR dispatched_after <> coalesce(workers_dispatched, 0)
        OR abs(cf_cost - cost_usd) > {USD_RESOLUTION!r} AS affected FROM final)
"""
"""Every :data:`analytics.whatif.RUN_COLUMNS` of each run in scope, plus ``_truncated``,
``_estimated`` and ``py`` (the run is left to the Python counterfactual), once per
``variant`` (a set of overrides: one pass over the calls serves several what-ifs).
Placeholders: ``{lim}`` (limits per variant and recorded limits), ``{workers}``,
``{synth}`` (class estimates), ``{runs}`` (the ``runs`` table, or a staged chunk's runs:
:data:`STAGE_RUN_COLUMNS`), ``{where}`` (conditions on ``runs r``), ``{span_range}``
(the chunk's trace-id range on ``spans sp``), ``{staged}`` (the calls: :data:`STAGE_SQL`
inline, or a chunk's staged file), ``{materialized}`` (``MATERIALIZED`` when inline: the
attributes parsed once; ``NOT MATERIALIZED`` for a file, each reader reading its columns),
``{run_key}`` and ``{scope}`` (a staged chunk's runs carry their key ``rk``; inline, the runs
are joined to ``keys``).

Memory: DuckDB keeps a CTE's rows while a second reader needs them, so each per-run table is
joined once where it can be (``per_run`` through ``first_plan``) and the charges of the
risky runs read their calls again rather than keep every run's: at 1M runs a chunk's peak
buffer memory went from 138 MB to 105 MB, and two chunks side by side under the what-if's
256 MB bound (:data:`analytics.bulk_read.WHATIF_MEMORY_LIMIT`) took ~17% less CPU (issue 11)."""


ALIKE_SQL = f"""
WITH flags AS (
    -- per run: a planner call (the run is replayable) and a call costing less than nothing
    -- (its running spend may then peak above its total): typed columns only, no JSON
    SELECT trace_id AS run_id, bool_or(role = '{Role.PLAN}') AS has_plan,
        bool_or(cost_usd < 0) AS negative
    FROM spans WHERE is_leaf_call AND (role = '{Role.PLAN}' OR cost_usd < 0)
    GROUP BY trace_id
),
pairs AS (
    SELECT l.variant, l.lrow, r.run_id, r.started_at, r.status, r.workers_proposed,
        r.workers_dispatched, r.cost_usd,
        coalesce(f.has_plan AND r.status IN ({_STATUSES})
            AND r.workers_proposed IS NOT NULL
            AND (l.alike_cap IS NULL OR r.workers_proposed <= l.alike_cap)
            AND (l.alike_same_ceiling OR (r.estimate_usd < l.alike_below_usd
                AND r.cost_usd < l.alike_below_usd AND NOT coalesce(f.negative, false))),
            false) AS alike
    FROM runs r JOIN {{lim}} l ON l.task_class = r.task_class
        AND l.rec_cap IS NOT DISTINCT FROM r.max_workers
        AND l.rec_ceiling IS NOT DISTINCT FROM r.ceiling_usd
        AND l.rec_policy IS NOT DISTINCT FROM r.policy
    LEFT JOIN flags f ON f.run_id = r.run_id
    {{where}}
)
SELECT variant, alike, lrow, run_id, started_at, status, workers_proposed,
    workers_dispatched, cost_usd
FROM pairs
"""
"""Every (variant, run) pair of the runs of ``{where}`` (on ``runs r``) that ``{lim}``
holds (``lrow``: the row of ``{lim}`` it matched), ``alike`` when the variant's limits
decide the run as its recorded ones did (:class:`orchestrator.dispatch.AlikeBounds`, whose
bounds ``{lim}`` carries per recorded limits: ``alike_cap``, ``alike_same_ceiling``,
``alike_below_usd``; from the ``runs`` columns the run recorded, and a run with a planner
call, a known status and no call costing less than nothing): its record then stands
(:func:`analytics.whatif_rows.record_rows` makes the rows; :func:`analytics.whatif_rows.
decided_alike` is the Python twin). No span's attributes are read, and only the columns
the record's row needs (the class and the limits' text by ``lrow``): at 1M runs the
what-if reads the spans of the runs it must replay only (issue 11)."""


def _fill(sql: str, names: dict[str, str]) -> str:
    for key, name in names.items():
        sql = sql.replace(f"{{{key}}}", name)
    return sql


STAGE_RUN_COLUMNS = (
    "run_id", "task_class", "started_at", "status", "breach", "cost_usd", "workers_proposed",
    "workers_dispatched", "max_workers", "ceiling_usd", "policy",
)
"""The ``runs`` columns a staged chunk keeps per run: what :data:`RUN_SQL` reads of
``runs r`` and its conditions (the window's ``started_at``, the class), so a chunk's
replay reads its own file, not the ``runs`` table again (a run-id range of a table not
stored in id order skips nothing)."""

_INLINE_KEYS = "SELECT run_id, row_number() OVER (ORDER BY run_id) AS rk FROM (" \
    "SELECT DISTINCT run_id FROM scope_runs)"
"""The runs' keys when :data:`STAGE_SQL` runs inline: numbered in the query itself."""

_INLINE_SCOPE = "SELECT s.*, k.rk AS rk FROM scope_runs s LEFT JOIN keys k ON k.run_id = s.run_id"
"""The runs in scope with their keys when :data:`STAGE_SQL` runs inline (a staged chunk's
runs carry theirs)."""


def sql_run_rows(
    con: duckdb.DuckDBPyConnection,
    names: dict[str, str],
    conds: list[str],
    params: dict[str, Any],
    bounds: Bounds,
    staged: ChunkFiles | None = None,
) -> pl.DataFrame:
    """:data:`RUN_SQL` over the runs of ``conds`` (on ``runs r``) within the run-id range
    ``bounds``; ``names`` maps ``lim``, ``workers``, ``synth`` to registered tables.
    ``staged``: the chunk's runs and :data:`STAGE_SQL` rows already written
    (:func:`stage_chunks`' files; ``bounds`` then ``(None, None)``: the chunk is its
    files), staged for every run of the chunk when ``conds`` is empty, else for a scope
    holding those of ``conds``; None reads them from the ``runs`` and ``spans`` tables in
    the same query."""
    params = dict(params)
    extra, span_range = chunks.range_filters(bounds, "r.run_id", "sp.trace_id", params)
    if staged is None:
        # the spans' attributes parsed once, for every reader of `staged`
        source, materialized = STAGE_SQL.replace("{keys}", "SELECT run_id, rk FROM keys"), True
        source = source.replace("{chunk}", "")
        keys, runs, run_key, scope = _INLINE_KEYS, "runs", "", _INLINE_SCOPE
    else:
        # each reader of `staged` reads the columns it needs from the file (materialising
        # every column of the chunk's calls cost more CPU and memory, issue 11); without
        # conditions the file holds the runs of the scope, none to filter out
        filters = ["rk IN (SELECT rk FROM scope)"] if conds else []
        keys, runs = f"SELECT run_id, rk FROM {staged.keys}", staged.keys
        # the chunk's runs carry their keys: no join of the run ids to read them again
        run_key, scope = ", r.rk", "SELECT * FROM scope_runs"
        source = f"SELECT * FROM {staged.rows} {where(filters)}"
        materialized = False
    conds = [*conds, *extra]
    sql = RUN_SQL.replace("{staged}", source).replace("{keys}", keys).replace("{runs}", runs)
    sql = sql.replace("{run_key}", run_key).replace("{scope}", scope)
    sql = sql.replace("{materialized}", "MATERIALIZED" if materialized else "NOT MATERIALIZED")
    sql = sql.replace("{where}", where(conds)).replace("{span_range}", span_range)
    return frame(con, _fill(sql, names), params)


ALIKE_BATCH_ROWS = 131_072
"""(variant, run) pairs :func:`alike_pairs` hands over at a time: memory holds a batch of
pairs, not every pair of every variant (3M at 1M runs in a report: ~210 MB at once)."""


def alike_pairs(
    con: duckdb.DuckDBPyConnection, names: dict[str, str], conds: list[str],
    params: dict[str, Any],
) -> Iterator[pl.DataFrame]:
    """:data:`ALIKE_SQL` over the runs of ``conds`` (on ``runs r``): every (variant, run)
    pair of the limits table ``names["lim"]``, ``alike`` or not, with what the record's
    row needs, in batches of about :data:`ALIKE_BATCH_ROWS` pairs (DuckDB streams them; a
    ClickHouse store's result comes whole and is sliced)."""
    sql = _fill(ALIKE_SQL.replace("{where}", where(conds)), names)
    if not isinstance(con, duckdb.DuckDBPyConnection):
        yield from frame(con, sql, params).iter_slices(ALIKE_BATCH_ROWS)
        return
    reader = con.sql(sql, params=params or None).to_arrow_reader(ALIKE_BATCH_ROWS)
    try:
        for batch in reader:
            yield pl.DataFrame(batch)
    finally:
        reader.close()  # the reader holds the connection until closed


def stage_chunks(
    con: duckdb.DuckDBPyConnection, conds: list[str], params: dict[str, Any], chunks_n: int,
    directory: Path,
) -> list[ChunkFiles]:
    """Split the runs of ``conds`` (on ``runs r``) into ``chunks_n`` run-id chunks and
    write each chunk's runs (:data:`STAGE_RUN_COLUMNS`, numbered in run-id order) and
    their :data:`STAGE_SQL` rows to Parquet files under ``directory``, in ONE read of the
    spans (:func:`analytics.chunks.partition_by_chunk`: however the store orders its
    spans; DuckDB only; the files are the caller's to delete). Returns, per chunk in
    run-id order, the SQL reading them back (``keys``: the chunk's runs, their
    :data:`STAGE_RUN_COLUMNS` and ``rk``; ``rows``: their :data:`STAGE_SQL` rows, keyed by
    ``rk``), for :func:`sql_run_rows`.

    Disk: ~250 bytes a staged span (LZ4-compressed Parquet); the what-if stages the runs it
    replays only (at 1M demo runs under ``--max-workers 8``, 58,000 runs, 1.2M spans).

    Raises:
        duckdb.Error: a read or write failed."""
    scope = f"SELECT {', '.join(STAGE_RUN_COLUMNS)} FROM runs r {where(conds)}"
    sql = STAGE_SQL.replace("{keys}", "SELECT run_id, rk, chunk FROM ({keys})")
    sql = sql.replace("{span_range}", "").replace("{chunk}", "chunk, ")
    return chunks.partition_by_chunk(con, scope, params, chunks_n, sql, directory)
