"""Webhook delivery of the alerts ``cliffwatch watch`` queued in a ClickHouse store.

The DuckDB store's outbox (:mod:`telemetry.alerts`) claims and updates rows in place; here
each attempt appends the delivery's new state as a new row version of
``cliffwatch_alert_deliveries`` (ReplacingMergeTree: the latest wins). The POST
(:func:`telemetry.alerts.post_alert`) and the next state, back-off included
(:func:`telemetry.alerts.delivery_updates`), are the DuckDB outbox's own. One ``watch``
per database sends, so no lease is taken.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa

from cliffwatch import settings
from cliffwatch.telemetry import alerts as alert_delivery
from cliffwatch.telemetry.clickhouse.client import ClickHouseClient
from cliffwatch.telemetry.clickhouse.tables import TABLES
from cliffwatch.telemetry.clickhouse.values import naive_utc, quoted


def deliver_pending(client: ClickHouseClient, *, limit: int = 100) -> int:
    """POST the due ``pending`` deliveries to their webhooks (URLs from
    ``settings.webhook_urls()``; a delivery whose webhook is no longer configured waits)
    and append their new state (delivered, pending with back-off, failed) as the
    telemetry/alerts.py outbox does. Returns the deliveries that arrived.

    Raises:
        SettingError: an alert setting is malformed.
    """
    urls = {alert_delivery.webhook_id(u): u for u in settings.webhook_urls()}
    if not urls:
        return 0
    now = datetime.now(UTC).replace(tzinfo=None)
    rows = naive_utc(client.query_arrow(f"""
        SELECT d.*, a.payload AS payload
        FROM (SELECT * FROM {TABLES['alert_deliveries']} FINAL) AS d
        JOIN (SELECT alert_id, payload FROM {TABLES['alerts']} FINAL) AS a USING (alert_id)
        WHERE d.status = 'pending'
            AND d.next_attempt_at <= toDateTime64('{now.isoformat()}', 6, 'UTC')
            AND d.webhook_id IN ({quoted(urls)})
        ORDER BY d.next_attempt_at LIMIT {int(limit)}"""))
    if rows.num_rows == 0:
        return 0
    timeout_s = settings.webhook_timeout_s()
    results = []
    for row in rows.to_pylist():
        delivery = alert_delivery.Delivery(row["alert_id"], row["webhook_id"], row["webhook"],
                                           int(row["attempts"]) + 1, row["payload"])
        results.append((delivery, alert_delivery.post_alert(
            urls[delivery.webhook_id], delivery, timeout_s=timeout_s)))
    updates = alert_delivery.delivery_updates(
        results, max_attempts=settings.alert_max_attempts(),
        base_s=settings.alert_backoff_s(), now=now)
    client.insert_arrow(TABLES["alert_deliveries"], pa.Table.from_pylist([
        {"alert_id": d.alert_id, "webhook_id": d.webhook_id, "webhook": d.webhook,
         "status": status, "attempts": d.attempts, "next_attempt_at": due,
         "lease_until": None, "last_error": outcome.error,
         "last_http_status": outcome.http_status, "delivered_at": delivered_at,
         "updated_at": now}
        for (d, outcome), (status, due, delivered_at) in zip(results, updates, strict=True)
    ], schema=_DELIVERY_SCHEMA))
    return sum(1 for _, outcome in results if outcome.delivered)


_DELIVERY_SCHEMA = pa.schema([
    ("alert_id", pa.string()), ("webhook_id", pa.string()), ("webhook", pa.string()),
    ("status", pa.string()), ("attempts", pa.int32()), ("next_attempt_at", pa.timestamp("us")),
    ("lease_until", pa.timestamp("us")), ("last_error", pa.string()),
    ("last_http_status", pa.int32()), ("delivered_at", pa.timestamp("us")),
    ("updated_at", pa.timestamp("us")),
])
