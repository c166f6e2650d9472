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
from privaudit.cli.common import given_on_command_line, guarded, progress
from privaudit.cli.render import attack_table, data_warnings, reference_notes, segmentation_notes, show_attack, warn, warn_unfinished
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
    task: o.Task = None,
    arch: o.Arch = None,
    num_classes: o.NumClasses = None,
    normalize: o.Normalize = None,
    ignore_index: o.IgnoreIndex = None,
    label_score: o.LabelScore = o.LabelScoreChoice(defaults.LABEL_SCORE),
    shadow: o.Shadow = None,
    shadow_members: o.ShadowMembers = None,
    shadow_nonmembers: o.ShadowNonmembers = None,
    lossmap_epochs: o.LossmapEpochs = defaults.LOSSMAP_EPOCHS,
    lossmap_size: o.LossmapSize = defaults.LOSSMAP_SIZE,
    quiet: o.Quiet = False,
) -> None:
    """Attack MODEL with the per-sample reconstruction loss (and, with --references, the calibrated attacks) and report AUC, TPR at low FPR, advantage, ε lower bound.

    A segmentation model (--task segmentation, or recorded in its checkpoint) is attacked with the per-image cross-entropy, the label-only
    attack and, with a --shadow model or online --references, the loss-map attack."""
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
    task, spec, seg_options = segmentation_setup(model, loss=loss, task=task, arch=arch, num_classes=num_classes, normalize=normalize,
                                                 ignore_index=ignore_index, label_score=label_score, shadow=shadow, shadow_members=shadow_members,
                                                 shadow_nonmembers=shadow_nonmembers, lossmap_epochs=lossmap_epochs, lossmap_size=lossmap_size)
    config = privaudit.AttackConfig(loss=loss, stochastic=stochastic, samples=samples, batch_size=batch_size, seed=seed, n_bootstrap=bootstrap)
    overrides = privaudit.ArchOverrides(num_downs=num_downs, ngf=ngf, norm=norm, use_dropout=dropout)
    with progress(disable=quiet) as bar:
        bar_task = bar.add_task("attack", total=None, info="")
        report, result = privaudit.attack(model, members, nonmembers, config=config, direction=direction, size=size, overrides=overrides, device=device,
                                          precision=precision, deterministic=deterministic,
                                          on_batch=lambda k: bar.update(bar_task, advance=k), allow_small=allow_small, references=references,
                                          on_reference=lambda k, n: bar.update(bar_task, info=f"reference {k}/{n}"),
                                          streaming=Streaming(force=stream, memory_budget_gb=memory_budget, workers=workers), task=task, segmentation=spec,
                                          seg_options=seg_options)
    outputs: list[tuple[Path, bytes]] = []
    if json_out is not None and str(json_out) != "-":
        outputs.append((json_out, report_json(report).encode()))
    if scores is not None and str(scores) != "-":
        outputs.append((scores, scores_csv(result).encode()))
    if plot_dir is not None:
        from privaudit.report.plots import figure_png, loss_histogram, roc_figure

        m, name = result.metrics, Path(str(model)).name
        outputs.append((plot_dir / PLOTS[0], figure_png(roc_figure([(name, m.fpr, m.tpr, m.auc)]))))
        hist = loss_histogram(result.member_losses, result.nonmember_losses, title=f"{name}: AUC {m.auc:.3f}")
        if task == "segmentation":
            hist.axes[0].set_xlabel("per-image cross-entropy")
        outputs.append((plot_dir / PLOTS[1], figure_png(hist)))
    write_outputs(outputs)
    if json_out is not None and str(json_out) == "-":
        write_json("-", report)
    warn(data_warnings(report))
    warn(reference_notes(report))
    warn(segmentation_notes(report))
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


def segmentation_setup(model: Path, *, loss: str, task: str | None, arch: str | None, num_classes: int | None, normalize: str | None,
                       ignore_index: int | None, label_score: str, shadow: Path | None, shadow_members: Path | None, shadow_nonmembers: Path | None,
                       lossmap_epochs: int, lossmap_size: int) -> tuple[str, object, object]:
    """(task, SegSpec or None, SegAttackOptions or None) of an attack or evaluation: the task from the
    flags and the model file; flags of the other task refused in one line."""
    from privaudit.attacks.segmentation import SegAttackOptions
    from privaudit.models.segcheckpoint import TASK, resolve_task

    task, spec = o.segmentation_flags(task=task, arch=arch, num_classes=num_classes, normalize=normalize, ignore_index=ignore_index)
    resolved = resolve_task(model, task, spec)
    shadow_given = any(v is not None for v in (shadow, shadow_members, shadow_nonmembers))
    if resolved != TASK:
        if shadow_given:
            raise InputError("--shadow, --shadow-members and --shadow-nonmembers are for the loss-map attack on segmentation models; drop them")
        return resolved, None, None
    if given_on_command_line("loss"):
        raise InputError("--loss is for image translation (l1/l2 reconstruction losses); segmentation models are attacked with the cross-entropy: drop --loss")
    options = SegAttackOptions(label_score=label_score, shadow=str(shadow) if shadow else None, shadow_members=str(shadow_members) if shadow_members else None,
                               shadow_nonmembers=str(shadow_nonmembers) if shadow_nonmembers else None, lossmap_epochs=lossmap_epochs, lossmap_size=lossmap_size)
    options.validate()
    return resolved, spec, options
