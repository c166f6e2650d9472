"""The `privaudit` command: one small module per command, wired here."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from privaudit import __version__
from privaudit.threads import ENV as THREADS_ENV, configure_threads, prepare_openmp

prepare_openmp()  # before any command loads torch: OpenMP reads its wait policy once

from privaudit.cli.attack import attack  # noqa: E402
from privaudit.cli.common import OneLineUsageGroup, guarded  # noqa: E402
from privaudit.cli.defend import defend  # noqa: E402
from privaudit.cli.demo import demo  # noqa: E402
from privaudit.cli.evaluate import evaluate  # noqa: E402
from privaudit.cli.gate import gate  # noqa: E402
from privaudit.cli.references import references  # noqa: E402
from privaudit.cli.report import report  # noqa: E402
from privaudit.cli.train import train  # noqa: E402
from privaudit.cli.weights import weights  # noqa: E402

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


@guarded
def _threads(requested: Optional[int]) -> None:
    configure_threads(requested)


@app.callback()
def _root(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", metavar="N", help=(
        f"Intra-op CPU threads for torch (also ${THREADS_ENV}). Default: the cores free when the command starts "
        "(usable cores less the load average), or OMP_NUM_THREADS if you set it. Give it before the command: privaudit --threads 2 train ..."))] = None,
) -> None:
    """privaudit: membership-leakage audits for pix2pix-style generators."""
    _threads(threads)


app.command("train")(train)
app.command("attack")(attack)
app.command("defend")(defend)
app.command("evaluate")(evaluate)
app.command("report")(report)
app.command("gate")(gate)
app.command("references")(references)
app.command("demo")(demo)
app.add_typer(weights, name="weights")


def main() -> None:
    app()
