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
from privaudit.cli.common import epoch_callback, guarded, progress, stderr
from privaudit.cli.render import warn


@guarded
def train(
    data: Annotated[Path, typer.Argument(help="Training pairs: a folder of aligned A|B images, or a folder with A/ and B/.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the privaudit checkpoint (also written after every epoch; resume state goes to OUT.state).")],
    direction: Annotated[Optional[o.DirectionChoice], typer.Option("--direction", help=f"AtoB (left half or A/ is the input) or BtoA (right half or B/); recorded in the checkpoint. Default: {defaults.DIRECTION}.")] = None,
    epochs: Annotated[int, typer.Option("--epochs", help=f"Total epochs (pix2pix: {defaults.EPOCHS}).")] = defaults.EPOCHS,
    decay_epochs: Annotated[Optional[int], typer.Option("--decay-epochs", help="Linear learning-rate decay over the last N epochs (default: half).")] = defaults.DECAY_EPOCHS,
    size: Annotated[Optional[int], typer.Option("--size", help="Resize images to SIZE×SIZE (default: their own size).")] = None,
    batch_size: o.BatchSize = defaults.BATCH_SIZE,
    ngf: Annotated[int, typer.Option("--ngf", help="Generator width.")] = defaults.NGF,
    ndf: Annotated[int, typer.Option("--ndf", help="Discriminator width.")] = defaults.NDF,
    num_downs: o.NumDowns = None,
    norm: Annotated[o.NormChoice, typer.Option("--norm", help="The U-Net's norm layer.")] = defaults.NORM,
    dropout: Annotated[bool, typer.Option("--dropout/--no-dropout", help="Dropout in the U-Net (pix2pix's noise z).")] = defaults.DROPOUT,
    lr: Annotated[float, typer.Option("--lr", help="Adam learning rate.")] = defaults.LR,
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
    quiet: o.Quiet = False,
) -> None:
    """Train a pix2pix generator (U-Net + conditional PatchGAN, GAN + λ·L1) on private pairs."""
    from privaudit import training  # here, not above: --help needs no torch
    from privaudit.models.arch import ModelSpec, check_norm
    from privaudit import distributed
    from privaudit.data.stream import Streaming

    quiet = quiet or not distributed.is_main()  # under torchrun rank 0 alone shows progress and the summary

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
