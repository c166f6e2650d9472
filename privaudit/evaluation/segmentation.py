"""The full audit of a segmentation model: the attacks (``attacks.segmentation``), utility on the
non-members (the test set): mean IoU, pixel accuracy, mean class accuracy and IoU per class, and
the generalization gap in mean IoU, ``miou_train − miou_test`` (positive = better on the training
data, the sign of the generators' NKID gap; ``gap`` holds it, so ``gate --max-gap`` applies).

The utility comes from the same pass as the attacks (the confusion matrices of both sets), so an
evaluation costs one pass over the data per seed.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from privaudit.attacks.segmentation import SegAttackOptions, load_seg_sets, run_segmentation_attacks
from privaudit.attacks.suite import measure
from privaudit.data.checks import check_count, check_disjoint
from privaudit.errors import InputError
from privaudit.evaluation.miou import segmentation_metrics
from privaudit.models.seginference import segment
from privaudit.models.segnets import SegSpec


def utility_sections(classes: tuple[str, ...], cm_test: np.ndarray, cm_train: np.ndarray) -> tuple[dict[str, Any], dict[str, Any]]:
    """(utility, generalization_gap) of a segmentation report from the confusion matrices of the
    non-members (test) and the members (train)."""
    test = segmentation_metrics(cm_test, classes)
    train = segmentation_metrics(cm_train, classes)
    utility = {"evaluated_on": "nonmembers", **test}
    gap: dict[str, Any] = {
        "miou_train": train["miou"],
        "miou_test": test["miou"],
        "miou_gap": None if train["miou"] is None or test["miou"] is None else train["miou"] - test["miou"],
        "pixel_accuracy_train": train["pixel_accuracy"],
        "pixel_accuracy_test": test["pixel_accuracy"],
        "sign": "positive = better on training data (miou_train - miou_test)",
    }
    gap["gap"] = gap["miou_gap"]
    return utility, gap


def evaluate_segmentation(
    model_path: str | Path,
    members: str | Path,
    nonmembers: str | Path,
    cfg: Any,
    *,
    spec: SegSpec | None = None,
    options: SegAttackOptions | None = None,
    size: int | None = None,
    device: str | None = None,
    on_batch: Callable[[int], None] | None = None,
    allow_small: bool = False,
    references: str | Path | None = None,
    on_reference: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Audit one segmentation model: attacks, utility and gap (``cfg``: an ``EvaluateConfig``; its
    KID settings do not apply). ``cfg.proxy_pairs`` (labelled proxy pairs) adds the proxy leakage
    check; ``cfg.repeat`` > 1 repeats the loss attack and the utility with seeds seed, seed+1, ...
    (only a Gauss model's noise depends on the seed)."""
    from privaudit.models.segcheckpoint import load_segmentation_model

    cfg.validate()
    spec = (spec or SegSpec()).validate()
    options = options or SegAttackOptions()
    options.validate()
    acfg = cfg.attack
    if acfg.stochastic:
        raise InputError("--stochastic is for pix2pix generators (dropout as noise); a segmentation model is audited in eval mode: drop it")
    model = load_segmentation_model(model_path, spec, device=device, seed=acfg.seed)
    sets = load_seg_sets(model, members, nonmembers, size=size, allow_small=allow_small)
    proxy = None
    if cfg.proxy_pairs:
        from privaudit.data.labels import load_segmentation_pairs

        info = model.segmentation
        proxy = load_segmentation_pairs(cfg.proxy_pairs, num_classes=info.num_classes, size=sets.image_size, ignore_index=info.ignore_index,
                                        palette=info.palette, what="proxy pairs")
        check_count(proxy, "proxy", allow_small=allow_small)
        fix = "the proxy leakage check needs proxy pairs that are neither members nor non-members: remove the shared pairs"
        check_disjoint(sets.members, proxy, "members", "proxy pairs", hashes_a=sets.member_hashes, fix=fix)
        check_disjoint(sets.nonmembers, proxy, "non-members", "proxy pairs", fix=fix)
    refs = None
    if references is not None:
        from privaudit.attacks.api import open_references

        refs = open_references(references, model, sets)
    report, result, (pm, pn) = run_segmentation_attacks(model, sets, acfg, spec=spec, options=options, device=device, on_batch=on_batch, refs=refs,
                                                        on_reference=on_reference, allow_small=allow_small)
    classes = model.segmentation.classes
    utility, gap = utility_sections(classes, pn.confusion, pm.confusion)
    report["utility"] = utility
    report["generalization_gap"] = gap
    if proxy is not None:
        pp = segment(model, proxy, batch_size=acfg.batch_size, seed=acfg.seed)
        o = measure("loss", -pp.ce, -pn.ce, fprs=acfg.fprs, n_bootstrap=acfg.n_bootstrap, seed=acfg.seed)
        report["proxy_leakage"] = {"path": proxy.path, "count": len(proxy), "resized": proxy.resized, "auc": o.metrics.auc,
                                   "auc_ci95": list(o.metrics.auc_ci95), "expected": "about 0.5: the student saw the proxy photos, not their labels"}
    if cfg.repeat > 1:
        runs = [{"seed": acfg.seed, "auc": result.metrics.auc, "advantage": result.metrics.advantage, "miou": utility["miou"],
                 "pixel_accuracy": utility["pixel_accuracy"], "gap": gap["gap"]}]
        for r in range(1, cfg.repeat):
            rcfg = replace(acfg, seed=acfg.seed + r)
            qm = segment(model, sets.members, batch_size=rcfg.batch_size, seed=rcfg.seed)
            qn = segment(model, sets.nonmembers, batch_size=rcfg.batch_size, seed=rcfg.seed)
            o = measure("loss", -qm.ce, -qn.ce, fprs=rcfg.fprs, n_bootstrap=0, seed=rcfg.seed)
            u, g = utility_sections(classes, qn.confusion, qm.confusion)
            runs.append({"seed": rcfg.seed, "auc": o.metrics.auc, "advantage": o.metrics.advantage, "miou": u["miou"], "pixel_accuracy": u["pixel_accuracy"],
                         "gap": g["gap"]})
        out: dict[str, Any] = {"n": len(runs), "seeds": [r["seed"] for r in runs], "runs": runs, "attack": "loss"}
        for key in ("auc", "advantage", "miou", "pixel_accuracy", "gap"):
            vals = [r[key] for r in runs]
            out[key] = None if any(v is None for v in vals) else {"mean": float(np.mean(vals)), "std": float(np.std(vals))}
        report["repeats"] = out
    return report
