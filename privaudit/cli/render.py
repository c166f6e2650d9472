"""All Rich rendering in one place (to stderr; stdout is for data)."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from privaudit.cli.common import stderr


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


DIRECTION_SOURCES = {"model": "recorded in the model", "--direction": "--direction"}
SIZE_SOURCES = {"model": "recorded in the model", "--size": "--size", "images": "the images' own"}


def data_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    """What the attack read: direction, image size, set sizes (with where each choice came from)."""
    d = report["data"]
    rows = []
    if d.get("direction"):
        src = DIRECTION_SOURCES.get(d.get("direction_source"))
        rows.append(("direction", d["direction"] + (f" ({src})" if src else "")))
    size = d.get("image_size") or report["model"].get("image_size")
    if size:
        notes = [SIZE_SOURCES.get(d.get("image_size_source"))]
        resized = [name for key, name in (("members", "members"), ("nonmembers", "non-members")) if (d.get(key) or {}).get("resized")]
        if resized:
            notes.append(" and ".join(resized) + " resized")
        note = ", ".join(n for n in notes if n)
        rows.append(("image size", f"{size}x{size} px" + (f" ({note})" if note else "")))
    counts = f"{d['members']['count']} / {d['nonmembers']['count']}"
    rows.append(("members / non-members", counts + (" (--allow-small)" if d.get("allow_small") else "")))
    return rows


def data_warnings(report: dict[str, Any]) -> list[str]:
    """One line per set whose resizing could change the scores (``data.<set>.resized.warned``)."""
    from privaudit.data.images import resize_warning

    out = []
    sets = [("members", report["data"].get("members")), ("non-members", report["data"].get("nonmembers")), ("proxy pairs", report.get("proxy_leakage"))]
    for what, d in sets:
        line = resize_warning(d.get("resized"), what=what, path=d.get("path"), count=int(d.get("count", 0))) if d else None
        if line:
            out.append(line)
    return out


def warn(lines: list[str | None]) -> None:
    """Warnings: one line each on stderr, also under --quiet (they change what a number means)."""
    for line in lines:
        if line:
            typer.echo(f"privaudit: warning: {line}", err=True)


def attack_table(report: dict[str, Any]) -> Table:
    a = report["attack"]
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
    for k, v in data_rows(report):
        t.add_row(k, v)
    t.add_row("generator mode", f"{a['generator_mode']} (samples={a['samples']}, loss={a['loss']})")
    defense = report["model"].get("defense", {}).get("method", "none")
    if defense != "none":
        t.add_row("defense", defense)
    training = report["model"].get("training")
    if isinstance(training, dict) and training.get("complete") is False:
        t.add_row("training", f"[bold red]UNFINISHED[/]: epoch {training.get('epochs_done')} of {training.get('epochs_total')}")
    return t


def warn_unfinished(model: dict[str, Any]) -> None:
    """One warning line on stderr per unfinished model behind a report's ``model`` section (shown
    even with --quiet: the numbers describe a model nobody meant to release)."""
    from privaudit.pipeline import unfinished_warnings

    for line in unfinished_warnings(model):
        typer.echo(f"privaudit: warning: {line}", err=True)


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
