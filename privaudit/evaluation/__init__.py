"""Utility metrics: KID/NKID with torch-fidelity's Inception (``kid``), L1/PSNR/SSIM (``pixel``), plots."""

from privaudit.evaluation.kid import (
    FeatureCache,
    KIDResult,
    NKIDResult,
    compute_kid,
    compute_nkid,
    resolve_inception_weights,
    vet_inception_weights,
)
from privaudit.evaluation.pixel import pixel_metrics, pixel_metrics_per_sample

__all__ = [
    "FeatureCache",
    "KIDResult",
    "NKIDResult",
    "compute_kid",
    "compute_nkid",
    "pixel_metrics",
    "pixel_metrics_per_sample",
    "resolve_inception_weights",
    "vet_inception_weights",
]
