"""Typed errors. Each carries one message a user can act on: what is wrong, and how to fix it.

Exit codes (the CLI's contract, see README "Exit codes"):

* 0: success (or the gate passed);
* 1: a privacy or utility threshold was crossed (``gate``, ``--fail-above-auc``) and nothing else;
* 2: a ``PrivauditError``: bad input or usage, or a problem with the environment (disk full,
  permissions, out of memory); one line on stderr;
* 3: an ``InternalError`` or any other unexpected exception: a bug in privaudit. The traceback is
  kept and the user is asked to report it.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_THRESHOLD = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3


class PrivauditError(Exception):
    """Base class: a problem with the user's input or environment, not a bug."""

    exit_code = EXIT_BAD_INPUT


class InputError(PrivauditError):
    """Bad arguments or options (invalid value, unwritable output path, ...)."""


class DataError(PrivauditError):
    """Missing, empty, unreadable or inconsistent image data."""


class CheckpointError(PrivauditError):
    """A model file that cannot be loaded safely or does not fit the expected architecture."""


class WeightsError(PrivauditError):
    """Feature-extractor weights (Inception) that are missing, corrupt or unsafe."""


class ReportError(PrivauditError):
    """A report or policy file that is unreadable, of another schema, or lacks a needed metric."""


class EnvironmentProblem(PrivauditError):
    """The machine, not the input: a full disk, a permission denied, memory exhausted."""


class TrainingError(PrivauditError):
    """Training that cannot go on with these settings (diverged: non-finite or exploding losses)."""


class InternalError(Exception):
    """A bug in privaudit (an invariant broke). Not a PrivauditError: exits 3 with its traceback."""

    exit_code = EXIT_INTERNAL


def check_seed(seed: int) -> int:
    """Seeds feed torch and numpy generators, which take 0 <= seed < 2**32."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise InputError(f"--seed must be an integer from 0 to {2**32 - 1}, not {seed}")
    return seed


def describe_os_error(exc: OSError, *, action: str = "access") -> str:
    """One actionable line for an OSError raised while reading or writing a file."""
    import errno

    where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
    reason = exc.strerror or str(exc) or type(exc).__name__
    code = getattr(exc, "errno", None)
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        fix = "free some disk space or choose another output folder"
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "check the permissions or choose another path"
    elif code == errno.ENOMEM:
        fix = "free memory, or use a smaller --batch-size or --size"
    elif code in (errno.ENAMETOOLONG,):
        fix = "choose a shorter path"
    else:
        fix = "check the path and the disk"
    return f"cannot {action}{where}: {reason}; {fix}"


def first_line(message: str, limit: int = 160) -> str:
    """The first line of an exception's message, cut to ``limit`` characters, for a one-line error."""
    lines = message.strip().splitlines()
    return lines[0][:limit] if lines else "unknown error"
