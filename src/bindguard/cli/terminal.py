"""Console, progress bars and the error boundary of the CLI."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from bindguard.errors import BindguardError

console = Console(stderr=True)  # progress and messages; stdout stays clean for tables and --json
output = Console()

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def fail(message: str) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_BAD_INPUT)


def user_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn library errors about bad input into one line on stderr and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except BindguardError as error:
            raise fail(str(error)) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]: finished files were kept; nothing half-written was left behind")
            raise typer.Exit(EXIT_INTERRUPTED) from None

    return wrapper


@contextmanager
def progress_bars(*, quiet: bool = False) -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress display with ETA, driven by ``callback(stage, done, total)`` calls."""
    if quiet or not sys.stderr.isatty() and not console.is_terminal:
        yield lambda stage, done, total: None
        return
    columns = (
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        tasks: dict[str, Any] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=total)
            progress.update(tasks[stage], completed=done, total=total)

        yield update
