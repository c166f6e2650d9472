"""The full audit of one model: the attack, utility (KID/NKID, L1/PSNR/SSIM), the generalization
gap, the proxy leakage check, fidelity to the teacher, and repetition over seeds.

Utility is measured on the non-members (the test set): the model's outputs on their inputs
against their ground truth. The generalization gap compares the same metrics on members (training
inputs) and non-members: ``gap = nkid_test − nkid_train``, positive when the model is better on its
training data (lower NKID is better), as the AKD paper's Sec. V-C reads it.

Fidelity to the teacher (a distilled model, or any model given ``teacher``): the mean L1 between
the model's and the teacher's outputs, both in eval mode, on the non-members' inputs (what the
student learned of the teacher where neither was trained) and on the proxy inputs (where it was
taught). It reads no member and no target.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from privaudit.attacks.api import add_reference_attacks, load_audit_sets, open_references, segmentation_task
from privaudit.attacks.reconstruction import AttackConfig, run_attack
from privaudit.data.checks import check_count, check_disjoint
from privaudit.data.images import ImageSet, load_inputs, to_uint8
from privaudit.data.stream import StreamedSet, Streaming, open_pairs
from privaudit import defaults
from privaudit.accel import check_precision
from privaudit.defaults import KID_SUBSETS, REPEAT
from privaudit.errors import InputError
from privaudit.evaluation.features import FeatureCache
from privaudit.evaluation.inception import resolve_inception_weights, vet_inception_weights
from privaudit.evaluation.kid import KIDResult, compute_kid
from privaudit.evaluation.streamed import OutputsPass, kid_extractor, streamed_metrics
from privaudit.evaluation.pixel import pixel_metrics, sharpness_ratio
from privaudit.limits import MAX_KID_SUBSETS, MAX_REPEAT, check_at_most
from privaudit.models.arch import ArchOverrides
from privaudit.models.checkpoint import load_model
from privaudit.models.inference import check_image_size, iter_outputs
from privaudit.models.loaded import LoadedModel
from privaudit.report.build import attack_report, dp_audit


@dataclass(frozen=True)
class EvaluateConfig:
    attack: AttackConfig = field(default_factory=AttackConfig)
    kid: bool = True
    inception_weights: str | None = None
    kid_subset_size: int | None = None
    kid_subsets: int = KID_SUBSETS
    feature_cache: str | None = None
    no_disk_cache: bool = False
    proxy_pairs: str | None = None
    repeat: int = REPEAT
    teacher: str | None = None
    proxy: str | None = None

    def validate(self) -> None:
        self.attack.validate()
        if self.repeat < 1:
            raise InputError(f"--repeat must be at least 1, not {self.repeat}")
        check_at_most(self.repeat, MAX_REPEAT, "--repeat", "each seed is a full audit")
        if self.kid_subsets < 1:
            raise InputError(f"--kid-subsets must be at least 1, not {self.kid_subsets}")
        check_at_most(self.kid_subsets, MAX_KID_SUBSETS, "--kid-subsets", "the KID estimate is stable long before that")
        if self.kid_subset_size is not None and self.kid_subset_size < 2:
            raise InputError(f"--kid-subset-size must be at least 2 (KID compares pairs of images), not {self.kid_subset_size}")


def _utility(fake_test, real_test, fake_train, real_train, cfg: EvaluateConfig, weights: Path | None, cache: FeatureCache | None, seed: int, device) -> tuple[dict, dict]:
    px_test = pixel_metrics(fake_test, real_test)
    px_train = pixel_metrics(fake_train, real_train)
    sharpness = sharpness_ratio(fake_test, real_test)
    if weights is None:
        return _sections(px_test, px_train, sharpness, None, None)
    kw = dict(weights=weights, subset_size=cfg.kid_subset_size, subsets=cfg.kid_subsets, seed=seed, cache=cache, device=device, normalise=True)
    test = compute_kid(fake_test, real_test, **kw)
    train = compute_kid(fake_train, real_train, **kw)
    return _sections(px_test, px_train, sharpness, test, train)


def _sections(px_test: dict[str, float], px_train: dict[str, float], sharpness: float | None, test: KIDResult | None,
              train: KIDResult | None) -> tuple[dict, dict]:
    """The report's ``utility`` and ``generalization_gap`` (KID results None: no Inception weights)."""
    utility: dict[str, Any] = {"evaluated_on": "nonmembers", **px_test, "sharpness": sharpness}
    gap: dict[str, Any] = {
        "l1_train": px_train["l1"],
        "l1_test": px_test["l1"],
        "l1_gap": px_test["l1"] - px_train["l1"],
        "nkid_train": None,
        "nkid_test": None,
        "gap": None,
        "sign": "positive = better on training data (nkid_test - nkid_train)",
    }
    if test is None or train is None:
        utility.update({"kid": None, "kid_std": None, "kid_black": None, "nkid": None, "kid_skipped": True})
        return utility, gap
    utility.update(test.as_dict())
    gap.update({"nkid_train": train.nkid, "nkid_test": test.nkid, "gap": test.nkid - train.nkid})
    return utility, gap


def _proxy_leakage(model: LoadedModel, proxy: ImageSet | StreamedSet, nonmembers: ImageSet | StreamedSet, cfg: AttackConfig) -> dict[str, Any]:
    r = run_attack(model, proxy, nonmembers, cfg)
    return {"path": proxy.path, "count": len(proxy), "resized": proxy.resized, "auc": r.metrics.auc, "auc_ci95": list(r.metrics.auc_ci95), "expected": "about 0.5: the student saw the proxy inputs, not their targets"}


def outputs_u8(model: LoadedModel, inputs: torch.Tensor, *, batch_size: int, seed: int) -> torch.Tensor:
    """``model``'s outputs in eval mode (dropout off), as uint8 (N, C, H, W)."""
    model.set_mode(stochastic=False)
    model.reseed(seed)
    with torch.inference_mode():
        return torch.cat([to_uint8(out.float()).cpu() for _, out in iter_outputs(model, inputs, batch_size=batch_size)])


def mean_l1_u8(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean |a − b| of uint8 images on the [-1, 1] scale (/127.5), as ``pixel_metrics``' L1."""
    return float((a.double() - b.double()).abs().mean() / 127.5)


def resolve_teacher(model: LoadedModel, given: str | None, *, device: Any, seed: int) -> tuple[LoadedModel | None, dict[str, Any] | None]:
    """The teacher to measure ``model`` against: ``given`` (refused when the model records another
    teacher), else the one ``model`` records (``defense.teacher``) when it is still at its path with
    the recorded sha256. Returns (teacher, None), or (None, {"skipped": why}) when the model records
    a teacher that is gone, or (None, None) when it records none and none was given."""
    recorded = (model.defense or {}).get("teacher") if isinstance(model.defense, dict) else None
    recorded = recorded if isinstance(recorded, dict) else {}
    rec_sha, rec_path = recorded.get("sha256"), recorded.get("path")
    if given is not None:
        if not Path(given).is_file():
            raise InputError(f"--teacher {given} {'is a folder' if Path(given).is_dir() else 'does not exist'}; give the teacher model file")
        teacher = load_model(given, device=device, seed=seed, overrides=ArchOverrides())
        if isinstance(rec_sha, str) and teacher.sha256 != rec_sha:
            raise InputError(f"--teacher {given} is not the teacher {model.path} was made from (its sha256 differs from the recorded {rec_sha[:12]}…, "
                             f"{rec_path}); pass that model")
        return teacher, None
    if not isinstance(rec_path, str):
        return None, None
    if not Path(rec_path).is_file():
        return None, {"skipped": f"the recorded teacher {rec_path} is not there; pass --teacher T.pt"}
    teacher = load_model(rec_path, device=device, seed=seed, overrides=ArchOverrides())
    if isinstance(rec_sha, str) and teacher.sha256 != rec_sha:
        return None, {"skipped": f"{rec_path} is no longer the recorded teacher (its sha256 differs); pass --teacher T.pt"}
    return teacher, None


def fidelity_to_teacher(model: LoadedModel, teacher: LoadedModel, nonmembers: ImageSet, proxy: ImageSet | None, *, batch_size: int,
                        seed: int) -> dict[str, Any]:
    """``utility.fidelity_to_teacher``: mean L1 between model and teacher outputs (eval mode) on the
    non-members' inputs and on the proxy inputs (None without them). Reads inputs only."""
    def l1(inputs: torch.Tensor) -> float:
        return mean_l1_u8(outputs_u8(model, inputs, batch_size=batch_size, seed=seed), outputs_u8(teacher, inputs, batch_size=batch_size, seed=seed))

    return {"teacher": {"path": teacher.path, "sha256": teacher.sha256}, "mode": "eval",
            "nonmembers_l1": l1(nonmembers.inputs), "proxy_l1": l1(proxy.inputs) if proxy is not None else None,
            "proxy": {"path": proxy.path, "count": len(proxy)} if proxy is not None else None}


def evaluate(
    model_path: str | Path,
    members: str | Path,
    nonmembers: str | Path,
    cfg: EvaluateConfig,
    *,
    direction: str | None = None,
    size: int | None = None,
    overrides: ArchOverrides | None = None,
    device: str | None = None,
    precision: str = defaults.PRECISION,
    deterministic: bool = defaults.DETERMINISTIC,
    on_batch: Callable[[int], None] | None = None,
    allow_small: bool = False,
    references: str | Path | None = None,
    on_reference: Callable[[int, int], None] | None = None,
    streaming: Streaming | None = None,
    task: str | None = None,
    segmentation: Any = None,
    seg_options: Any = None,
) -> dict[str, Any]:
    """Audit one model; returns the report (``privaudit.report/1``) with attack, utility and gap.

    A segmentation model (``task``, ``segmentation`` and ``seg_options`` as for ``attack``) is
    audited by ``evaluation.segmentation.evaluate_segmentation`` (mean IoU, no KID).

    ``direction`` is required for a model that does not record it; ``allow_small`` accepts fewer
    than MIN_PAIRS members, non-members or proxy pairs (the report records it). ``references``: a
    folder of reference models for this model; the calibrated attacks they support run on the first
    seed's losses and the report is ``privaudit.report/2`` (see ``attacks.api.add_reference_attacks``).
    ``precision`` (auto, fp32, bf16) and ``deterministic``: how the generator's forward passes use a
    CUDA device (``privaudit.accel``); losses and pixel metrics are float32 either way, and the
    Inception features of KID are always fp32. ``streaming``: when the sets are streamed from disk
    rather than read whole into memory (default ``Streaming()``: above the memory budget). Streamed,
    the utility metrics are computed batch by batch during the attack's pass (``evaluation.streamed``),
    with the same values.
    """
    cfg.validate()
    check_precision(precision)  # before the Inception weights are looked for
    if segmentation_task(model_path, task, segmentation, direction=direction, overrides=overrides):
        from privaudit.evaluation.segmentation import evaluate_segmentation

        return evaluate_segmentation(model_path, members, nonmembers, cfg, spec=segmentation, options=seg_options, size=size, device=device,
                                     on_batch=on_batch, allow_small=allow_small, references=references, on_reference=on_reference)
    weights: Path | None = None
    if cfg.kid:
        weights = resolve_inception_weights(cfg.inception_weights)  # fail before any heavy work
        vet_inception_weights(weights)
    cache = FeatureCache(cfg.feature_cache, disk=not cfg.no_disk_cache) if cfg.kid else None
    model = load_model(model_path, overrides=overrides, device=device, seed=cfg.attack.seed, precision=precision, deterministic=deterministic)
    sets = load_audit_sets(model, members, nonmembers, direction=direction, size=size, allow_small=allow_small, streaming=streaming)
    m, n, direction = sets.members, sets.nonmembers, sets.direction
    streamed = isinstance(m, StreamedSet) or isinstance(n, StreamedSet)
    proxy = None
    if cfg.proxy_pairs:
        proxy = open_pairs(cfg.proxy_pairs, direction=direction, size=m.size, what="proxy pairs", streaming=streaming)
        check_count(proxy, "proxy", allow_small=allow_small)
        # Proxy pairs stand in for members in the leakage check: a pair the model was trained on, or
        # one also used as a non-member, would make that check measure something else.
        fix = "the proxy leakage check needs proxy pairs that are neither members nor non-members: remove the shared pairs"
        check_disjoint(m, proxy, "members", "proxy pairs", hashes_a=sets.member_hashes, fix=fix)
        check_disjoint(n, proxy, "non-members", "proxy pairs", fix=fix)
    refs = open_references(references, model, sets) if references is not None else None  # before any heavy work
    teacher, fidelity = resolve_teacher(model, cfg.teacher, device=model.device, seed=cfg.attack.seed)
    fidelity_proxy = None
    if cfg.proxy is not None or (proxy is not None and teacher is not None):
        if teacher is None and fidelity is None:
            raise InputError(f"--proxy measures a distilled model's distance to its teacher on the proxy inputs, and {model.path} records no teacher; "
                             "pass --teacher T.pt or drop --proxy")
        src = cfg.proxy or cfg.proxy_pairs
        fidelity_proxy = load_inputs(src, direction=direction, size=m.size, input_nc=int(model.arch.get("input_nc", 3)), what="--proxy")
    if teacher is not None:
        check_image_size(teacher, m.size)

    runs: list[dict[str, Any]] = []
    report: dict[str, Any] = {}
    for r in range(cfg.repeat):
        acfg = replace(cfg.attack, seed=cfg.attack.seed + r)
        model.reseed(acfg.seed)
        if streamed:
            kid = kid_extractor(weights, model.device)
            test, train = OutputsPass(len(n), n.size, sharpness=True, kid=kid), OutputsPass(len(m), m.size, sharpness=False, kid=kid)
            result = run_attack(model, m, n, acfg, on_batch=on_batch, on_outputs=(train.add, test.add))
            utility, gap = _sections(*streamed_metrics(test, train, n, m, cache=cache, subset_size=cfg.kid_subset_size, subsets=cfg.kid_subsets, seed=acfg.seed))
        else:
            result = run_attack(model, m, n, acfg, on_batch=on_batch, keep_outputs=True)
            utility, gap = _utility(result.nonmember_outputs, n.targets, result.member_outputs, m.targets, cfg, weights, cache, acfg.seed, model.device)
        run = {"seed": acfg.seed, "auc": result.metrics.auc, "tpr_at_fpr": result.metrics.tpr_at_fpr, "advantage": result.metrics.advantage,
               "nkid": utility.get("nkid"), "kid": utility.get("kid"), "l1": utility["l1"], "ssim": utility["ssim"], "psnr": utility["psnr"], "gap": gap["gap"]}
        runs.append(run)
        if r == 0:
            report = attack_report(model, sets, result)
            if refs is not None:
                add_reference_attacks(report, refs, sets, result, device=device, on_reference=on_reference, precision=model.runtime.precision,
                                      deterministic=deterministic)
            dp_audit(report)
            report["utility"] = utility
            report["generalization_gap"] = gap
            if proxy is not None:
                report["proxy_leakage"] = _proxy_leakage(model, proxy, n, acfg)
    if teacher is not None:
        fidelity = fidelity_to_teacher(model, teacher, n, fidelity_proxy, batch_size=cfg.attack.batch_size, seed=cfg.attack.seed)
    if fidelity is not None:
        report["utility"]["fidelity_to_teacher"] = fidelity
    if cfg.repeat > 1:
        report["repeats"] = summarise_runs(runs)
    if cache is not None:
        report["utility"]["feature_cache"] = {"hits": cache.hits, "misses": cache.misses}
    return report


def summarise_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """mean ± std (population) of each numeric metric over runs; None where a run lacks it."""
    out: dict[str, Any] = {"n": len(runs), "seeds": [r["seed"] for r in runs], "runs": runs}
    for key in ("auc", "advantage", "nkid", "kid", "l1", "ssim", "psnr", "gap"):
        vals = [r[key] for r in runs]
        out[key] = None if any(v is None for v in vals) else {"mean": float(np.mean(vals)), "std": float(np.std(vals))}
    return out
