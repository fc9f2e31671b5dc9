"""Progress bars for long work, written once for every stage.

The bar refreshes from the caller's thread (``auto_refresh=False``), not from rich's background thread: stages
fork worker processes, and forking while another thread holds a console lock can deadlock the children.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

REFRESH_SECONDS = 0.1


@dataclass
class Reporter:
    """What a stage calls: ``start(total)`` once, then ``advance(n)`` as work completes."""

    bar: Progress
    task: TaskID
    _last_refresh: float = field(default=0.0)

    def start(self, total: int) -> None:
        self.bar.update(self.task, total=total)
        self.bar.refresh()

    def advance(self, n: int = 1) -> None:
        self.bar.advance(self.task, n)
        now = time.monotonic()
        if now - self._last_refresh >= REFRESH_SECONDS:
            self.bar.refresh()
            self._last_refresh = now


@contextmanager
def progress(description: str, console: Console) -> Iterator[Reporter]:
    """A bar with count, elapsed and remaining time; the final state stays on screen."""
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        auto_refresh=False,
    )
    with bar:
        yield Reporter(bar, bar.add_task(escape(description), total=None))
