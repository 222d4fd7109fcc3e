"""A webhook receiver on loopback for alert tests: records every POST, answers as told.

``WebhookReceiver`` is a real HTTP server (``http.server.ThreadingHTTPServer`` on
127.0.0.1, a free port) running in a thread of the test process; delivering processes
(the test itself, or subprocesses) POST to its :attr:`~WebhookReceiver.url`. Tell it to
fail: ``receiver.fail_next(2, status=500)`` answers the next two requests with HTTP 500;
``receiver.delay_s`` slows every answer (to test timeouts).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from waits import wait_until


@dataclass(frozen=True, slots=True)
class Received:
    """One POST the receiver got.

    Attributes:
        path: the request path.
        headers: the request headers (lower-case names).
        body: the JSON body, parsed.
        status: what the receiver answered.
    """

    path: str
    headers: dict[str, str]
    body: Any
    status: int

    @property
    def alert_id(self) -> str:
        """The alert id the payload carries."""
        return str(self.body["alert"]["alert_id"])


class WebhookReceiver:
    """A loopback webhook; use as a context manager (starts and stops the server)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: list[int] = []
        self.requests: list[Received] = []
        self.delay_s = 0.0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)
                with receiver._lock:
                    status = receiver._failures.pop(0) if receiver._failures else 200
                    try:
                        body = json.loads(raw)
                    except ValueError:
                        body = raw.decode(errors="replace")
                    receiver.requests.append(Received(
                        self.path, {k.lower(): v for k, v in self.headers.items()}, body, status))
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok" if status == 200 else b"error")

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # keep test output clean

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The webhook URL (``http://127.0.0.1:<port>/hook``)."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/hook"

    def fail_next(self, count: int, *, status: int = 500) -> None:
        """Answer the next ``count`` requests with HTTP ``status``."""
        with self._lock:
            self._failures.extend([status] * count)

    def delivered(self) -> list[Received]:
        """The requests answered 2xx, in arrival order."""
        with self._lock:
            return [r for r in self.requests if 200 <= r.status < 300]

    def delivered_counts(self) -> Counter[str]:
        """How many times each alert id was delivered (answered 2xx)."""
        return Counter(r.alert_id for r in self.delivered())

    def wait_for(self, count: int, timeout_s: float = 30.0) -> list[Received]:
        """Wait until at least ``count`` requests were answered 2xx; return them.

        ``timeout_s`` is scaled by ``CLIFFWATCH_TEST_TIME_SCALE`` (tests/waits.py).

        Raises:
            AssertionError: they did not arrive in time.
        """
        try:
            return wait_until(lambda: got if len(got := self.delivered()) >= count else None,
                              timeout_s, f"{count} deliveries", interval_s=0.02)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: got {len(self.delivered())}, "
                                 f"statuses {[r.status for r in self.requests]}") from None

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
