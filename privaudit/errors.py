"""Typed errors. Each carries one message a user can act on: what is wrong, and how to fix it.

The CLI prints ``str(error)`` as one line on stderr and exits with code 2.
"""

from __future__ import annotations


class PrivauditError(Exception):
    """Base class: a problem with the user's input or environment, not a bug."""

    exit_code = 2


class InputError(PrivauditError):
    """Bad arguments or options (invalid value, unwritable output path, ...)."""


class DataError(PrivauditError):
    """Missing, empty, unreadable or inconsistent image data."""


class CheckpointError(PrivauditError):
    """A model file that cannot be loaded safely or does not fit the expected architecture."""


class WeightsError(PrivauditError):
    """Feature-extractor weights (Inception) that are missing or unsafe."""


class ReportError(PrivauditError):
    """A report or policy file that is unreadable, of another schema, or lacks a needed metric."""


def check_seed(seed: int) -> int:
    """Seeds feed torch and numpy generators, which take 0 <= seed < 2**32."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise InputError(f"--seed must be an integer from 0 to {2**32 - 1}, not {seed}")
    return seed
