"""bench/memory.py: the peak resident memory the benchmarks print. A reset peak starts from
what the process holds now, not from its largest ever; a child's peak is read from its own
process while it runs. Real processes and real allocations, no mocks (Linux /proc)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from bench.memory import descendants, peak_rss_mb, peak_since, reset_peak, tree_peak_rss_mb

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"),
                                reason="needs Linux /proc")


def _touch(mb: int) -> bytearray:
    block = bytearray(mb * 1024 * 1024)
    block[::4096] = b"\x01" * len(block[::4096])  # resident, not only reserved
    return block


def test_a_reset_peak_forgets_what_was_freed_before_it() -> None:
    big = _touch(300)
    del big
    high = peak_rss_mb()
    start = reset_peak()
    assert high is not None and start is not None
    assert start < high - 200, (start, high)  # the 300 MB freed is not in the new peak
    held = _touch(120)
    peak = peak_rss_mb()
    assert peak is not None and peak >= start + 110, (start, peak)
    assert peak_since(start, peak) == f"{peak:,.0f} MB ({start:,.0f} MB at the start)"
    del held


@pytest.mark.slow  # starts a process
def test_a_childs_peak_is_its_own_and_read_while_it_runs() -> None:
    code = ("import sys; b = bytearray(150 * 1024 * 1024); b[::4096] = b'\\x01' * "
            "len(b[::4096]); del b; print('ready', flush=True); sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        assert proc.pid in descendants(os.getpid())
        own, below = tree_peak_rss_mb(os.getpid())
        assert own is not None
        assert below >= 150, below  # freed before the read: the peak still holds it
        assert peak_rss_mb(proc.pid) is not None
    finally:
        proc.communicate("", timeout=60)
    deadline = time.monotonic() + 60
    while peak_rss_mb(proc.pid) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert peak_rss_mb(proc.pid) is None  # gone with its process
