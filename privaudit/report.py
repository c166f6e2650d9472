"""The report format (``privaudit.report/1``) and reading it back. Torch-free, so a CI gate step
that only reads reports stays light."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from privaudit.errors import ReportError

REPORT_SCHEMA = "privaudit.report/1"


def load_report(path: str | Path) -> dict[str, Any]:
    """Read a ``privaudit.report/1`` JSON file → dict; ReportError (one line) when it cannot be used."""
    p = Path(path)
    if not p.exists():
        raise ReportError(f"report {p} does not exist; check the path")
    if p.is_dir():
        raise ReportError(f"report {p} is a folder; give the JSON file written by privaudit attack/evaluate --json")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"report {p} is not readable JSON ({str(exc)[:100]}); write it with privaudit attack/evaluate --json") from None
    if not isinstance(data, dict) or data.get("schema") != REPORT_SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise ReportError(f"report {p} has schema {found!r}, not {REPORT_SCHEMA!r}; write it with privaudit attack/evaluate --json")
    return data
