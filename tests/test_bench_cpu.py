"""bench/cpu.py: the CPU seconds the receiver benchmark charges each process. A child that
spins shows the CPU it spent (checked against its own clock); one that sleeps shows next
to none. Real processes, no mocks (Linux /proc)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bench.cpu import cpu_s, spent_s, tree_cpu_s

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc")

_CHILD = """
import sys, time
print('ready', flush=True)
sys.stdin.readline()
t0 = time.process_time()
if sys.argv[1] == 'spin':
    while time.process_time() - t0 < 0.6:
        pass
else:
    time.sleep(0.6)
print(time.process_time() - t0, flush=True)
sys.stdin.readline()
"""


@pytest.mark.slow  # starts processes
@pytest.mark.parametrize("work", ["spin", "sleep"])
def test_a_childs_cpu_between_two_readings_is_what_it_spent(work: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, work], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        before = tree_cpu_s(os.getpid())
        assert proc.pid in before and before[os.getpid()] == pytest.approx(
            cpu_s(os.getpid()), abs=0.5)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        own_clock = float(proc.stdout.readline())
        after = tree_cpu_s(os.getpid())
        spent = spent_s(before, after, [proc.pid])
        # /proc counts in clock ticks (1/100 s here): the two clocks agree within a few
        assert spent == pytest.approx(own_clock, abs=0.05), (spent, own_clock)
        assert (spent > 0.5) == (work == "spin"), spent
        proc.stdin.write("stop\n")
        proc.stdin.flush()
    finally:
        proc.communicate(timeout=60)
    assert cpu_s(proc.pid) is None  # gone with its process


def test_a_process_started_between_readings_counts_from_zero() -> None:
    mine = os.getpid()
    after = {mine: 3.0, 99999999: 1.5}
    assert spent_s({mine: 1.0}, after, [mine, 99999999]) == pytest.approx(3.5)
    assert spent_s({mine: 1.0}, after, [12345678]) == 0.0  # not in the reading: nothing
