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
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from bindguard.errors import BindguardError

try:  # typer vendors its own click since 0.2x; its usage errors are that copy's classes
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer on the real click
    from click import exceptions as click_exceptions

LOG_WIDTH = 160
# progress and messages; stdout stays clean for tables and --json. Messages never wrap: a script that
# greps a log or a pipe for "results: PATH" gets the whole path.
console = Console(stderr=True, soft_wrap=True)
output = Console()
if not output.is_terminal:
    output.width = LOG_WIDTH  # logs and pipes: wide enough that tables keep one line per row

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def fail(message: str) -> typer.Exit:
    console.print(f"[bold red]error:[/] {escape(_one_line(message))}", highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_BAD_INPUT)


def _one_line(message: str) -> str:
    """A message on one line, whatever it quotes (a path or value with a newline in it included)."""
    return " ".join(message.split())


EXIT_FAILED = 1

#: Set by ``--verbose``: unexpected errors then show their traceback.
settings = {"verbose": False}


def user_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """The error boundary of a command: every failure is one line on stderr, never a traceback.

    Bad input (a ``BindguardError``) and what the system refused (a full disk, a permission) exit
    2; anything else is a bug of ours, exits 1 and asks for ``--verbose``, which shows the traceback.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except BindguardError as error:
            raise fail(str(error)) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]: finished files were kept; nothing half-written was left behind")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except (typer.Exit, typer.Abort, click_exceptions.ClickException):
            raise
        except BrokenPipeError:  # the reader went away (| head): nothing to tell it
            raise typer.Exit(EXIT_FAILED) from None
        except OSError as error:
            if settings["verbose"]:
                raise
            raise fail(f"{error}; fix: check the path, its permissions and the free disk space") from None
        except Exception as error:
            if settings["verbose"]:
                raise
            console.print(
                f"[bold red]error:[/] internal error {type(error).__name__}: {escape(_one_line(str(error)))[:300]} "
                "(a bug in bindguard: rerun with --verbose for the traceback and report it)",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(EXIT_FAILED) from None

    return wrapper


class OneLineErrors(typer.core.TyperGroup):
    """The root command group: a wrong option or value (click's usage errors) is one line and exit 2.

    Click would print the usage, a hint and a boxed panel; every other bindguard error is one line,
    so these are too, and each names the command's --help for the fix.
    """

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click_exceptions.NoArgsIsHelpError as error:
            error.show()  # a bare group name: its help is the answer
            sys.exit(0)
        except click_exceptions.ClickException as error:
            sys.exit(_usage_error(error))
        except typer.Abort:
            console.print("[yellow]aborted[/]")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def _usage_error(error: click_exceptions.ClickException) -> int:
    context = getattr(error, "ctx", None)
    command = context.command_path if context is not None else "bindguard"
    message = _one_line(error.format_message()).rstrip(".")
    console.print(
        f"[bold red]error:[/] {escape(message)}; see '{escape(command)} --help'", highlight=False, soft_wrap=True
    )
    return error.exit_code if error.exit_code else EXIT_BAD_INPUT


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
