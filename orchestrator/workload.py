"""The workload: task classes (``data/workload.toml``) and their inputs (``data/inputs/*.jsonl``).

``workload.toml`` holds a ``[defaults]`` table and one ``[classes.<name>]`` table per task
class, each a :class:`~orchestrator.config.TaskClassConfig` (models, cap, ceiling, policy,
token budgets, retries...) plus ``weight`` (the class's share of the demo's runs) and an
optional ``[classes.<name>.provider_params]`` table (the simulated provider's profile,
:class:`~orchestrator.sim_provider.SimProfile`). ``inputs/<name>.jsonl`` holds one task per
line: ``{"id": "...", "input": "..."}``.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from cliffwatch.orchestrator.config import TaskClassConfig
from cliffwatch.orchestrator.dispatch import Limits
from cliffwatch.orchestrator.errors import ConfigError

DEFAULT_DATA_DIR: Traversable = files("cliffwatch").joinpath("data")
"""The bundled workload (``workload.toml``, ``inputs/``), read through importlib.resources so
it is found inside an installed wheel as in a checkout (where it is the top-level ``data/``)."""


@dataclass(frozen=True, slots=True)
class Task:
    """One task to orchestrate.

    Attributes:
        task_id: stable id of the input (``cu-003``), recorded as ``cliff.task.id``.
        task_class: the class it belongs to.
        input_text: the task itself, as a user would write it.
    """

    task_id: str
    task_class: str
    input_text: str


@dataclass(frozen=True, slots=True)
class TaskClass:
    """A task class of the workload: its settings, its demo weight and its tasks."""

    config: TaskClassConfig
    weight: float
    tasks: tuple[Task, ...]

    @property
    def name(self) -> str:
        """The class name."""
        return self.config.name


@dataclass(frozen=True, slots=True)
class Workload:
    """Every task class of a workload, in file order."""

    classes: tuple[TaskClass, ...]
    source: Path | Traversable

    def __getitem__(self, name: str) -> TaskClass:
        for task_class in self.classes:
            if task_class.name == name:
                return task_class
        known = ", ".join(c.name for c in self.classes)
        raise KeyError(f"no task class {name!r} in {self.source} (known: {known})")

    @property
    def names(self) -> tuple[str, ...]:
        """Class names in file order."""
        return tuple(c.name for c in self.classes)

    def models(self) -> set[str]:
        """Every model string any class uses."""
        return {m for task_class in self.classes for m in task_class.config.models()}


def load_tasks(path: Path | Traversable, task_class: str) -> tuple[Task, ...]:
    """Read ``{"id", "input"}`` lines of ``path`` as tasks of ``task_class``.

    Blank lines are skipped.

    Raises:
        ConfigError: a line is not a JSON object with a non-empty ``id`` and ``input``,
            or an id repeats; the message names the file and line.
    """
    tasks: list[Task] = []
    seen: set[str] = set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{number}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise ConfigError(f"{path}:{number}: expected a JSON object")
        task_id, text = row.get("id"), row.get("input")
        if not isinstance(task_id, str) or not task_id or not isinstance(text, str) or not text:
            raise ConfigError(f'{path}:{number}: needs non-empty "id" and "input" strings')
        if task_id in seen:
            raise ConfigError(f"{path}:{number}: id {task_id!r} repeats")
        seen.add(task_id)
        tasks.append(Task(task_id, task_class, text))
    return tuple(tasks)


def _class_from_table(
    name: str, table: Mapping[str, Any], defaults: Mapping[str, Any],
    inputs_dir: Path | Traversable,
) -> TaskClass:
    if not isinstance(table, Mapping):
        raise ConfigError(f"classes.{name} must be a table")
    values = {**defaults, **table}
    weight = values.pop("weight", 1.0)
    if not isinstance(weight, int | float) or weight < 0:
        raise ConfigError(f"{name}: weight must be a number >= 0")
    config = TaskClassConfig.from_mapping(name, values)
    path = inputs_dir / f"{name}.jsonl"
    if not path.is_file():
        raise ConfigError(f"{name}: no inputs file {path}")
    tasks = load_tasks(path, name)
    if not tasks:
        raise ConfigError(f"{name}: {path} holds no tasks")
    return TaskClass(config, float(weight), tasks)


def load_workload(data_dir: str | os.PathLike[str] | None = None) -> Workload:
    """Load ``<data_dir>/workload.toml`` and ``<data_dir>/inputs/<class>.jsonl``.

    Args:
        data_dir: directory holding the files; default the bundled workload
            (:data:`DEFAULT_DATA_DIR`).

    Raises:
        ConfigError: a missing file, bad TOML, an unknown setting, a bad value or a bad
            input line, in one line naming the file (and class or line).
    """
    root: Path | Traversable = Path(data_dir) if data_dir is not None else DEFAULT_DATA_DIR
    path = root / "workload.toml"
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no workload file {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    defaults = doc.get("defaults", {})
    classes = doc.get("classes", {})
    if not isinstance(defaults, Mapping) or not isinstance(classes, Mapping) or not classes:
        raise ConfigError(f"{path}: needs a [defaults] table and [classes.<name>] tables")
    unknown = sorted(set(doc) - {"defaults", "classes"})
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key(s) {', '.join(unknown)}")
    loaded = tuple(
        _class_from_table(name, table, defaults, root / "inputs") for name, table in classes.items()
    )
    return Workload(loaded, path)


def configured_limits(data_dir: str | os.PathLike[str] | None = None) -> dict[str, Limits] | None:
    """Each task class's configured limits (max-workers cap, cost ceiling, cap policy), by
    class name, for a report's what-if (``analytics.report.build_report``'s
    ``class_limits``).

    Args:
        data_dir: as :func:`load_workload`.

    Returns:
        Class name -> :class:`~orchestrator.dispatch.Limits`; None when the workload cannot
        be read (a :class:`ConfigError`), so that the report falls back to each class's
        latest recorded cap, as ``cliffwatch report`` and the dashboard's Report page do.
    """
    try:
        return {c.name: c.config.limits for c in load_workload(data_dir).classes}
    except ConfigError:
        return None
