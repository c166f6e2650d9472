"""`privaudit defend`: produce a hardened checkpoint with AKD, DMP, Gauss or DP-SGD."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from privaudit.cli import options as o
from privaudit.cli.common import epoch_callback, guarded, progress, stderr
from privaudit.cli.render import DIRECTION_SOURCES, warn, warn_unfinished
from privaudit.errors import InputError


@guarded
def defend(
    model: Annotated[Optional[Path], typer.Argument(help="The teacher (any MODEL format); not used by dpsgd, which trains from scratch.")] = None,
    method: Annotated[o.MethodChoice, typer.Option("--method", help="The defense.")] = "akd",
    out: Annotated[Optional[Path], typer.Option("--out", help="Where to write the hardened checkpoint (OUT.state holds the resume state).")] = None,
    proxy: Annotated[Optional[Path], typer.Option("--proxy", help="akd/dmp: unlabelled proxy inputs (a folder of input images, aligned A|B pairs or A/+B/; only the input side is ever read).")] = None,
    proxy_layout: Annotated[o.LayoutChoice, typer.Option("--proxy-layout", help="How --proxy is laid out (auto: guess from the files).")] = "auto",
    train_data: Annotated[Optional[Path], typer.Option("--train-data", help="dpsgd: the private training pairs.")] = None,
    direction: o.Direction = None,
    size: o.Size = None,
    sigma: Annotated[Optional[float], typer.Option("--sigma", help="gauss: standard deviation of the output noise (images in [-1, 1]).")] = None,
    epochs: Annotated[int, typer.Option("--epochs", help="Training epochs (the AKD paper: 200).")] = 200,
    decay_epochs: Annotated[Optional[int], typer.Option("--decay-epochs", help="Linear learning-rate decay over the last N epochs (default: half).")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Batch size (akd/dmp: 1 as in the paper; dpsgd: 8, the expected Poisson batch).")] = None,
    lr: Annotated[float, typer.Option("--lr", help="Adam learning rate.")] = 2e-4,
    lambda_l1: Annotated[float, typer.Option("--lambda-l1", help="λ, the weight of the L1 term (paper: 100).")] = 100.0,
    augment: Annotated[bool, typer.Option("--augment/--no-augment", help="pix2pix jitter and flips during training.")] = True,
    ngf: Annotated[Optional[int], typer.Option("--ngf", help="Student/DP generator width (default: the teacher's; dpsgd: 64).")] = None,
    ndf: Annotated[int, typer.Option("--ndf", help="Discriminator width.")] = 64,
    num_downs: o.NumDowns = None,
    norm: Annotated[Optional[o.NormChoice], typer.Option("--norm", help="Student norm layer (dpsgd always uses group).")] = None,
    noise_multiplier: Annotated[Optional[float], typer.Option("--noise-multiplier", help="dpsgd: σ, noise std over the clipping norm.")] = None,
    max_grad_norm: Annotated[float, typer.Option("--max-grad-norm", help="dpsgd: per-sample gradient clipping norm C.")] = 1.0,
    target_epsilon: Annotated[Optional[float], typer.Option("--target-epsilon", help="dpsgd: solve σ so that the whole run spends this ε.")] = None,
    delta: Annotated[Optional[float], typer.Option("--delta", help="dpsgd: δ (default 1/N).")] = None,
    seed: o.Seed = 0,
    device: o.Device = "auto",
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from OUT.state.")] = False,
    keep_state: o.KeepState = False,
    quiet: o.Quiet = False,
) -> None:
    """Harden a generator against membership inference and record exactly what was done."""
    from privaudit.data.images import check_direction, load_inputs, load_pairs
    from privaudit.defenses import check_method
    from privaudit.io import check_writable
    from privaudit.models.checkpoint import ArchOverrides, load_model
    from privaudit.models.inference import check_image_size
    from privaudit.pipeline import ModelSpec, data_fingerprint, resolve_direction
    from privaudit.training import TrainConfig

    check_method(method)
    if out is None:
        raise InputError("--out FILE is required: where to write the hardened checkpoint")
    check_writable(out, what="checkpoint")
    if direction is not None:
        check_direction(direction)
    t0 = time.perf_counter()
    summary: dict[str, str] = {"method": method}

    if method == "dpsgd":
        if train_data is None:
            raise InputError("--method dpsgd trains from scratch on the private pairs: pass --train-data PATH")
        from privaudit.defenses.dpsgd import DPConfig, train_dpsgd

        if noise_multiplier is None and target_epsilon is None:
            noise_multiplier = 1.0
        tcfg = TrainConfig(epochs=epochs, batch_size=8 if batch_size is None else batch_size, lr=lr, lambda_l1=lambda_l1, decay_epochs=decay_epochs, augment=augment, ndf=ndf, seed=seed, device=device)
        cfg = DPConfig(train=tcfg, noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm, target_epsilon=target_epsilon, delta=delta)
        cfg.validate()
        # Like `train`, DP-SGD defines the direction rather than reading it: AtoB unless told, and said.
        direction_note = "--direction" if direction else "the default; pass --direction BtoA if the right half or B/ is the input"
        direction = direction or "AtoB"
        if size is not None:
            ModelSpec(num_downs=num_downs, ngf=64 if ngf is None else ngf, norm="group").build(size)  # fail before reading images
        pairs = load_pairs(train_data, direction=direction, size=size, what="training data")
        warn([pairs.resize_warning("training data")])
        arch = ModelSpec(num_downs=num_downs, ngf=64 if ngf is None else ngf, norm="group").build(pairs.size, pairs.inputs.shape[1], pairs.targets.shape[1])
        with progress(disable=quiet) as bar:
            task = bar.add_task("dpsgd", total=None, info="")
            result = train_dpsgd(pairs, out, direction=direction, arch=arch, cfg=cfg, resume=resume, on_step=epoch_callback(bar, task, epochs),
                                 provenance={"trained_on": {"path": str(train_data), "count": len(pairs), "sha256": data_fingerprint(pairs)}}, keep_state=keep_state)
        summary.update({"direction": f"{direction} ({direction_note})", "image size": f"{pairs.size}x{pairs.size} px",
                        "ε spent": f"{result.epsilon:.4g}", "δ": f"{result.delta:.3g}", "noise multiplier σ": f"{result.noise_multiplier:.4g}",
                        "max grad norm C": f"{max_grad_norm:g}", "sample rate": f"{result.sample_rate:.4g}", "steps": str(result.steps),
                        "accountant": result.accountant})
    else:
        if model is None:
            raise InputError(f"--method {method} needs the teacher MODEL as the first argument")
        teacher = load_model(model, device=device, seed=seed, overrides=ArchOverrides())
        warn_unfinished({"path": str(model), "training": teacher.training, "defense": teacher.defense})
        direction, direction_from = resolve_direction(teacher, direction)
        summary["direction"] = f"{direction} ({DIRECTION_SOURCES[direction_from]})"
        if method == "gauss":
            from privaudit.defenses.gauss import add_output_noise

            if sigma is None:
                raise InputError("--method gauss needs --sigma (the output noise's standard deviation, e.g. 0.1)")
            add_output_noise(teacher, out, sigma=sigma, direction=direction, image_size=teacher.image_size if size is None else size)
            recorded = teacher.image_size if size is None else size
            summary.update({"image size": f"{recorded}x{recorded} px" if recorded else "not recorded (attacks use the images' own)",
                            "σ": f"{sigma:g}", "teacher": str(model)})
        else:
            from privaudit.defenses.distill import distill, student_arch

            if proxy is None:
                raise InputError(f"--method {method} needs --proxy PATH: unlabelled proxy inputs (only the input side is read)")
            in_nc = int(teacher.arch.get("input_nc", 3))
            if size is not None:
                check_image_size(teacher, size)  # fail before reading images
            proxy_set = load_inputs(proxy, direction=direction, size=teacher.image_size if size is None else size, input_nc=in_nc, layout=proxy_layout)
            warn([proxy_set.resize_warning("proxy inputs")])
            override = None
            if ngf is not None or num_downs is not None or norm is not None or teacher.arch.get("type") != "unet":
                if norm is not None and norm not in ("batch", "instance", "none"):
                    raise InputError(f"invalid --norm {norm!r} for the student; use batch, instance or none")
                width = int(teacher.arch.get("ngf", 64)) if ngf is None else ngf
                base = ModelSpec(num_downs=num_downs, ngf=width, norm=norm or str(teacher.arch.get("norm", "batch")).replace("group", "batch"))
                override = base.build(proxy_set.size, in_nc, int(teacher.arch.get("output_nc", 3)))
            arch = student_arch(teacher, override)
            cfg = TrainConfig(epochs=epochs, batch_size=1 if batch_size is None else batch_size, lr=lr, lambda_l1=lambda_l1, decay_epochs=decay_epochs, augment=augment, ndf=ndf, seed=seed, device=device)
            with progress(disable=quiet) as bar:
                task = bar.add_task(method, total=None, info="")
                distill(teacher, proxy_set, out, method=method, arch=arch, cfg=cfg, direction=direction, resume=resume, on_step=epoch_callback(bar, task, epochs),
                        keep_state=keep_state)
            summary.update({"image size": f"{proxy_set.size}x{proxy_set.size} px", "teacher": str(model), "proxy inputs": f"{len(proxy_set)} ({proxy_set.layout})", "λ": f"{lambda_l1:g}", "epochs": str(epochs),
                            "student": f"U-Net num_downs={arch.num_downs} ngf={arch.ngf} norm={arch.norm}"})
    summary["time"] = f"{time.perf_counter() - t0:.1f}s"
    summary["wrote"] = str(out)
    if not quiet:
        t = Table(title=f"defense: {method}", title_justify="left", show_header=False)
        for k, v in summary.items():
            t.add_row(k, v)
        stderr.print(t)
