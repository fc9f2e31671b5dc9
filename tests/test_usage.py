"""--help as a person reads it: usage lines name the arguments in capitals, flags carry no type tag."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from curation.cli import app


def help_text(*command: str) -> str:
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"}, terminal_width=200)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize(
    ("command", "usage"),
    [
        (["prelabel"], "prelabel [OPTIONS] MANIFEST OUT_DIR"),
        (["agreement"], "agreement [OPTIONS] ANNOTATIONS OUT_DIR"),
        (["push"], "push [OPTIONS] MANIFEST PREDICTIONS OUT_DIR"),
        (["health"], "health [OPTIONS] MANIFEST OUT_DIR"),
        (["ontology", "init"], "init [OPTIONS] [RAW_DIR]"),
    ],
)
def test_usage_line_names_arguments_in_capitals(command: list[str], usage: str) -> None:
    text = help_text(*command)
    line = next(line for line in text.splitlines() if "Usage:" in line)
    assert line.strip().endswith(usage), line
    assert not re.search(r"\{\w+\}", line)


@pytest.mark.parametrize("command", [[], ["studio"], ["ontology"], ["prelabel"], ["agreement"], ["studio", "start"]])
def test_flags_carry_no_bool_tag(command: list[str]) -> None:
    text = help_text(*command)
    assert "--help" in text and "<bool>" not in text
    if command == ["prelabel"]:
        assert re.search(r"--labels\s+<path>", text)  # options that take a value keep their type
