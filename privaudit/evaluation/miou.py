"""Segmentation utility: the confusion matrix, IoU per class, mean IoU and pixel accuracy.

Pixels whose label is ``ignore_index`` count nowhere. IoU of class c = TP / (TP + FP + FN) over
the whole set; a class that appears in neither the labels nor the predictions has no IoU (None in
the report, left out of the mean), as in torchmetrics' and mmseg's mean IoU.

Per image (the label-only attack's scores): pixel accuracy over the image's valid pixels, and the
image's mean IoU over the classes present in its labels or predictions.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch


def confusion(labels: torch.Tensor, pred: torch.Tensor, num_classes: int, ignore_index: int) -> torch.Tensor:
    """(C, C) int64 counts, rows = label, columns = prediction, over the valid pixels of a batch.
    labels, pred: integer tensors of one shape (any)."""
    labels, pred = labels.reshape(-1).long(), pred.reshape(-1).long()
    valid = (labels != ignore_index) & (labels >= 0) & (labels < num_classes)
    idx = labels[valid] * num_classes + pred[valid]
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_image_confusion(labels: torch.Tensor, pred: torch.Tensor, num_classes: int, ignore_index: int) -> torch.Tensor:
    """(B, C, C) int64: ``confusion`` of each image of a batch. labels, pred: (B, ...) integers."""
    b = labels.shape[0]
    labels, pred = labels.reshape(b, -1).long(), pred.reshape(b, -1).long()
    valid = (labels != ignore_index) & (labels >= 0) & (labels < num_classes)
    image = torch.arange(b, device=labels.device).unsqueeze(1).expand_as(labels)
    idx = (image * num_classes + labels) * num_classes + pred
    counts = torch.bincount(idx[valid], minlength=b * num_classes * num_classes)
    return counts.reshape(b, num_classes, num_classes)


def iou_per_class(cm: np.ndarray) -> np.ndarray:
    """(C,) IoU from a (C, C) confusion matrix; NaN for a class absent from labels and predictions."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1.0), np.nan)


def mean_iou(cm: np.ndarray) -> float:
    """The mean of the IoUs of the classes present (labels or predictions); NaN when none is."""
    iou = iou_per_class(cm)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def pixel_accuracy(cm: np.ndarray) -> float:
    """Correct pixels over valid pixels; NaN when there are none."""
    cm = np.asarray(cm, dtype=np.float64)
    total = cm.sum()
    return float(np.trace(cm) / total) if total > 0 else float("nan")


def image_scores(cms: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(pixel accuracy (B,), mean IoU (B,)) of each image from its (B, C, C) confusion matrices."""
    cms = cms.double()
    tp = torch.diagonal(cms, dim1=1, dim2=2)
    total = cms.sum((1, 2)).clamp_min(1.0)
    acc = tp.sum(1) / total
    union = cms.sum(1) + cms.sum(2) - tp
    present = union > 0
    iou = torch.where(present, tp / union.clamp_min(1.0), torch.zeros_like(tp))
    miou = iou.sum(1) / present.sum(1).clamp_min(1)
    return acc.cpu().numpy(), miou.cpu().numpy()


def _clean(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def segmentation_metrics(cm: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """The report's utility numbers from a (C, C) confusion matrix: ``miou``, ``pixel_accuracy``,
    ``mean_class_accuracy`` and ``iou_per_class`` ({class name: IoU or None})."""
    cm = np.asarray(cm, dtype=np.int64)
    iou = iou_per_class(cm)
    support = cm.sum(1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, np.diag(cm) / np.where(support > 0, support, 1.0), np.nan)
    return {
        "miou": _clean(mean_iou(cm)),
        "pixel_accuracy": _clean(pixel_accuracy(cm)),
        "mean_class_accuracy": _clean(float(np.nanmean(recall)) if np.isfinite(recall).any() else float("nan")),
        "iou_per_class": {str(name): _clean(v) for name, v in zip(classes, iou)},
        "classes_present": int(np.isfinite(iou).sum()),
        "pixels": int(cm.sum()),
    }
