"""KID and NKID of generated images against real ones, with torch-fidelity's Inception features
(``features.py``, weights vetted by ``inception.py``).

The KID arithmetic is torch-fidelity's own (``metric_kid.kid_features_to_metric``): the same value
as ``torch_fidelity.calculate_metrics(kid=True)``. This module clamps ``kid_subset_size`` to the set
sizes (and reports the value used), and normalises KID by that of all-black images (NKID, the AKD
paper's KID / KID_max).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from privaudit.defaults import KID_SUBSET_SIZE, KID_SUBSETS, SEED
from privaudit.errors import DataError, InputError
from privaudit.evaluation.features import BATCH_SIZE, FeatureCache, batched_features, cached_features, check_images, extractor, resolve_device, streamed_cached_features
from privaudit.evaluation.inception import EXTRACTOR_NAME, FEATURE_LAYER

# KID_black at or below this fraction of the kernel sums it is the difference of is float32 round-off,
# not a distance: NKID is then refused.
BLACK_RTOL = 1e-5

__all__ = ["BLACK_RTOL", "KIDResult", "black_features", "compute_kid", "kid_from_features"]


@dataclass(frozen=True)
class KIDResult:
    """KID (mean over ``subsets`` random subsets of ``subset_size``) and its std over subsets; with
    ``normalise``, also KID_black (all-black images of the fake set's count and size against the
    same real images) and NKID = KID / KID_black (None otherwise)."""

    kid: float
    kid_std: float
    subset_size: int
    subsets: int
    seed: int
    feature_extractor: dict[str, Any] = field(default_factory=dict)
    kid_black: float | None = None
    kid_black_std: float | None = None
    nkid: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The report's KID part of ``utility``: kid, kid_std, kid_black, nkid, kid_subset_size, ..."""
        return {
            "kid": self.kid,
            "kid_std": self.kid_std,
            "kid_black": self.kid_black,
            "nkid": self.nkid,
            "kid_subset_size": self.subset_size,
            "kid_subsets": self.subsets,
            "kid_seed": self.seed,
            "feature_extractor": dict(self.feature_extractor),
        }


def _subset_size(requested: int | None, n_fake: int, n_real: int) -> int:
    if requested is not None and (isinstance(requested, bool) or int(requested) < 2):
        raise InputError(f"KID subset size must be at least 2, got {requested}")
    return min(KID_SUBSET_SIZE if requested is None else int(requested), n_fake, n_real)


def _kid(f_fake: torch.Tensor, f_real: torch.Tensor, size: int, subsets: int, seed: int) -> tuple[float, float]:
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    m = kid_features_to_metric(
        f_fake, f_real, kid_subsets=subsets, kid_subset_size=size, rng_seed=seed, verbose=False
    )
    return float(m[KEY_METRIC_KID_MEAN]), float(m[KEY_METRIC_KID_STD])


def _kernel_scale(f1: torch.Tensor, f2: torch.Tensor) -> float:
    """Magnitude of the kernel sums whose difference is KID (torch-fidelity's polynomial kernel)."""
    from torch_fidelity.metric_kid import kernel_poly

    a, b = f1.double().numpy(), f2.double().numpy()
    return float(sum(np.abs(kernel_poly(x, y)).mean() for x, y in ((a, a), (b, b), (a, b), (a, b))))


def _extractor_info(sha: str) -> dict[str, Any]:
    import torch_fidelity

    return {
        "name": EXTRACTOR_NAME,
        "feature_layer": FEATURE_LAYER,
        "weights_sha256": sha,
        "library": f"torch-fidelity {getattr(torch_fidelity, '__version__', '?')}",
    }


def _check_args(fake: torch.Tensor, real: torch.Tensor, subsets: int, seed: int) -> None:
    check_images(fake, "generated", min_count=2)
    check_images(real, "real", min_count=2)
    if isinstance(subsets, bool) or int(subsets) < 1:
        raise InputError(f"KID subsets must be at least 1, got {subsets}")
    if not 0 <= int(seed) < 2**32:
        raise InputError(f"KID seed must be in [0, 2**32), got {seed}")


def compute_kid(
    fake: torch.Tensor,
    real: torch.Tensor,
    *,
    weights: str | os.PathLike,
    subset_size: int | None = None,
    subsets: int = KID_SUBSETS,
    seed: int = SEED,
    cache: FeatureCache | None = None,
    device: str | torch.device | None = "cpu",
    normalise: bool = False,
) -> KIDResult:
    """KID between generated ``fake`` (input1) and ``real`` (input2) uint8 (N, 3, H, W) images.

    Same value as ``torch_fidelity.calculate_metrics(input1=fake, input2=real, kid=True,
    kid_subset_size=..., kid_subsets=subsets, rng_seed=seed)``. ``subset_size`` (default
    KID_SUBSET_SIZE, 1000) is clamped to the smaller set; the value used is in the result. Real (and
    all-black) features go through ``cache``. ``device=None``: CUDA when available, else the CPU.

    ``normalise``: also KID_black, with the same subset size and seed, and NKID = KID / KID_black.
    Raises DataError if KID_black is about 0 or below (real images that are themselves near black,
    or degenerate weights): NKID is then undefined.
    """
    _check_args(fake, real, subsets, seed)
    _subset_size(subset_size, fake.shape[0], real.shape[0])  # a bad subset size fails before any feature is extracted
    device = resolve_device(device)
    ex, sha = extractor(weights, device)
    f_real = cached_features(ex, real, sha, device, cache)
    f_black = cached_features(ex, torch.zeros_like(fake), sha, device, cache) if normalise else None
    return kid_from_features(batched_features(ex, fake, device), f_real, f_black, sha=sha, subset_size=subset_size, subsets=subsets, seed=seed)


def kid_from_features(f_fake: torch.Tensor, f_real: torch.Tensor, f_black: torch.Tensor | None, *, sha: str, subset_size: int | None = None,
                      subsets: int = KID_SUBSETS, seed: int = SEED) -> KIDResult:
    """``compute_kid`` from the Inception features of the generated, real and (None: no NKID) all-black
    images (float32 (N, 2048) each), extracted with the weights of sha256 ``sha``."""
    size, subsets, seed = _subset_size(subset_size, f_fake.shape[0], f_real.shape[0]), int(subsets), int(seed)
    kid, std = _kid(f_fake, f_real, size, subsets, seed)
    result = KIDResult(kid, std, size, subsets, seed, _extractor_info(sha))
    if f_black is None:
        return result
    kid_black, std_black = _kid(f_black, f_real, size, subsets, seed)
    if not kid_black > BLACK_RTOL * _kernel_scale(f_black, f_real):
        raise DataError(
            f"KID of all-black images against the real images is {kid_black:.3g} (about 0 or below), so NKID is "
            "undefined: the real images look black to the feature extractor (or the Inception weights are degenerate)"
        )
    return replace(result, kid_black=kid_black, kid_black_std=std_black, nkid=kid / kid_black)


def black_features(ex: torch.nn.Module, sha: str, device: torch.device, cache: FeatureCache | None, shape: list[int]) -> torch.Tensor:
    """``cached_features`` of ``torch.zeros(shape, dtype=uint8)`` (the all-black set of NKID) without
    holding it: its cache key and features computed batch by batch."""
    n, rest = shape[0], list(shape[1:])
    block = torch.zeros([BATCH_SIZE, *rest], dtype=torch.uint8)
    key = None
    if cache is not None:
        h = FeatureCache.hasher(shape, torch.uint8, sha)
        for start in range(0, n, BATCH_SIZE):
            h.update(block[: min(BATCH_SIZE, n - start)].numpy())
        key = h.hexdigest()
    return streamed_cached_features(ex, sha, device, cache, shape=shape, key=key, what="all-black",
                                    batches=lambda: (block[: min(BATCH_SIZE, n - s)] for s in range(0, n, BATCH_SIZE)))
