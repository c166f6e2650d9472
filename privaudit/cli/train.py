"""`privaudit train`: regular pix2pix training (how users and benchmarks make the teacher)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from privaudit.cli import options as o
from privaudit.cli.common import epoch_callback, guarded, progress, stderr
from privaudit.cli.render import warn
from privaudit.errors import InputError


@guarded
def train(
    data: Annotated[Path, typer.Argument(help="Training pairs: a folder of aligned A|B images, or a folder with A/ and B/.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the privaudit checkpoint (also written after every epoch; resume state goes to OUT.state).")],
    direction: Annotated[Optional[o.DirectionChoice], typer.Option("--direction", help="AtoB (left half or A/ is the input, the default) or BtoA (right half or B/); recorded in the checkpoint.")] = None,
    epochs: Annotated[int, typer.Option("--epochs", help="Total epochs (pix2pix: 200).")] = 200,
    decay_epochs: Annotated[Optional[int], typer.Option("--decay-epochs", help="Linear learning-rate decay over the last N epochs (default: half).")] = None,
    size: Annotated[Optional[int], typer.Option("--size", help="Resize images to SIZE×SIZE (default: their own size).")] = None,
    batch_size: o.BatchSize = 1,
    ngf: Annotated[int, typer.Option("--ngf", help="Generator width.")] = 64,
    ndf: Annotated[int, typer.Option("--ndf", help="Discriminator width.")] = 64,
    num_downs: o.NumDowns = None,
    norm: Annotated[o.NormChoice, typer.Option("--norm", help="The U-Net's norm layer.")] = "batch",
    dropout: Annotated[bool, typer.Option("--dropout/--no-dropout", help="Dropout in the U-Net (pix2pix's noise z).")] = True,
    lr: Annotated[float, typer.Option("--lr", help="Adam learning rate.")] = 2e-4,
    lambda_l1: Annotated[float, typer.Option("--lambda-l1", help="Weight of the L1 term.")] = 100.0,
    augment: Annotated[bool, typer.Option("--augment/--no-augment", help="pix2pix jitter (resize 286/256, random crop) and flips.")] = True,
    seed: o.Seed = 0,
    device: o.Device = "auto",
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from OUT.state.")] = False,
    keep_state: o.KeepState = False,
    quiet: o.Quiet = False,
) -> None:
    """Train a pix2pix generator (U-Net + conditional PatchGAN, GAN + λ·L1) on private pairs."""
    from privaudit.data.images import check_direction
    from privaudit.io import check_writable
    from privaudit.pipeline import ModelSpec, train_regular
    from privaudit.training import TrainConfig

    # Training defines the direction (and records it in the checkpoint), so a default is safe here;
    # the summary says which one was used.
    direction_note = "--direction" if direction is not None else "the default; pass --direction BtoA if the right half or B/ is the input"
    direction = check_direction(direction or "AtoB")
    check_writable(out, what="checkpoint")
    if norm not in ("batch", "instance", "none"):
        raise InputError(f"invalid --norm {norm!r}; use batch, instance or none")
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, lambda_l1=lambda_l1, decay_epochs=decay_epochs, augment=augment, ndf=ndf, seed=seed, device=device)
    cfg.validate()
    spec = ModelSpec(num_downs=num_downs, ngf=ngf, norm=norm, use_dropout=dropout)
    t0 = time.perf_counter()
    with progress(disable=quiet) as bar:
        task = bar.add_task("train", total=None, info="")
        history, pairs = train_regular(data, out, direction=direction, size=size, spec=spec, cfg=cfg, resume=resume, on_step=epoch_callback(bar, task, epochs),
                                       keep_state=keep_state, on_data=lambda pairs: warn([pairs.resize_warning("training data")]))
    secs = time.perf_counter() - t0
    if not quiet:
        last = history[-1].losses if history else {}
        stderr.print(
            f"trained {len(pairs)} pairs at {pairs.size}x{pairs.size} px, direction {direction} ({direction_note}), for {epochs} epochs in {secs:.1f}s; "
            + "  ".join(f"{k} {v:.4f}" for k, v in last.items())
            + f"\nwrote {out}"
        )

