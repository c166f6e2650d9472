"""`privaudit report`: render and compare JSON reports (table, Markdown, plots, HTML)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from privaudit.cli.common import guarded
from privaudit.cli.render import compare_table, show
from privaudit.errors import InputError


@guarded
def report(
    reports: Annotated[list[Path], typer.Argument(help="One or more JSON reports from privaudit attack/evaluate.")],
    markdown: Annotated[Optional[Path], typer.Option("--markdown", help="Write the comparison as Markdown (fits a CI job summary); '-' for stdout.")] = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write the utility-privacy plot (AUC against NKID; ideal at (0, 50%)) as PNG.")] = None,
    roc: Annotated[Optional[Path], typer.Option("--roc", help="Write the ROC curves of all reports overlaid (linear and log-log) as PNG.")] = None,
    html_out: Annotated[Optional[Path], typer.Option("--html", help="Write a self-contained HTML page with the table and plots.")] = None,
    names: Annotated[Optional[str], typer.Option("--names", help="Comma-separated names for the reports (default: file names).")] = None,
) -> None:
    """Compare audit reports: AUC, TPR@1%FPR, NKID, gap and ε side by side."""
    from privaudit.io import check_writable, write_outputs
    from privaudit.report.html import to_html
    from privaudit.report.markdown import to_markdown
    from privaudit.report.schema import load_report
    from privaudit.report.tables import rows_of

    for flag, out in (("--plot", plot), ("--roc", roc)):
        if out is not None and str(out) == "-":
            raise InputError(f"{flag} writes a PNG and needs a file name, not '-'")
    for out in (markdown, plot, roc, html_out):
        if out is not None and str(out) != "-":
            check_writable(out)
    loaded = [load_report(p, require_attack=True) for p in reports]
    labels = [p.stem for p in reports]
    if names:
        labels = [s.strip() for s in names.split(",")]
        if len(labels) != len(reports):
            raise InputError(f"--names gives {len(labels)} names for {len(reports)} reports; give one per report")
    rows = [x for n, r in zip(labels, loaded) for x in rows_of(n, r)]  # every attack of a report/2 side by side
    # Build every output in memory first, so a failure leaves none of them behind.
    files: list[tuple[Path, bytes]] = []
    stdout: list[str] = []
    for out, text in ((markdown, lambda: to_markdown(rows)), (html_out, lambda: to_html(rows, list(zip(labels, loaded))))):
        if out is not None:
            (stdout.append(text()) if str(out) == "-" else files.append((out, text().encode())))
    if plot is not None or roc is not None:
        from privaudit.report.plots import figure_png, report_curves, roc_figure, tradeoff_figure  # matplotlib: only for plots

        if plot is not None:
            files.append((plot, figure_png(tradeoff_figure(rows))))
        if roc is not None:
            files.append((roc, figure_png(roc_figure(report_curves(list(zip(labels, loaded)))))))
    show(compare_table(rows))
    write_outputs(files)
    for text in stdout:
        typer.echo(text)
