"""Argmax: a segmentation model deployed to release its labels only (Segmentations-Leak's first
defense). The released posterior of a pixel is one-hot at its argmax class, so the loss attacks
lose the model's confidence: an image's cross-entropy becomes -log(PROB_FLOOR) times its share of
wrong pixels, i.e. the label-only attack (``attacks.segmentation``) under another name.

The hardened checkpoint holds the teacher's weights and ``defense = {method: argmax}``; every later
load wraps the network in ``ArgmaxRelease``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from privaudit.defenses.base import DefenseJob, DefenseResult
from privaudit.models.segnets import LOG_FLOOR


class ArgmaxRelease(nn.Module):
    """Log-posteriors of one-hot labels: 0 at each pixel's argmax class, ``LOG_FLOOR`` elsewhere.
    ``inner`` returns the model's log-posteriors (N, C, H, W)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logp = self.inner(x)
        onehot = F.one_hot(logp.argmax(1), logp.shape[1]).permute(0, 3, 1, 2).bool()
        return torch.where(onehot, torch.zeros_like(logp), torch.full_like(logp, LOG_FLOOR))


@dataclass(frozen=True)
class ArgmaxOptions:
    """``defend(method="argmax")`` takes no settings."""

    def validate(self) -> None:
        pass


class Argmax:
    """The teacher re-saved to release labels only (segmentation models)."""

    name = "argmax"
    description = "release the argmax labels only, no posteriors (segmentation models)"
    Options = ArgmaxOptions

    def run(self, options: ArgmaxOptions, job: DefenseJob) -> DefenseResult:
        from privaudit.defenses.segmentation import load_seg_teacher, resave

        teacher = load_seg_teacher(job, self.name)
        size = resave(teacher, job, {"method": "argmax"})
        summary = {"image size": f"{size}x{size} px" if size else "not recorded (attacks use the images' own)", "released": "argmax labels (one-hot)",
                   "teacher": str(job.teacher)}
        return DefenseResult(method=self.name, out=job.out, summary=summary)
