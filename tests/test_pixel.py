"""L1 / PSNR / SSIM / sharpness against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from privaudit.errors import DataError
from privaudit.evaluation.pixel import PSNR_MAX_DB, laplacian_variance, pixel_metrics, pixel_metrics_per_sample, sharpness_ratio, ssim_win_size


def const(n: int, value: int, size: int = 8) -> torch.Tensor:
    return torch.full((n, 3, size, size), value, dtype=torch.uint8)


def test_constant_images_by_hand() -> None:
    m = pixel_metrics(const(2, 100), const(2, 50))
    assert m["l1"] == pytest.approx(50 / 127.5, rel=1e-12)  # |100-50| on the [-1, 1] scale
    assert m["psnr"] == pytest.approx(20 * math.log10(255 / 50), rel=1e-12)  # MSE = 50^2
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2  # zero variances: SSIM is the luminance term only
    assert m["ssim"] == pytest.approx((2 * 100 * 50 + c1) / (100**2 + 50**2 + c1) * c2 / c2, rel=1e-9)


def test_identical_images() -> None:
    x = (torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    m = pixel_metrics(x, x.clone())
    assert m["l1"] == 0.0
    assert m["ssim"] == pytest.approx(1.0, abs=1e-12)
    assert m["psnr"] == PSNR_MAX_DB  # MSE 0: capped, so the report stays finite JSON


def test_extremes_and_per_sample_means() -> None:
    black, white = const(1, 0), const(1, 255)
    assert pixel_metrics(black, white)["l1"] == pytest.approx(2.0)
    assert pixel_metrics(black, white)["psnr"] == pytest.approx(0.0, abs=1e-12)
    fake = torch.cat([const(1, 10), const(1, 30)])
    real = torch.cat([const(1, 10), const(1, 20)])
    per = pixel_metrics_per_sample(fake, real)
    assert set(per) == {"l1", "psnr", "ssim"} and all(v.shape == (2,) for v in per.values())
    np.testing.assert_allclose(per["l1"], [0.0, 10 / 127.5])
    np.testing.assert_allclose(per["psnr"], [PSNR_MAX_DB, 20 * math.log10(255 / 10)])
    assert pixel_metrics(fake, real)["l1"] == pytest.approx(5 / 127.5)


def test_matches_scikit_image_on_random_images() -> None:
    g = torch.Generator().manual_seed(1)
    a = (torch.rand(2, 3, 20, 24, generator=g) * 255).to(torch.uint8)
    b = (torch.rand(2, 3, 20, 24, generator=g) * 255).to(torch.uint8)
    per = pixel_metrics_per_sample(a, b)
    for i in range(2):
        x, y = a[i].permute(1, 2, 0).numpy(), b[i].permute(1, 2, 0).numpy()
        assert per["psnr"][i] == pytest.approx(peak_signal_noise_ratio(x, y, data_range=255), rel=1e-12)
        assert per["ssim"][i] == pytest.approx(structural_similarity(x, y, channel_axis=-1, data_range=255), rel=1e-12)


@pytest.mark.parametrize(("h", "w", "win"), [(64, 64, 7), (7, 30, 7), (6, 9, 5), (5, 5, 5), (4, 8, 3), (3, 3, 3)])
def test_ssim_window_fits_small_images(h: int, w: int, win: int) -> None:
    assert ssim_win_size(h, w) == win
    x = (torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(2)) * 255).to(torch.uint8)
    assert pixel_metrics(x, x)["ssim"] == pytest.approx(1.0, abs=1e-12)


def test_bad_inputs() -> None:
    with pytest.raises(DataError, match="at least 3x3"):
        pixel_metrics(const(1, 0, 2), const(1, 0, 2))
    with pytest.raises(DataError, match="differ in shape"):
        pixel_metrics(const(1, 0, 8), const(2, 0, 8))
    with pytest.raises(DataError, match="uint8"):
        pixel_metrics(const(1, 0).float(), const(1, 0))


def impulses(*points: tuple[int, int], size: int = 8) -> torch.Tensor:
    """One grey 8x8 image, black but for white pixels at ``points`` (luma 1 there, 0 elsewhere)."""
    x = torch.zeros(1, 3, size, size, dtype=torch.uint8)
    for i, j in points:
        x[0, :, i, j] = 255
    return x


def test_sharpness_by_hand() -> None:
    # One interior white pixel: the 5-point Laplacian is -4 there and +1 at its 4 neighbours, 0
    # elsewhere; over 64 pixels the mean is 0 and the variance (16 + 4) / 64.
    assert laplacian_variance(impulses((3, 3)))[0] == pytest.approx(20 / 64, rel=1e-12)
    two = impulses((2, 2), (5, 5))  # far enough apart that their stencils do not meet
    assert laplacian_variance(two)[0] == pytest.approx(40 / 64, rel=1e-12)
    assert sharpness_ratio(impulses((3, 3)), two) == pytest.approx(0.5, rel=1e-12)
    assert sharpness_ratio(two, two.clone()) == 1.0
    assert sharpness_ratio(two, const(1, 77)) is None  # targets without any detail: no reference


def test_sharpness_matches_an_independent_stencil() -> None:
    x = (torch.rand(3, 3, 12, 10, generator=torch.Generator().manual_seed(1)) * 255).to(torch.uint8)
    luma = np.einsum("c,nchw->nhw", np.array([0.299, 0.587, 0.114]), x.numpy().astype(np.float64) / 255)
    p = np.pad(luma, ((0, 0), (1, 1), (1, 1)), mode="symmetric")  # scipy's "reflect" repeats the edge pixel
    lap = p[:, :-2, 1:-1] + p[:, 2:, 1:-1] + p[:, 1:-1, :-2] + p[:, 1:-1, 2:] - 4 * p[:, 1:-1, 1:-1]
    np.testing.assert_allclose(laplacian_variance(x), lap.reshape(3, -1).var(axis=1), rtol=1e-12)


def test_sharpness_falls_with_blur_and_rises_with_noise() -> None:
    g = torch.Generator().manual_seed(2)
    real = (torch.rand(4, 3, 32, 32, generator=g) * 255).to(torch.uint8)
    blurred = torch.nn.functional.avg_pool2d(real.float(), 3, stride=1, padding=1, count_include_pad=False).round().to(torch.uint8)
    smooth = torch.nn.functional.interpolate(torch.rand(4, 3, 4, 4, generator=g), size=32, mode="bilinear")
    smooth_u8 = (smooth * 255).round().to(torch.uint8)
    noisy = (smooth * 255 + 40 * torch.randn(4, 3, 32, 32, generator=g)).clamp(0, 255).round().to(torch.uint8)
    assert sharpness_ratio(blurred, real) < 0.5
    assert sharpness_ratio(noisy, smooth_u8) > 10


def test_sharpness_rejects_what_the_other_metrics_reject() -> None:
    with pytest.raises(DataError, match="differ in shape"):
        sharpness_ratio(const(1, 0, size=8), const(1, 0, size=9))
