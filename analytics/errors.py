"""The read side's own exceptions; the CLI and the dashboard convert them at their edge.

Every message is one clear line a user can act on (what was wrong, what would be right).
"""

from __future__ import annotations

from collections.abc import Sequence

from cliffwatch.errors import CliffwatchError


class AnalyticsError(CliffwatchError):
    """Base of every error analytics raises for a bad request (not for a bug)."""


class UnknownTaskClassError(AnalyticsError, LookupError):
    """A task class that the store (or the workload) does not know.

    Attributes:
        task_class: the name asked for.
        known: the names that exist, sorted.
    """

    def __init__(self, task_class: str, known: Sequence[str]) -> None:
        self.task_class = task_class
        self.known = sorted(known)
        listed = ", ".join(self.known) if self.known else "none yet"
        super().__init__(f"unknown task class {task_class!r} (known: {listed})")


class RunNotFoundError(AnalyticsError, LookupError):
    """No run has this id (or the id prefix matches several runs)."""
