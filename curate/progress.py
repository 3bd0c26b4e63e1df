"""One rich progress bar for every long command (on stderr, so `--json` output on stdout stays clean)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True, width=None if sys.stderr.isatty() else 150)


@contextlib.contextmanager
def progress_bar(total: int, description: str, unit: str = "samples", show: bool = True) -> Iterator[Callable]:
    """Yields advance(n); shows n/total, rate and ETA."""
    if not show:
        yield lambda n=1: None
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(description, total=total, rate="")

        def advance(n: int = 1) -> None:
            bar.advance(task, n)
            t = bar.tasks[0]
            if t.elapsed:
                bar.update(task, rate=f"{t.completed / t.elapsed:,.1f} {unit}/s")

        yield advance


def say(message: str) -> None:
    """A library message on the console as plain text (no rich markup: `[model]` stays `[model]`)."""
    console.print(message, markup=False, highlight=False)
