"""Test helpers: a randomly initialised Inception weights file for torch-fidelity, and small image sets.
(The fixture that makes Inception fast on a CPU, ``fast_cpu_inception``, is in conftest.py.)

No download: the architecture is torch-fidelity's ``FeatureExtractorInceptionV3`` built without weights
(``privaudit.evaluation.inception.build_inception_without_weights``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from privaudit.evaluation.inception import build_inception_without_weights


def smooth_images(n: int, size: int = 32, *, seed: int = 0) -> torch.Tensor:
    """uint8 (n, 3, size, size): random 4x4 colour fields upsampled bilinearly, plus a little pixel noise."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g)
    x = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    x = x + 0.05 * torch.randn(x.shape, generator=g)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def noisy_copy(images: torch.Tensor, sigma: float = 12.0, *, seed: int = 1) -> torch.Tensor:
    """uint8 images plus Gaussian noise of ``sigma`` grey levels (a "decent model's" outputs)."""
    g = torch.Generator().manual_seed(seed)
    x = images.float() + sigma * torch.randn(images.shape, generator=g)
    return x.clamp(0, 255).round().to(torch.uint8)


def make_random_inception_weights(path: str | Path, *, seed: int = 0, batches: int = 2, batch_size: int = 8) -> Path:
    """Write a state dict for torch-fidelity's InceptionV3 with random weights to ``path``; return it.

    The BatchNorm running statistics are recalibrated (train mode, ``momentum=None``: a cumulative
    average) on ``batches`` batches of smooth random images: under the default statistics (mean 0,
    variance 1) a random network's features shrink to about 1e-8 and every KID is 0.
    """
    path = Path(path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_inception_without_weights("cpu")
        bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None
            bn.train()
        with torch.no_grad():
            for i in range(batches):
                model(smooth_images(batch_size, 32, seed=1000 + seed * batches + i))
        model.eval()
    torch.save(model.state_dict(), path)
    return path
