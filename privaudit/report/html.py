"""Reports as one self-contained HTML page: the comparison table and both figures inlined as PNG."""

from __future__ import annotations

import base64
import html
from typing import Any

from privaudit.report.plots import figure_png, report_curves, roc_figure, tradeoff_figure
from privaudit.report.tables import FLIPPED_NOTE, SHIFT_NOTE, Row, headers, row_cells


def to_html(rows: list[Row], reports: list[tuple[str, dict[str, Any]]]) -> str:
    """The page for ``rows`` and their (name, report) pairs (no images of the data, only plots)."""

    def inline(fig) -> str:
        return "data:image/png;base64," + base64.b64encode(figure_png(fig, dpi=110)).decode()

    columns = headers(rows)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row_cells(r, columns)) + "</tr>" for r in rows)
    note = f"<p>{html.escape(FLIPPED_NOTE)}</p>" if any(r.flipped for r in rows) else ""
    note += f"<p>{html.escape(SHIFT_NOTE)}</p>" if any(r.shift for r in rows) else ""
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>privaudit report</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "td:first-child,td:nth-child(2){text-align:left}</style></head><body>"
        f"<h1>privaudit: utility-privacy comparison</h1><table><tr>{head}</tr>{body}</table>{note}"
        f"<h2>Trade-off</h2><img src='{inline(tradeoff_figure(rows))}'>"
        f"<h2>ROC</h2><img src='{inline(roc_figure(report_curves(reports)))}'></body></html>\n"
    )
