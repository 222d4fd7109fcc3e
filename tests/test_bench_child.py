"""bench/scale.py's ``child``: the peak RSS it reports is the command's own, not the bench
process's (a child forked straight from a large process inherits its ``ru_maxrss``), and the
exit code and a command that cannot start are reported. Real processes, no mocks."""

from __future__ import annotations

import sys

import pytest

from bench.scale import child

pytestmark = pytest.mark.slow  # starts processes

ALLOC = ("import sys; b = bytearray({mb} * 1024 * 1024); b[::4096] = b'\\x01' * len(b[::4096]);"
         " sys.exit({code})")


def test_the_peak_rss_is_the_commands_own_not_the_bench_processs() -> None:
    big = bytearray(600 * 1024 * 1024)
    big[::4096] = b"\x01" * len(big[::4096])  # this process now holds 600 MB resident
    _, small_mb, code, _ = child([sys.executable, "-c", "pass"])
    assert code == 0
    assert small_mb < 300, small_mb  # an interpreter's few tens of MB, not 600+
    _, grown_mb, code, _ = child([sys.executable, "-c", ALLOC.format(mb=200, code=3)])
    assert code == 3
    assert 200 <= grown_mb < 500, grown_mb
    del big


def test_a_command_that_cannot_start_exits_127_with_the_reason() -> None:
    _, _, code, tail = child(["/nonexistent/cliffwatch-bench-command"])
    assert code == 127
    assert "cliffwatch-bench-command" in tail
