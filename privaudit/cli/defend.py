"""`privaudit defend`: produce a hardened checkpoint with AKD, DMP, Gauss or DP-SGD.

Parses the flags into the method's options and calls ``privaudit.defenses.defend`` once (the
registry in ``privaudit/defenses/registry.py``); renders the summary it returns.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from privaudit import defaults
from privaudit.cli import options as o
from privaudit.cli.common import epoch_callback, given_on_command_line, guarded, progress, stderr
from privaudit.cli.render import warning


@guarded
def defend(
    model: Annotated[Optional[Path], typer.Argument(help="The teacher (any MODEL format); not used by dpsgd, which trains from scratch.")] = None,
    method: Annotated[o.MethodChoice, typer.Option("--method", help="The defense.")] = defaults.METHOD,
    out: Annotated[Optional[Path], typer.Option("--out", help="Where to write the hardened checkpoint (OUT.state holds the resume state).")] = None,
    proxy: Annotated[Optional[Path], typer.Option("--proxy", help="akd/dmp: unlabelled proxy inputs (a folder of input images, aligned A|B pairs or A/+B/; only the input side is ever read).")] = None,
    proxy_layout: Annotated[o.LayoutChoice, typer.Option("--proxy-layout", help="How --proxy is laid out (auto: guess from the files).")] = defaults.PROXY_LAYOUT,
    train_data: Annotated[Optional[Path], typer.Option("--train-data", help="dpsgd: the private training pairs.")] = None,
    direction: o.Direction = None,
    size: o.Size = None,
    sigma: Annotated[Optional[float], typer.Option("--sigma", help="gauss: standard deviation of the output noise (images in [-1, 1]).")] = None,
    epochs: Annotated[int, typer.Option("--epochs", show_default=False, help=f"Training epochs (default {defaults.EPOCHS}, the AKD paper's; akd without --paper, when not given: as many steps as {defaults.AKD_PROXY_EPOCHS} epochs of the proxy inputs alone, so fewer epochs of the larger distillation set; segmentation: {defaults.SEG_EPOCHS}).")] = defaults.EPOCHS,
    decay_epochs: Annotated[Optional[int], typer.Option("--decay-epochs", help="Linear learning-rate decay over the last N epochs (default: half).")] = defaults.DECAY_EPOCHS,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help=f"Batch size (akd/dmp: {defaults.BATCH_SIZE} as in the paper; dpsgd: {defaults.DP_BATCH_SIZE}, the expected Poisson batch; segmentation: {defaults.SEG_BATCH_SIZE}, dpsgd {defaults.SEG_DP_BATCH_SIZE}).")] = None,
    lr: Annotated[float, typer.Option("--lr", help=f"Adam learning rate (segmentation, when not given: {defaults.SEG_LR:g}).")] = defaults.LR,
    lambda_l1: Annotated[float, typer.Option("--lambda-l1", show_default=False, help=f"λ, the weight of the L1 term (default {defaults.LAMBDA_L1:g}, the paper's; akd without --paper: {defaults.AKD_SHARP['lambda_l1']:g}).")] = defaults.LAMBDA_L1,
    augment: Annotated[bool, typer.Option("--augment/--no-augment", help="pix2pix jitter and flips during training.")] = defaults.AUGMENT,
    ngf: Annotated[Optional[int], typer.Option("--ngf", help=f"Student/DP U-Net width (default: the teacher's; dpsgd: {defaults.NGF}, segmentation {defaults.SEG_NGF}).")] = None,
    ndf: Annotated[int, typer.Option("--ndf", help="Discriminator width.")] = defaults.NDF,
    num_downs: o.NumDowns = None,
    norm: Annotated[Optional[o.NormChoice], typer.Option("--norm", help="Student norm layer (dpsgd always uses group).")] = None,
    input_kind: Annotated[o.InputKindChoice, typer.Option("--input-kind", help="akd/dmp: whether the proxy inputs are label maps or photos, which decides the augmentations and recombinations that make sense (auto: label maps if a few colours cover almost every pixel).")] = o.InputKindChoice(defaults.INPUT_KIND),
    augment_copies: Annotated[int, typer.Option("--augment-copies", show_default=False, help=f"akd/dmp: K augmented copies of each proxy input join the distillation set (the teacher answers each once; 0: the proxy inputs alone; default 0, akd without --paper: {defaults.AKD_SHARP['augment_copies']}).")] = defaults.AUGMENT_COPIES,
    augment_ops: Annotated[Optional[str], typer.Option("--augment-ops", help="akd/dmp: how the copies are made, comma-separated from flip, crop, color (default: all that fit the input kind; color is for photos only).")] = None,
    recombine: Annotated[o.RecombineChoice, typer.Option("--recombine", show_default=False, help=f"akd/dmp: inputs recombined from two proxy inputs: cutpaste (label maps: regions of one pasted onto another), mixup or cutmix (photos); auto: cutpaste for label maps, cutmix for photos.")] = o.RecombineChoice(defaults.RECOMBINE),
    recombine_copies: Annotated[int, typer.Option("--recombine-copies", show_default=False, help=f"akd/dmp: R recombined inputs per proxy input (with --recombine; default {defaults.RECOMBINE_COPIES}).")] = defaults.RECOMBINE_COPIES,
    feature_matching: Annotated[float, typer.Option("--feature-matching", show_default=False, help=f"akd: weight of pix2pixHD's feature-matching loss on the student discriminator's features (0: off; pix2pixHD uses 10; default 0, akd without --paper: {defaults.AKD_SHARP['feature_matching']:g}).")] = defaults.FEATURE_MATCHING,
    num_d: Annotated[int, typer.Option("--num-D", show_default=False, help=f"akd: discriminators at that many scales (pix2pixHD's multi-scale discriminator; 1: the PatchGAN alone; default 1, akd without --paper: {defaults.AKD_SHARP['num_D']}).")] = defaults.NUM_D,
    ema: Annotated[Optional[float], typer.Option("--ema", show_default=False, help=f"akd/dmp: keep an exponential moving average of the student's weights with this decay (e.g. 0.999) and save it as the model; 0: none; default none, akd without --paper: {defaults.AKD_SHARP['ema']}).")] = defaults.EMA,
    paper: Annotated[bool, typer.Option("--paper", help=f"akd: the AKD paper's student (λ {defaults.LAMBDA_L1:g}, {defaults.EPOCHS} epochs of the proxy inputs alone, one PatchGAN, no feature matching or EMA) instead of the default, the sharper student of docs/defenses.md's ablation ({defaults.AKD_SHARP['augment_copies']} augmented copies of each proxy input, λ {defaults.AKD_SHARP['lambda_l1']:g}, feature matching, 2 discriminator scales, EMA {defaults.AKD_SHARP['ema']}, as many steps as {defaults.AKD_PROXY_EPOCHS} epochs of the proxy inputs); flags given still apply.")] = False,
    sharp: Annotated[bool, typer.Option("--sharp", hidden=True, help="akd: the sharper student, now the default (kept so that earlier scripts still run).")] = False,
    noise_multiplier: Annotated[Optional[float], typer.Option("--noise-multiplier", help=f"dpsgd: σ, noise std over the clipping norm (default {defaults.DP_NOISE_MULTIPLIER:g}).")] = None,
    max_grad_norm: Annotated[float, typer.Option("--max-grad-norm", help="dpsgd: per-sample gradient clipping norm C.")] = defaults.DP_MAX_GRAD_NORM,
    target_epsilon: Annotated[Optional[float], typer.Option("--target-epsilon", help="dpsgd: solve σ so that the whole run spends this ε.")] = None,
    delta: Annotated[Optional[float], typer.Option("--delta", help="dpsgd: δ (default 1/N).")] = None,
    seed: o.Seed = defaults.SEED,
    device: o.Device = defaults.DEVICE,
    precision: o.Precision = o.PrecisionChoice(defaults.PRECISION),
    deterministic: o.Deterministic = defaults.DETERMINISTIC,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from OUT.state.")] = False,
    keep_state: o.KeepState = False,
    stream: o.Stream = False,
    memory_budget: o.MemoryBudget = None,
    workers: o.Workers = None,
    task: o.Task = None,
    arch: o.Arch = None,
    num_classes: o.NumClasses = None,
    normalize: o.Normalize = None,
    ignore_index: o.IgnoreIndex = None,
    quiet: o.Quiet = False,
) -> None:
    """Harden a generator against membership inference and record exactly what was done.

    Segmentation models (recorded in the checkpoint, or --task segmentation): argmax, gauss (noise on the posteriors), dmp (distillation
    from soft posteriors on unlabelled proxy photos) or dpsgd (from scratch, --num-classes C)."""
    from privaudit import defenses  # here, not above: --help needs no torch
    from privaudit import distributed
    from privaudit.cli.options import segmentation_flags
    from privaudit.data.stream import Streaming
    from privaudit.defenses.registry import resolve_defense_task
    from privaudit.errors import InputError

    quiet = quiet or not distributed.is_main()  # under torchrun rank 0 alone shows progress and the summary

    task, spec = segmentation_flags(task=task, arch=arch, num_classes=num_classes, normalize=normalize, ignore_index=ignore_index)
    task = resolve_defense_task(task, model, None, spec)
    if task == "segmentation":
        if norm is not None:
            raise InputError("--norm is for pix2pix generators; segmentation networks use BatchNorm (GroupNorm under DP-SGD): drop --norm")
        generator_only = [flag for flag, value in (("--input-kind", input_kind), ("--augment-copies", augment_copies), ("--recombine", recombine),
                                                   ("--recombine-copies", recombine_copies), ("--augment-ops", augment_ops),
                                                   ("--feature-matching", feature_matching), ("--num-D", num_d), ("--ema", ema), ("--sharp", sharp or None), ("--paper", paper or None))
                          if value is not None and given_on_command_line(flag.lstrip("-").replace("-", "_").lower())]
        if generator_only:
            raise InputError(f"{', '.join(generator_only)} are options of the generator students (akd/dmp of a pix2pix model); drop them for a segmentation model")
        # dpsgd trains from scratch and takes --num-classes/--arch/... as its network; the others read them as the teacher's description (spec)
        given = {name: value if given_on_command_line(name) else None for name, value in (("epochs", epochs), ("lr", lr))}  # else segmentation's defaults
        options = defenses.options_for(method, "segmentation", sigma=sigma, decay_epochs=decay_epochs, batch_size=batch_size, **given,
                                       augment=augment, ngf=ngf, num_downs=num_downs, proxy_layout=proxy_layout, noise_multiplier=noise_multiplier,
                                       max_grad_norm=max_grad_norm, target_epsilon=target_epsilon, delta=delta, num_classes=num_classes, arch=arch,
                                       normalize=normalize, ignore_index=ignore_index)
    else:
        for flag, chosen in (("--paper", paper), ("--sharp", sharp)):
            if chosen and method != "akd":
                raise InputError(f"{flag} chooses the student of --method akd; --method {method} has no other: drop {flag}")
        if paper and sharp:
            raise InputError("--paper (the AKD paper's student) and --sharp (the default student) contradict each other: drop one")
        values = dict(sigma=sigma, epochs=epochs, decay_epochs=decay_epochs, batch_size=batch_size, lr=lr, lambda_l1=lambda_l1, augment=augment, ngf=ngf,
                      ndf=ndf, num_downs=num_downs, norm=norm, proxy_layout=proxy_layout, input_kind=input_kind, augment_copies=augment_copies,
                      recombine=recombine, recombine_copies=recombine_copies, augment_ops=_ops(augment_ops), feature_matching=feature_matching, num_D=num_d,
                      ema=None if ema == 0 else ema, noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm, target_epsilon=target_epsilon, delta=delta)
        if method == "akd" and not paper:  # the default student: its own settings unless a flag is given on the command line
            values = {k: v for k, v in values.items() if k not in defaults.AKD_SHARP or given_on_command_line("num_d" if k == "num_D" else k)}
            options = defenses.options_for(method, **values)
            if given_on_command_line("ema") and ema == 0:
                options = replace(options, ema=None)
        else:
            from privaudit.defenses.distill import DistillOptions

            options = defenses.options_for(method, base=DistillOptions.paper() if paper else None, **values)
    shown_epochs = (options.resolved_epochs() if hasattr(options, "resolved_epochs") else getattr(options, "epochs", None)) or defaults.EPOCHS
    with progress(disable=quiet) as bar:
        result = defenses.defend(method, out=out, teacher=model, proxy=proxy, train_data=train_data, options=options, direction=direction, size=size,
                                 seed=seed, device=device, precision=precision, deterministic=deterministic, resume=resume, keep_state=keep_state,
                                 on_step=_bar_on_first_step(bar, method, shown_epochs), on_warning=warning,
                                 streaming=Streaming(force=stream, memory_budget_gb=memory_budget, workers=workers),
                                 task=task, segmentation=spec if task == "segmentation" and method != "dpsgd" else None)
    if not quiet:
        t = Table(title=f"defense: {method}", title_justify="left", show_header=False)
        for k, v in result.summary.items():
            t.add_row(k, v)
        stderr.print(t)


def _ops(text: str | None) -> tuple[str, ...] | None:
    """``--augment-ops flip,crop`` as a tuple (checked by the library)."""
    return None if text is None else tuple(op.strip() for op in text.split(",") if op.strip())


def _bar_on_first_step(bar: Any, method: str, epochs: int) -> Any:
    """An ``on_step`` that adds the training's progress bar at its first step (gauss trains nothing)."""
    callback = None

    def on_step(epoch: int, step: int, steps_per_epoch: int, losses: dict[str, float]) -> None:
        nonlocal callback
        if callback is None:
            callback = epoch_callback(bar, bar.add_task(method, total=None, info=""), epochs)
        callback(epoch, step, steps_per_epoch, losses)

    return on_step
