"""Peak resident memory for the benchmarks: of this process since a point the bench
chooses, and of a running process with its descendants.

Linux keeps each process's high-water mark of resident memory (``VmHWM`` in
``/proc/PID/status``; ``ru_maxrss`` is the same figure) and lets a process reset its own:
writing ``5`` to ``/proc/self/clear_refs`` sets it to the current resident set (Linux 4.0
and later; docs/sources.md#linux-peak-resident-memory). The benchmarks run one after another in one
process, so a peak read without that reset would be the largest of every benchmark before.
Elsewhere (no ``/proc``) the figures are None and the benchmarks print "n/a".
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_HWM = re.compile(r"^VmHWM:\s+(\d+) kB", re.M)


def reset_peak() -> float | None:
    """Set this process's peak resident memory to its resident memory now, and return that,
    MB: what a peak read later started from. None where the system does not allow it (the
    peak read later then covers the process's life)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    return peak_rss_mb()


def peak_rss_mb(pid: int | str = "self") -> float | None:
    """Peak resident memory of process ``pid`` (default this one), MB (2**20 bytes), since
    it started or since its last :func:`reset_peak`; None when it is gone or not on Linux."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = _HWM.search(status)
    return None if found is None else int(found.group(1)) / 1024.0


def descendants(pid: int) -> list[int]:
    """The live processes below ``pid`` (children, their children, ...), by the parent id
    each ``/proc/PID/stat`` names; [] where there is no ``/proc``."""
    parents: dict[int, list[int]] = {}
    for entry in os.scandir("/proc") if os.path.isdir("/proc") else ():
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # the field after the command's ")" and the state is the parent id (proc(5))
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], list(parents.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo += parents.get(child, [])
    return found


def tree_peak_rss_mb(pid: int) -> tuple[float | None, float]:
    """``(peak of pid, sum of the peaks of its live descendants)``, MB: read while they run
    (a process's peak is gone with it). The sum bounds their peak together from above (each
    may have peaked at another moment)."""
    below = (peak_rss_mb(child) for child in descendants(pid))
    return peak_rss_mb(pid), sum(x for x in below if x is not None)


def mb(value: float | None) -> str:
    """``value`` MB as text ("1,234 MB"), or "n/a" for None."""
    return "n/a" if value is None else f"{value:,.0f} MB"


def peak_since(start: float | None, peak: float | None) -> str:
    """A peak beside what it started from: "612 MB (520 MB at the start)"."""
    return f"{mb(peak)} ({mb(start)} at the start)"
