"""Every command's ``--help`` at 80 columns reads as prose: no type placeholders
(``<bool>``, ``<list[Path]>``), no RST, paragraphs wrapped by the terminal (never a line
cut mid-sentence where the docstring was wrapped), nothing cut off; commands listed in the
order a user meets them."""

from __future__ import annotations

import re
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from cliffwatch.cli import app
from cliffwatch.cli.app import COMMAND_ORDER
from cliffwatch.cli.helptext import plain_help

WIDTH = 80
CLI = typer.main.get_command(app)


def _paths(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix]
    commands = getattr(group, "commands", None)  # a group (typer's own click, not click's)
    if commands:
        for name, command in commands.items():
            found += _paths(command, (*prefix, name))
    return found


COMMAND_PATHS = _paths(CLI)


def _help(*path: str) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": str(WIDTH)})
    assert result.exit_code == 0, result.output
    return result.stdout


def test_every_command_is_covered() -> None:
    names = {p[0] for p in COMMAND_PATHS if p}
    assert {"demo", "prune", "incidents", "report", "ingest"} <= names
    assert ("incidents", "ack") in COMMAND_PATHS


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=lambda p: " ".join(p) or "cliffwatch")
def test_help_has_no_placeholders_rst_or_cut_text(path: tuple[str, ...]) -> None:
    out = _help(*path)
    for bad in ("<bool>", "<str>", "<int", "<float", "<path>", "<list[", "``", ":func:",
                ":mod:", "…"):
        assert bad not in out, f"{bad!r} in 'cliffwatch {' '.join(path)} --help':\n{out}"
    usage = next(line for line in out.splitlines() if "Usage:" in line)
    assert "{" not in usage and "<" not in usage, usage
    for line in out.splitlines():
        assert len(line.rstrip()) <= WIDTH, line


def _description(out: str) -> list[str]:
    """The lines between the usage line and the first panel (the command's own text)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if "Usage:" in line) + 1
    end = next((i for i, line in enumerate(lines) if line.startswith("╭")), len(lines))
    return [line.rstrip() for line in lines[start:end]]


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=lambda p: " ".join(p) or "cliffwatch")
def test_help_paragraphs_wrap_at_the_terminal_not_the_source(path: tuple[str, ...]) -> None:
    # A line followed by another of the same paragraph ends only because the next word
    # did not fit: a docstring's own line break would end it short.
    lines = _description(_help(*path))
    assert any(lines), "no description"
    for line, following in zip(lines, lines[1:], strict=False):
        if line and following:
            next_word = following.split()[0]
            assert len(line) + 1 + len(next_word) > WIDTH - 2, (
                f"hard line break after {line!r} (next: {next_word!r})"
            )


def test_flags_show_no_type_and_options_a_metavar() -> None:
    out = _help("demo")
    assert re.search(r"--fresh\s+Replace", out), out
    assert re.search(r"--runs\s+N\b", out) and re.search(r"--db\s+PATH\b", out)
    assert "Usage: cliffwatch replay [OPTIONS] RUN_ID" in _help("replay")
    assert "Usage: cliffwatch ingest [OPTIONS] FILE..." in _help("ingest")
    # choices too long for the metavar column are listed in the help text, whole
    assert "One of: cap_breach, cost_ceiling, runaway." in " ".join(
        _help("incidents").replace("│", " ").split())


def test_commands_are_listed_in_the_order_a_user_meets_them() -> None:
    out = _help()
    panel = out[out.index("Commands"):]
    listed = re.findall(r"^│ ([a-z]+) ", panel, re.M)
    assert listed == [name for name in COMMAND_ORDER if name in CLI.commands]  # type: ignore[attr-defined]
    assert listed[:2] == ["demo", "run"] and set(listed) == set(CLI.commands)  # type: ignore[attr-defined]


def test_plain_help() -> None:
    text = """First line of
    a sentence with ``--fresh`` and :func:`~cliffwatch.x`.

    Second   paragraph."""
    assert plain_help(text) == (
        "First line of a sentence with --fresh and cliffwatch.x.\n\nSecond paragraph."
    )
    assert plain_help(None) is None
