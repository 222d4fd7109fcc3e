"""Every setting cliffwatch reads from the environment, in one place.

Each setting is a module-level constant naming its environment variable, with a reader
function that validates the value and raises :class:`SettingError` (one clear line) on a
bad one. Nothing else in cliffwatch reads ``os.environ`` for its own settings.

Why one file: the house rule that every setting lives here (tests/test_docs.py holds each
to a README row), so this one file answers what can be set and how it is read.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cliffwatch.errors import CliffwatchError

DEFAULT_DB_PATH = Path("data") / "cliffwatch.duckdb"
"""The default store, relative to the working directory (git-ignored in the repo)."""

CLIFFWATCH_DB = "CLIFFWATCH_DB"
"""The store used when no ``--db`` is given: a DuckDB file path, or a ClickHouse URL
(``clickhouse://user:password@host:8123/database`` or ``chdb:///dir``; issue 10,
telemetry/clickhouse/url.py). Default ``data/cliffwatch.duckdb``."""

ENGINE_URL_SCHEMES = ("clickhouse://", "clickhouses://", "chdb://")
"""Prefixes (any case) of a store URL that names a ClickHouse engine, not a DuckDB file."""

CLIFFWATCH_CAPTURE_CONTENT = "CLIFFWATCH_CAPTURE_CONTENT"
"""``true`` records prompt and completion text on spans. Default ``false``: text can hold
secrets, so it is opt-in (as OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT is)."""

CLIFFWATCH_RUNAWAY_K = "CLIFFWATCH_RUNAWAY_K"
"""A run costing more than k x its task class's P50 is a ``runaway`` incident. Default 10:
the handbook puts P99 at about 10x P50 in a pipeline without caps, so anything past it is
the tail itself (docs/sources.md#handbook-production-cost-data)."""

CLIFFWATCH_LOCK_TIMEOUT_S = "CLIFFWATCH_LOCK_TIMEOUT_S"
"""Seconds a process keeps retrying to open the DuckDB file while another process holds
it, before it spills (writer) or reports the store busy (reader). Default 10."""

CLIFFWATCH_INCOMPLETE_GRACE_S = "CLIFFWATCH_INCOMPLETE_GRACE_S"
"""Seconds after which a trace whose root span never arrived becomes a run with status
``incomplete`` (the cost of the calls that did arrive): no span of it may have arrived, and
none ended, for that long. Checked on every write; if the root arrives later the complete
run replaces it. Default 600 (10 minutes): longer than an exporter's retries of one batch,
so a root that is merely late is not taken for a killed process."""

CLIFFWATCH_RUNAWAY_P50_REFRESH_S = "CLIFFWATCH_RUNAWAY_P50_REFRESH_S"
"""Seconds after which the runaway rule recomputes a task class's P50 over all its runs
on the next write to that class (it also does once the class has 10% more runs than at the
last computation, and while it has fewer than 20). Default 300."""

CLIFFWATCH_PRICE_OVERRIDES = "CLIFFWATCH_PRICE_OVERRIDES"
"""Path of a JSON file of extra model prices, in litellm's model_cost format
(``{"my-model": {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}}``).
Default: none. Overrides come only from this setting, never from a file that happens to sit
in the working directory."""

CLIFFWATCH_EXPORT_WRITER = "CLIFFWATCH_EXPORT_WRITER"
"""Where the span exporter of ``configure_tracing`` (batched) maps and writes spans:
``thread`` (a writer thread in the application's process that gives way while the
application makes spans; telemetry/export_thread.py) or ``process`` (a niced writer
process of its own, started on the first export; telemetry/export_process.py). Either
way the application's GIL only pickles compact spans as they are exported; docs/api.md
for the figures. Default ``thread``: a library starts no process unless asked."""

EXPORT_WRITERS = ("thread", "process")

OTEL_EXPORTER_OTLP_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
"""Standard OTel variable: when set, every span also goes to this OTLP/HTTP endpoint."""

CLIFFWATCH_OTLP_MAX_BODY_BYTES = "CLIFFWATCH_OTLP_MAX_BODY_BYTES"
"""Largest OTLP request body ``cliffwatch serve`` accepts, in bytes, checked before and after
gzip decompression (larger gets HTTP 413). Default 20 MiB (20971520), the OpenTelemetry
Collector's own default for its OTLP/HTTP receiver (confighttp ``max_request_body_size``;
docs/sources.md#collector-request-body-limit)."""

DEFAULT_OTLP_MAX_BODY_BYTES = 20 * 1024 * 1024

CLIFFWATCH_RECEIVER_TOKEN = "CLIFFWATCH_RECEIVER_TOKEN"
"""Bearer token ``cliffwatch serve`` requires (``Authorization: Bearer <token>``; else HTTP
401) when no ``--token`` is given. Default: none, no token required. An environment variable
keeps the secret out of the process list."""

CLIFFWATCH_RECEIVER_ACK = "CLIFFWATCH_RECEIVER_ACK"
"""When ``cliffwatch serve`` answers a good request 200: ``journal`` (default) once its
mapped spans are appended and fsynced to the store's journal (``<db>.journal/``, Arrow IPC),
from which one writer thread loads them into the store in large batches (the OpenTelemetry
Collector's persistent sending queue acks the same way, docs/sources.md#collector-sending-queue); or
``store``, once they are written to the store (or spilled), one small write per few requests."""

RECEIVER_ACKS = ("journal", "store")

CLIFFWATCH_RECEIVER_BACKLOG_SPANS = "CLIFFWATCH_RECEIVER_BACKLOG_SPANS"
"""Spans the receiver's journal may hold not yet written to the store before a good request
is answered 503 with ``Retry-After`` (the OTLP spec's throttling answer; the sender retries,
nothing is dropped). Default 100000 (about 100 MB of journal on disk)."""

DEFAULT_RECEIVER_BACKLOG_SPANS = 100_000

CLIFFWATCH_RECEIVER_WORKERS = "CLIFFWATCH_RECEIVER_WORKERS"
"""Worker processes in which ``cliffwatch serve`` (ack ``journal``, a DuckDB store) decodes,
maps and journals requests, so the server's own process keeps only HTTP and the store's
drain (telemetry/ingest_pool.py); ``0`` does it all in the server's threads, sharing one
GIL. Default: the CPU count less one, at least 1."""

CLIFFWATCH_DASHBOARD_TOKEN = "CLIFFWATCH_DASHBOARD_TOKEN"
"""Token ``cliffwatch dashboard`` requires once per browser session (``?token=<token>`` in
the URL; else an error page) when no ``--token`` is given. Default: none, no token required."""

CLIFFWATCH_TASK_CLASS_ATTRIBUTES = "CLIFFWATCH_TASK_CLASS_ATTRIBUTES"
"""Comma-separated span (then resource) attribute names that give an ingested span its task
class, tried in order; a run with none of them falls back to ``service.name``. Default
``cliff.task_class,gen_ai.workflow.name,traceloop.workflow.name,gen_ai.agent.name,agent.name``
(``telemetry.otlp_mapping.DEFAULT_TASK_CLASS_ATTRIBUTES``)."""

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", ""}


class SettingError(CliffwatchError, ValueError):
    """An environment variable holds a value cliffwatch cannot use."""


_URL_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def url_scheme(text: str) -> str | None:
    """The ``scheme://`` a store value starts with (``http://``, ``clickhouse://``), or None
    when it is a file path."""
    scheme = _URL_SCHEME.match(text)
    return scheme.group(0) if scheme else None


def db_url(explicit: str | os.PathLike[str] | None = None) -> str:
    """The store as given: ``explicit`` if given, else $CLIFFWATCH_DB, else the default
    path; a DuckDB file path or a ClickHouse URL (parsed by telemetry/clickhouse/url.py).

    Raises:
        SettingError: a URL of another scheme (``http://host``): not taken for a file path.
    """
    text = os.fspath(explicit) if explicit else (
        os.environ.get(CLIFFWATCH_DB) or str(DEFAULT_DB_PATH))
    scheme = url_scheme(text)
    if scheme and not is_engine_store(text):
        raise SettingError(
            f"unsupported store URL scheme {scheme} (a store is a DuckDB file "
            f"path, or a URL of {', '.join(ENGINE_URL_SCHEMES)})"
        )
    return text


def is_engine_store(text: str | os.PathLike[str]) -> bool:
    """Whether a store value names a ClickHouse engine (``clickhouse://``, ``chdb://``)."""
    return isinstance(text, str) and text.lower().startswith(ENGINE_URL_SCHEMES)


def db_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The DuckDB store path: ``explicit`` if given, else $CLIFFWATCH_DB, else the default.

    Raises:
        SettingError: the store is a ClickHouse URL: the caller works on DuckDB files only
            (readers take :func:`db_url`).
    """
    url = db_url(explicit)
    if is_engine_store(url):
        raise SettingError(
            f"this works on a DuckDB store file only, not {url.split('://', 1)[0]}:// "
            "stores (into ClickHouse: serve, demo, run, watch and migrate write; the read "
            "commands and the dashboard read)"
        )
    return Path(url)


def _bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    low = raw.strip().lower()
    if low in TRUE_WORDS:
        return True
    if low in FALSE_WORDS:
        return False
    raise SettingError(f"{name}={raw!r} is not a boolean (use true or false)")


def _positive_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingError(f"{name}={raw!r} is not a number") from None
    if not value > 0:
        raise SettingError(f"{name}={raw!r} must be greater than 0")
    return value


def capture_content() -> bool:
    """Whether prompt and completion text is recorded on spans ($CLIFFWATCH_CAPTURE_CONTENT)."""
    return _bool(CLIFFWATCH_CAPTURE_CONTENT, False)


def runaway_k() -> float:
    """The runaway multiple k ($CLIFFWATCH_RUNAWAY_K, default 10)."""
    return _positive_float(CLIFFWATCH_RUNAWAY_K, 10.0)


def lock_timeout_s() -> float:
    """Seconds to keep retrying a locked store ($CLIFFWATCH_LOCK_TIMEOUT_S, default 10)."""
    return _positive_float(CLIFFWATCH_LOCK_TIMEOUT_S, 10.0)


def incomplete_grace_s() -> float:
    """Grace period before a rootless trace is an incomplete run, seconds
    ($CLIFFWATCH_INCOMPLETE_GRACE_S, default 600)."""
    return _positive_float(CLIFFWATCH_INCOMPLETE_GRACE_S, 600.0)


def runaway_p50_refresh_s() -> float:
    """Age in seconds at which a class's runaway P50 is recomputed
    ($CLIFFWATCH_RUNAWAY_P50_REFRESH_S, default 300)."""
    return _positive_float(CLIFFWATCH_RUNAWAY_P50_REFRESH_S, 300.0)


def price_overrides_path() -> Path | None:
    """The price override file, or None when there is none."""
    env = os.environ.get(CLIFFWATCH_PRICE_OVERRIDES)
    return Path(env) if env else None


def export_writer() -> str:
    """$CLIFFWATCH_EXPORT_WRITER: ``thread`` (default) or ``process``.

    Raises:
        SettingError: any other value.
    """
    return _choice(CLIFFWATCH_EXPORT_WRITER, EXPORT_WRITERS)


def otlp_endpoint() -> str | None:
    """The OTLP/HTTP endpoint spans are also sent to, or None."""
    return os.environ.get(OTEL_EXPORTER_OTLP_ENDPOINT) or None


def otlp_max_body_bytes() -> int:
    """The receiver's body size limit in bytes ($CLIFFWATCH_OTLP_MAX_BODY_BYTES, default 20 MiB)."""
    raw = os.environ.get(CLIFFWATCH_OTLP_MAX_BODY_BYTES)
    if raw is None or raw.strip() == "":
        return DEFAULT_OTLP_MAX_BODY_BYTES
    try:
        value = int(raw)
    except ValueError:
        raise SettingError(f"{CLIFFWATCH_OTLP_MAX_BODY_BYTES}={raw!r} is not an integer") from None
    if value <= 0:
        raise SettingError(f"{CLIFFWATCH_OTLP_MAX_BODY_BYTES}={raw!r} must be greater than 0")
    return value


def receiver_token() -> str | None:
    """The token the OTLP receiver requires ($CLIFFWATCH_RECEIVER_TOKEN), or None."""
    return os.environ.get(CLIFFWATCH_RECEIVER_TOKEN) or None


def receiver_ack() -> str:
    """$CLIFFWATCH_RECEIVER_ACK: ``journal`` (default) or ``store``.

    Raises:
        SettingError: any other value.
    """
    return _choice(CLIFFWATCH_RECEIVER_ACK, RECEIVER_ACKS)


def receiver_backlog_spans() -> int:
    """Spans the receiver's journal may hold unwritten ($CLIFFWATCH_RECEIVER_BACKLOG_SPANS,
    default 100000).

    Raises:
        SettingError: not a whole number above 0.
    """
    return _positive_int(CLIFFWATCH_RECEIVER_BACKLOG_SPANS, DEFAULT_RECEIVER_BACKLOG_SPANS)


def receiver_workers() -> int:
    """The receiver's worker processes ($CLIFFWATCH_RECEIVER_WORKERS; default
    ``os.cpu_count() - 1``, at least 1; 0 for none).

    Raises:
        SettingError: not a whole number of 0 or more.
    """
    raw = os.environ.get(CLIFFWATCH_RECEIVER_WORKERS)
    if raw is None or raw.strip() == "":
        return max((os.cpu_count() or 1) - 1, 1)
    if raw.strip() == "0":
        return 0
    return _positive_int(CLIFFWATCH_RECEIVER_WORKERS, 1)


def dashboard_token() -> str | None:
    """The token the dashboard requires ($CLIFFWATCH_DASHBOARD_TOKEN), or None."""
    return os.environ.get(CLIFFWATCH_DASHBOARD_TOKEN) or None


def task_class_attributes() -> tuple[str, ...] | None:
    """Attribute names for an ingested span's task class ($CLIFFWATCH_TASK_CLASS_ATTRIBUTES),
    or None for the default list."""
    raw = os.environ.get(CLIFFWATCH_TASK_CLASS_ATTRIBUTES)
    if raw is None or raw.strip() == "":
        return None
    names = tuple(part.strip() for part in raw.split(",") if part.strip())
    if not names:
        raise SettingError(f"{CLIFFWATCH_TASK_CLASS_ATTRIBUTES}={raw!r} names no attribute")
    return names



CLIFFWATCH_RESULT_CACHE = "CLIFFWATCH_RESULT_CACHE"
"""Folder where the whole-window analyses the dashboard's Findings and What-if pages show
are kept between processes (analytics/result_cache.py), keyed by the store, its write
version, the parameters and the analysis code: a server restart or another viewer then
reads them instead of computing them again. ``off`` keeps nothing. Default
``~/.cache/cliffwatch/results``."""

DEFAULT_RESULT_CACHE = Path("~") / ".cache" / "cliffwatch" / "results"
"""Where :data:`CLIFFWATCH_RESULT_CACHE` points when it is not set (``~`` expanded)."""


def result_cache_dir() -> Path | None:
    """The folder of persisted analysis results ($CLIFFWATCH_RESULT_CACHE), or None when it
    is ``off`` (also ``false``, ``no``, ``0``)."""
    raw = (os.environ.get(CLIFFWATCH_RESULT_CACHE) or "").strip()
    if raw and raw.lower() in FALSE_WORDS:
        return None
    return Path(raw or DEFAULT_RESULT_CACHE).expanduser()

CLIFFWATCH_DASHBOARD_PRECOMPUTE = "CLIFFWATCH_DASHBOARD_PRECOMPUTE"
"""Whether ``cliffwatch dashboard`` computes the Findings and What-if pages' default
analyses into the result cache when it starts (background child processes at a lower CPU
priority; dashboard/serve.py). Default on; ``off`` leaves them to the first visitor (on a
machine with few cores the pages open in the first minutes are slower while it runs)."""


def dashboard_precompute() -> bool:
    """Whether the dashboard computes its default analyses at start
    ($CLIFFWATCH_DASHBOARD_PRECOMPUTE, default True)."""
    return _bool(CLIFFWATCH_DASHBOARD_PRECOMPUTE, True)

# --- alerts (telemetry/alert_rules.py, telemetry/alerts.py) ------------------------------

CLIFFWATCH_WEBHOOK_URLS = "CLIFFWATCH_WEBHOOK_URLS"
"""Webhook URLs every alert is POSTed to (JSON with a Slack-compatible ``text`` field),
separated by commas or spaces. Default: none (alerts are still recorded in the store and
listed by ``cliffwatch alerts``). URLs are secrets (a Slack webhook URL is a credential):
the store keeps only a hash and a redacted form of each, never the URL itself."""

CLIFFWATCH_WEBHOOK_TIMEOUT_S = "CLIFFWATCH_WEBHOOK_TIMEOUT_S"
"""Seconds one webhook POST may take before it counts as failed (and is retried). Default 5:
Slack's incoming webhooks answer in well under a second; five leaves room for a slow relay."""

CLIFFWATCH_ALERT_MAX_ATTEMPTS = "CLIFFWATCH_ALERT_MAX_ATTEMPTS"
"""Delivery attempts per alert and webhook before it is marked failed (``cliffwatch alerts
--retry`` tries failed ones again). Default 8: with the default backoff the last attempt
comes about 10 minutes after the first, past a typical short outage of the receiver."""

CLIFFWATCH_ALERT_BACKOFF_S = "CLIFFWATCH_ALERT_BACKOFF_S"
"""Seconds before the first retry of a failed delivery; each later retry waits twice as
long (capped at 10 minutes), plus up to 10% jitter. Default 5."""

CLIFFWATCH_ALERT_EXIT_WAIT_S = "CLIFFWATCH_ALERT_EXIT_WAIT_S"
"""Seconds a process that queued alerts waits at exit for their first delivery attempt to
finish (deliveries run in a background thread; a short script would otherwise exit before
sending). Undelivered alerts stay queued in the store for the next writer or
``cliffwatch alerts --retry``. Default 5."""

CLIFFWATCH_ALERT_CLIFF_RATIO = "CLIFFWATCH_ALERT_CLIFF_RATIO"
"""Threshold rule: alert when a task class's P99/P50 cost over the last
``CLIFFWATCH_ALERT_WINDOW_H`` hours of its runs exceeds this ratio (at most once per class
per UTC day; the class needs at least 20 runs in the window). Default 10: the handbook's
Cost Cliff, P99 about 10x P50 (docs/sources.md#handbook-production-cost-data). ``off``
disables."""

CLIFFWATCH_ALERT_WINDOW_H = "CLIFFWATCH_ALERT_WINDOW_H"
"""Hours of runs, back from the newest run written, that the P99/P50 rule looks at.
Default 24."""

CLIFFWATCH_ALERT_DAILY_SPEND_USD = "CLIFFWATCH_ALERT_DAILY_SPEND_USD"
"""Threshold rule: alert when the runs started on one UTC day cost more than this many USD
in total (at most once per day). Default off: no spend level suits every team."""

CLIFFWATCH_ALERT_BREACHES_PER_HOUR = "CLIFFWATCH_ALERT_BREACHES_PER_HOUR"
"""Threshold rule: alert when at least this many runs started in one UTC hour breached the
cap or the ceiling (at most once per hour). Each breach is already an incident alert; this
one says the planner is off systematically, not once. Default 5; ``off`` disables."""

# --- findings (analytics/findings.py) -----------------------------------------------------

CLIFFWATCH_FINDINGS_SAFE_MAX_WORKERS = "CLIFFWATCH_FINDINGS_SAFE_MAX_WORKERS"
"""The largest max-workers cap findings treat as safe, and the cap the "implicit
max-workers" what-if applies. Default 8: "We cap at 8 in our pipeline. Past 8,
synchronisation overhead exceeds LLM token cost" (the handbook page on orchestrator-worker,
docs/sources.md#handbook-engineering-faq)."""

CLIFFWATCH_FINDINGS_CLIFF_RATIO = "CLIFFWATCH_FINDINGS_CLIFF_RATIO"
"""A task class whose P99/P50 cost exceeds this ratio is a "Cost Cliff" finding. Default 10:
"P99 is where the Cost Cliff lives: in our pipeline P99 is around 10x P50" (the handbook,
docs/sources.md#handbook-production-cost-data)."""

CLIFFWATCH_FINDINGS_MIN_WORKERS = "CLIFFWATCH_FINDINGS_MIN_WORKERS"
"""A task class whose median plan has fewer workers than this is "orchestrating a small
task" (chain the prompts instead). Default 3: "The orchestrator overhead ... exceeds the
work cost below roughly three worker calls" (the handbook,
docs/sources.md#handbook-when-not-to-use-it)."""


def _optional_float(name: str, default: float | None) -> float | None:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    if raw.strip().lower() in {"off", "none"}:
        return None
    return _positive_float(name, default or 0.0)


def _choice(name: str, choices: tuple[str, ...]) -> str:
    """$name, lower-cased, one of ``choices`` (the first when unset or empty).

    Raises:
        SettingError: any other value.
    """
    raw = os.environ.get(name)
    value = (raw or choices[0]).strip().lower()
    if value not in choices:
        raise SettingError(f"{name}={raw!r} is not one of {', '.join(choices)}")
    return value


def _positive_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingError(f"{name}={raw!r} is not a whole number") from None
    if value < 1:
        raise SettingError(f"{name}={raw!r} must be 1 or more")
    return value


def webhook_urls() -> tuple[str, ...]:
    """The webhook URLs alerts are POSTed to ($CLIFFWATCH_WEBHOOK_URLS); () for none.

    Raises:
        SettingError: an entry is not an http:// or https:// URL.
    """
    raw = os.environ.get(CLIFFWATCH_WEBHOOK_URLS) or ""
    urls = tuple(part for part in raw.replace(",", " ").split() if part)
    for url in urls:
        if not url.lower().startswith(("http://", "https://")):
            shown = url if len(url) <= 12 else url[:12] + "..."
            raise SettingError(f"{CLIFFWATCH_WEBHOOK_URLS} holds {shown!r}: not an http(s) URL")
    return urls


def webhook_timeout_s() -> float:
    """Seconds per webhook POST ($CLIFFWATCH_WEBHOOK_TIMEOUT_S, default 5)."""
    return _positive_float(CLIFFWATCH_WEBHOOK_TIMEOUT_S, 5.0)


def alert_max_attempts() -> int:
    """Delivery attempts before an alert is failed ($CLIFFWATCH_ALERT_MAX_ATTEMPTS, default 8)."""
    return _positive_int(CLIFFWATCH_ALERT_MAX_ATTEMPTS, 8)


def alert_backoff_s() -> float:
    """First retry delay of a delivery, seconds ($CLIFFWATCH_ALERT_BACKOFF_S, default 5)."""
    return _positive_float(CLIFFWATCH_ALERT_BACKOFF_S, 5.0)


def alert_exit_wait_s() -> float:
    """Seconds to wait at exit for queued deliveries ($CLIFFWATCH_ALERT_EXIT_WAIT_S, default 5)."""
    return _positive_float(CLIFFWATCH_ALERT_EXIT_WAIT_S, 5.0)


def alert_cliff_ratio() -> float | None:
    """P99/P50 alert threshold ($CLIFFWATCH_ALERT_CLIFF_RATIO, default 10); None when off."""
    return _optional_float(CLIFFWATCH_ALERT_CLIFF_RATIO, 10.0)


def alert_window_h() -> float:
    """Hours the P99/P50 alert rule looks back ($CLIFFWATCH_ALERT_WINDOW_H, default 24)."""
    return _positive_float(CLIFFWATCH_ALERT_WINDOW_H, 24.0)


def alert_daily_spend_usd() -> float | None:
    """Daily spend alert threshold in USD ($CLIFFWATCH_ALERT_DAILY_SPEND_USD); None when off."""
    return _optional_float(CLIFFWATCH_ALERT_DAILY_SPEND_USD, None)


def alert_breaches_per_hour() -> int | None:
    """Breaches-per-hour alert threshold ($CLIFFWATCH_ALERT_BREACHES_PER_HOUR, default 5);
    None when off."""
    raw = os.environ.get(CLIFFWATCH_ALERT_BREACHES_PER_HOUR)
    if raw is not None and raw.strip().lower() in {"off", "none"}:
        return None
    return _positive_int(CLIFFWATCH_ALERT_BREACHES_PER_HOUR, 5)


def check_alert_settings() -> None:
    """Read every alert setting once, so that a command which writes spans (and so runs the
    alert rules) refuses a bad one before it does any work. The write path itself never
    fails on one: it logs it and skips the rules or webhooks it governs
    (``telemetry.alert_rules.enqueue_alerts``), since alerting must never lose a span.

    Raises:
        SettingError: the first alert setting that cannot be read (the message names the
            variable and its value).
    """
    for read in (webhook_urls, webhook_timeout_s, alert_max_attempts, alert_backoff_s,
                 alert_exit_wait_s, alert_cliff_ratio, alert_window_h, alert_daily_spend_usd,
                 alert_breaches_per_hour):
        read()


def findings_safe_max_workers() -> int:
    """Largest cap findings treat as safe ($CLIFFWATCH_FINDINGS_SAFE_MAX_WORKERS, default 8)."""
    return _positive_int(CLIFFWATCH_FINDINGS_SAFE_MAX_WORKERS, 8)


def findings_cliff_ratio() -> float:
    """P99/P50 over which a class is a Cost Cliff finding ($CLIFFWATCH_FINDINGS_CLIFF_RATIO,
    default 10)."""
    return _positive_float(CLIFFWATCH_FINDINGS_CLIFF_RATIO, 10.0)


def findings_min_workers() -> int:
    """Median plan size below which a class should chain prompts
    ($CLIFFWATCH_FINDINGS_MIN_WORKERS, default 3)."""
    return _positive_int(CLIFFWATCH_FINDINGS_MIN_WORKERS, 3)


CLIFFWATCH_WATCH_LATENESS_S = "CLIFFWATCH_WATCH_LATENESS_S"
"""Seconds ``cliffwatch watch`` looks back behind its watermark (the latest span end it has
processed) on every scan, so spans the Collector writes late (its batching, queue and
retries) are still picked up; spans already processed are skipped by their (trace, span)
key. A span written more than this after a later-ending span was processed is missed.
Default 600 (10 minutes, the incomplete-run grace)."""

CLIFFWATCH_WATCH_POLL_S = "CLIFFWATCH_WATCH_POLL_S"
"""Seconds ``cliffwatch watch`` sleeps between scans that found nothing new. Default 5."""


def watch_lateness_s() -> float:
    """How far behind its watermark ``watch`` rescans, seconds
    ($CLIFFWATCH_WATCH_LATENESS_S, default 600)."""
    return _positive_float(CLIFFWATCH_WATCH_LATENESS_S, 600.0)


def watch_poll_s() -> float:
    """Pause between empty scans of ``watch``, seconds ($CLIFFWATCH_WATCH_POLL_S, default 5)."""
    return _positive_float(CLIFFWATCH_WATCH_POLL_S, 5.0)
