"""The `privaudit` command: one small module per command, wired here."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from privaudit import __version__
from privaudit.cli.attack import attack
from privaudit.cli.common import OneLineUsageGroup
from privaudit.cli.defend import defend
from privaudit.cli.demo import demo
from privaudit.cli.evaluate import evaluate
from privaudit.cli.gate import gate
from privaudit.cli.references import references
from privaudit.cli.report import report
from privaudit.cli.train import train

app = typer.Typer(
    name="privaudit",
    cls=OneLineUsageGroup,
    help="Audit image-to-image translation models for membership leakage, harden them, and gate releases.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"privaudit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")] = None,
) -> None:
    """privaudit: membership-leakage audits for pix2pix-style generators."""


app.command("train")(train)
app.command("attack")(attack)
app.command("defend")(defend)
app.command("evaluate")(evaluate)
app.command("report")(report)
app.command("gate")(gate)
app.command("references")(references)
app.command("demo")(demo)


def main() -> None:
    app()
