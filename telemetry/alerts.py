"""Webhook delivery of alerts: a background thread, retries with backoff, at most once each.

Why one file: claim, send and record (below) are three steps of one at-most-once
protocol over the ``alert_deliveries`` rows, and its guarantees only hold read together;
what triggers alerts is :mod:`telemetry.alert_rules`.

:mod:`telemetry.alert_rules` queues a ``pending`` row in ``alert_deliveries`` per (alert,
webhook) inside the write that recorded the incident. This module sends them:

1. *Claim* (one short read-write transaction): due ``pending`` rows become ``sending``
   with a lease and one more attempt counted. DuckDB lets one process write at a time,
   so a row is claimed by one process only, however many deliver from the same store.
2. *Send*, with no connection open, each webhook in its own thread (a slow webhook delays
   only its own deliveries): ``POST`` the alert's JSON payload (a Slack-compatible
   ``text`` plus the structured ``alert`` and ``incident`` or ``rule``) to the webhook,
   with headers ``Idempotency-Key`` and ``X-Cliffwatch-Alert-Id`` set to the alert id.
3. *Record* (another short transaction): 2xx is ``delivered``; a timeout, a connection
   error, HTTP 408, 429 or 5xx is retried (``pending`` again, due after
   ``backoff_s x 2^(attempts-1)``, at most 10 minutes, plus up to 10% jitter) until
   ``settings.alert_max_attempts()``, then ``failed``; any other 4xx is ``failed`` at
   once (the request itself is wrong).

At most once: a delivery is only ever sent after its claim committed, and a claimed row
whose lease ran out (the process died mid-send, so it may or may not have arrived)
becomes ``unknown``, never sent again automatically. ``cliffwatch alerts --retry`` (this
module's :func:`deliver_now` with ``retry_failed=True``) is the explicit way to send
``failed`` and ``unknown`` ones again.

Webhook URLs are secrets: rows hold :func:`telemetry.alert_rules.webhook_id` (a hash) and
a redacted form; the URL is looked up in ``settings.webhook_urls()`` when sending, so a
webhook removed from the settings is not sent to any more (the delivery fails, saying so).

Nothing here blocks a writer: :func:`deliver_in_background` starts (or wakes) one daemon
thread per store per process and returns. At interpreter exit the thread gets up to
``settings.alert_exit_wait_s()`` to finish what is due; whatever is left stays queued in
the store for the next process that writes or for ``cliffwatch alerts --retry``.
"""

from __future__ import annotations

import atexit
import logging
import os
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from cliffwatch import settings
from cliffwatch.telemetry.alert_list import (  # noqa: F401 - re-exported
    ALERT_COLUMNS,
    NO_WEBHOOK,
    STATUSES,
    has_alert_tables,
    list_alerts,
    payload_of,
)
from cliffwatch.telemetry.alert_rules import webhook_id
from cliffwatch.telemetry.store import (
    StoreBusyError,
    open_store,
    rollback_quietly,
    write_lock,
)

logger = logging.getLogger("cliffwatch.alerts")

MAX_BACKOFF_S = 600.0
"""The longest wait between two attempts (10 minutes)."""

CLAIM_BATCH = 20
"""Deliveries claimed per round and webhook; their lease covers sending all of them one by
one."""

MAX_PARALLEL_WEBHOOKS = 8
"""Webhooks sent to at the same time at most (one thread each, for one delivery round)."""

LEASE_MARGIN_S = 30.0
"""Lease beyond ``CLAIM_BATCH x timeout``: time for the record transaction itself."""

RETRYABLE_HTTP = frozenset({408, 425, 429, 500, 502, 503, 504})
"""HTTP statuses worth another attempt (the receiver is busy or down); other 4xx are not."""

USER_AGENT = "cliffwatch-alerts/1"


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One claimed delivery.

    Attributes:
        alert_id: the alert.
        webhook_id: hash of the webhook URL.
        webhook: the URL, redacted.
        attempts: attempts made, this one included.
        payload: the JSON body to POST.
    """

    alert_id: str
    webhook_id: str
    webhook: str
    attempts: int
    payload: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one POST did.

    Attributes:
        delivered: the webhook answered 2xx.
        retryable: worth another attempt (timeout, connection error, 408/429/5xx).
        http_status: the HTTP status, None when there was no answer.
        error: one line on what went wrong, None when delivered.
    """

    delivered: bool
    retryable: bool
    http_status: int | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class DeliverySummary:
    """What one :func:`deliver_now` call did.

    Attributes:
        attempted: POSTs made.
        delivered: of them, answered 2xx.
        retrying: failed, to be retried later.
        failed: failed for good (until ``--retry``).
        next_due_s: seconds until the next pending delivery is due (0 when one is due
            now), None when none is pending.
    """

    attempted: int = 0
    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    next_due_s: float | None = None


def post_alert(url: str, delivery: Delivery, *, timeout_s: float) -> Outcome:
    """POST one alert's payload to ``url``; never raises.

    Args:
        url: the webhook URL.
        delivery: the claimed delivery (its payload and alert id).
        timeout_s: seconds to wait for the answer.
    """
    request = urllib.request.Request(
        url,
        data=delivery.payload.encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Idempotency-Key": delivery.alert_id,
            "X-Cliffwatch-Alert-Id": delivery.alert_id,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            response.read(1024)
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return Outcome(False, exc.code in RETRYABLE_HTTP, exc.code, f"HTTP {exc.code}")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return Outcome(False, True, None, f"{type(exc).__name__}: {reason}"[:300])
    if 200 <= status < 300:
        return Outcome(True, False, status)
    return Outcome(False, status in RETRYABLE_HTTP, status, f"HTTP {status}")


def backoff_s(attempts: int, base_s: float) -> float:
    """Seconds before attempt ``attempts + 1``: ``base_s x 2^(attempts-1)``, capped at
    :data:`MAX_BACKOFF_S`, plus up to 10% jitter (so many stores do not retry in step)."""
    delay = min(base_s * 2 ** max(0, attempts - 1), MAX_BACKOFF_S)
    return delay * (1.0 + random.uniform(0.0, 0.1))


_EXPIRE_LEASES = """
UPDATE alert_deliveries
SET status = 'unknown', lease_until = NULL, updated_at = $now,
    last_error = 'interrupted while sending: it may or may not have arrived'
WHERE status = 'sending' AND lease_until < $now
"""


@contextmanager
def _writing(path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-write connection, serialised with this process's span writes to the store
    (the store's own per-path lock: DuckDB's file lock does not separate threads)."""
    lock = write_lock(path)
    if not lock.acquire(timeout=settings.lock_timeout_s()):
        raise StoreBusyError(f"store {path} is busy: alert delivery gave up waiting for it")
    try:
        with open_store(path, read_only=False) as con:
            yield con
    finally:
        lock.release()


_REQUEUE = """
UPDATE alert_deliveries
SET status = 'pending', next_attempt_at = $now, lease_until = NULL, updated_at = $now
WHERE status IN ('pending', 'failed', 'unknown')
"""


def _requeue(path: Path) -> int:
    """Make every failed, unknown or waiting delivery due now (``--retry``)."""
    with _writing(path) as con:
        if not has_alert_tables(con):
            return 0
        rows = con.execute(_REQUEUE, {"now": _now()}).fetchall()
    return int(rows[0][0]) if rows else 0


@dataclass(frozen=True, slots=True)
class _Lane:
    """Which deliveries one sender claims: those to ``webhook_ids`` (``inside``), or to
    any webhook but them (``not inside``: webhooks no longer configured)."""

    webhook_ids: tuple[str, ...]
    inside: bool = True


def _claim(
    path: Path, *, timeout_s: float, lane: _Lane = _Lane((), inside=False)
) -> tuple[list[Delivery], float | None]:
    """Claim due deliveries of ``lane`` (see the module docstring); also returns seconds
    until the next pending one not claimed (of any lane) is due."""
    now = _now()
    with _writing(path) as con:
        if not has_alert_tables(con):
            return [], None
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(_EXPIRE_LEASES, {"now": now}).fetchall()
            rows = con.execute(
                f"""SELECT d.alert_id, d.webhook_id, d.webhook, d.attempts,
                           a.payload::VARCHAR
                    FROM alert_deliveries AS d JOIN alerts AS a USING (alert_id)
                    WHERE d.status = 'pending' AND d.next_attempt_at <= $now
                        AND list_contains($hooks::VARCHAR[], d.webhook_id) = $inside
                    ORDER BY d.next_attempt_at, a.raised_at, d.alert_id
                    LIMIT {CLAIM_BATCH}""",
                {"now": now, "hooks": list(lane.webhook_ids), "inside": lane.inside},
            ).fetchall()
            lease = now + timedelta(seconds=len(rows) * timeout_s + LEASE_MARGIN_S)
            claimed = [Delivery(r[0], r[1], r[2], int(r[3]) + 1, r[4]) for r in rows]
            if claimed:
                con.execute(
                    """UPDATE alert_deliveries AS d
                       SET status = 'sending', attempts = d.attempts + 1,
                           lease_until = $lease, updated_at = $now
                       FROM (SELECT unnest($alert_ids) AS alert_id,
                                    unnest($webhook_ids) AS webhook_id) AS c
                       WHERE d.alert_id = c.alert_id AND d.webhook_id = c.webhook_id""",
                    {"lease": lease, "now": now,
                     "alert_ids": [d.alert_id for d in claimed],
                     "webhook_ids": [d.webhook_id for d in claimed]},
                ).fetchall()
            later = con.execute(
                "SELECT min(next_attempt_at) FROM alert_deliveries WHERE status = 'pending'"
            ).fetchall()[0][0]
            con.execute("COMMIT")
        except BaseException:
            rollback_quietly(con)  # a failed COMMIT stays the error raised
            raise
    next_due = None if later is None else max(0.0, (later - now).total_seconds())
    return claimed, next_due


def delivery_updates(
    results: list[tuple[Delivery, Outcome]], *, max_attempts: int, base_s: float,
    now: datetime,
) -> list[tuple[str, datetime | None, datetime | None]]:
    """The state each attempted delivery moves to: ``(status, next attempt due, delivered
    at)``, in the order of ``results``: ``delivered``; ``pending`` again after
    :func:`backoff_s` when the failure is retryable and attempts remain; else ``failed``.
    """
    out: list[tuple[str, datetime | None, datetime | None]] = []
    for delivery, outcome in results:
        if outcome.delivered:
            out.append(("delivered", None, now))
        elif outcome.retryable and delivery.attempts < max_attempts:
            out.append(("pending", now + timedelta(seconds=backoff_s(delivery.attempts, base_s)),
                        None))
        else:
            out.append(("failed", None, None))
    return out


def _record(path: Path, results: list[tuple[Delivery, Outcome]], *, max_attempts: int,
            base_s: float) -> DeliverySummary:
    now = _now()
    states = delivery_updates(results, max_attempts=max_attempts, base_s=base_s, now=now)
    delivered = sum(1 for status, _, _ in states if status == "delivered")
    retrying = sum(1 for status, _, _ in states if status == "pending")
    failed = len(states) - delivered - retrying
    with _writing(path) as con:
        con.execute("BEGIN TRANSACTION")
        try:
            for (status, next_attempt_at, delivered_at), (delivery, outcome) in zip(
                states, results, strict=True
            ):
                con.execute(
                    """UPDATE alert_deliveries
                       SET status = $status, next_attempt_at = $due, lease_until = NULL,
                           last_error = $error, last_http_status = $http,
                           delivered_at = $delivered_at, updated_at = $now
                       WHERE alert_id = $alert_id AND webhook_id = $webhook_id""",
                    {"status": status, "due": next_attempt_at, "error": outcome.error,
                     "http": outcome.http_status, "delivered_at": delivered_at,
                     "now": now, "alert_id": delivery.alert_id,
                     "webhook_id": delivery.webhook_id},
                ).fetchall()
            con.execute("COMMIT")
        except BaseException:
            rollback_quietly(con)  # a failed COMMIT stays the error raised
            raise
    return DeliverySummary(len(results), delivered, retrying, failed)


def deliver_now(
    path: str | os.PathLike[str],
    *,
    retry_failed: bool = False,
    max_rounds: int | None = None,
    stop: threading.Event | None = None,
) -> DeliverySummary:
    """Send every delivery that is due and wait for them; return what happened.

    Each configured webhook is served by its own thread (at most
    :data:`MAX_PARALLEL_WEBHOOKS` at once), so a slow webhook does not hold back the
    deliveries to the others.

    Args:
        path: the store.
        retry_failed: also send ``failed`` and ``unknown`` deliveries, and pending ones
            before their retry is due (``cliffwatch alerts --retry``); each gets one
            more attempt.
        max_rounds: claim at most this many batches of :data:`CLAIM_BATCH` per webhook
            (None: until nothing due is left).
        stop: once set, claim nothing more; claimed deliveries not yet sent are put
            back to retry (the process is exiting).

    Returns:
        A :class:`DeliverySummary`.

    Raises:
        SettingError: $CLIFFWATCH_WEBHOOK_URLS or another alert setting is malformed.
        StoreError: the store cannot be opened (missing, foreign, busy).
    """
    store = Path(path)
    urls = {webhook_id(u): u for u in settings.webhook_urls()}
    timeout_s = settings.webhook_timeout_s()
    max_attempts = settings.alert_max_attempts()
    base_s = settings.alert_backoff_s()
    if retry_failed:
        _requeue(store)
    # One sender per configured webhook, plus one for webhooks no longer configured: a
    # slow or dead webhook delays only its own deliveries (at most MAX_PARALLEL_WEBHOOKS
    # threads; beyond that, webhooks wait for a free sender).
    lanes = [_Lane((hook,)) for hook in urls] + [_Lane(tuple(urls), inside=False)]

    def send_lane(lane: _Lane) -> DeliverySummary:
        return _deliver_lane(store, lane, urls, timeout_s=timeout_s,
                             max_attempts=max_attempts, base_s=base_s,
                             max_rounds=max_rounds, stop=stop)

    with ThreadPoolExecutor(min(MAX_PARALLEL_WEBHOOKS, len(lanes)),
                            thread_name_prefix="cliffwatch-webhook") as pool:
        done = list(pool.map(send_lane, lanes))
    dues = [d.next_due_s for d in done if d.next_due_s is not None]
    return DeliverySummary(
        sum(d.attempted for d in done), sum(d.delivered for d in done),
        sum(d.retrying for d in done), sum(d.failed for d in done),
        min(dues) if dues else None,
    )


def _deliver_lane(
    store: Path,
    lane: _Lane,
    urls: dict[str, str],
    *,
    timeout_s: float,
    max_attempts: int,
    base_s: float,
    max_rounds: int | None,
    stop: threading.Event | None,
) -> DeliverySummary:
    """Claim, send and record the due deliveries of one lane, round after round."""
    total = DeliverySummary()
    rounds = 0
    while (max_rounds is None or rounds < max_rounds) and not (stop and stop.is_set()):
        rounds += 1
        claimed, next_due = _claim(store, timeout_s=timeout_s, lane=lane)
        if not claimed:
            return DeliverySummary(total.attempted, total.delivered, total.retrying,
                                   total.failed, next_due)
        results = []
        for delivery in claimed:
            url = urls.get(delivery.webhook_id)
            if stop is not None and stop.is_set():
                outcome = Outcome(False, True, None, "not sent: the process was exiting")
            elif url is None:
                outcome = Outcome(False, False, None, (
                    f"webhook {delivery.webhook} is no longer in "
                    f"{settings.CLIFFWATCH_WEBHOOK_URLS}"))
            else:
                outcome = post_alert(url, delivery, timeout_s=timeout_s)
            if not outcome.delivered:
                logger.warning("cliffwatch alert %s to %s: %s (attempt %d)", delivery.alert_id,
                               delivery.webhook, outcome.error, delivery.attempts)
            results.append((delivery, outcome))
        done = _record(store, results, max_attempts=max_attempts, base_s=base_s)
        total = DeliverySummary(
            total.attempted + done.attempted, total.delivered + done.delivered,
            total.retrying + done.retrying, total.failed + done.failed, next_due,
        )
    return total


_exiting = threading.Event()
"""Set by the exit hook: no delivery thread starts any more, running ones stop."""


class _Deliverer:
    """The background delivery of one store in this process (one daemon thread at most)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._settled = threading.Event()
        self._settled.set()
        self._thread: threading.Thread | None = None

    def kick(self) -> bool:
        """Wake the thread, starting it if needed; False (nothing started) once the
        process is exiting: a thread started then would be killed inside DuckDB."""
        with self._lock:
            # The main thread is no longer alive once the interpreter is exiting (atexit
            # handlers, such as OpenTelemetry's final flush, run after it finished).
            if _exiting.is_set() or not threading.main_thread().is_alive():
                return False
            self._settled.clear()
            self._wake.set()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="cliffwatch-alerts", daemon=True
                )
                self._thread.start()
            return True

    def wait_settled(self, timeout_s: float) -> bool:
        """Wait until nothing is due now (sent, or waiting for a later retry)."""
        return self._settled.wait(timeout_s)

    def join(self, timeout_s: float) -> bool:
        """Wake the thread (it stops when ``_exiting`` is set) and wait for it to end."""
        with self._lock:
            thread = self._thread
        self._wake.set()
        if thread is None:
            return True
        thread.join(timeout_s)
        return not thread.is_alive()

    def _loop(self) -> None:
        failures = 0
        while not _exiting.is_set():
            self._wake.clear()
            try:
                summary = deliver_now(self.path, stop=_exiting)
                failures = 0
                wait_s = summary.next_due_s
            except Exception as exc:  # noqa: BLE001 - a delivery thread must not die
                failures += 1
                logger.warning("cliffwatch alerts: delivery round failed: %s", exc)
                wait_s = min(MAX_BACKOFF_S, 2.0**failures)
            if wait_s is None or wait_s > 0:
                self._settled.set()
            if wait_s is None:
                with self._lock:
                    if not self._wake.is_set():
                        self._thread = None
                        return
                continue
            self._wake.wait(timeout=wait_s)
        self._settled.set()


_deliverers: dict[str, _Deliverer] = {}
_deliverers_lock = threading.Lock()
_atexit_registered = False


def deliver_in_background(path: str | os.PathLike[str]) -> None:
    """Start, or wake, this process's delivery thread for the store at ``path``.

    Returns at once. The first call registers an exit hook that waits up to
    ``settings.alert_exit_wait_s()`` for deliveries due now, then stops the thread.
    Once that hook has run (spans flushed later in the exit, e.g. by OpenTelemetry's
    own exit hook) nothing is started: those alerts stay queued in the store.
    """
    global _atexit_registered
    key = os.path.abspath(path)
    with _deliverers_lock:
        deliverer = _deliverers.setdefault(key, _Deliverer(Path(key)))
        if not _atexit_registered:
            atexit.register(_drain_at_exit)
            _atexit_registered = True
    if not deliverer.kick():
        logger.info("cliffwatch alerts: exiting; queued alerts stay in %s for the next "
                    "writer or `cliffwatch alerts --retry`", key)


def wait_for_deliveries(timeout_s: float) -> bool:
    """Wait until every background delivery of this process has nothing due now.

    Returns:
        True when all settled within ``timeout_s`` seconds.
    """
    with _deliverers_lock:
        deliverers = list(_deliverers.values())
    deadline = time.monotonic() + timeout_s
    settled = True
    for deliverer in deliverers:
        remaining = max(0.0, deadline - time.monotonic())
        settled = deliverer.wait_settled(remaining) and settled
    return settled


def _drain_at_exit() -> None:
    """Give due deliveries their time, then stop every delivery thread before the
    interpreter tears down (a daemon thread killed inside DuckDB aborts the process)."""
    try:
        wait_for_deliveries(settings.alert_exit_wait_s())
        _exiting.set()
        grace_s = settings.webhook_timeout_s() + 5.0
        with _deliverers_lock:
            deliverers = list(_deliverers.values())
        for deliverer in deliverers:
            deliverer.join(grace_s)
    except Exception:  # noqa: BLE001 - never fail interpreter exit
        _exiting.set()
