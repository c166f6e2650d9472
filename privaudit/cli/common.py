"""What every command shares: error handling, consoles, progress bars."""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from privaudit.errors import PrivauditError

F = TypeVar("F", bound=Callable[..., Any])

# Tables, progress and chatter go to stderr; stdout is kept for data (``--json -``).
stderr = Console(stderr=True, highlight=False, soft_wrap=False)
if not stderr.is_terminal:
    stderr.width = 200  # logs and CI: no terminal to fit, so do not squeeze tables to 80 columns


def fail(message: str, code: int = 2) -> None:
    """One line on stderr, then exit."""
    typer.echo(f"privaudit: error: {message}", err=True)
    raise typer.Exit(code)


def guarded(fn: F) -> F:
    """Turn a PrivauditError into one line on stderr and exit code 2 (never a traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PrivauditError as exc:
            fail(str(exc).replace("\n", " "), exc.exit_code)
        except KeyboardInterrupt:
            typer.echo("privaudit: interrupted", err=True)
            raise typer.Exit(130)
        except MemoryError:
            fail("out of memory; use a smaller --batch-size or --size")

    return wrapper  # type: ignore[return-value]


def progress(disable: bool = False) -> Progress:
    """A Rich progress bar on stderr; off with ``disable``, PRIVAUDIT_NO_PROGRESS=1, or no terminal."""
    quiet = disable or os.environ.get("PRIVAUDIT_NO_PROGRESS") == "1"
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr,
        # No live bar in a log file or CI (it would leave blank lines); training logs one line per epoch instead.
        disable=quiet or not stderr.is_terminal,
    )
    bar.log_epochs = not quiet and not stderr.is_terminal  # type: ignore[attr-defined]
    return bar


def epoch_callback(bar: Progress, task: Any, epochs: int) -> Callable[[int, int, int, dict[str, float]], None]:
    """An ``on_step`` for the training loops that drives a progress bar with the running losses."""

    def on_step(epoch: int, step: int, steps_per_epoch: int, losses: dict[str, float]) -> None:
        if getattr(bar, "log_epochs", False) and step == steps_per_epoch - 1:
            # No live bar in a log file or CI: one line per epoch instead.
            stderr.print(f"epoch {epoch + 1}/{epochs}  " + "  ".join(f"{k} {v:.4f}" for k, v in losses.items()))
        bar.update(
            task,
            total=epochs * steps_per_epoch,
            completed=epoch * steps_per_epoch + step + 1,
            description=f"epoch {epoch + 1}/{epochs}",
            info="  ".join(f"{k} {v:.3f}" for k, v in losses.items()),
        )

    return on_step
