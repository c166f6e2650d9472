"""Running a segmentation model over a set: one pass gives everything the attacks and the utility
metrics need.

For each image (photo x, label map y, valid pixels V = {y != ignore_index}):

* ``ce``: the cross-entropy over valid pixels, ``-(1/|V|) Σ_{p∈V} log P(y_p | x)`` with the
  model's *released* posteriors (the loss attack's statistic, the analogue of the reconstruction
  loss; for a plain model exactly ``F.cross_entropy(logits, y, ignore_index=...)``);
* ``accuracy`` and ``iou``: the image's pixel accuracy and mean IoU of its argmax labels (the
  label-only attack's statistics, which need nothing but the released labels);
* ``loss_maps``: the per-pixel loss (0 at ignored pixels), average-pooled to ``lossmap_size``
  (Segmentations-Leak's structured input);
* ``confusion``: the (C, C) confusion matrix of the whole set (mean IoU, pixel accuracy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from privaudit import defaults
from privaudit.data.images import ImageSet
from privaudit.errors import CheckpointError, InputError, first_line
from privaudit.evaluation.miou import confusion, image_scores, per_image_confusion
from privaudit.models.arch import check_size
from privaudit.models.loaded import LoadedModel
from privaudit.models.segnets import normalise


def check_segmentation_size(model: LoadedModel, size: int) -> None:
    """InputError when photos of side ``size`` cannot go through the model."""
    if model.image_size is not None and model.format == "export" and size != model.image_size:
        raise InputError(f"{model.path} was exported for {model.image_size}x{model.image_size} images, not {size}x{size}; pass --size {model.image_size}")
    num_downs = model.arch.get("num_downs")
    if num_downs:
        check_size(size, int(num_downs))


def iter_log_posteriors(model: LoadedModel, inputs: torch.Tensor, *, batch_size: int = defaults.ATTACK_BATCH_SIZE,
                        on_batch: Callable[[int], None] | None = None) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield ``(slice, log-posteriors)`` for consecutive batches of uint8 photos (N, 3, H, W): float32
    (B, C, H, W) on the model's device, checked (shape, finite). Call under ``torch.inference_mode``."""
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, not {batch_size}")
    n = int(inputs.shape[0])
    c = model.segmentation.num_classes
    bs = model.fixed_batch or batch_size
    for start in range(0, n, bs):
        stop = min(start + bs, n)
        x = normalise(inputs[start:stop].to(model.device, non_blocking=True), model.segmentation.normalization)
        if model.fixed_batch and x.shape[0] < bs:
            x = torch.cat([x, x[-1:].expand(bs - x.shape[0], *x.shape[1:])])
        try:
            out = model.module(x)
        except CheckpointError:
            raise
        except RuntimeError as exc:
            raise CheckpointError(f"{model.path} failed on input of shape {tuple(x.shape)}: {first_line(str(exc))}; check --size and the model") from None
        out = out[: stop - start]
        if out.ndim != 4 or out.shape[0] != stop - start or out.shape[-2:] != x.shape[-2:] or out.shape[1] != c:
            raise CheckpointError(f"{model.path} returned {tuple(out.shape)} for input {tuple(x.shape)}; a segmentation model with {c} classes must "
                                  f"return ({stop - start}, {c}, {x.shape[-2]}, {x.shape[-1]}) logits (check --num-classes)")
        if torch.isnan(out).any() or torch.isposinf(out).any():
            raise CheckpointError(f"{model.path} produced NaN or inf outputs; the weights are broken, use an earlier checkpoint")
        if on_batch:
            on_batch(stop - start)
        yield slice(start, stop), out


@dataclass
class SegPass:
    """What one pass over a labelled set gives (see the module docstring); arrays are (N,)."""

    ce: np.ndarray
    accuracy: np.ndarray
    iou: np.ndarray
    loss_maps: torch.Tensor  # (N, 1, s, s) float32
    confusion: np.ndarray  # (C, C) int64, rows = label, columns = prediction


def pixel_losses(logp: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-pixel loss (B, H, W), valid mask (B, H, W)) from log-posteriors (B, C, H, W) and labels (B, H, W)."""
    labels = labels.long()
    valid = labels != ignore_index
    safe = torch.where(valid, labels, torch.zeros_like(labels)).clamp_(0, logp.shape[1] - 1)
    nll = -logp.gather(1, safe.unsqueeze(1)).squeeze(1)
    return torch.where(valid, nll, torch.zeros_like(nll)), valid


def image_ce(loss: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B,) mean loss over each image's valid pixels (float64)."""
    return loss.double().flatten(1).sum(1) / valid.flatten(1).sum(1).clamp_min(1).double()


def segment(model: LoadedModel, images: ImageSet, *, batch_size: int = defaults.ATTACK_BATCH_SIZE, seed: int = defaults.SEED,
            lossmap_size: int = defaults.LOSSMAP_SIZE, on_batch: Callable[[int], None] | None = None) -> SegPass:
    """One pass of ``model`` over the labelled ``images`` (see ``SegPass``); seeded (a Gauss model's noise)."""
    if images.targets is None:
        raise InputError(f"{images.path} holds photos only; the attack needs label maps (B/)")
    check_segmentation_size(model, images.size)
    info = model.segmentation
    c, ignore = info.num_classes, info.ignore_index
    n = len(images)
    ce = np.zeros(n)
    acc = np.zeros(n)
    iou = np.zeros(n)
    s = min(lossmap_size, images.size)
    maps = torch.zeros(n, 1, s, s)
    cm = torch.zeros(c, c, dtype=torch.int64)
    model.set_mode(stochastic=False)
    with torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []), torch.inference_mode():
        torch.manual_seed(seed)
        model.reseed(seed)
        for sl, logp in iter_log_posteriors(model, images.inputs, batch_size=batch_size, on_batch=on_batch):
            y = images.targets[sl, 0].to(logp.device).long()
            loss, valid = pixel_losses(logp, y, ignore)
            ce[sl] = image_ce(loss, valid).cpu().numpy()
            pred = logp.argmax(1)
            cms = per_image_confusion(y, pred, c, ignore)
            a, i = image_scores(cms)
            acc[sl], iou[sl] = a, i
            cm += cms.sum(0).cpu()
            m = loss.unsqueeze(1).float()
            maps[sl] = (F.adaptive_avg_pool2d(m, s) if m.shape[-1] != s else m).cpu()
    return SegPass(ce=ce, accuracy=acc, iou=iou, loss_maps=maps, confusion=cm.numpy())


def posteriors(model: LoadedModel, inputs: torch.Tensor, *, batch_size: int = defaults.ATTACK_BATCH_SIZE, seed: int = defaults.SEED) -> torch.Tensor:
    """The released posteriors on uint8 photos: float32 (N, C, H, W) on the CPU, each pixel summing to 1 (seeded)."""
    model.set_mode(stochastic=False)
    outs = []
    with torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []), torch.inference_mode():
        torch.manual_seed(seed)
        model.reseed(seed)
        for _, logp in iter_log_posteriors(model, inputs, batch_size=batch_size):
            p = logp.exp()
            outs.append((p / p.sum(1, keepdim=True)).cpu())
    return torch.cat(outs)


def set_confusion(pred: torch.Tensor, labels: torch.Tensor, num_classes: int, ignore_index: int) -> np.ndarray:
    """(C, C) confusion of predicted labels against label maps (any matching shapes)."""
    return confusion(labels, pred, num_classes, ignore_index).numpy()
