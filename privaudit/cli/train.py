"""`privaudit train`: regular pix2pix training (how users and benchmarks make the teacher).

Parses the flags into a ``ModelSpec`` and a ``TrainConfig`` and calls ``privaudit.training.train``
once (``privaudit/training/pix2pix.py``); renders what it returns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from privaudit import defaults
from privaudit.cli import options as o
from privaudit.cli.common import epoch_callback, given_on_command_line, guarded, progress, stderr
from privaudit.cli.render import warn
from privaudit.errors import InputError


@guarded
def train(
    data: Annotated[Path, typer.Argument(help="Training pairs: a folder of aligned A|B images, or a folder with A/ and B/ (segmentation: A/ photos, B/ label maps).")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the privaudit checkpoint (also written after every epoch; resume state goes to OUT.state).")],
    direction: Annotated[Optional[o.DirectionChoice], typer.Option("--direction", help=f"AtoB (left half or A/ is the input) or BtoA (right half or B/); recorded in the checkpoint. Default: {defaults.DIRECTION}.")] = None,
    epochs: Annotated[int, typer.Option("--epochs", help=f"Total epochs (pix2pix: {defaults.EPOCHS}; segmentation, when not given: {defaults.SEG_EPOCHS}).")] = defaults.EPOCHS,
    decay_epochs: Annotated[Optional[int], typer.Option("--decay-epochs", help="Linear learning-rate decay over the last N epochs (default: half).")] = defaults.DECAY_EPOCHS,
    size: Annotated[Optional[int], typer.Option("--size", help="Resize images to SIZE×SIZE (default: their own size).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help=f"Images per step (pix2pix: {defaults.BATCH_SIZE}; segmentation, when not given: {defaults.SEG_BATCH_SIZE}).")] = defaults.BATCH_SIZE,
    ngf: Annotated[int, typer.Option("--ngf", help=f"Generator width (segmentation U-Net, when not given: {defaults.SEG_NGF}).")] = defaults.NGF,
    ndf: Annotated[int, typer.Option("--ndf", help="Discriminator width.")] = defaults.NDF,
    num_downs: o.NumDowns = None,
    norm: Annotated[o.NormChoice, typer.Option("--norm", help="The U-Net's norm layer.")] = defaults.NORM,
    dropout: Annotated[bool, typer.Option("--dropout/--no-dropout", help="Dropout in the U-Net (pix2pix's noise z; segmentation, when not given: off).")] = defaults.DROPOUT,
    lr: Annotated[float, typer.Option("--lr", help=f"Adam learning rate (segmentation, when not given: {defaults.SEG_LR:g}).")] = defaults.LR,
    lambda_l1: Annotated[float, typer.Option("--lambda-l1", help="Weight of the L1 term.")] = defaults.LAMBDA_L1,
    augment: Annotated[bool, typer.Option("--augment/--no-augment", help="pix2pix jitter (resize 286/256, random crop) and flips.")] = defaults.AUGMENT,
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
    classes: Annotated[Optional[str], typer.Option("--classes", help="Segmentation: comma-separated class names, recorded in the checkpoint (default: 0..C-1).")] = None,
    backbone_weights: Annotated[Optional[Path], typer.Option("--backbone-weights", help="Segmentation, torchvision architectures: a pretrained backbone state_dict you supply (nothing is downloaded).")] = None,
    quiet: o.Quiet = False,
) -> None:
    """Train a pix2pix generator (U-Net + conditional PatchGAN, GAN + λ·L1) on private pairs, or with --task segmentation (or --num-classes) a segmentation network (per-pixel cross-entropy)."""
    from privaudit import training  # here, not above: --help needs no torch
    from privaudit.models.arch import ModelSpec, check_norm
    from privaudit import distributed
    from privaudit.data.stream import Streaming

    quiet = quiet or not distributed.is_main()  # under torchrun rank 0 alone shows progress and the summary
    if task == "segmentation" or any(v is not None for v in (arch, num_classes, normalize, ignore_index, classes, backbone_weights)):
        if task == "translation":
            raise InputError("--arch, --num-classes, --normalize, --ignore-index, --classes and --backbone-weights are for --task segmentation; drop them")
        if direction is not None:
            raise InputError("--direction is for image translation; segmentation data is A/ photos and B/ label maps: drop --direction")
        given = {name: value if given_on_command_line(name) else None for name, value in
                 (("epochs", epochs), ("batch_size", batch_size), ("ngf", ngf), ("dropout", dropout), ("lr", lr))}
        _train_segmentation(data, out, decay_epochs=decay_epochs, size=size, num_downs=num_downs, norm=norm, augment=augment, **given, seed=seed, device=device, resume=resume, keep_state=keep_state, arch=arch,
                            num_classes=num_classes, normalize=normalize, ignore_index=ignore_index, classes=classes, backbone_weights=backbone_weights,
                            quiet=quiet)
        return

    # Training defines the direction (and records it in the checkpoint), so a default is safe here;
    # the summary says which one was used.
    direction_note = "--direction" if direction is not None else "the default; pass --direction BtoA if the right half or B/ is the input"
    direction = direction or defaults.DIRECTION
    check_norm(norm)
    model = ModelSpec(num_downs=num_downs, ngf=ngf, norm=norm, use_dropout=dropout)
    config = training.TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, lambda_l1=lambda_l1, decay_epochs=decay_epochs, augment=augment, ndf=ndf,
                                  seed=seed, device=device, precision=precision, deterministic=deterministic)
    with progress(disable=quiet) as bar:
        task = bar.add_task("train", total=None, info="")
        result = training.train(data, out, direction=direction, size=size, model=model, config=config, resume=resume, keep_state=keep_state,
                                on_step=epoch_callback(bar, task, epochs), on_data=lambda pairs: warn([pairs.resize_warning("training data")]),
                                streaming=Streaming(force=stream, memory_budget_gb=memory_budget, workers=workers))
    if not quiet:
        last = result.history[-1].losses if result.history else {}
        stderr.print(
            f"trained {result.pairs} pairs at {result.image_size}x{result.image_size} px, direction {direction} ({direction_note}), for {epochs} epochs in {result.seconds:.1f}s; "
            + "  ".join(f"{k} {v:.4f}" for k, v in last.items())
            + f"\nwrote {out}"
        )


def _train_segmentation(data: Path, out: Path, *, epochs: int | None, decay_epochs: int | None, size: int | None, batch_size: int | None, ngf: int | None,
                        num_downs: int | None, norm: str, dropout: bool | None, lr: float | None, augment: bool, seed: int, device: str, resume: bool,
                        keep_state: bool, arch: str | None, num_classes: int | None, normalize: str | None, ignore_index: int | None, classes: str | None,
                        backbone_weights: Path | None, quiet: bool) -> None:
    """`privaudit train --task segmentation`: ``training.segmentation.train_segmentation``."""
    from privaudit.training.segmentation import SegTrainConfig, train_segmentation

    if num_classes is None:
        raise InputError("segmentation training needs --num-classes C (the label maps hold class indices 0..C-1)")
    if norm != "batch":
        raise InputError("--norm is for pix2pix generators; segmentation networks use BatchNorm (GroupNorm under DP-SGD): drop --norm")
    arch = arch or defaults.SEG_ARCH
    if arch != "unet" and (ngf is not None or num_downs is not None or dropout is not None):
        raise InputError(f"--ngf, --num-downs and --dropout describe the U-Net, not {arch}; drop them")
    epochs = defaults.SEG_EPOCHS if epochs is None else epochs
    config = SegTrainConfig(epochs=epochs, batch_size=defaults.SEG_BATCH_SIZE if batch_size is None else batch_size, lr=defaults.SEG_LR if lr is None else lr,
                            decay_epochs=decay_epochs, augment=augment, seed=seed, device=device)
    names = [c.strip() for c in classes.split(",")] if classes else None
    with progress(disable=quiet) as bar:
        task = bar.add_task("train", total=None, info="")
        result = train_segmentation(data, out, num_classes=num_classes, arch=arch, size=size, ngf=defaults.SEG_NGF if ngf is None else ngf, num_downs=num_downs,
                                    dropout=bool(dropout), normalize=normalize, ignore_index=defaults.IGNORE_INDEX if ignore_index is None else ignore_index,
                                    classes=names, backbone_weights=backbone_weights, config=config, resume=resume, keep_state=keep_state,
                                    on_step=epoch_callback(bar, task, epochs), on_data=lambda pairs: warn([pairs.resize_warning("training data")]))
    if not quiet:
        last = result.history[-1].losses if result.history else {}
        stderr.print(f"trained {result.arch.describe()} on {result.pairs} pairs at {result.image_size}x{result.image_size} px for {epochs} epochs in "
                     f"{result.seconds:.1f}s; " + "  ".join(f"{k} {v:.4f}" for k, v in last.items()) + f"\nwrote {out}")
