"""Console, progress bars and the error boundary of the CLI."""

from __future__ import annotations

import functools
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from bindguard.errors import BindguardError

LOG_WIDTH = 160
console = Console(stderr=True)  # progress and messages; stdout stays clean for tables and --json
output = Console()
if not output.is_terminal:
    output.width = LOG_WIDTH  # logs and pipes: wide enough that tables keep one line per row

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


#: Seconds between progress lines when stderr is not a terminal (CI logs, nohup, | tee).
HEARTBEAT_SECONDS = 30.0


@contextmanager
def progress_bars(*, quiet: bool = False) -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress display with ETA, driven by ``callback(stage, done, total)`` calls.

    Without a terminal, a plain line (stage, done/total, elapsed) is printed when a stage starts
    and at least every ``HEARTBEAT_SECONDS`` while one runs, so a log shows the run is alive.
    """
    if quiet:
        yield lambda stage, done, total: None
        return
    if not sys.stderr.isatty() and not console.is_terminal:
        with progress_lines() as update:
            yield update
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


@contextmanager
def progress_lines(interval: float = HEARTBEAT_SECONDS) -> Iterator[Callable[[str, int, int], None]]:
    """Plain progress lines for logs: one per new stage, and one every ``interval`` seconds from a timer thread."""
    started = time.monotonic()
    latest: list[tuple[str, int, int]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def line(stage: str, done: int, total: int) -> None:
        elapsed = time.monotonic() - started
        console.print(f"[{elapsed:6.0f} s] {stage}: {done}/{total}", highlight=False, markup=False, soft_wrap=True)

    def update(stage: str, done: int, total: int) -> None:
        with lock:
            new_stage = not latest or latest[-1][0] != stage
            latest[:] = [(stage, done, total)]
        if new_stage:
            line(stage, done, total)

    def heartbeat() -> None:
        while not stop.wait(interval):
            with lock:
                current = latest[-1] if latest else ("starting", 0, 0)
            line(*current)

    thread = threading.Thread(target=heartbeat, name="bindguard-progress", daemon=True)
    thread.start()
    try:
        yield update
    finally:
        stop.set()
        thread.join()
