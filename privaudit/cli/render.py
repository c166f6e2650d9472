"""All Rich rendering in one place (to stderr; stdout is for data)."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from privaudit.cli.common import stderr


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def attack_table(report: dict[str, Any]) -> Table:
    a = report["attack"]
    d = report["data"]
    t = Table(title=f"membership inference: {report['model']['path']}", title_justify="left")
    t.add_column("metric")
    t.add_column("value", justify="right")
    lo, hi = a["auc_ci95"]
    t.add_row("AUC", f"{a['auc']:.4f}  [{lo:.4f}, {hi:.4f}] 95% CI")
    for k, v in a["tpr_at_fpr"].items():
        t.add_row(f"TPR @ {100 * float(k):g}% FPR", pct(v) if v is not None else f"n/a (needs ≥ {int(round(1 / float(k)))} non-members)")
    t.add_row("advantage (max TPR−FPR)", f"{a['advantage']:.4f}")
    t.add_row("balanced accuracy", pct(a["balanced_accuracy"]))
    t.add_row("threshold (loss)", f"{a['threshold']:.5f}")
    t.add_row("member loss", f"{a['member_loss']['mean']:.5f} ± {a['member_loss']['std']:.5f}")
    t.add_row("non-member loss", f"{a['nonmember_loss']['mean']:.5f} ± {a['nonmember_loss']['std']:.5f}")
    t.add_row("members / non-members", f"{d['members']['count']} / {d['nonmembers']['count']}")
    t.add_row("generator mode", f"{a['generator_mode']} (samples={a['samples']}, loss={a['loss']})")
    defense = report["model"].get("defense", {}).get("method", "none")
    if defense != "none":
        t.add_row("defense", defense)
    training = report["model"].get("training")
    if isinstance(training, dict) and training.get("complete") is False:
        t.add_row("training", f"[bold red]UNFINISHED[/]: epoch {training.get('epochs_done')} of {training.get('epochs_total')}")
    return t


def warning(line: str) -> None:
    """One warning line on stderr (shown even with --quiet)."""
    typer.echo(f"privaudit: warning: {line}", err=True)


def warn_unfinished(model: dict[str, Any]) -> None:
    """One warning line on stderr per unfinished model behind a report's ``model`` section (shown
    even with --quiet: the numbers describe a model nobody meant to release)."""
    from privaudit.pipeline import unfinished_warnings

    for line in unfinished_warnings(model):
        warning(line)


def show(table: Table) -> None:
    stderr.print(table)


def evaluate_table(report: dict[str, Any]) -> Table:
    t = attack_table(report)
    u = report.get("utility") or {}
    g = report.get("generalization_gap") or {}
    if u.get("kid") is not None:
        t.add_row("KID (test)", f"{u['kid']:.5f} ± {u['kid_std']:.5f}  (subset {u.get('kid_subset_size')})")
        t.add_row("NKID (test)", pct(u["nkid"]))
        t.add_row("NKID train / test / gap", f"{pct(g.get('nkid_train'))} / {pct(g.get('nkid_test'))} / {pct(g.get('gap'))}")
    else:
        t.add_row("KID / NKID", "skipped (--no-kid)")
    t.add_row("L1 / PSNR / SSIM (test)", f"{u['l1']:.4f} / {u['psnr']:.2f} dB / {u['ssim']:.4f}")
    if u.get("sharpness") is not None:
        t.add_row("sharpness (test; 1 = as detailed as real)", f"{u['sharpness']:.3f}")
    t.add_row("L1 train / test", f"{g['l1_train']:.4f} / {g['l1_test']:.4f}")
    if report.get("proxy_leakage"):
        p = report["proxy_leakage"]
        t.add_row("proxy leakage AUC", f"{p['auc']:.4f} ({p['count']} proxy pairs as members)")
    rep = report.get("repeats")
    if rep:
        t.add_row(f"over {rep['n']} seeds", f"AUC {rep['auc']['mean']:.4f} ± {rep['auc']['std']:.4f}" + (f", NKID {pct(rep['nkid']['mean'])} ± {pct(rep['nkid']['std'])}" if rep.get("nkid") else ""))
    return t


def compare_table(rows) -> Table:
    from privaudit.evaluation.compare import HEADERS, cells

    t = Table(title="utility-privacy comparison", title_justify="left")
    for h in HEADERS:
        t.add_column(h, justify="left" if h in ("model", "defense") else "right")
    for r in rows:
        t.add_row(*cells(r))
    return t
