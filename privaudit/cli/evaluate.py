"""`privaudit evaluate`: attack + utility (KID/NKID, L1/PSNR/SSIM) + generalization gap."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

import privaudit
from privaudit import defaults
from privaudit.cli import options as o
from privaudit.cli.common import guarded, progress
from privaudit.cli.render import data_warnings, evaluate_table, reference_notes, segmentation_notes, show_attack, warn, warn_unfinished


@guarded
def evaluate(
    model: Annotated[Path, typer.Argument(help="Any MODEL file (privaudit, pix2pix state_dict, torch.export, TorchScript).")],
    members: Annotated[Path, typer.Option("--members", help="Training pairs (members).")],
    nonmembers: Annotated[Path, typer.Option("--nonmembers", help="Test pairs (non-members; also the utility test set).")],
    direction: o.Direction = None,
    size: o.Size = None,
    inception_weights: Annotated[Optional[Path], typer.Option("--inception-weights", help="torch-fidelity's Inception weights file (weights-inception-2015-12-05-6726825d.pth); else $PRIVAUDIT_INCEPTION_WEIGHTS, else the torch hub cache.")] = None,
    no_kid: Annotated[bool, typer.Option("--no-kid", help="Skip KID/NKID (pixel metrics only); the report says so.")] = False,
    kid_subset_size: Annotated[Optional[int], typer.Option("--kid-subset-size", help=f"KID subset size (default {defaults.KID_SUBSET_SIZE}, clamped to the set size; the value used is reported).")] = None,
    kid_subsets: Annotated[int, typer.Option("--kid-subsets", help="Number of KID subsets.")] = defaults.KID_SUBSETS,
    feature_cache: Annotated[Optional[Path], typer.Option("--feature-cache", help="Folder caching ground-truth Inception features (default ~/.cache/privaudit/features).")] = None,
    no_feature_cache: Annotated[bool, typer.Option("--no-feature-cache", help="Keep features in memory only.")] = False,
    proxy_pairs: Annotated[Optional[Path], typer.Option("--proxy-pairs", help="Proxy leakage check: attack AUC with these pairs as members (≈ 0.5 expected for a distilled student).")] = None,
    teacher: Annotated[Optional[Path], typer.Option("--teacher", help="Fidelity: the teacher to measure the model's distance to (default: the one a distilled model records, when still at its path).")] = None,
    proxy: Annotated[Optional[Path], typer.Option("--proxy", help="Fidelity: the proxy inputs the student was distilled on (only the input side is read; default: --proxy-pairs' inputs).")] = None,
    repeat: Annotated[int, typer.Option("--repeat", help="Re-run with N seeds (dropout draws, output noise, KID subsets) and report mean ± std.")] = defaults.REPEAT,
    loss: o.Loss = o.LossChoice(defaults.LOSS),
    stochastic: o.Stochastic = False,
    samples: o.Samples = defaults.SAMPLES,
    batch_size: o.BatchSize = defaults.ATTACK_BATCH_SIZE,
    seed: o.Seed = defaults.SEED,
    bootstrap: o.Bootstrap = defaults.BOOTSTRAP,
    json_out: o.JsonOut = None,
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
    """Audit MODEL: attack AUC, KID/NKID and pixel metrics on the test set, and the generalization gap.

    A segmentation model: its attacks, mean IoU, pixel accuracy and IoU per class on the test set, and the gap in mean IoU."""
    from privaudit.data.stream import Streaming
    from privaudit.cli.attack import segmentation_setup
    from privaudit.io import check_writable, write_json

    if json_out is not None:
        check_writable(json_out, what="report")
    task, spec, seg_options = segmentation_setup(model, loss=loss, task=task, arch=arch, num_classes=num_classes, normalize=normalize,
                                                 ignore_index=ignore_index, label_score=label_score, shadow=shadow, shadow_members=shadow_members,
                                                 shadow_nonmembers=shadow_nonmembers, lossmap_epochs=lossmap_epochs, lossmap_size=lossmap_size)
    config = privaudit.EvaluateConfig(
        attack=privaudit.AttackConfig(loss=loss, stochastic=stochastic, samples=samples, batch_size=batch_size, seed=seed, n_bootstrap=bootstrap),
        kid=not no_kid,
        inception_weights=str(inception_weights) if inception_weights else None,
        kid_subset_size=kid_subset_size,
        kid_subsets=kid_subsets,
        feature_cache=str(feature_cache) if feature_cache else None,
        no_disk_cache=no_feature_cache,
        proxy_pairs=str(proxy_pairs) if proxy_pairs else None,
        repeat=repeat,
        teacher=str(teacher) if teacher else None,
        proxy=str(proxy) if proxy else None,
    )
    with progress(disable=quiet) as bar:
        bar_task = bar.add_task("evaluate", total=None, info="")
        report = privaudit.evaluate(model, members, nonmembers, cfg=config, direction=direction, size=size, device=device, precision=precision, deterministic=deterministic,
                                    overrides=privaudit.ArchOverrides(num_downs=num_downs, ngf=ngf, norm=norm, use_dropout=dropout),
                                    on_batch=lambda k: bar.update(bar_task, advance=k), allow_small=allow_small, references=references,
                                    on_reference=lambda k, n: bar.update(bar_task, info=f"reference {k}/{n}"),
                                    streaming=Streaming(force=stream, memory_budget_gb=memory_budget, workers=workers), task=task, segmentation=spec,
                                    seg_options=seg_options)
    if json_out is not None:
        write_json(json_out, report)
    warn(data_warnings(report))
    warn(reference_notes(report))
    warn(segmentation_notes(report))
    if not quiet:
        show_attack(report, evaluate_table(report))
    warn_unfinished(report["model"])
