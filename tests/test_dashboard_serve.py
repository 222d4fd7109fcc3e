"""``cliffwatch dashboard`` as a real process: loopback only by default, and SIGTERM stops
the Streamlit child too (no orphan holding the port)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from dashboard_store import build_store
from waits import http_ok, scaled, wait_until

CLIFFWATCH_BIN = Path(sys.executable).parent / "cliffwatch"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening_addresses(port: int) -> list[str]:
    """Local addresses of TCP sockets listening on ``port`` (``ss -ltn``), e.g. 127.0.0.1."""
    out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True,
                         check=True, timeout=scaled(30)).stdout
    return [line.split()[3].rsplit(":", 1)[0] for line in out.splitlines() if line.strip()]


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_dashboard_listens_on_loopback_and_sigterm_stops_the_server(tmp_path: Path) -> None:
    db = build_store(tmp_path / "store.duckdb").path
    port = _free_port()
    proc = subprocess.Popen(
        [str(CLIFFWATCH_BIN), "dashboard", "--db", str(db), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
    )
    children: list[int] = []
    try:
        def healthy() -> bool:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            return http_ok(f"http://127.0.0.1:{port}/_stcore/health", b"ok")

        wait_until(healthy, 120, "the dashboard's /_stcore/health", interval_s=0.3)
        assert _listening_addresses(port) == ["127.0.0.1"]
        children = _children(proc.pid)
        assert children, "no Streamlit child process"

        proc.send_signal(signal.SIGTERM)  # to the cliffwatch process only, not its group
        proc.wait(timeout=scaled(60))
        assert proc.returncode == 0
        wait_until(lambda: not any(_alive(pid) for pid in children), 30,
                   "the Streamlit child to exit")
        assert _listening_addresses(port) == []
    finally:
        for pid in [proc.pid, *children]:  # the child has its own process group
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        proc.communicate(timeout=scaled(30))
