"""Simulated time for runs: span times come from the simulation, never from host load.

A run's :class:`VirtualClock` keeps time in *lanes*: the run's own lane, and one lane per
worker, forked from the run's lane when the workers are dispatched and joined back (the
run's lane moves to the latest worker's end) when they are all done. A lane's time moves
only when

- a simulated provider waits out a call (:func:`simulate` / :func:`simulate_blocking`,
  called inside the provider with the call's simulated latency: the lane advances by
  exactly that latency, however long the host took to get there);
- the run sleeps on the clock (retry backoff, :meth:`VirtualClock.sleep`);
- a call to a real provider returns (:meth:`VirtualClock.call`: the lane advances by the
  call's real elapsed time / ``time_scale``, which is the call's real duration at
  ``time_scale`` 1);
- the run waits for another lane (:meth:`VirtualClock.join`, :meth:`VirtualClock.wait_until`).

So with the simulated provider a run's span times are a function of its seed alone: the same
run on a busy host and on an idle one has identical span start and end times. The real
seconds slept (simulated seconds x ``time_scale``) only pace the run, so that concurrent
calls still finish in about the order of their simulated latencies.

The current lane travels in a :class:`contextvars.ContextVar`: the provider, called by
litellm inside the caller's task, finds the lane of the call it serves without being
passed anything.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

_T = TypeVar("_T")

_LANE: contextvars.ContextVar[Lane | None] = contextvars.ContextVar(
    "cliffwatch_clock_lane", default=None
)


@dataclass(eq=False, slots=True)
class Lane:
    """One strand of a run's simulated time: the run itself, or one worker.

    Attributes:
        clock: the run's clock.
        elapsed_ns: simulated ns since the run started.
        simulated: set by a simulated provider when it takes over the current call's
            timing (so :meth:`VirtualClock.call` does not add real time on top).
    """

    clock: VirtualClock
    elapsed_ns: int = 0
    simulated: bool = False

    def advance(self, simulated_s: float) -> None:
        """Move the lane ``simulated_s`` simulated seconds on (negative values: no move)."""
        self.elapsed_ns += max(0, round(simulated_s * 1e9))


def current_lane() -> Lane | None:
    """The lane of the run calling, or None outside a run."""
    return _LANE.get()


def _take_over() -> Lane | None:
    lane = _LANE.get()
    if lane is not None:
        lane.simulated = True
    return lane


async def simulate(simulated_s: float, real_s: float) -> None:
    """A simulated provider's wait: ``real_s`` real seconds, then the caller's lane (if any)
    moves ``simulated_s`` on. Cancelled during the wait, the lane does not move."""
    lane = _take_over()
    await asyncio.sleep(real_s)
    if lane is not None:
        lane.advance(simulated_s)


def simulate_blocking(simulated_s: float, real_s: float) -> None:
    """:func:`simulate` for a synchronous caller (blocks the thread ``real_s`` seconds)."""
    lane = _take_over()
    time.sleep(real_s)
    if lane is not None:
        lane.advance(simulated_s)


class VirtualClock:
    """A run's simulated time, in lanes (see the module docstring).

    Args:
        started_at_ns: the run's start, ns since the epoch (default: now).
        time_scale: real seconds per simulated second (1.0: real time).

    Raises:
        ValueError: ``time_scale`` is not > 0.
    """

    def __init__(self, started_at_ns: int | None = None, time_scale: float = 1.0) -> None:
        if not time_scale > 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale!r}")
        self.started_at_ns = time.time_ns() if started_at_ns is None else int(started_at_ns)
        self.time_scale = float(time_scale)
        self.root = Lane(self)

    def lane(self) -> Lane:
        """The lane of the calling task: its own if it runs one of this clock's lanes, else
        the run's (root) lane."""
        lane = _LANE.get()
        return lane if lane is not None and lane.clock is self else self.root

    def now_ns(self) -> int:
        """The simulated now of the calling lane, ns since the epoch."""
        return self.started_at_ns + self.lane().elapsed_ns

    def real_s(self, simulated_s: float) -> float:
        """Real seconds that ``simulated_s`` simulated seconds take."""
        return simulated_s * self.time_scale

    async def sleep(self, simulated_s: float) -> None:
        """Sleep ``simulated_s`` simulated seconds (the lane moves exactly that much)."""
        lane = self.lane()
        await asyncio.sleep(self.real_s(simulated_s))
        lane.advance(simulated_s)

    def fork(self) -> Lane:
        """A new lane starting at the calling lane's now (a worker being dispatched)."""
        return Lane(self, self.lane().elapsed_ns)

    def join(self, lanes: Iterable[Lane]) -> None:
        """Move the calling lane to the latest of its own time and ``lanes``' times."""
        lane = self.lane()
        lane.elapsed_ns = max([lane.elapsed_ns, *(other.elapsed_ns for other in lanes)])

    def wait_until(self, at_ns: int) -> None:
        """Move the calling lane to ``at_ns`` (ns since the epoch) unless it is past it."""
        lane = self.lane()
        lane.elapsed_ns = max(lane.elapsed_ns, at_ns - self.started_at_ns)

    @contextmanager
    def using(self, lane: Lane | None = None) -> Iterator[Lane]:
        """Make ``lane`` (default the root lane) the calling task's lane inside the block."""
        lane = lane or self.root
        token = _LANE.set(lane)
        try:
            yield lane
        finally:
            _LANE.reset(token)

    @contextmanager
    def call(self, simulated: bool = False) -> Iterator[None]:
        """Time one provider call: a simulated provider moves the lane itself (by its
        simulated latency); any other call moves it by real elapsed / ``time_scale``.

        Args:
            simulated: the call goes to a simulated provider, so it adds no real time
                even if it ends (is cancelled) before the provider takes over.
        """
        lane = self.lane()
        lane.simulated = simulated
        began = time.monotonic_ns()
        try:
            yield
        finally:
            if not lane.simulated:
                lane.elapsed_ns += round((time.monotonic_ns() - began) / self.time_scale)
            lane.simulated = False

    async def timed(self, call: Awaitable[_T], simulated: bool = False) -> _T:
        """Await one provider call, timed as :meth:`call` times it."""
        with self.call(simulated):
            return await call
