"""`privaudit attack`: the reconstruction-loss membership inference attack."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Annotated, Optional

import typer

import privaudit
from privaudit import defaults
from privaudit.cli import options as o
from privaudit.cli.common import guarded, progress
from privaudit.cli.render import attack_table, data_warnings, reference_notes, show_attack, warn, warn_unfinished
from privaudit.errors import InputError


PLOTS = ("roc.png", "loss_hist.png")


@guarded
def attack(
    model: Annotated[Path, typer.Argument(help="privaudit checkpoint, pix2pix *_net_G.pth, torch.export .pt2 or TorchScript file.")],
    members: Annotated[Path, typer.Option("--members", help="Pairs the model was trained on (label 1).")],
    nonmembers: Annotated[Path, typer.Option("--nonmembers", help="Pairs it never saw, e.g. the test set (label 0).")],
    direction: o.Direction = None,
    size: o.Size = None,
    loss: o.Loss = o.LossChoice(defaults.LOSS),
    stochastic: o.Stochastic = False,
    samples: o.Samples = defaults.SAMPLES,
    batch_size: o.BatchSize = defaults.ATTACK_BATCH_SIZE,
    seed: o.Seed = defaults.SEED,
    bootstrap: o.Bootstrap = defaults.BOOTSTRAP,
    json_out: o.JsonOut = None,
    scores: Annotated[Optional[Path], typer.Option("--scores", help="Write per-sample losses and scores as CSV ('-' for stdout).")] = None,
    plot_dir: Annotated[Optional[Path], typer.Option("--plot-dir", help="Write roc.png (linear and log-log) and loss_hist.png here.")] = None,
    fail_above_auc: Annotated[Optional[float], typer.Option("--fail-above-auc", help="Exit 1 when the AUC exceeds X (judged as max(AUC, 1 − AUC): a flipped score leaks as much).")] = None,
    device: o.Device = defaults.DEVICE,
    precision: o.Precision = o.PrecisionChoice(defaults.PRECISION),
    deterministic: o.Deterministic = defaults.DETERMINISTIC,
    num_downs: o.NumDowns = None,
    ngf: o.Ngf = None,
    norm: o.Norm = None,
    dropout: o.Dropout = None,
    allow_small: o.AllowSmall = False,
    references: o.References = None,
    stream: o.Stream = False,
    memory_budget: o.MemoryBudget = None,
    workers: o.Workers = None,
    quiet: o.Quiet = False,
) -> None:
    """Attack MODEL with the per-sample reconstruction loss (and, with --references, the calibrated attacks) and report AUC, TPR at low FPR, advantage, ε lower bound."""
    from privaudit.data.stream import Streaming
    from privaudit.io import check_dir_creatable, check_writable, report_json, write_json, write_outputs

    if fail_above_auc is not None and not 0.0 <= fail_above_auc <= 1.0:
        raise InputError(f"--fail-above-auc must be between 0 and 1, not {fail_above_auc}")
    # Check every output before the work, build them all in memory, then write: a bad path or a
    # failed plot never leaves half the outputs behind (nor an empty plot folder).
    if json_out is not None:
        check_writable(json_out, what="report")
    if scores is not None:
        check_writable(scores, what="scores file")
    if json_out is not None and scores is not None and str(json_out) == str(scores) == "-":
        raise InputError("--json - and --scores - both want stdout; write one of them to a file")
    if plot_dir is not None and str(plot_dir) == "-":
        raise InputError("--plot-dir writes PNG files and needs a folder name, not '-'")
    if plot_dir is not None:
        check_dir_creatable(plot_dir, what="plot folder", files=PLOTS)
    config = privaudit.AttackConfig(loss=loss, stochastic=stochastic, samples=samples, batch_size=batch_size, seed=seed, n_bootstrap=bootstrap)
    overrides = privaudit.ArchOverrides(num_downs=num_downs, ngf=ngf, norm=norm, use_dropout=dropout)
    with progress(disable=quiet) as bar:
        task = bar.add_task("attack", total=None, info="")
        report, result = privaudit.attack(model, members, nonmembers, config=config, direction=direction, size=size, overrides=overrides, device=device,
                                          precision=precision, deterministic=deterministic,
                                          on_batch=lambda k: bar.update(task, advance=k), allow_small=allow_small, references=references,
                                          on_reference=lambda k, n: bar.update(task, info=f"reference {k}/{n}"),
                                          streaming=Streaming(force=stream, memory_budget_gb=memory_budget, workers=workers))
    outputs: list[tuple[Path, bytes]] = []
    if json_out is not None and str(json_out) != "-":
        outputs.append((json_out, report_json(report).encode()))
    if scores is not None and str(scores) != "-":
        outputs.append((scores, scores_csv(result).encode()))
    if plot_dir is not None:
        from privaudit.report.plots import figure_png, loss_histogram, roc_figure

        m, name = result.metrics, Path(str(model)).name
        outputs.append((plot_dir / PLOTS[0], figure_png(roc_figure([(name, m.fpr, m.tpr, m.auc)]))))
        outputs.append((plot_dir / PLOTS[1], figure_png(loss_histogram(result.member_losses, result.nonmember_losses, title=f"{name}: AUC {m.auc:.3f}"))))
    write_outputs(outputs)
    if json_out is not None and str(json_out) == "-":
        write_json("-", report)
    warn(data_warnings(report))
    warn(reference_notes(report))
    if scores is not None and str(scores) == "-":
        typer.echo(scores_csv(result), nl=False)
    if not quiet:
        show_attack(report, attack_table(report))
    warn_unfinished(report["model"])
    a = report["attack"]  # the strongest attack with --references, else the plain one
    auc, auc_effective = a["auc"], a["auc_effective"]
    if fail_above_auc is not None and auc_effective > fail_above_auc:  # a flipped score leaks as much
        flip = f" (score flipped: measured AUC {auc:.4f})" if auc < 0.5 else ""
        which = f" ({a['name']})" if "attacks" in report else ""
        typer.echo(f"privaudit: attack AUC{which} {auc_effective:.4f}{flip} exceeds --fail-above-auc {fail_above_auc}", err=True)
        raise typer.Exit(1)


def scores_csv(result) -> str:
    """Per sample: name, set, label, loss, score (the plain attack's, −loss) and, with reference
    models, one ``score_<attack>`` column per attack that ran (higher = more likely a member)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    extra = [n for n in result.scores if n != "loss"]
    w.writerow(["name", "set", "label", "loss", "score"] + [f"score_{n}" for n in extra])
    for j, (names, losses, label, which) in enumerate(((result.member_names, result.member_losses, 1, "member"),
                                                       (result.nonmember_names, result.nonmember_losses, 0, "nonmember"))):
        for i, (name, loss) in enumerate(zip(names, losses)):
            w.writerow([name, which, label, f"{loss:.8g}", f"{-loss:.8g}"] + [f"{result.scores[n][j][i]:.8g}" for n in extra])
    return buf.getvalue()
