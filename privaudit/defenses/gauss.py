"""Gauss baseline: the same generator, deployed with zero-mean Gaussian noise on every output.

The hardened checkpoint holds the teacher's weights and sigma; every later load (attack, evaluate)
wraps the generator in ``OutputNoise`` so it behaves as the deployed model would, seeded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from privaudit.defenses.base import DIRECTION_SOURCES, DefenseJob, DefenseResult, load_teacher, teacher_record
from privaudit.errors import InputError
from privaudit.models.arch import check_size
from privaudit.models.checkpoint import save_checkpoint
from privaudit.models.loaded import LoadedModel, RuntimeDefense
from privaudit.models.networks import UnetGenerator


class OutputNoise(RuntimeDefense):
    """The deployed Gauss model: ``clamp(G(x) + N(0, sigma^2), -1, 1)``, seeded through ``reseed``.

    The clamp is what a deployed model does when it turns outputs into images. ``load_model`` wraps
    the generator of a checkpoint whose defense is ``gauss`` in it.
    """

    def __init__(self, generator: nn.Module, sigma: float, seed: int = 0) -> None:
        super().__init__(sigma, seed)
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.generator(x).float()  # noise drawn and added in float32, as without autocast
        if self.sigma == 0:
            return out
        return (out + self.noise(out)).clamp(-1.0, 1.0)


def check_sigma(sigma: float) -> float:
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma >= 0):
        raise InputError(f"--sigma must be a finite number >= 0, not {sigma}")
    return float(sigma)


def add_output_noise(teacher: LoadedModel, out: Path, *, sigma: float, direction: str | None, image_size: int | None) -> None:
    """Write ``out``: the teacher's U-Net weights plus ``defense = {method: gauss, sigma}``."""
    check_sigma(sigma)
    net = teacher.module
    if isinstance(net, OutputNoise):
        net = net.generator  # re-noising replaces the old sigma rather than stacking two
    if not isinstance(net, UnetGenerator):
        raise InputError(
            f"{teacher.path} is a {teacher.format} model; the Gauss defense re-saves U-Net weights, so give a privaudit or pix2pix checkpoint "
            "(for other models add the noise in the serving code)"
        )
    size = image_size or teacher.image_size or 0
    if image_size is not None:
        check_size(image_size, net.arch.num_downs)
    save_checkpoint(
        out,
        generator=net,
        image_size=size,
        direction=direction,
        defense={"method": "gauss", "sigma": float(sigma), "clamp": [-1.0, 1.0], "teacher": {"path": teacher.path, "sha256": teacher.sha256,
                                                                                  "recipe": teacher_record(teacher)}},
        provenance={"from": teacher.path, **({"teacher_provenance": teacher.provenance} if teacher.provenance else {})},
        training=teacher.training,  # the teacher's weights, so the teacher's training status
    )


@dataclass(frozen=True)
class GaussOptions:
    """``defend(method="gauss")`` settings: ``sigma``, the output noise's standard deviation on
    images in [-1, 1] (required: there is no neutral default)."""

    sigma: float | None = None

    def validate(self) -> None:
        if self.sigma is None:
            raise InputError("--method gauss needs --sigma (the output noise's standard deviation, e.g. 0.1)")
        check_sigma(self.sigma)


class Gauss:
    """The teacher deployed with Gaussian output noise."""

    name = "gauss"
    description = "zero-mean Gaussian noise of sigma added to every output"
    Options = GaussOptions

    def run(self, options: GaussOptions, job: DefenseJob) -> DefenseResult:
        teacher, direction, source = load_teacher(job, self.name)
        sigma = check_sigma(options.sigma)  # type: ignore[arg-type]
        size = teacher.image_size if job.size is None else job.size
        add_output_noise(teacher, job.out, sigma=sigma, direction=direction, image_size=size)
        summary = {"direction": f"{direction} ({DIRECTION_SOURCES[source]})",
                   "image size": f"{size}x{size} px" if size else "not recorded (attacks use the images' own)", "σ": f"{sigma:g}", "teacher": str(job.teacher)}
        return DefenseResult(method=self.name, out=job.out, summary=summary)
