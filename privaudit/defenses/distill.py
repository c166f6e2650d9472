"""AKD and DMP: train a student on an unlabelled proxy set, using the teacher only as a black box.

AKD (Eq. 4, 5): the student discriminator D_s tells the teacher's output G_t(x) from the student's
G_s(x), conditioned on x; the student minimises the GAN term plus λ·||G_s(x) − G_t(x)||_1.
DMP (the paper's baseline): the same without D_s, λ·L1 to the teacher's outputs only.
Both are the pix2pix game with the target y replaced by G_t(x), so both run ``training.fit``.

The proxy set is read with ``load_inputs``: the target half of an aligned image (or the target
folder) is never decoded, so private or proxy labels cannot leak into the student.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch

from privaudit.data.images import ImageSet
from privaudit.errors import InputError
from privaudit.models.arch import UnetArch, student_norm
from privaudit.models.checkpoint import save_checkpoint
from privaudit.models.inference import check_image_size, iter_outputs
from privaudit.models.loaded import LoadedModel
from privaudit.models.networks import UnetGenerator, init_weights
from privaudit.pipeline import data_fingerprint
from privaudit.training import EpochStats, TrainConfig, fit, training_record


@torch.inference_mode()
def teacher_outputs(teacher: LoadedModel, proxy: ImageSet, *, batch_size: int = 32, seed: int = 0) -> torch.Tensor:
    """Query the teacher once per proxy input in eval mode: float (N, C_out, H, W) in [-1, 1], on the CPU."""
    check_image_size(teacher, proxy.size)
    teacher.set_mode(stochastic=False)
    teacher.reseed(seed)
    outs = [out.float().cpu() for _, out in iter_outputs(teacher, proxy.inputs, batch_size=batch_size)]
    return torch.cat(outs)


def student_arch(teacher: LoadedModel, override: UnetArch | None) -> UnetArch:
    if override is not None:
        return override
    if teacher.arch.get("type") != "unet":
        raise InputError(f"{teacher.path} is a {teacher.format} model, so the student's architecture cannot be copied from it; pass --ngf (and --num-downs) for the student")
    d = dict(teacher.arch)
    d.pop("type", None)
    d["norm"] = student_norm(str(d.get("norm")))
    return UnetArch.from_dict(d, teacher.path)


def distill(
    teacher: LoadedModel,
    proxy: ImageSet,
    out: Path,
    *,
    method: str,
    arch: UnetArch,
    cfg: TrainConfig,
    direction: str,
    resume: bool = False,
    on_step: Callable[[int, int, int, dict[str, float]], None] | None = None,
    keep_state: bool = False,
) -> list[EpochStats]:
    """Train a student of ``arch`` on the proxy inputs and the teacher's outputs; write ``out``.
    The resume state ``<out>.state`` is deleted when the run finishes, unless ``keep_state``."""
    if method not in ("akd", "dmp"):
        raise InputError(f"distillation method must be akd or dmp, not {method!r}")
    if proxy.targets is not None:
        raise InputError("the proxy set must hold inputs only; load it with load_inputs")
    if len(proxy) == 0:
        raise InputError(f"the proxy set {proxy.path} is empty; give a folder of input images")
    cfg = replace(cfg, adversarial=method == "akd")
    targets = teacher_outputs(teacher, proxy, seed=cfg.seed)
    torch.manual_seed(cfg.seed)
    student = UnetGenerator(arch)
    init_weights(student)
    proxy_info = {"path": proxy.path, "count": len(proxy), "layout": proxy.layout, "sha256": data_fingerprint(proxy)}
    defense: dict[str, Any] = {
        "method": method,
        "lambda_l1": cfg.lambda_l1,
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "teacher": {"path": teacher.path, "sha256": teacher.sha256, "format": teacher.format, "mode": "eval",
                    **({"training": teacher.training} if teacher.training is not None else {})},
        "proxy": {k: proxy_info[k] for k in ("path", "count", "layout")},
    }

    def save(path: Path, net: UnetGenerator, epoch: int) -> None:
        save_checkpoint(path, generator=net, image_size=proxy.size, direction=direction, defense={**defense, "epochs_done": epoch},
                        provenance={"training": cfg.to_dict(), "epoch": epoch}, training=training_record(epoch, cfg.epochs))

    return fit(
        student,
        proxy.inputs,
        targets,
        cfg,
        out=out,
        save_model=save,
        resume=resume,
        fingerprint={"teacher": teacher.sha256, "proxy": proxy_info["sha256"], "arch": arch.to_dict(), "method": method},
        on_step=on_step,
        keep_state=keep_state,
    )
