"""The docs are tested: every CLI command and option, every setting and every ``cliff.*``
span attribute appears in README.md (and every command and option has help text)."""

from __future__ import annotations

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
