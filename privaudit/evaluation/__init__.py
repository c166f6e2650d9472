"""Utility metrics and the full audit: KID/NKID with torch-fidelity's Inception (``inception``
finds and vets the weights, ``features`` extracts and caches features, ``kid`` computes), L1/PSNR/
SSIM (``pixel``), and ``evaluate`` (attack + utility + generalization gap)."""

from privaudit.evaluation.features import FeatureCache
from privaudit.evaluation.inception import resolve_inception_weights, vet_inception_weights
from privaudit.evaluation.kid import KIDResult, compute_kid
from privaudit.evaluation.pixel import pixel_metrics, pixel_metrics_per_sample

__all__ = [
    "FeatureCache",
    "KIDResult",
    "compute_kid",
    "pixel_metrics",
    "pixel_metrics_per_sample",
    "resolve_inception_weights",
    "vet_inception_weights",
]
