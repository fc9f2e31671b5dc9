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


LONG_NOTE = 200  # characters: a note longer than this is shown in full once, then as its first clause


def print_notes(notes: list[str], *, seen_dir: Path, details: str) -> None:
    """Print a stage's notes; a long one in full the first time, later as its first clause and where to read it.

    A missing-model note spells out three ways to supply the weights (600 characters); a demo prints it on every
    prelabel run. Whether it was shown is remembered per text under ``seen_dir`` (the stage's cache folder), so
    a changed note is shown in full again. ``details`` names the file holding the full text.
    """
    import hashlib

    for note in notes:
        marker = seen_dir / "notes-shown" / hashlib.sha256(note.encode("utf-8")).hexdigest()[:16]
        if len(note) > LONG_NOTE and marker.exists():
            note = f"{_first_clause(note)} (shown in full before; the full text is in {details})"
        elif len(note) > LONG_NOTE:
            try:
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.touch()
            except OSError:  # a read-only cache only means the note is shown in full again next time
                pass
        console.print(f"[bold yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)


def _first_clause(note: str) -> str:
    """The text before the first ``": "`` outside parentheses (the note's summary)."""
    depth = 0
    for i, char in enumerate(note):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and note.startswith(": ", i):
            return note[:i]
    return note[:LONG_NOTE]
