"""The commands that bring spans in or serve the store: ``serve`` (the OTLP/HTTP
receiver), ``ingest`` (OTLP trace files) and ``dashboard`` (Streamlit, in a child
process)."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from cliffwatch import settings
from cliffwatch.cli.options import DbOption, read_only_store, span_store, writable_store
from cliffwatch.cli.output import EXIT_NOT_COMPLETED, CliError, error_line, say, spans_verdict

if TYPE_CHECKING:
    from cliffwatch.telemetry.otlp_mapping import MappingConfig
    from cliffwatch.telemetry.receiver import OtlpReceiver

DEFAULT_DASHBOARD_PORT = 8501


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
"""Hosts that keep a server on this machine (no warning about an exposed server)."""

STREAMLIT_OFFLINE_FLAGS = (
    "--server.headless", "true",
    "--browser.gatherUsageStats", "false",  # no usage statistics sent to Streamlit
    "--client.toolbarMode", "viewer",  # no Deploy button or developer menu entries
    "--server.fileWatcherType", "none",  # a served tool, not an app being edited
)
"""Streamlit flags of ``cliffwatch dashboard``: an offline tool (Streamlit 1.67 options;
``streamlit config show``). Streamlit serves its own fonts and the favicon is an emoji
(``dashboard/app.py``; a page's ``:material/...:`` icon would be fetched from Google), so
the browser fetches nothing from elsewhere (tests/test_dashboard_markup_browser.py)."""


def _forward_signals(child: subprocess.Popen[bytes]) -> dict[int, Any]:
    """Pass SIGTERM and SIGINT received by this process on to ``child``; return the
    previous handlers (for :func:`signal.signal` to restore)."""

    def _forward(signum: int, frame: Any) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    return {signum: signal.signal(signum, _forward) for signum in (signal.SIGTERM, signal.SIGINT)}


def _check_port(host: str, port: int) -> None:
    """Refuse a port Streamlit could not listen on, before its URL is announced (Streamlit
    itself would log "Port N is not available" and exit 1 after it).

    Raises:
        CliError: the port is in use (or the host does not resolve); the message names it.
    """
    from cliffwatch.telemetry.listen import ListenError, listen_socket  # lazy: telemetry

    try:
        listen_socket(host, port).close()
    except ListenError as exc:
        raise CliError(f"{exc}: pick another port with --port") from None


def dashboard(
    db: DbOption = None,
    port: Annotated[
        int, typer.Option("--port", min=1, max=65535, help="Port to serve on.")
    ] = DEFAULT_DASHBOARD_PORT,
    host: Annotated[
        str,
        typer.Option("--host", help="Interface to listen on: loopback unless told (0.0.0.0)."),
    ] = "127.0.0.1",
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            metavar="TOKEN",
            help="Require '?token=TOKEN' once per browser session (default: "
            "$CLIFFWATCH_DASHBOARD_TOKEN, else no token).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Open the Streamlit dashboard on the store (headless; prints the URL).

    Serves until the Streamlit server stops; SIGTERM or Ctrl-C stop it, and the command
    exits with the server's exit code.
    """
    path = settings.db_path(db).resolve()
    with read_only_store(path):
        pass  # a missing or foreign store is one line here, not an error page later
    settings.dashboard_precompute()  # so is a bad value of the setting the server reads
    _check_port(host, port)
    # Found, not imported: the dashboard is a layer nothing imports (Streamlit runs it).
    spec = importlib.util.find_spec("cliffwatch.dashboard")
    origin = spec.origin if spec is not None else None
    app_py = Path(origin or "cliffwatch/dashboard/__init__.py").resolve().parent / "app.py"
    if not app_py.exists():
        raise CliError(f"dashboard entry point {app_py} is missing")
    command = [
        # Streamlit in a process that loads the pages' modules first (dashboard/serve.py).
        sys.executable, "-m", "cliffwatch.dashboard.serve", str(app_py),
        *STREAMLIT_OFFLINE_FLAGS,
        "--server.address", host,
        "--server.port", str(port),
    ]
    shown_host = "localhost" if host in LOOPBACK_HOSTS else host
    Console().print(f"cliffwatch dashboard on [bold]http://{shown_host}:{port}[/] (store {path})",
                    soft_wrap=True, highlight=False)
    env = {**os.environ, settings.CLIFFWATCH_DB: str(path)}
    token = token or settings.dashboard_token()
    if token:
        env[settings.CLIFFWATCH_DASHBOARD_TOKEN] = token  # the environment, not argv: secret
    elif host not in LOOPBACK_HOSTS:
        Console(stderr=True).print(
            "[yellow]warning:[/] listening beyond loopback without --token", soft_wrap=True
        )
    # Its own process group: a terminal's Ctrl-C reaches it once, through us.
    child = subprocess.Popen(command, env=env, process_group=0)
    previous = _forward_signals(child)
    try:
        code = child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if child.poll() is None:  # an unexpected error here: do not leave it serving
            child.terminate()
            child.wait()
    # Stopped by the signal we passed on: a clean stop, as Ctrl-C has always been.
    raise typer.Exit(0 if code in (-signal.SIGTERM, -signal.SIGINT) else code)


TaskClassAttrOption = Annotated[
    list[str] | None,
    typer.Option(
        "--task-class-attr",
        metavar="NAME",
        help="Span (then resource) attribute giving an ingested run its task class; repeat "
        "for fallbacks, tried in order (default: $CLIFFWATCH_TASK_CLASS_ATTRIBUTES, else "
        "cliff.task_class, gen_ai.workflow.name, traceloop.workflow.name, gen_ai.agent.name, "
        "agent.name; then service.name).",
        show_default=False,
    ),
]


def mapping_config(task_class_attr: list[str] | None) -> MappingConfig:
    """The OTLP mapping for ``serve`` and ``ingest``: the task class rule from the option,
    else from the setting, else the default."""
    from cliffwatch.telemetry.otlp_mapping import MappingConfig  # lazy: OTLP protobufs

    attributes = tuple(task_class_attr or ()) or settings.task_class_attributes()
    return MappingConfig(task_class_attributes=attributes) if attributes else MappingConfig()


def _shown(url: str) -> str:
    """An engine store URL as shown to people (never its password)."""
    from cliffwatch.telemetry.clickhouse.url import parse_store_url  # lazy: store layer

    return str(parse_store_url(url))


def _say_listening(receiver: OtlpReceiver, path: Path | str, *, warn_open: bool) -> None:
    """The receiver's banner on stderr: its endpoint and store, how to send, how to stop
    (its first line is what scripts and tests wait for)."""
    err = Console(stderr=True)
    err.print(f"cliffwatch OTLP receiver on [bold]{receiver.endpoint}[/] (store {path})",
              soft_wrap=True, highlight=False)
    base = receiver.endpoint.removesuffix("/v1/traces")
    err.print(f"  send with OTEL_EXPORTER_OTLP_ENDPOINT={base}; Ctrl-C stops",
              soft_wrap=True, highlight=False)
    if warn_open:
        err.print("[yellow]warning:[/] listening beyond loopback without --token",
                  soft_wrap=True)


def serve(
    host: Annotated[
        str,
        typer.Option("--host", help="Interface to listen on: loopback unless told (0.0.0.0)."),
    ] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option("--port", min=0, max=65535, help="TCP port (4318 is OTLP/HTTP's; 0: any)."),
    ] = 4318,
    db: DbOption = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            metavar="TOKEN",
            help="Require 'Authorization: Bearer TOKEN' on every request (default: "
            "$CLIFFWATCH_RECEIVER_TOKEN, else no token).",
            show_default=False,
        ),
    ] = None,
    task_class_attr: TaskClassAttrOption = None,
) -> None:
    """Receive OTLP/HTTP traces (POST /v1/traces; protobuf or JSON, gzip) into the store.

    Point any OpenTelemetry SDK or Collector otlphttp exporter at it; runs until Ctrl-C.
    With a ClickHouse --db (clickhouse://..., chdb:///dir) the spans go into its
    Collector-shaped traces table, where 'cliffwatch watch' turns them into runs.
    """
    from cliffwatch.telemetry.receiver import OtlpReceiver, ReceiverConfig  # lazy: DuckDB
    from cliffwatch.telemetry.stop_signals import stop_on_signals
    from cliffwatch.telemetry.write_ledger import LEDGER

    before = LEDGER.snapshot()
    url = settings.db_url(db)
    # A ClickHouse store: spans go into its traces table (`cliffwatch watch` makes runs).
    target = span_store(db)
    path: Path | str = target if isinstance(target, Path) else _shown(url)
    config = ReceiverConfig(
        host=host,
        port=port,
        token=token or settings.receiver_token(),
        max_body_bytes=settings.otlp_max_body_bytes(),
        mapping=mapping_config(task_class_attr),
    )
    receiver = OtlpReceiver(target, config)
    # SIGINT and SIGTERM set a flag (never raise), however the process was started: one
    # started in a script's background inherits SIGINT ignored (telemetry/stop_signals.py).
    # Set before the start, so a signal during it stops the receiver once it has started; a
    # second signal during the stop changes nothing: the stop is bounded (OtlpReceiver.stop).
    with stop_on_signals() as stop:
        receiver.start()
        try:
            _say_listening(receiver, path, warn_open=host not in LOOPBACK_HOSTS
                           and config.token is None)
            while not stop.wait(0.5) and not receiver.wait(0):
                pass
        finally:
            receiver.stop()
    stats = receiver.stats_snapshot()
    say(f"stopped: {stats['requests']} requests, {stats['spans_accepted']} spans accepted, "
        f"{stats['spans_rejected']} rejected, {stats['requests_refused']} requests refused",
        stderr=True)
    # Spans answered 503 are not lost for good (their sender retries), but not stored.
    code = spans_verdict(LEDGER.snapshot() - before, path,
                         lost_label="not stored (answered 503)", stderr=True)
    if not code and stats.get("backlog_spans"):
        # Answered 200 and durable, but the store would not take them before the stop.
        error_line(f"{stats['backlog_spans']:,} spans not in the store "
                   f"({stats.get('last_store_error') or 'the store was not written'}): they "
                   f"wait in {target}.journal for the next 'cliffwatch serve' on this store")
        code = EXIT_NOT_COMPLETED
    if code:
        raise typer.Exit(code)


def ingest(
    files: Annotated[
        list[Path],
        typer.Argument(
            metavar="FILE...",
            exists=True,
            dir_okay=False,
            readable=True,
            help="OTLP trace files: JSON lines (the Collector's file exporter), OTLP/JSON or "
            "protobuf; gzip too.",
            show_default=False,
        ),
    ],
    db: DbOption = None,
    task_class_attr: TaskClassAttrOption = None,
) -> None:
    """Import OTLP trace files into the store; importing the same spans again adds nothing.

    Exit code 1 when spans or lines were left out, or spans could not be stored.
    """
    from cliffwatch.telemetry.ingest import (  # lazy: DuckDB, OTLP protobufs
        check_files,
        ingest_files,
    )
    from cliffwatch.telemetry.write_ledger import LEDGER, SpansLostError

    before = LEDGER.snapshot()
    path = writable_store(db)
    check_files(files)  # a file that cannot be ingested at all: one line, before the bar
    err = Console(stderr=True)
    with Progress(
        TextColumn("ingesting"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(), console=err,
    ) as bar:
        task = bar.add_task("ingest", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            summary = ingest_files(
                files, path, mapping=mapping_config(task_class_attr), progress=progress
            )
        except SpansLostError:
            bar.stop()
            spans_verdict(LEDGER.snapshot() - before, path)
            say("ingest stopped at that batch: ingest the files again once the store can "
                "be written (spans already stored are not added twice)", stderr=True)
            raise typer.Exit(EXIT_NOT_COMPLETED) from None
    Console().print(
        f"ingested {summary.files} file(s) into {path}: {summary.spans_read:,} spans read, "
        f"{summary.spans_written:,} new, {summary.spans_rejected:,} rejected, "
        f"{summary.bad_requests:,} unreadable lines or messages; "
        f"{summary.runs_materialised:,} runs updated, {summary.incidents_recorded:,} "
        f"incidents, {summary.unpriced_calls:,} unpriced calls "
        f"({summary.elapsed_s:.1f} s, {summary.spans_per_s:,.0f} spans/s)",
        soft_wrap=True, highlight=False,
    )
    for problem in summary.problems:
        err.print(Text("skipped: ", style="yellow") + Text(problem), soft_wrap=True)
    code = spans_verdict(LEDGER.snapshot() - before, path)
    if code or not summary.complete:
        raise typer.Exit(EXIT_NOT_COMPLETED)
