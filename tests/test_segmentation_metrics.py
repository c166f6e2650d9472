"""Segmentation metrics against hand-worked values and independent computations: the per-image
cross-entropy over valid pixels (``torch.nn.functional.cross_entropy`` with ``ignore_index``), the
confusion matrix and mean IoU (scikit-learn's ``confusion_matrix``), per-image pixel accuracy and IoU."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import confusion_matrix, jaccard_score

from privaudit.evaluation.miou import confusion, image_scores, iou_per_class, mean_iou, per_image_confusion, pixel_accuracy, segmentation_metrics
from privaudit.models.seginference import image_ce, pixel_losses
from privaudit.training.segmentation import segmentation_loss


def test_cross_entropy_by_hand():
    # one image, 2 classes, 1x3 pixels; the third pixel is unlabelled (255)
    logits = torch.tensor([[[[2.0, 0.0, 5.0]], [[0.0, 1.0, -5.0]]]])  # (1, 2, 1, 3)
    labels = torch.tensor([[[0, 1, 255]]])
    loss, valid = pixel_losses(F.log_softmax(logits, 1), labels, 255)
    # pixel 0: -log(e^2 / (e^2 + 1)); pixel 1: -log(e / (1 + e)); pixel 2 ignored
    p0 = -math.log(math.exp(2) / (math.exp(2) + 1))
    p1 = -math.log(math.e / (1 + math.e))
    assert loss[0, 0].tolist() == pytest.approx([p0, p1, 0.0], abs=1e-6)
    assert valid.tolist() == [[[True, True, False]]]
    assert image_ce(loss, valid).item() == pytest.approx((p0 + p1) / 2, abs=1e-6)


def test_cross_entropy_matches_torch_with_ignore_index():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 6, 9, 7, generator=g) * 3
    labels = torch.randint(0, 6, (5, 9, 7), generator=g)
    labels[torch.rand(5, 9, 7, generator=g) < 0.3] = 255
    labels[2, 0, 0] = 3  # every image keeps a labelled pixel
    loss, valid = pixel_losses(F.log_softmax(logits, 1), labels, 255)
    ours = image_ce(loss, valid)
    for i in range(5):
        ref = F.cross_entropy(logits[i : i + 1], labels[i : i + 1], ignore_index=255)
        assert ours[i].item() == pytest.approx(ref.item(), rel=1e-6)
    # the training loss is the mean of the per-image losses
    per_image = torch.stack([F.cross_entropy(logits[i : i + 1], labels[i : i + 1], ignore_index=255) for i in range(5)])
    assert segmentation_loss(logits, labels, 255).item() == pytest.approx(per_image.mean().item(), rel=1e-6)


def test_soft_target_loss_is_cross_entropy_to_the_posteriors():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 4, 4, generator=g)
    teacher = torch.softmax(torch.randn(2, 3, 4, 4, generator=g), 1)
    ref = -(teacher * F.log_softmax(logits, 1)).sum(1).mean()
    assert segmentation_loss(logits, teacher, 255).item() == pytest.approx(ref.item(), rel=1e-6)
    # with one-hot targets it is the ordinary cross-entropy
    hard = teacher.argmax(1)
    onehot = F.one_hot(hard, 3).permute(0, 3, 1, 2).float()
    assert segmentation_loss(logits, onehot, 255).item() == pytest.approx(F.cross_entropy(logits, hard).item(), rel=1e-6)


def test_iou_by_hand():
    # labels / predictions of 6 valid pixels (+1 ignored), 3 classes
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 255])
    pred = torch.tensor([0, 1, 1, 1, 0, 2, 2])
    cm = confusion(labels, pred, 3, 255).numpy()
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    # class 0: TP 1, FP 1, FN 1 → 1/3; class 1: TP 2, FP 1 → 2/3; class 2: TP 1, FN 1 → 1/2
    assert iou_per_class(cm).tolist() == pytest.approx([1 / 3, 2 / 3, 1 / 2])
    assert mean_iou(cm) == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert pixel_accuracy(cm) == pytest.approx(4 / 6)


def test_absent_class_has_no_iou_and_is_left_out_of_the_mean():
    cm = np.array([[3, 0, 0], [0, 0, 0], [1, 0, 2]])  # class 1 never labelled nor predicted
    iou = iou_per_class(cm)
    assert math.isnan(iou[1])
    assert mean_iou(cm) == pytest.approx((3 / 4 + 2 / 3) / 2)
    m = segmentation_metrics(cm, ["a", "b", "c"])
    assert m["iou_per_class"] == {"a": pytest.approx(0.75), "b": None, "c": pytest.approx(2 / 3)}
    assert m["classes_present"] == 2


def test_confusion_and_miou_match_sklearn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 4000)
    pred = np.where(rng.random(4000) < 0.6, labels, rng.integers(0, 5, 4000))
    labels[rng.random(4000) < 0.1] = 255
    ours = confusion(torch.from_numpy(labels), torch.from_numpy(pred), 5, 255).numpy()
    keep = labels != 255
    ref = confusion_matrix(labels[keep], pred[keep], labels=list(range(5)))
    assert (ours == ref).all()
    assert mean_iou(ours) == pytest.approx(jaccard_score(labels[keep], pred[keep], average="macro"))
    assert iou_per_class(ours).tolist() == pytest.approx(jaccard_score(labels[keep], pred[keep], average=None).tolist())


def test_per_image_scores():
    labels = torch.tensor([[[0, 0], [1, 255]], [[2, 2], [2, 2]]])
    pred = torch.tensor([[[0, 1], [1, 1]], [[2, 2], [0, 2]]])
    cms = per_image_confusion(labels, pred, 3, 255)
    assert cms.sum((1, 2)).tolist() == [3, 4]
    for i in range(2):
        assert (cms[i] == confusion(labels[i], pred[i], 3, 255)).all()
    acc, miou = image_scores(cms)
    assert acc.tolist() == pytest.approx([2 / 3, 3 / 4])
    # image 0: class 0 IoU 1/2, class 1 IoU 1/2 → 1/2; image 1: class 2 IoU 3/4, class 0 IoU 0 (predicted only) → 3/8
    assert miou.tolist() == pytest.approx([0.5, 3 / 8])
