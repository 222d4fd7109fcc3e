"""Write-side alerting: every new incident and every threshold rule that fires becomes an
alert, queued for each configured webhook, in the same transaction as the incident.

:func:`telemetry.write_pipeline.write_spans` calls :func:`enqueue_alerts` right after the
incident rules, inside its transaction, and starts the delivery once it has committed
(:func:`telemetry.write_pipeline.deliver_soon`). So an
incident recorded by the orchestrator, the guard or the OTLP receiver (all three write
through ``write_spans``) gets its alert and outbox rows atomically: the outbox pattern.
Nothing here does network I/O; :mod:`telemetry.alerts` delivers in a background thread,
outside any database lock.

Alerts (table ``alerts``, one row per alert ever raised, id unique):

- ``incident``: every incident the write recorded
  (:data:`telemetry.incident_rules.NEW_INCIDENTS`; ``alert_id`` = ``incident_id``), in one
  set-based insert. An incident and its alert are written in one transaction, so no
  incident is left without one (but those of a store that predates alerts: see below).
- ``rule`` (``alert_id`` = ``rule:<name>:<key>``, so each fires at most once per key):

  The write's runs are those it materialised (:data:`telemetry.materialise.TOUCHED_RUNS`).

  - ``cliff_ratio``: for each task class the write touched, the runs started in the
    ``settings.alert_window_h()`` hours up to the class's newest touched run; at least
    :data:`telemetry.incident_rules.RUNAWAY_MIN_RUNS` of them, P50 above zero and
    ``P99 / P50 > settings.alert_cliff_ratio()`` (percentiles ``quantile_cont``, as
    numpy's default). Key: class and the UTC day of the window's end.
  - ``daily_spend``: the runs started on a UTC day the write touched cost more than
    ``settings.alert_daily_spend_usd()`` in total. Key: the day.
  - ``breaches_per_hour``: at least ``settings.alert_breaches_per_hour()`` runs started
    in a UTC hour the write touched breached the cap or the ceiling. Key: the hour.

  Time is the runs' own (``started_at``), not the wall clock, so backfilled and
  simulated data alert as live data would have.

Deliveries (table ``alert_deliveries``): one ``pending`` row per (new alert, webhook in
``settings.webhook_urls()`` at the time of the write). On a store created before alerts
existed, the first write marks the existing incidents as
already alerted (``write_id`` ``baseline``) so that upgrading never floods a channel
(while ``alerts`` is empty, incidents the write did not record are baseline).
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from datetime import UTC, datetime
from urllib.parse import urlsplit

import duckdb

from cliffwatch import settings
from cliffwatch.telemetry.incident_rules import NEW_INCIDENTS, RUNAWAY_MIN_RUNS
from cliffwatch.telemetry.materialise import TOUCHED_RUNS

logger = logging.getLogger("cliffwatch.alerts")

BASELINE_WRITE_ID = "baseline"
"""``write_id`` of the alerts recorded for incidents that predate the alert tables."""


def webhook_id(url: str) -> str:
    """A stable id of a webhook URL (16 hex chars of its SHA-256): stored instead of it."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def redact(url: str) -> str:
    """A webhook URL safe to show: scheme and host, the path hidden
    (``https://hooks.slack.com/…``); a Slack webhook's path is its secret."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/…"


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)




_ISO = "'%Y-%m-%dT%H:%M:%S.%fZ'"


def _text(kind: str, what: str, task_class: str, run_id: str) -> str:
    """SQL of the Slack-compatible one-line ``text`` of an alert."""
    return (
        f"'[cliffwatch] ' || {kind} || coalesce(' in ' || {task_class}, '') || ': ' || {what}"
        f" || coalesce(' (run ' || left({run_id}, 12) || ')', '')"
    )


_BEFORE_ALERTS = (
    f"i.incident_id NOT IN (SELECT incident_id FROM {NEW_INCIDENTS}) "
    "AND NOT EXISTS (SELECT 1 FROM alerts AS a WHERE a.alert_id = i.incident_id)"
)


_NEW_OPEN = f"(SELECT *, 'open' AS status FROM {NEW_INCIDENTS})"
"""The incidents the write recorded, as rows of ``incidents`` (a new incident is open)."""


def incident_alerts_sql(write_id_param: str = "$write_id", where: str = "TRUE",
                        source: str = _NEW_OPEN) -> str:
    """``INSERT`` of an alert for every incident the write recorded (``source``: the rows of
    ``incidents`` read, by default those of :data:`NEW_INCIDENTS`; ``where``: which of them,
    ``i``)."""
    return _insert(incident_alerts_select(write_id_param, where, source))


def incident_alerts_select(write_id_param: str = "$write_id", where: str = "TRUE",
                           source: str = _NEW_OPEN) -> str:
    """The ``SELECT`` of :func:`incident_alerts_sql`: rows of ``alerts``."""
    text = _text("i.kind", "i.detail", "i.task_class", "i.run_id")
    return f"""
SELECT incident_id, 'incident', kind, task_class, run_id, detected_at, $now, {write_id_param},
       text,
       json_object(
           'text', text,
           'alert', json_object('alert_id', incident_id, 'source', 'incident', 'kind', kind,
                                'task_class', task_class, 'run_id', run_id,
                                'raised_at', strftime(detected_at, {_ISO})),
           'incident', json_object('incident_id', incident_id, 'kind', kind,
                                   'run_id', run_id, 'task_class', task_class,
                                   'detected_at', strftime(detected_at, {_ISO}),
                                   'detail', detail, 'data', data, 'status', status))
FROM (
    SELECT i.*, {text} AS text
    FROM {source} AS i
    WHERE {where}
)
"""


_ALERT_COLUMNS = (
    "alert_id, source, kind, task_class, run_id, raised_at, created_at, write_id, text, payload"
)


def _insert(*selects: str) -> str:
    """One ``INSERT`` into ``alerts`` of the rows of every ``SELECT`` (an id already there
    is left as it is)."""
    rows = "\nUNION ALL\n".join(f"({select})" for select in selects)
    return f"INSERT INTO alerts ({_ALERT_COLUMNS})\n{rows}\nON CONFLICT DO NOTHING\n"


def _rule_insert(select_sql: str) -> str:
    return _insert(_rule_select(select_sql))


def _rule_select(select_sql: str) -> str:
    # `select_sql` yields: alert_id, kind, task_class, raised_at, what, rule (JSON object)
    text = _text("kind", "what", "task_class", "NULL")
    return f"""
SELECT alert_id, 'rule', kind, task_class, NULL, raised_at, $now, $write_id, text,
       json_object(
           'text', text,
           'alert', json_object('alert_id', alert_id, 'source', 'rule', 'kind', kind,
                                'task_class', task_class, 'run_id', NULL,
                                'raised_at', strftime(raised_at, {_ISO})),
           'rule', rule)
FROM (SELECT *, {text} AS text FROM ({select_sql}))
"""


def cliff_ratio_sql(*, insert: bool = True) -> str:
    """The ``cliff_ratio`` rule (parameters ``$ratio``, ``$window_us``, ``$min_runs``); its
    ``SELECT`` only when not ``insert``."""
    return (_rule_insert if insert else _rule_select)(f"""
WITH ends AS (
    SELECT task_class, max(started_at) AS window_end
    FROM {TOUCHED_RUNS} GROUP BY task_class
),
stats AS (
    SELECT e.task_class, e.window_end, count(*) AS runs,
           quantile_cont(r.cost_usd, [0.5, 0.99]) AS q
    FROM ends AS e JOIN runs AS r ON r.task_class = e.task_class
        AND r.started_at > e.window_end - to_microseconds($window_us)
        AND r.started_at <= e.window_end
    GROUP BY e.task_class, e.window_end
)
SELECT 'rule:cliff_ratio:' || task_class || ':' || strftime(window_end, '%Y-%m-%d') AS alert_id,
       'cliff_ratio' AS kind, task_class, window_end AS raised_at,
       format('P99/P50 is {{}}x over the last {{}} h ({{}} runs, P50 {{}}, P99 {{}}; '
              || 'alert above {{}}x)', printf('%.1f', q[2] / q[1]),
              printf('%g', $window_us / 3.6e9), runs, '$' || printf('%.4f', q[1]),
              '$' || printf('%.4f', q[2]), printf('%g', $ratio)) AS what,
       json_object('name', 'cliff_ratio', 'task_class', task_class,
                   'value', q[2] / q[1], 'threshold', $ratio, 'runs', runs,
                   'p50_usd', q[1], 'p99_usd', q[2],
                   'window_start', strftime(window_end - to_microseconds($window_us), {_ISO}),
                   'window_end', strftime(window_end, {_ISO})) AS rule
FROM stats
WHERE runs >= $min_runs AND q[1] > 0 AND q[2] / q[1] > $ratio
""")


def daily_spend_sql(*, insert: bool = True) -> str:
    """The ``daily_spend`` rule (parameter ``$limit_usd``); its ``SELECT`` only when
    not ``insert``."""
    return (_rule_insert if insert else _rule_select)(f"""
WITH days AS (
    SELECT DISTINCT date_trunc('day', started_at) AS day FROM {TOUCHED_RUNS}
),
spend AS (
    SELECT d.day, sum(r.cost_usd) AS usd, count(*) AS runs
    FROM days AS d JOIN runs AS r
        ON r.started_at >= d.day AND r.started_at < d.day + INTERVAL 1 DAY
    GROUP BY d.day
)
SELECT 'rule:daily_spend:' || strftime(day, '%Y-%m-%d') AS alert_id,
       'daily_spend' AS kind, NULL AS task_class, day AS raised_at,
       format('runs started on {{}} cost {{}} ({{}} runs), over {{}} a day',
              strftime(day, '%Y-%m-%d'), '$' || printf('%.2f', usd), runs,
              '$' || printf('%.2f', $limit_usd)) AS what,
       json_object('name', 'daily_spend', 'day', strftime(day, '%Y-%m-%d'), 'value', usd,
                   'threshold', $limit_usd, 'runs', runs) AS rule
FROM spend WHERE usd > $limit_usd
""")


def breaches_per_hour_sql(*, insert: bool = True) -> str:
    """The ``breaches_per_hour`` rule (parameter ``$limit``); its ``SELECT`` only when not
    ``insert``."""
    return (_rule_insert if insert else _rule_select)(f"""
WITH hours AS (
    SELECT DISTINCT date_trunc('hour', started_at) AS hour
    FROM {TOUCHED_RUNS} WHERE breach IS NOT NULL
),
counts AS (
    SELECT h.hour, count(*) AS breaches,
           -- (list(DISTINCT .. ORDER BY ..) is planned as a CTE per statement: 5 ms)
           list_sort(list_distinct(list(r.task_class))) AS classes
    FROM hours AS h JOIN runs AS r
        ON r.started_at >= h.hour AND r.started_at < h.hour + INTERVAL 1 HOUR
    WHERE r.breach IS NOT NULL
    GROUP BY h.hour
)
SELECT 'rule:breaches_per_hour:' || strftime(hour, '%Y-%m-%dT%H') AS alert_id,
       'breaches_per_hour' AS kind, NULL AS task_class, hour AS raised_at,
       format('{{}} runs breached the cap or the ceiling in the hour from {{}} UTC ({{}})',
              breaches, strftime(hour, '%Y-%m-%d %H:%M'), array_to_string(classes, ', '))
              AS what,
       json_object('name', 'breaches_per_hour', 'hour', strftime(hour, {_ISO}),
                   'value', breaches, 'threshold', $limit, 'task_classes', classes) AS rule
FROM counts WHERE breaches >= $limit
""")


_QUEUE_SQL = """
INSERT INTO alert_deliveries (alert_id, webhook_id, webhook, status, attempts,
                              next_attempt_at, updated_at)
SELECT a.alert_id, w.webhook_id, w.webhook, 'pending', 0, $now, $now
FROM alerts AS a
CROSS JOIN (SELECT unnest($ids) AS webhook_id, unnest($shown) AS webhook) AS w
WHERE a.write_id = $write_id
ON CONFLICT DO NOTHING
"""


def _baseline(con: duckdb.DuckDBPyConnection, now: datetime) -> None:
    """Mark the incidents of a store that predates alerts as alerted (not this write's).

    Called while ``alerts`` is empty: every write gives every incident an alert, so
    incidents without one can only come from before alerts existed.
    """
    baseline = incident_alerts_sql(f"'{BASELINE_WRITE_ID}'", _BEFORE_ALERTS, "incidents")
    con.execute(baseline, {"now": now}).fetchall()


def _rules(touched: int = 1, breached: int = 1) -> list[tuple[str, dict[str, object]]]:
    """The threshold rules switched on that can fire, each as (its ``SELECT`` of ``alerts``
    rows, parameters); settings read here. Every rule starts from the write's runs
    (:data:`TOUCHED_RUNS`): none can fire when the write touched no run (``touched``),
    and ``breaches_per_hour`` none when no touched run breached (``breached``)."""
    out: list[tuple[str, dict[str, object]]] = []
    if not touched:
        return out
    ratio = settings.alert_cliff_ratio()
    if ratio is not None:
        window_us = int(settings.alert_window_h() * 3600 * 1e6)
        out.append((cliff_ratio_sql(insert=False),
                    {"ratio": ratio, "window_us": window_us, "min_runs": RUNAWAY_MIN_RUNS}))
    spend = settings.alert_daily_spend_usd()
    if spend is not None:
        out.append((daily_spend_sql(insert=False), {"limit_usd": spend}))
    breaches = settings.alert_breaches_per_hour()
    if breaches is not None and breached:
        out.append((breaches_per_hour_sql(insert=False), {"limit": breaches}))
    return out


def enqueue_alerts(con: duckdb.DuckDBPyConnection, new_incidents: int | None = None) -> int:
    """Record new alerts and queue them for every webhook; return the deliveries pending.

    Called by :func:`telemetry.write_pipeline.write_spans` inside its transaction, after the
    incident rules (see the module docstring). A bad alert setting never fails the
    write: it is logged, and the rules (or deliveries) it governs are skipped.

    Args:
        con: the write's connection (the caller owns the transaction), after
            :func:`telemetry.incident_rules.record_incidents`.
        new_incidents: what that returned, when known: at 0 the incident alerts'
            insert is skipped (None: it runs).

    Returns:
        Deliveries now ``pending`` in the store (new and older ones); the caller starts
        the background delivery when it is above zero.
    """
    now = _utc_now()  # the tables exist: a read-write open brings the schema up to date
    any_alert, touched, breached, pending = con.execute(f"""SELECT EXISTS (SELECT 1 FROM alerts),
        (SELECT count(*) FROM {TOUCHED_RUNS}),
        (SELECT count(*) FROM {TOUCHED_RUNS} WHERE breach IS NOT NULL),
        (SELECT count(*) FROM alert_deliveries WHERE status = 'pending')""").fetchall()[0]
    if not any_alert:
        _baseline(con, now)
    write_id = uuid.uuid4().hex
    params: dict[str, object] = {"now": now, "write_id": write_id}
    try:
        rules = _rules(touched, breached)
        urls = settings.webhook_urls()
    except settings.SettingError as exc:
        logger.warning("cliffwatch alerts: %s; threshold rules and webhooks skipped", exc)
        rules, urls = [], ()
    # Every alert of the write in one statement: the incidents' and each rule's rows.
    selects = [incident_alerts_select()] if new_incidents != 0 else []
    insert_params = dict(params)
    for sql, rule_params in rules:
        selects.append(sql)
        insert_params.update(rule_params)
    if selects:
        con.execute(_insert(*selects), insert_params).fetchall()
    if urls:
        # The deliveries queued now are all pending: added to those counted before.
        queued = con.execute(
            _QUEUE_SQL,
            {**params, "ids": [webhook_id(u) for u in urls], "shown": [redact(u) for u in urls]},
        ).fetchall()
        pending += int(queued[0][0]) if queued else 0
    return int(pending)
