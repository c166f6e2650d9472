"""What every command shares: error handling, consoles, progress bars."""

from __future__ import annotations

import functools
import os
import traceback
from enum import Enum
from typing import Any, Callable, TypeVar

import typer
from rich.console import Console
from typer.core import TyperGroup
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from privaudit import __version__
from privaudit.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, PrivauditError, describe_os_error

try:  # typer >= 0.20 vendors Click
    from typer._click.exceptions import NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover  (older typer depends on Click itself)
    from click.exceptions import NoArgsIsHelpError, UsageError  # type: ignore[no-redef]

F = TypeVar("F", bound=Callable[..., Any])

# Tables, progress and chatter go to stderr; stdout is kept for data (``--json -``).
stderr = Console(stderr=True, highlight=False, soft_wrap=False)
if not stderr.is_terminal:
    stderr.width = 200  # logs and CI: no terminal to fit, so do not squeeze tables to 80 columns


def fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    """One line on stderr, then exit."""
    typer.echo(f"privaudit: error: {message}", err=True)
    raise typer.Exit(code)


ISSUES_URL = "https://github.com/privaudit/privaudit/issues"


def _environment_message(exc: BaseException) -> str | None:
    """One line for failures of the machine rather than of privaudit: out of memory, a full disk,
    a permission denied, an image too large to decode safely. None when ``exc`` is none of these."""
    if isinstance(exc, MemoryError):
        return "out of memory; use a smaller --batch-size or --size, or free memory"
    if isinstance(exc, OSError):
        return describe_os_error(exc)
    name = type(exc).__name__
    text = str(exc)
    if name == "OutOfMemoryError" or "CUDA out of memory" in text or "can't allocate memory" in text:
        return "out of memory; use a smaller --batch-size or --size, or free memory"
    if "DataLoader worker" in text and ("killed by signal" in text or "exited unexpectedly" in text):
        return "a worker process decoding the streamed data was killed (out of memory?); pass fewer --workers or a smaller --batch-size, or free memory"
    if name == "DecompressionBombError":
        return f"an image is too large to decode safely ({text.strip()[:120]}); remove it or shrink it"
    return None


def guarded(fn: F) -> F:
    """The exit-code contract (see privaudit.errors): a PrivauditError or an environment failure
    becomes one line on stderr and exit 2; any other exception is a bug: its traceback is kept,
    the user is asked to report it, and the exit code is 3.

    Choice options (the StrEnums of ``privaudit.cli.options``) reach the command as plain strings,
    so no Enum flows into the library, a report or a checkpoint (which would then not load under
    ``weights_only``)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs = {k: v.value if isinstance(v, Enum) else v for k, v in kwargs.items()}
        try:
            return fn(*args, **kwargs)
        except PrivauditError as exc:
            fail(str(exc).replace("\n", " "), exc.exit_code)
        except KeyboardInterrupt:
            typer.echo("privaudit: interrupted", err=True)
            raise typer.Exit(130)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except Exception as exc:  # noqa: BLE001  (the one place that sorts every failure)
            message = _environment_message(exc)
            if message is not None:
                fail(message.replace("\n", " "), EXIT_BAD_INPUT)
            typer.echo(traceback.format_exc(), err=True, nl=False)
            fail(f"internal error ({type(exc).__name__}): this is a bug in privaudit {__version__}; please report it with the "
                 f"command and the traceback above at {ISSUES_URL}", EXIT_INTERNAL)

    return wrapper  # type: ignore[return-value]


class OneLineUsageError(UsageError):
    """Click's usage error (a missing option, ``--epochs abc``, an unknown flag) in the one-line form
    of every other bad input, instead of Click's usage block: ``privaudit: error: ...; see privaudit
    CMD --help``, exit 2."""

    def __init__(self, exc: UsageError) -> None:
        super().__init__(exc.format_message(), ctx=exc.ctx)

    def show(self, file: Any = None) -> None:
        names = []
        ctx = self.ctx
        while ctx is not None and ctx.parent is not None:  # the root's name is how it was started ("python -m ...")
            names.append(ctx.info_name or "")
            ctx = ctx.parent
        command = " ".join(["privaudit", *reversed(names)])
        message = " ".join(self.message.split()).rstrip(".")
        message = message.replace(": Value error, ", ": ")  # Typer's validation prefix on a bad choice says nothing
        typer.echo(f"privaudit: error: {message}; see {command} --help", err=True)


class OneLineUsageGroup(TyperGroup):
    """The root command group: turns Click's usage errors into OneLineUsageError, both when the
    command line is parsed and when a subcommand's options are (under CliRunner and ``python -m``
    alike). ``privaudit`` alone still prints the help."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().make_context(*args, **kwargs)
        except (NoArgsIsHelpError, OneLineUsageError):
            raise
        except UsageError as exc:
            raise OneLineUsageError(exc) from None

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (NoArgsIsHelpError, OneLineUsageError):
            raise
        except UsageError as exc:
            raise OneLineUsageError(exc) from None


def given_on_command_line(name: str) -> bool:
    """Whether the running command's option ``name`` (its parameter name) was given on the command
    line rather than left at its default; False outside a command (a direct call)."""
    try:  # typer >= 0.20 vendors Click
        from typer._click.globals import get_current_context
    except ImportError:  # pragma: no cover
        from click import get_current_context  # type: ignore[no-redef]
    ctx = get_current_context(silent=True)
    source = ctx.get_parameter_source(name) if ctx is not None else None
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


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


def download_progress(disable: bool = False) -> Progress:
    """A Rich progress bar for a download (bytes, speed, time left) on stderr; off like :func:`progress`."""
    quiet = disable or os.environ.get("PRIVAUDIT_NO_PROGRESS") == "1"
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=stderr,
        disable=quiet or not stderr.is_terminal,
    )


def epoch_callback(bar: Progress, task: Any, epochs: int, *, label: str = "") -> Callable[[int, int, int, dict[str, float]], None]:
    """An ``on_step`` for the training loops that drives a progress bar with the running losses.
    ``label`` prefixes the bar's "epoch k/N" and the log lines (e.g. "teacher")."""
    prefix = f"{label} " if label else ""

    def on_step(epoch: int, step: int, steps_per_epoch: int, losses: dict[str, float]) -> None:
        if getattr(bar, "log_epochs", False) and step == steps_per_epoch - 1:
            # No live bar in a log file or CI: one line per epoch instead.
            stderr.print(f"{prefix}epoch {epoch + 1}/{epochs}  " + "  ".join(f"{k} {v:.4f}" for k, v in losses.items()))
        bar.update(
            task,
            total=epochs * steps_per_epoch,
            completed=epoch * steps_per_epoch + step + 1,
            description=f"{prefix}epoch {epoch + 1}/{epochs}",
            info="  ".join(f"{k} {v:.3f}" for k, v in losses.items()),
        )

    return on_step
