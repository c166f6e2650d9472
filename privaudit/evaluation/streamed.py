"""Utility metrics of streamed sets: what ``evaluate`` computes from the whole output and target
tensors, computed batch by batch during the attack's pass instead, with the same values.

``OutputsPass`` takes each batch of (generated, target) uint8 images as the attack produces them
and keeps only what the metrics need: per-image L1/PSNR/SSIM and Laplacian variances (the set
means are taken over the same per-image values), the Inception features of the generated images
(regrouped into torch-fidelity's batches of 64, so the same features) and the feature-cache key of
the targets. ``streamed_utility`` then gives ``evaluate``'s (utility, gap) dictionaries; the real
images' features are read from the cache, or from one more decoding pass over the targets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from privaudit.errors import DataError, InputError
from privaudit.evaluation.features import FeatureCache, FeatureStream, extractor, resolve_device, streamed_cached_features
from privaudit.evaluation.kid import KIDResult, black_features, kid_from_features
from privaudit.evaluation.pixel import laplacian_variance, pixel_metrics_per_sample


class OutputsPass:
    """Per-batch accumulator of one set's generated images and targets (see the module notes).

    ``count``, ``size``: the set's images and side; ``sharpness``: keep Laplacian variances too;
    ``kid``: (feature extractor, weights sha256, device) to extract features with, or None."""

    def __init__(self, count: int, size: int, *, sharpness: bool, kid: tuple[torch.nn.Module, str, torch.device] | None) -> None:
        self.count, self.size = count, size
        self.sharpness = sharpness
        self.per: dict[str, list[np.ndarray]] = {"l1": [], "psnr": [], "ssim": []}
        self.lap_fake: list[np.ndarray] = []
        self.lap_real: list[np.ndarray] = []
        self.kid = kid
        self.fake_features = FeatureStream(kid[0], kid[2], "generated") if kid is not None else None
        self.real_hash = FeatureCache.hasher([count, 3, size, size], torch.uint8, kid[1]) if kid is not None else None
        self.seen = 0

    def add(self, sl: slice, fake: torch.Tensor, real: torch.Tensor) -> None:
        """One batch: uint8 (B, 3, H, W) generated images and their targets, in the set's order."""
        if sl.start != self.seen:
            raise ValueError(f"batch at {sl.start} after {self.seen} images: batches must come in order")
        self.seen = sl.stop
        for k, v in pixel_metrics_per_sample(fake, real).items():
            self.per[k].append(v)
        if self.sharpness:
            self.lap_fake.append(laplacian_variance(fake))
            self.lap_real.append(laplacian_variance(real))
        if self.fake_features is not None and self.real_hash is not None:
            self.fake_features.add(fake)
            self.real_hash.update(real.contiguous().numpy())

    def pixel(self) -> dict[str, float]:
        """``pixel_metrics`` of the whole set."""
        if self.seen != self.count:
            raise ValueError(f"{self.seen} of {self.count} images seen")
        return {k: float(np.concatenate(v).mean()) for k, v in self.per.items()}

    def sharpness_ratio(self) -> float | None:
        """``sharpness_ratio`` of the whole set."""
        ref = float(np.concatenate(self.lap_real).mean())
        return float(np.concatenate(self.lap_fake).mean()) / ref if ref > 0 else None

    def kid_result(self, targets: Any, *, cache: FeatureCache | None, subset_size: int | None, subsets: int, seed: int, normalise: bool) -> KIDResult:
        """``compute_kid`` of the generated images against ``targets`` (the streamed set whose targets
        these are: read again only when their features are not in ``cache``)."""
        assert self.kid is not None and self.fake_features is not None and self.real_hash is not None
        ex, sha, device = self.kid
        if self.count < 2:
            raise DataError(f"KID needs at least 2 generated images, got {self.count}")
        if isinstance(subsets, bool) or int(subsets) < 1:
            raise InputError(f"KID subsets must be at least 1, got {subsets}")
        shape = [self.count, 3, self.size, self.size]
        f_real = streamed_cached_features(ex, sha, device, cache, shape=shape, key=self.real_hash.hexdigest(), what="real",
                                          batches=lambda: (y for _, _, y in targets.batches(64, want_x=False)))
        f_black = black_features(ex, sha, device, cache, shape) if normalise else None
        return kid_from_features(self.fake_features.finish(), f_real, f_black, sha=sha, subset_size=subset_size, subsets=subsets, seed=seed)


def kid_extractor(weights: Path | None, device: Any) -> tuple[torch.nn.Module, str, torch.device] | None:
    """(extractor, weights sha256, device) for ``OutputsPass``, or None without weights (KID skipped)."""
    if weights is None:
        return None
    dev = resolve_device(device)
    ex, sha = extractor(weights, dev)
    return ex, sha, dev


def streamed_metrics(test: OutputsPass, train: OutputsPass, nonmembers: Any, members: Any, *, cache: FeatureCache | None, subset_size: int | None,
                     subsets: int, seed: int) -> tuple[dict[str, float], dict[str, float], float | None, KIDResult | None, KIDResult | None]:
    """From the passes over the non-members (``test``) and members (``train``): (pixel metrics on
    test, on train, sharpness on test, KID on test, on train; None without Inception weights)."""
    px_test, px_train, sharp = test.pixel(), train.pixel(), test.sharpness_ratio()
    if test.kid is None:
        return px_test, px_train, sharp, None, None
    kw = dict(cache=cache, subset_size=subset_size, subsets=subsets, seed=seed, normalise=True)
    return px_test, px_train, sharp, test.kid_result(nonmembers, **kw), train.kid_result(members, **kw)
