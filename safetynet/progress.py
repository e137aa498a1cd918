"""Progress bars for long command-line steps (importing thousands of cameras, probing them).

Drawn with ``rich`` on stderr, only when stderr is a terminal: logs, pipes and tests see nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn

#: Called with how many items are done so far.
Advance = Callable[[int], None]


@contextmanager
def progress_bar(description: str, total: int | None = None) -> Iterator[Advance]:
    """``with progress_bar("Checking cameras", 2700) as done: done(n)``."""
    console = Console(stderr=True)
    if not console.is_terminal:
        yield lambda completed: None
        return
    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               MofNCompleteColumn()] if total else [
               SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.completed}")]
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda completed: progress.update(task, completed=completed)
