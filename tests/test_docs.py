"""The docs are tested: every CLI command and option, every setting and every ``cliff.*``
span attribute appears in README.md (and every command and option has help text)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import typer.main

from cliffwatch import settings
from cliffwatch.cli import app
from cliffwatch.telemetry import conventions

README = Path(__file__).resolve().parent.parent / "README.md"
CLI = typer.main.get_command(app)


def _readme() -> str:
    return README.read_text(encoding="utf-8")


def _cli_section() -> str:
    """The README's CLI reference: from a ``## ...CLI...`` heading to the next ``## ``."""
    match = re.search(r"^## [^\n]*\bCLI\b[^\n]*\n(.*?)(?=^## |\Z)", _readme(), re.M | re.S)
    assert match, "README.md has no '## ... CLI ...' section (the CLI reference)"
    return match.group(1)


def _commands() -> list[str]:
    return sorted(CLI.commands)  # type: ignore[attr-defined]


def _options() -> list[tuple[str, str]]:
    return [
        (name, opt)
        for name in _commands()
        for param in CLI.commands[name].params  # type: ignore[attr-defined]
        for opt in param.opts
        if opt.startswith("--") and opt != "--help"
    ]


def test_cli_has_the_commands_the_docs_promise() -> None:
    assert {"demo", "run", "percentiles", "runs", "incidents", "dashboard"} <= set(_commands())


@pytest.mark.parametrize("command", _commands())
def test_every_command_is_in_the_readme(command: str) -> None:
    assert re.search(rf"cliffwatch {re.escape(command)}\b", _cli_section()), (
        f"README's CLI reference does not mention `cliffwatch {command}`"
    )


@pytest.mark.parametrize(("command", "option"), _options())
def test_every_option_is_in_the_readme(command: str, option: str) -> None:
    assert re.search(rf"{re.escape(option)}\b", _cli_section()), (
        f"README's CLI reference does not mention `{option}` (of `cliffwatch {command}`)"
    )


@pytest.mark.parametrize("command", _commands())
def test_every_command_and_option_has_help(command: str) -> None:
    cmd = CLI.commands[command]  # type: ignore[attr-defined]
    assert (cmd.help or "").strip(), f"`cliffwatch {command}` has no help text"
    for param in cmd.params:
        if param.opts and param.opts[0] != "--help":
            assert (getattr(param, "help", None) or "").strip(), (
                f"{param.opts[0]} of `cliffwatch {command}` has no help text"
            )


SETTINGS = sorted(
    value for name, value in vars(settings).items() if isinstance(value, str) and name == value
)


def test_settings_are_found() -> None:
    assert settings.CLIFFWATCH_DB in SETTINGS and settings.OTEL_EXPORTER_OTLP_ENDPOINT in SETTINGS


@pytest.mark.parametrize("variable", SETTINGS)
def test_every_setting_is_in_the_readme(variable: str) -> None:
    assert f"`{variable}`" in _readme(), f"README.md does not document {variable}"


CLIFF_ATTRIBUTES = sorted(
    value
    for name, value in vars(conventions).items()
    if name.startswith("CLIFF_") and isinstance(value, str) and value.startswith("cliff.")
)


def test_cliff_attributes_are_found() -> None:
    assert conventions.CLIFF_ROLE in CLIFF_ATTRIBUTES and len(CLIFF_ATTRIBUTES) > 20


@pytest.mark.parametrize("attribute", CLIFF_ATTRIBUTES)
def test_every_cliff_attribute_is_in_the_readme(attribute: str) -> None:
    assert f"`{attribute}`" in _readme(), f"README.md does not document {attribute}"


# --- docs/sources.md: what the code cites is inside the repository ---------------------------

ROOT = README.parent
SOURCES = ROOT / "docs" / "sources.md"
# Folders that are not the project's own text (environments, caches, build output).
SKIP_DIRS = {".git", ".venv", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache",
             "build", "dist", "reports", "node_modules"}
# A citation of a file outside the repository: the shared folder the project was built
# beside, or its notes by name. Written as patterns so this file does not match itself.
OUTSIDE = re.compile(r"\.\./shared|\b(?:NOTES|DESIGN|STYLE)\.md\b")
CITED_ANCHOR = re.compile(r"docs/sources\.md#([A-Za-z0-9_-]+)")


def _project_text_files() -> list[Path]:
    """Every text file of the working tree (what git tracks, give or take ignored output).

    Walked rather than asked of git: no process is started, so the test stays in the quick
    mode. Symlinked folders (cliffwatch/orchestrator -> ../orchestrator, ...) are not
    entered: their files are read once, at their real path.
    """
    found = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")
                   and not d.endswith((".spill", ".journal"))]
        for name in files:
            path = Path(folder) / name
            if path.is_symlink() or path.suffix in {".duckdb", ".wal", ".parquet", ".png"}:
                continue
            data = path.read_bytes()
            if b"\0" not in data:
                found.append(path)
    return found


def _anchor(heading: str) -> str:
    """GitHub's anchor of a markdown heading: lower case, punctuation dropped, - for spaces."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _source_anchors() -> list[str]:
    text = SOURCES.read_text(encoding="utf-8")
    return [_anchor(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)]


def test_no_file_cites_anything_outside_the_repository() -> None:
    files = _project_text_files()
    assert ROOT / "cliffwatch" / "settings.py" in files  # the walk reaches the code
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in files
        if path.name != "CHANGELOG.md"  # history may name what was cited then
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert offenders == [], "cite docs/sources.md instead:\n" + "\n".join(offenders)


def test_sources_anchors_are_unique() -> None:
    anchors = _source_anchors()
    assert len(anchors) == len(set(anchors)), sorted(a for a in anchors if anchors.count(a) > 1)


def test_every_cited_source_section_exists() -> None:
    anchors = set(_source_anchors())
    cited = {
        (match.group(1), str(path.relative_to(ROOT)))
        for path in _project_text_files()
        for match in CITED_ANCHOR.finditer(path.read_text(encoding="utf-8"))
    }
    assert len({anchor for anchor, _ in cited}) >= 10  # the code does cite it
    missing = sorted(f"{where}: #{anchor}" for anchor, where in cited if anchor not in anchors)
    assert missing == [], "no such section in docs/sources.md:\n" + "\n".join(missing)


# --- files over about 500 lines say at their top why they are one file --------------------

MAX_LINES = 500
WHY_ONE_FILE = "Why one file:"


def _long_python_files() -> dict[str, int]:
    return {
        str(path.relative_to(ROOT)): count
        for path in _project_text_files()
        if path.suffix == ".py"
        and (count := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }


def test_a_file_over_500_lines_says_why_at_its_top() -> None:
    long_files = _long_python_files()
    unexplained = sorted(
        f"{name} ({count} lines)"
        for name, count in long_files.items()
        if WHY_ONE_FILE not in "\n".join((ROOT / name).read_text().splitlines()[:40])
    )
    assert unexplained == [], (
        f"split these, or say '{WHY_ONE_FILE} ...' in their first 40 lines:\n"
        + "\n".join(unexplained)
    )

def test_public_api_is_documented_in_docs_api_md() -> None:
    """Every name of ``cliffwatch.__all__`` has a row in docs/api.md naming the module and
    linking the file that defines it, nothing else has a row, and the README links the page."""
    import cliffwatch

    root = Path(__file__).resolve().parent.parent
    api = (root / "docs" / "api.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([^`]+)` \|.*\| \[`([\w.]+)`\]\(\.\./([^)]+)\) \|$", api, re.M)
    documented = {name: (module, path) for name, module, path in rows}
    assert len(documented) == len(rows), "a name has two rows in docs/api.md"
    assert set(documented) == set(cliffwatch.__all__), (
        f"missing from docs/api.md: {sorted(set(cliffwatch.__all__) - set(documented))}; "
        f"documented but not public: {sorted(set(documented) - set(cliffwatch.__all__))}"
    )
    for name, (module, path) in documented.items():
        parts = Path(path).with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        assert module == ".".join(parts if parts[0] == "cliffwatch" else ("cliffwatch", *parts))
        source = (root / path).read_text(encoding="utf-8")
        definition = rf"^(?:(?:async )?def|class) {re.escape(name)}\b|^{re.escape(name)}\s*[:=]"
        assert re.search(definition, source, re.M), f"{path} does not define {name}"
    assert "(docs/api.md)" in README.read_text(encoding="utf-8"), "README does not link docs/api.md"


def _bench_names() -> set[str]:
    """The benchmark names ``python -m bench`` takes: the BENCHMARKS keys and the ones its
    docstring lists (the scale, ClickHouse and dashboard benches added at start-up)."""
    source = (Path(__file__).resolve().parent.parent / "bench" / "__main__.py").read_text()
    return set(re.findall(r'^\s+"(\w+)": bench_', source, re.M)) | set(
        re.findall(r"^- ``(\w+)``", source, re.M))


def test_every_bench_table_row_names_its_benchmark() -> None:
    """Each row of the README's bench table has two cells, the first naming a benchmark
    ``python -m bench`` runs (a figures update once dropped the first cell of five rows)."""
    text = README.read_text(encoding="utf-8")
    table = text[text.index("| benchmark | figure |"):].split("\n\n", 1)[0].splitlines()[2:]
    names = _bench_names()
    assert len(table) >= 5 and {"store_write", "receiver", "dashboard_paint"} <= names
    for row in table:
        cells = [c.strip() for c in row.strip().strip("|").split(" | ")]
        named = re.match(r"`(\w+)", cells[0])
        assert len(cells) == 2 and named and named.group(1) in names, row[:120]
