"""`privaudit gate`: exit 1 when a report crosses a privacy or utility threshold (for CI)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from privaudit.cli.common import guarded, stderr
from privaudit.cli.render import gate_table
from privaudit.errors import InputError


def _check_appendable(path: Path) -> None:
    """Like check_writable, plus: an existing file must itself be writable (we append to it)."""
    from privaudit.io import check_writable

    check_writable(path, what="Markdown summary")
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError(f"cannot append to Markdown summary {path}: the file is not writable; choose another path")


def _append(path: Path, text: str) -> None:
    """Append ``text`` in one write, after a blank line when the file already holds something."""
    try:
        sep = "\n" if path.exists() and path.stat().st_size > 0 else ""
        with open(path, "a", encoding="utf-8") as f:
            f.write(sep + text)
    except OSError as exc:
        raise InputError(f"cannot append to Markdown summary {path}: {exc.strerror or exc}; choose another path") from None


@guarded
def gate(
    report: Annotated[Path, typer.Argument(help="JSON report from privaudit attack/evaluate --json.")],
    max_auc: Annotated[Optional[float], typer.Option("--max-auc", help="Fail when the attack AUC exceeds X (0.5 is chance).")] = None,
    max_tpr_at_fpr: Annotated[Optional[list[str]], typer.Option("--max-tpr-at-fpr", metavar="FPR:MAX", help="Fail when the TPR at FPR exceeds MAX, e.g. 0.01:0.05 (or 0.01=0.05); repeatable.")] = None,
    max_advantage: Annotated[Optional[float], typer.Option("--max-advantage", help="Fail when the attack advantage (max TPR−FPR) exceeds X.")] = None,
    max_nkid: Annotated[Optional[float], typer.Option("--max-nkid", help="Fail when the NKID (utility; lower is better) exceeds X. Needs a report from evaluate.")] = None,
    max_epsilon: Annotated[Optional[float], typer.Option("--max-epsilon", help="Fail when the DP-SGD ε exceeds X. Needs a DP-SGD model.")] = None,
    max_gap: Annotated[Optional[float], typer.Option("--max-gap", help="Fail when the generalization gap (NKID test − train; segmentation: mean IoU train − test) exceeds X.")] = None,
    max_epsilon_lb: Annotated[Optional[float], typer.Option("--max-epsilon-lb", help="Fail when the attack's empirical ε lower bound (95%) exceeds X.")] = None,
    attack: Annotated[Optional[str], typer.Option("--attack", help="Apply the attack thresholds to this attack of the report (loss, calibrated, lira-offline, lira-online; segmentation: label-only, loss-map). Default: the report's attack, the strongest.")] = None,
    min_miou: Annotated[Optional[float], typer.Option("--min-miou", help="Segmentation: fail when the mean IoU on the test set is below X (a report from evaluate).")] = None,
    max_auc_ci_upper: Annotated[Optional[float], typer.Option("--max-auc-ci-upper", help="Fail when the upper end of the AUC's 95% interval exceeds X (stricter than --max-auc).")] = None,
    policy: Annotated[Optional[Path], typer.Option("--policy", help="TOML policy file: privaudit.toml (table 'gate') or pyproject.toml (table 'tool.privaudit.gate'). Default: the one in the current folder, if any; flags override it.")] = None,
    no_policy: Annotated[bool, typer.Option("--no-policy", help="Do not read privaudit.toml / pyproject.toml from the current folder; use the flags only.")] = False,
    junit: Annotated[Optional[Path], typer.Option("--junit", help="Write the checks as JUnit XML (one testcase per check); '-' for stdout.")] = None,
    markdown: Annotated[Optional[Path], typer.Option("--markdown", help="Append a Markdown summary to FILE (e.g. $GITHUB_STEP_SUMMARY), creating it if needed; '-' for stdout.")] = None,
    as_measured: Annotated[bool, typer.Option("--as-measured", help="Judge the attack only in the direction it was measured. Default: each attack check (AUC, its CI, TPR, advantage) takes the stronger of the score and its negation, since an attacker can flip a score whose AUC is below 0.5.")] = False,
) -> None:
    """Check REPORT against privacy/utility thresholds: exit 0 when all pass, 1 when any fails, 2 on bad input."""
    from privaudit.gate import (GatePolicy, discover_policy, evaluate_gate, load_policy, make_policy, merge_policies, parse_tpr_flag, to_junit_xml,
                                to_markdown)
    from privaudit.gate.verdict import DP_WRONG
    from privaudit.report.schema import load_report
    from privaudit.io import atomic_write_text, check_writable

    if policy is not None and no_policy:
        raise InputError("--policy and --no-policy contradict each other; give one")
    # Check every output before anything else, so a bad path never leaves half the outputs behind.
    if junit is not None:
        check_writable(junit, what="JUnit file")
    if markdown is not None and str(markdown) != "-":
        _check_appendable(markdown)

    flags = make_policy({
        "max_auc": max_auc, "max_auc_ci_upper": max_auc_ci_upper, "max_tpr_at_fpr": parse_tpr_flag(max_tpr_at_fpr) or None,
        "max_advantage": max_advantage, "max_nkid": max_nkid, "max_epsilon": max_epsilon, "max_gap": max_gap,
        "max_epsilon_lb": max_epsilon_lb, "attack": attack, "min_miou": min_miou,
    })
    policy_file = policy if policy is not None else (None if no_policy else discover_policy(Path()))
    base = load_policy(policy_file) if policy_file is not None else GatePolicy()
    merged = merge_policies(base, flags)
    sources = ([f"{policy_file}" + ("" if policy is not None else " (found in the current folder)")] if policy_file is not None else [])
    sources += ["command-line flags"] if not flags.empty else []
    policy_source = " + ".join(sources) or "none"

    data = load_report(report)
    verdict = evaluate_gate(data, merged, report_name=str(report), as_measured=as_measured)

    stderr.print(gate_table(verdict, report, policy_source))
    if verdict.passed:
        stderr.print(f"[green]gate passed[/]: {len(verdict.checks)} of {len(verdict.checks)} checks within their limits")
    else:
        stderr.print(f"[bold red]gate failed[/]: {len(verdict.failed)} of {len(verdict.checks)} checks over their limits: " + escape(", ".join(c.name for c in verdict.failed)))
        for c in verdict.failed:
            if c.note == DP_WRONG:
                stderr.print(f"[bold red]{escape(DP_WRONG)}[/] (ε lower bound {c.value:.4g} > claimed ε {c.limit:.4g})")

    if junit is not None:
        xml = to_junit_xml(verdict, report)
        if str(junit) == "-":
            typer.echo(xml, nl=False)
        else:
            atomic_write_text(junit, xml)
    if markdown is not None:
        text = to_markdown(verdict, report, policy_source=policy_source)
        if str(markdown) == "-":
            typer.echo(text, nl=False)
        else:
            _append(markdown, text)
    if not verdict.passed:
        raise typer.Exit(1)
