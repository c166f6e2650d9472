"""The gate's verdict for CI: JUnit XML (one testcase per check) and a Markdown summary (for
``$GITHUB_STEP_SUMMARY``)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from privaudit.gate.verdict import GateVerdict, format_number
from privaudit.report.markdown import md_cell


def to_junit_xml(verdict: GateVerdict, report_path: str | Path) -> str:
    """JUnit XML: one ``<testsuite name="privaudit.gate">`` with one ``<testcase>`` per check;
    a failed check holds a ``<failure message=...>``."""
    failures = len(verdict.failed)
    suites = ET.Element("testsuites", name="privaudit", tests=str(len(verdict.checks)), failures=str(failures), errors="0")
    suite = ET.SubElement(suites, "testsuite", name="privaudit.gate", tests=str(len(verdict.checks)), failures=str(failures), errors="0", skipped="0", time="0")
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="report", value=str(report_path))
    for c in verdict.checks:
        case = ET.SubElement(suite, "testcase", classname="privaudit.gate", name=c.name, time="0")
        detail = f"{c.metric or c.name} = {format_number(c.value)}, limit {format_number(c.limit)} (report {report_path})"
        if c.note:
            detail += f"; {c.note}"
        if c.passed:
            ET.SubElement(case, "system-out").text = detail
        else:
            flip = " (score flipped)" if c.note.startswith("score flipped") else " (a bound for the flipped score)" if c.note.startswith("flipped score") else ""
            crossed = "is below the lower limit" if c.op == ">=" else "exceeds the limit"
            fail = ET.SubElement(case, "failure", message=f"{c.name}{flip} {format_number(c.value)} {crossed} {format_number(c.limit)}", type="threshold")
            fail.text = detail
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def to_markdown(verdict: GateVerdict, report_path: str | Path, *, policy_source: str | None = None) -> str:
    """A short Markdown summary (heading with PASS/FAIL, one table row per check), fit for
    appending to ``$GITHUB_STEP_SUMMARY``. Ends with a newline."""
    status = "PASS ✅" if verdict.passed else f"FAIL ❌ ({len(verdict.failed)} of {len(verdict.checks)} checks over the limit)"
    lines = [f"### privaudit gate: {status}", "", f"Report: `{md_cell(str(report_path))}`" + (f" · policy: {md_cell(policy_source)}" if policy_source else ""), ""]
    lines += ["| check | value | limit | result |", "|---|---:|---:|:---:|"]
    notes = list(dict.fromkeys(c.note for c in verdict.checks if c.note))
    for c in verdict.checks:
        mark = f" [{notes.index(c.note) + 1}]" if c.note and c.note in notes else ""
        limit = ("≥ " if c.op == ">=" else "") + format_number(c.limit)
        lines.append(f"| {md_cell(c.name)}{mark} | {format_number(c.value)} | {limit} | {'PASS' if c.passed else '**FAIL**'} |")
    if notes:
        lines += [""] + [f"- [{i}] {md_cell(n)}" for i, n in enumerate(notes, 1)]
    return "\n".join(lines) + "\n"
