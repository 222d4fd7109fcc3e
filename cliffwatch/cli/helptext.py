"""How ``--help`` reads: plain paragraphs and metavars a user would type.

typer (0.29) prints a docstring's line breaks as they are (a sentence cut where the source
wrapped it), RST markup as written (````--fresh````), a type column for every option
(``<bool>`` beside a flag, ``<int range>``, ``<list[Path]>``) and required arguments as
``{run_id}``. :class:`CliffwatchCommand` and :class:`HelpTextGroup` fix that for every
command of the app: their help is :func:`plain_help` of the docstring, a flag shows no
type, another option shows a metavar (``N``, ``X``, ``PATH``, ``TEXT`` or its short list
of choices), an argument shows its upper-case name (``RUN_ID``, ``FILE...``).
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

CHOICES_METAVAR_MAX_CHARS = 24
"""Choices up to this long (``table|json|csv``) are the option's metavar; longer ones are
listed in its help text instead (so the help column never folds a choice in two)."""

_RST_LITERAL = re.compile(r"``([^`]+)``")
_RST_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")


def plain_help(text: str | None) -> str | None:
    """``text`` as the terminal should show it: paragraphs (split at blank lines) each on
    one logical line, so the terminal wraps them at its width; RST literals and roles
    (````x````, ``:func:`x```) as plain ``x``."""
    if not text:
        return text
    paragraphs = re.split(r"\n\s*\n", inspect.cleandoc(text))
    plain = (" ".join(p.split()) for p in paragraphs)
    return "\n\n".join(_RST_ROLE.sub(r"\1", _RST_LITERAL.sub(r"\1", p)) for p in plain if p)


def _choices(param: TyperOption, ctx: Any) -> list[str]:
    desc = param.type_descriptor
    if not desc.is_choice:
        return []
    return TyperOption.display_type(param, ctx).strip("<>").split("|")


class _Option(TyperOption):
    """An option whose type column is a metavar a user would type, or nothing (a flag)."""

    def display_type_rich(self, ctx: Any) -> str | None:
        if self.is_flag:
            return None
        if self.metavar is not None:
            return self.metavar
        choices = _choices(self, ctx)
        if choices:
            joined = "|".join(choices)
            return joined if len(joined) <= CHOICES_METAVAR_MAX_CHARS else (
                (self.name or "value").upper())
        annotation = self.type_descriptor.annotation
        if self.type_descriptor.is_path or annotation is Path:
            return "PATH"
        if annotation is int or self.type_descriptor.ranged_type_name == "int":
            return "N"
        if annotation is float or self.type_descriptor.ranged_type_name == "float":
            return "X"
        return "TEXT"


class _Argument(TyperArgument):
    """An argument shown as its upper-case name (``RUN_ID``), with no type column."""

    @property
    def display_name_raw(self) -> str:
        return self.metavar or (self.name or "value").upper()

    def display_type_rich(self, ctx: Any) -> str | None:
        return None

    def _usage_display_name(self) -> str:
        name = self.display_name_raw
        if self.nargs != 1 and not name.endswith("..."):
            name += "..."
        return name if self.required else f"[{name}]"


def _plain_params(params: list[Any], ctx: Any = None) -> None:
    """Give ``params`` the plain help classes (in place) and list long choices in the help."""
    for param in params:
        if type(param) is TyperOption:
            param.__class__ = _Option
            choices = _choices(param, ctx)
            if choices and len("|".join(choices)) > CHOICES_METAVAR_MAX_CHARS:
                param.help = f"{param.help or ''} One of: {', '.join(choices)}.".strip()
        elif type(param) is TyperArgument:
            param.__class__ = _Argument


class _PlainHelp:
    """Mixin: plain help text and params for a typer command or group."""

    help: str | None
    params: list[Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = plain_help(self.help)
        _plain_params(self.params)

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)  # type: ignore[misc]
        _plain_params([option])
        return option


class CliffwatchCommand(_PlainHelp, TyperCommand):
    """A command whose ``--help`` is plain (see the module docstring)."""


class HelpTextGroup(_PlainHelp, TyperGroup):
    """A command group whose ``--help`` is plain, like :class:`CliffwatchCommand`'s."""
