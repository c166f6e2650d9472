"""All Rich rendering in one place (to stderr; stdout is for data)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Sequence

import typer
from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from privaudit.cli.common import stderr


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}%"


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
    if a["auc"] < 0.5:  # members score LOWER: the attack works with its score negated
        adv = (a.get("flipped_score") or {}).get("advantage")
        t.add_row("score flipped", f"an attacker who predicts 'member' for high loss gets AUC {1 - a['auc']:.4f}  [{1 - hi:.4f}, {1 - lo:.4f}]"
                  + (f", advantage {adv:.4f}" if adv is not None else ""))
    tci = a.get("tpr_at_fpr_ci95") or {}
    for k, v in a["tpr_at_fpr"].items():
        ci = tci.get(k)
        t.add_row(f"TPR @ {100 * float(k):g}% FPR", (pct(v) + (f"  [{pct(ci[0])}, {pct(ci[1])}]" if ci else "")) if v is not None
                  else f"n/a (needs ≥ {int(round(1 / float(k)))} non-members)")
    t.add_row("advantage (max TPR−FPR)", f"{a['advantage']:.4f}")
    t.add_row("balanced accuracy", pct(a["balanced_accuracy"]))
    if a.get("epsilon_lb") is not None:
        t.add_row("ε lower bound (95%)", f"{a['epsilon_lb']:.3f} (δ = {a.get('delta', 0):.3g})")
    dp = report.get("dp_audit")
    if dp:
        line = f"claimed ε {dp['claimed_epsilon']:.3g} vs measured lower bound {dp['epsilon_lb']:.3g}"
        t.add_row("DP claim", f"[bold red]{escape(line)}: the bound exceeds the claim, so the DP implementation or its accounting is wrong[/]"
                  if dp.get("exceeded") else escape(line))
    if "attacks" in report:
        t.add_row("strongest attack", escape(f"{a.get('name')} ({a.get('selected_by', '')})"))
    shift = report["data"].get("distribution_shift")
    if shift and shift.get("detected"):
        t.add_row("distribution", "[bold yellow]members and non-members differ in distribution[/] (reference-only AUC "
                  f"{shift['auc']:.3f}): the plain loss attack measures that, not membership")
    if a.get("name") in (None, "reconstruction-loss", "loss"):
        t.add_row("threshold (loss)", f"{a['threshold']:.5f}")
    elif a.get("threshold_score") is not None:
        t.add_row(f"threshold ({a['name']} score)", f"{a['threshold_score']:.5g}")
    t.add_row("member loss", f"{a['member_loss']['mean']:.5f} ± {a['member_loss']['std']:.5f}")
    t.add_row("non-member loss", f"{a['nonmember_loss']['mean']:.5f} ± {a['nonmember_loss']['std']:.5f}")
    for k, v in data_rows(report):
        t.add_row(k, v)
    if report.get("task") == "segmentation":
        info = report["model"].get("segmentation") or {}
        t.add_row("task", f"segmentation, {info.get('num_classes')} classes, loss = per-image cross-entropy, ignore index {info.get('ignore_index')}")
    else:
        t.add_row("generator mode", f"{a['generator_mode']} (samples={a['samples']}, loss={a['loss']})")
    defense = report["model"].get("defense", {}).get("method", "none")
    if defense != "none":
        t.add_row("defense", defense)
    training = report["model"].get("training")
    if isinstance(training, dict) and training.get("complete") is False:
        t.add_row("training", f"[bold red]UNFINISHED[/]: epoch {training.get('epochs_done')} of {training.get('epochs_total')}")
    return t


def segmentation_notes(report: dict[str, Any]) -> list[str]:
    """One line per segmentation attack that could not run (the loss-map attack without a shadow), and why."""
    seg = report.get("segmentation") or {}
    refs = (report.get("references") or {}).get("skipped") or {}
    return [f"attack {name} skipped: {why}" for name, why in (seg.get("skipped") or {}).items() if name not in refs]


def reference_notes(report: dict[str, Any]) -> list[str]:
    """One line per attack the references could not run (and why), and the references' own notes."""
    refs = report.get("references") or {}
    out = [f"attack {name} skipped: {why}" for name, why in (refs.get("skipped") or {}).items()]
    return out + list(refs.get("notes") or [])


# The attacks side by side: least important columns first out at a narrow width.
_ATTACKS_DROP = ("advantage", "TPR @ 0.1% FPR", "AUC 95% CI", "TPR @ 10% FPR", "TPR @ 1% FPR")


def attacks_table(report: dict[str, Any]) -> FitTable:
    """Every attack of a report/2 side by side (AUC with CI, TPR at each FPR, advantage, ε lower bound)."""
    attacks = report.get("attacks") or {}
    strongest = (report.get("attack") or {}).get("name")
    fprs = list(next(iter(attacks.values()), {}).get("tpr_at_fpr", {}))
    cols = [Col("attack", justify="left", text=True), Col("AUC"), Col("AUC 95% CI")] + [Col(f"TPR @ {100 * float(k):g}% FPR") for k in fprs]
    cols += [Col("advantage"), Col("ε lb")]
    rows = []
    for name, a in attacks.items():
        lo, hi = a.get("auc_ci95") or (None, None)
        mark = " *" if name == strongest else (" (check)" if name == "reference-only" else "")
        rows.append([escape(name) + mark, f"{a['auc']:.4f}", f"[{lo:.3f}, {hi:.3f}]" if lo is not None else "–"]
                    + [pct(a["tpr_at_fpr"].get(k)) for k in fprs] + [f"{a['advantage']:.4f}", f"{a.get('epsilon_lb', 0):.3f}"])
    notes = ["* the strongest (the report's attack); reference-only scores the references alone: a distribution check, not an attack"]
    shift = (report.get("data") or {}).get("distribution_shift")
    if shift and shift.get("note"):
        notes.append(escape(shift["note"]))
    return FitTable(cols, rows, title="attacks", drop=list(_ATTACKS_DROP), hint="see every column in the --json report", notes=notes)


def show_attack(report: dict[str, Any], table: Any) -> None:
    """The attack (or evaluate) table, then, for a report/2, every attack side by side."""
    show(table)
    if report.get("attacks"):
        show(attacks_table(report))


def warning(line: str) -> None:
    """One warning line on stderr (shown even with --quiet)."""
    typer.echo(f"privaudit: warning: {line}", err=True)


def warn_unfinished(model: dict[str, Any]) -> None:
    """One warning line on stderr per unfinished model behind a report's ``model`` section (shown
    even with --quiet: the numbers describe a model nobody meant to release)."""
    from privaudit.report.build import unfinished_warnings

    for line in unfinished_warnings(model):
        warning(line)


def show(table: Any) -> None:
    stderr.print(table)


# ---------------------------------------------------------------------------------------------
# Tables that fit the terminal without cutting a number or a name


@dataclass(frozen=True)
class Col:
    """A column of a FitTable: ``text`` columns (names, paths, notes) fold across lines; the others
    hold numbers and keep their full width."""

    header: str
    justify: str = "right"
    text: bool = False


class FitTable:
    """A Rich renderable: a table laid out for the width it is printed at.

    Rich squeezes a table that is too wide by cutting every cell to "…", numbers included. This one
    never does: numbers keep their full width and text columns fold across lines. When the usual
    style does not fit, it switches to a compact one (no outer box, one space of padding); when even
    that is too wide, it leaves out the columns named in ``drop`` (in that order, all-empty columns
    first) and says so in the caption, with ``hint`` (where to see every column).
    """

    def __init__(self, columns: Sequence[Col], rows: Sequence[Sequence[str]], *, title: str = "", drop: Sequence[str] = (),
                 hint: str = "", notes: Sequence[str] = (), min_text: int = 10, show_header: bool = True, min_width: int | None = None) -> None:
        self.columns, self.rows = list(columns), [list(r) for r in rows]
        self.title, self.drop, self.hint, self.notes = title, list(drop), hint, list(notes)
        self.min_text, self.show_header, self.min_width = min_text, show_header, min_width

    def _width(self, i: int, whole_header: bool) -> int:
        """Column i's width: the widest cell (markup removed) and the header (whole, or its longest
        word when headers may wrap); a text column only up to ``min_text`` (it folds below that)."""
        cells = [Text.from_markup(r[i]).cell_len for r in self.rows] or [0]
        header = self.columns[i].header if self.show_header else ""
        words = [Text(header).cell_len] if whole_header else [Text(w).cell_len for w in header.split()]
        natural = max(max(cells), max(words, default=1), 1)
        return min(natural, self.min_text) if self.columns[i].text else natural

    def _table(self, keep: list[int], style: int, dropped: list[str], *, fixed_text: bool, width: int | None = None) -> Table:
        """style 0: the usual box, headers on one line; 1: headers wrap; 2: compact (no outer box)."""
        caption = list(self.notes)
        if dropped:
            caption.append(f"not shown at this width: {', '.join(dropped)}" + (f"; {self.hint}" if self.hint else ""))
        compact: dict[str, Any] = dict(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True) if style == 2 else {}
        t = Table(title=self.title or None, title_justify="left", caption="\n".join(caption) or None, caption_justify="left",
                  show_header=self.show_header, min_width=min(self.min_width, width) if self.min_width and width else None, **compact)
        for i in keep:
            c = self.columns[i]
            w = None if (c.text and not fixed_text) else self._width(i, whole_header=style == 0)
            t.add_column(c.header, justify=c.justify, overflow="fold", width=w)
        for r in self.rows:
            t.add_row(*[r[i] for i in keep])
        return t

    def build(self, width: int, console: Console | None = None) -> Table:
        """The table laid out for ``width`` columns."""
        console = console or Console(width=max(width, 1), file=io.StringIO())
        options = console.options.update_width(10_000)
        keep = list(range(len(self.columns)))
        empty = [self.columns[i].header for i in keep if self.rows and all(Text.from_markup(r[i]).plain.strip() in ("", "–") for r in self.rows)]
        order = [h for h in empty if h in self.drop] + [h for h in self.drop if h not in empty]
        dropped: list[str] = []
        for style in (0, 1, 2):
            while True:
                need = Measurement.get(console, options, self._table(keep, style, dropped, fixed_text=True)).maximum
                if need <= width or style < 2:
                    break
                nxt = next((h for h in order if h not in dropped), None)
                if nxt is None:
                    break  # nothing left to leave out: the text columns fold further, numbers may fold too, never "…"
                dropped.append(nxt)
                keep = [i for i in keep if self.columns[i].header != nxt]
            if need <= width:
                break
        return self._table(keep, style, dropped, fixed_text=False, width=width)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.build(options.max_width, console)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, self.build(options.max_width, console))


def evaluate_table(report: dict[str, Any]) -> Table:
    t = attack_table(report)
    u = report.get("utility") or {}
    g = report.get("generalization_gap") or {}
    if report.get("task") == "segmentation":
        t.add_row("mean IoU (test)", pct(u.get("miou")))
        t.add_row("pixel accuracy (test)", pct(u.get("pixel_accuracy")))
        t.add_row("mean class accuracy (test)", pct(u.get("mean_class_accuracy")))
        per_class = u.get("iou_per_class") or {}
        t.add_row("IoU per class (test)", escape(", ".join(f"{k} {pct(v) if v is not None else '–'}" for k, v in per_class.items())))
        t.add_row("mean IoU train / test / gap", f"{pct(g.get('miou_train'))} / {pct(g.get('miou_test'))} / {pct(g.get('miou_gap'))}")
        if report.get("proxy_leakage"):
            p = report["proxy_leakage"]
            t.add_row("proxy leakage AUC", f"{p['auc']:.4f} ({p['count']} proxy pairs as members)")
        rep = report.get("repeats")
        if rep:
            t.add_row(f"over {rep['n']} seeds", f"loss AUC {rep['auc']['mean']:.4f} ± {rep['auc']['std']:.4f}"
                      + (f", mean IoU {pct(rep['miou']['mean'])} ± {pct(rep['miou']['std'])}" if rep.get("miou") else ""))
        return t
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
    fid = u.get("fidelity_to_teacher")
    if fid:
        if fid.get("skipped"):
            t.add_row("L1 to the teacher", f"not measured: {fid['skipped']}")
        else:
            on_proxy = f" / {fid['proxy_l1']:.4f} on {fid['proxy']['count']} proxy inputs" if fid.get("proxy_l1") is not None else ""
            t.add_row("L1 to the teacher (non-members / proxy)", f"{fid['nonmembers_l1']:.4f}{on_proxy}")
    if report.get("proxy_leakage"):
        p = report["proxy_leakage"]
        t.add_row("proxy leakage AUC", f"{p['auc']:.4f} ({p['count']} proxy pairs as members)")
    rep = report.get("repeats")
    if rep:
        t.add_row(f"over {rep['n']} seeds", f"AUC {rep['auc']['mean']:.4f} ± {rep['auc']['std']:.4f}" + (f", NKID {pct(rep['nkid']['mean'])} ± {pct(rep['nkid']['std'])}" if rep.get("nkid") else ""))
    return t


# The console headers of the comparison (the Markdown keeps compare.HEADERS): spaced, so they wrap.
_CONSOLE_HEADERS = {"TPR@1%FPR": "TPR @ 1% FPR", "TPR@10%FPR": "TPR @ 10% FPR"}
# Least important first: what a narrow terminal leaves out (all-empty columns go before these).
_COMPARE_DROP = ("L1 to teacher", "sharpness", "SSIM", "gap (NKID)", "ε lb", "TPR@10%FPR", "AUC 95% CI", "ε", "L1", "TPR@1%FPR", "NKID")


def compare_table(rows, *, hint: str = "see every column with privaudit report ... --markdown - (or a wider terminal)") -> FitTable:
    """The utility-privacy comparison, fitted to the terminal (see FitTable)."""
    from privaudit.report.tables import FLIPPED_NOTE, SHIFT_NOTE, headers, row_cells

    columns = headers(rows)
    cols = [Col(_CONSOLE_HEADERS.get(h, h), justify="left" if h in ("model", "defense") else "right", text=h in ("model", "defense")) for h in columns]
    drop = [_CONSOLE_HEADERS.get(h, h) for h in _COMPARE_DROP if h in columns] + [h for h in ("gap (mIoU)", "pixel acc.") if h in columns]
    notes = [FLIPPED_NOTE] if any(r.flipped for r in rows) else []
    notes += [SHIFT_NOTE] if any(r.shift for r in rows) else []
    shown = [[escape(c) for c in row_cells(r, columns)] for r in rows]
    for line in shown:  # a measured ε lower bound above the claimed ε: the DP claim is wrong
        if line[-1].endswith("> ε!"):
            line[-1] = f"[bold red]{line[-1]}[/]"
    return FitTable(cols, shown, title="utility-privacy comparison", drop=drop, hint=hint, notes=[escape(n) for n in notes])


def gate_table(verdict: Any, report: Any, policy_source: str) -> FitTable:
    """The gate's checks (a ``GateVerdict``) of ``report``, judged under ``policy_source``."""
    from privaudit.gate import format_number

    title = f"release gate: {report}\npolicy: {policy_source}"
    rows, notes = [], []
    for c in verdict.checks:
        if c.note and c.note not in notes:
            notes.append(c.note)
        mark = f" [{notes.index(c.note) + 1}]" if c.note else ""
        rows.append([escape(f"{c.name} ({c.metric})") + mark, format_number(c.value), f"{'≥' if c.op == '>=' else '≤'} {format_number(c.limit)}", "[green]PASS[/]" if c.passed else "[bold red]FAIL[/]"])
    cols = [Col("check", justify="left", text=True), Col("value"), Col("limit"), Col("result", justify="left")]
    return FitTable(cols, rows, title=escape(title), notes=[escape(f"[{i}] {n}") for i, n in enumerate(notes, 1)], min_text=24,
                    min_width=max(len(line) for line in title.splitlines()))  # a path in the title is not wrapped while there is room
