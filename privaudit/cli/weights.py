"""`privaudit weights`: the Inception weights KID needs."""

from __future__ import annotations

import typer

weights = typer.Typer(help="Inception weights for KID.", no_args_is_help=True, add_completion=False, rich_markup_mode=None)
