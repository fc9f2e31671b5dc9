"""What every command shares: the stderr console, user-error handling, params loading and report tables.

Stage command modules import from here (never from ``curation.cli``, which imports them), so there is no cycle.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from curation.errors import CurationError
from schemas.params import Params, load_params

console = Console(stderr=True)

ParamsOption = Annotated[
    Path, typer.Option("--params", help="The pipeline's params.yaml (ontology and every stage's knobs).")
]


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn a CurationError into a clear message and exit code 1, without a traceback.

    So is an ``OSError`` that only a write can raise (read-only or full file system, quota) where a command writes
    outside :func:`curation.io.publish`, which translates its own; any other ``OSError`` is a bug and keeps its
    traceback.
    """
    try:
        yield
    except CurationError as err:
        console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except OSError as err:
        from curation.io import WRITE_ERRNOS, os_error_message  # pandas: only when needed

        if err.errno not in WRITE_ERRNOS:
            raise
        message = os_error_message(err, Path(err.filename or "an output"))
        console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


def load_or_exit(params_path: Path) -> Params:
    """``load_params`` for a command: a bad params.yaml is a one-line error and exit code 1."""
    with user_errors():
        return load_params(params_path)


def print_report(title: str, report: Mapping[str, Any]) -> None:
    """A two-column table of a stage's headline numbers (nested dicts on one line)."""
    table = Table(title=escape(title), show_header=False)
    for key, value in report.items():
        if isinstance(value, Mapping):
            value = ", ".join(f"{k}: {v}" for k, v in value.items()) or "-"
        table.add_row(escape(str(key)), escape(str(value)))
    console.print(table)
