"""CPU time of running processes for the benchmarks, from Linux's ``/proc``.

``/proc/PID/stat`` holds a process's user and system time in clock ticks (fields 14 and
15, ``utime`` and ``stime``; ``SC_CLK_TCK`` ticks a second: proc(5),
docs/sources.md#linux-process-cpu-time). Read before and after a stretch of work, the
difference is the CPU that process spent on it, whatever else ran on the machine.
Elsewhere (no ``/proc``) the figures are None.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.memory import descendants


def cpu_s(pid: int) -> float | None:
    """User + system CPU seconds process ``pid`` has used since it started; None when it
    is gone or there is no ``/proc``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # after the command's ")": state, ppid, ... so utime and stime are fields 12 and 13
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_s(pid: int) -> dict[int, float]:
    """CPU seconds so far of ``pid`` and of each live descendant, by process id (those
    gone, or without ``/proc``, left out)."""
    found = {p: cpu_s(p) for p in [pid, *descendants(pid)]}
    return {p: s for p, s in found.items() if s is not None}


def spent_s(before: dict[int, float], after: dict[int, float], pids: list[int]) -> float:
    """CPU seconds the processes ``pids`` spent between two :func:`tree_cpu_s` readings (a
    process started in between counts from 0)."""
    return sum(after.get(p, 0.0) - before.get(p, 0.0) for p in pids if p in after)
