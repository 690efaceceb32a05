"""Terminal output shared by the CLIs: tables and progress bars (rich), and a quiet end on a closed pipe."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

# Wide enough that no table of ours wraps a cell when written to a pipe or a file.
TEXT_WIDTH = 240


def table_text(
    columns: Sequence[str], rows: Iterable[Sequence[str]], *, numeric_from: int = 1, title: str | None = None
) -> str:
    """A plain-text table: the first ``numeric_from`` columns left-aligned (names), the rest right-aligned.

    No borders and no colour, so the text reads the same in a terminal, a pipe or a file.
    """
    table = Table(box=None, pad_edge=False, show_edge=False, title=title, title_justify="left")
    for index, name in enumerate(columns):
        table.add_column(name, justify="left" if index < numeric_from else "right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    buffer = io.StringIO()
    Console(file=buffer, width=TEXT_WIDTH, color_system=None, force_terminal=False).print(table)
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines()) + "\n"


@contextmanager
def progress(steps: Sequence[str], *, enabled: bool) -> Iterator[Callable[[str], None]]:
    """A progress bar with elapsed time and ETA on stderr over ``steps``; yields ``advance(step_name)``.

    The callback is called as each step starts; the bar is transient (gone when done). When ``enabled`` is
    false (not a terminal, or machine-readable output was asked for) nothing is written at all.
    """
    if not enabled:
        yield lambda _name: None
        return
    columns = (
        TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
    )  # fmt: skip
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("starting", total=len(steps))
        started = False

        def advance(name: str) -> None:
            nonlocal started
            if started:
                bar.advance(task)
            started = True
            bar.update(task, description=name)
            bar.refresh()  # draw each step as it starts: a quick one would fall between timed redraws

        yield advance
        bar.advance(task)


def interactive() -> bool:
    """True when stderr is a terminal (where progress bars belong)."""
    return sys.stderr.isatty()


def silence_broken_pipe() -> int:
    """After ``BrokenPipeError`` on stdout (``bauxite … --json | head``): end quietly, as Unix tools do.

    Python would otherwise print a second error while flushing stdout at exit; pointing stdout at
    /dev/null prevents that. Returns the exit status to use (1, as Python's own handling recommends).
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 1
