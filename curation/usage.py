"""Readable ``--help``: usage lines as ``curation prelabel [OPTIONS] MANIFEST OUT_DIR`` and no ``<bool>`` on flags.

typer 0.29 writes required arguments as ``{manifest}`` in the usage line and tags every flag (``--force``,
``--help``) with ``<bool>``. :func:`readable_help` gives every command of an app (and of its sub-apps) the command
class below, which names arguments in capitals, the way click and most CLIs do, and shows no type for flags.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup
from typer.models import DefaultPlaceholder

# typer 0.29 carries its own copy of click (typer._click), so parameters are told apart by their
# ``param_type_name`` and ``is_flag`` rather than by isinstance against the click package.


class _UntaggedFlags:
    """Mixin: the command's flags (help and completion flags included) carry no type tag."""

    def get_params(self, ctx: Any) -> list[Any]:
        params: list[Any] = super().get_params(ctx)  # type: ignore[misc]  # the click command after this mixin
        for param in params:
            _untag_flag(param)
        return params


class ReadableCommand(_UntaggedFlags, TyperCommand):
    """A typer command whose usage line reads ``[OPTIONS] MANIFEST OUT_DIR`` and whose flags carry no type tag."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                name = (param.metavar or param.name or "").upper()
                name = name if param.required else f"[{name}]"
                pieces.append(name + ("..." if param.nargs != 1 else ""))
            else:
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces


class ReadableGroup(_UntaggedFlags, TyperGroup):
    """A typer group (``curation``, ``curation studio``) whose flags carry no type tag."""


def _untag_flag(param: Any) -> None:
    """An on/off flag takes no value, so its help row shows none (an empty metavar replaces ``<bool>``)."""
    if param.param_type_name == "option" and getattr(param, "is_flag", False) and param.metavar is None:
        param.metavar = ""


def readable_help(app: typer.Typer) -> None:
    """Use the readable classes for ``app``, its commands and its sub-apps, where they have no class of their own."""
    if _unset(app.info.cls, TyperGroup):
        app.info.cls = ReadableGroup
    for command in app.registered_commands:
        if _unset(command.cls, TyperCommand):
            command.cls = ReadableCommand
    for group in app.registered_groups:
        if _unset(group.cls, TyperGroup):
            group.cls = ReadableGroup
        if group.typer_instance is not None:
            readable_help(group.typer_instance)


def _unset(cls: Any, default: type) -> bool:
    """True when typer would use its own class: none given, typer's default, or its placeholder for one."""
    return cls is None or cls is default or isinstance(cls, DefaultPlaceholder)
