"""Pixel-level utility metrics between generated and target images: L1, PSNR, SSIM.

Inputs are uint8 tensors of shape (N, 3, H, W), both the same shape (model outputs are converted
with ``privaudit.data.to_uint8`` first).

* **L1**: mean |a - b| on the [-1, 1] scale the models work in (uint8 v maps to v / 127.5 - 1), so
  L1 = mean |a_u8 - b_u8| / 127.5, in [0, 2]. Same scale as the attack's reconstruction loss.
* **PSNR** (dB): 10 log10(255^2 / MSE) on uint8 values, MSE over all pixels and channels of one image.
  Identical images have MSE 0: their PSNR is capped at ``PSNR_MAX_DB`` (100 dB) so reports stay finite JSON.
* **SSIM**: scikit-image ``structural_similarity`` (``channel_axis``, ``data_range=255``, uniform
  7x7 window; a smaller odd window for images under 7 px, at least 3 px are needed).

Each metric is computed per image, then averaged over the set.

* **sharpness** (a set-level ratio, not per image): the mean variance of the Laplacian of the
  generated images' luma over that of the targets (Pech-Pacheco et al., ICPR 2000; scipy's
  ``ndimage.laplace``, reflected borders, luma = 0.299 R + 0.587 G + 0.114 B on [0, 1]). 1.0: as
  much fine detail as the real images; below 1: blurrier (what an L1-only student drifts to);
  above 1: more high-frequency energy than real, which added noise also gives. It needs no
  Inception weights, so it separates a sharp model from a blurry one of equal L1 where KID cannot
  be measured. ``None`` when the targets have no detail at all (their Laplacian is 0).
"""

from __future__ import annotations

import numpy as np
import torch

from privaudit.errors import DataError

PSNR_MAX_DB = 100.0

__all__ = ["PSNR_MAX_DB", "laplacian_variance", "pixel_metrics", "pixel_metrics_per_sample", "sharpness_ratio", "ssim_win_size"]


def _as_numpy(fake: torch.Tensor, real: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    for what, x in (("generated", fake), ("target", real)):
        if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3:
            desc = f"{x.dtype} tensor of shape {list(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise DataError(f"{what} images must be a uint8 tensor of shape (N, 3, H, W), got {desc}")
    if fake.shape != real.shape:
        raise DataError(f"generated images {list(fake.shape)} and targets {list(real.shape)} differ in shape")
    if fake.shape[0] == 0:
        raise DataError("no images to compare")
    return fake.detach().cpu().numpy(), real.detach().cpu().numpy()


def ssim_win_size(height: int, width: int) -> int:
    """SSIM window: 7, or the largest odd size that fits an image smaller than 7 px (at least 3)."""
    w = min(7, height, width)
    w -= 1 - w % 2
    if w < 3:
        raise DataError(f"SSIM needs images of at least 3x3 pixels, got {height}x{width}")
    return w


def pixel_metrics_per_sample(fake: torch.Tensor, real: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-image metrics: uint8 (N, 3, H, W) x2 -> {"l1", "psnr", "ssim"}, each a float64 array of shape (N,)."""
    from skimage.metrics import structural_similarity

    a, b = _as_numpy(fake, real)
    diff = a.astype(np.float64) - b.astype(np.float64)
    l1 = np.abs(diff).mean(axis=(1, 2, 3)) / 127.5
    mse = (diff**2).mean(axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        psnr = np.minimum(10.0 * np.log10(255.0**2 / mse), PSNR_MAX_DB)
    win = ssim_win_size(a.shape[2], a.shape[3])
    ssim = np.array(
        [
            structural_similarity(x.transpose(1, 2, 0), y.transpose(1, 2, 0), channel_axis=-1, data_range=255, win_size=win)
            for x, y in zip(a, b)
        ],
        dtype=np.float64,
    )
    return {"l1": l1, "psnr": psnr, "ssim": ssim}


def pixel_metrics(fake: torch.Tensor, real: torch.Tensor) -> dict[str, float]:
    """Set means: uint8 (N, 3, H, W) x2 -> {"l1": float, "psnr": float, "ssim": float}."""
    per = pixel_metrics_per_sample(fake, real)
    return {k: float(v.mean()) for k, v in per.items()}


def _laplacian_variance(a: np.ndarray) -> np.ndarray:
    from scipy.ndimage import laplace

    luma = np.tensordot(np.array([0.299, 0.587, 0.114]), a.astype(np.float64) / 255.0, axes=([0], [1]))  # (N, H, W)
    return np.array([laplace(y, mode="reflect").var() for y in luma], dtype=np.float64)


def laplacian_variance(images: torch.Tensor) -> np.ndarray:
    """Per-image variance of the Laplacian of the luma: uint8 (N, 3, H, W) -> float64 array (N,)."""
    return _laplacian_variance(_as_numpy(images, images)[0])


def sharpness_ratio(fake: torch.Tensor, real: torch.Tensor) -> float | None:
    """Mean Laplacian variance of ``fake`` over that of ``real`` (see the module notes); None when
    ``real`` has none."""
    a, b = _as_numpy(fake, real)  # the same checks (and shape match) as the other metrics
    ref = float(_laplacian_variance(b).mean())
    return float(_laplacian_variance(a).mean()) / ref if ref > 0 else None
