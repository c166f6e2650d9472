"""Shared fixtures: tiny image pairs written to tmp_path, a tiny generator checkpoint, and an
overfit teacher (session-scoped) for the end-to-end attack and defense tests.

Everything here is CPU-only and small: 32x32 images, U-Nets with ngf 4-8, a handful of pairs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

# No Rich progress bars in tests (they would go to CliRunner's stderr and clutter it).
os.environ["PRIVAUDIT_NO_PROGRESS"] = "1"

# Tiny tensors gain nothing from intra-op threads, and on a shared CI machine spinning OpenMP
# threads make them several times slower; one thread keeps the suite fast and steady.
torch.set_num_threads(1)

from privaudit.models.arch import UnetArch  # noqa: E402
from privaudit.models.checkpoint import save_checkpoint  # noqa: E402
from privaudit.models.networks import UnetGenerator, init_weights  # noqa: E402

TINY_ARCH = UnetArch(input_nc=3, output_nc=3, num_downs=5, ngf=4, norm="batch", use_dropout=True)


def _smooth_image(rng: np.random.Generator, size: int, cells: int = 4) -> np.ndarray:
    """A (size, size, 3) uint8 image of random colour blocks: structure a U-Net can learn."""
    low = rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(low).resize((size, size), Image.NEAREST))


def pair_arrays(n: int, size: int = 32, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` (A, B) uint8 arrays of shape (size, size, 3).

    B is a fixed function of A (colour inversion) plus a private per-pair pattern, so a model that
    memorises its training pairs reconstructs members better than non-members.
    """
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a = _smooth_image(rng, size, cells=4)
        private = _smooth_image(rng, size, cells=8)
        b = ((255 - a.astype(np.int32)) // 2 + private.astype(np.int32) // 2).clip(0, 255).astype(np.uint8)
        out.append((a, b))
    return out


def write_pairs(root: str | Path, n: int, size: int = 32, layout: str = "aligned", seed: int = 0, prefix: str = "img") -> Path:
    """Write ``n`` PNG pairs under ``root`` and return ``root``.

    ``layout="aligned"``: ``root/<name>.png`` holding A|B side by side (width 2*size);
    ``layout="folders"``: ``root/A/<name>.png`` and ``root/B/<name>.png``.
    """
    root = Path(root)
    if layout not in ("aligned", "folders"):
        raise ValueError(f"unknown layout {layout!r}")
    if layout == "folders":
        (root / "A").mkdir(parents=True, exist_ok=True)
        (root / "B").mkdir(parents=True, exist_ok=True)
    else:
        root.mkdir(parents=True, exist_ok=True)
    for i, (a, b) in enumerate(pair_arrays(n, size, seed)):
        name = f"{prefix}{i:03d}.png"
        if layout == "aligned":
            Image.fromarray(np.concatenate([a, b], axis=1)).save(root / name)
        else:
            Image.fromarray(a).save(root / "A" / name)
            Image.fromarray(b).save(root / "B" / name)
    return root


@pytest.fixture
def make_pairs() -> Callable[..., Path]:
    """``make_pairs(root, n, size=32, layout="aligned"|"folders", seed=0)`` → root."""
    return write_pairs


def tiny_generator(arch: UnetArch = TINY_ARCH, seed: int = 0) -> UnetGenerator:
    """A seeded U-Net with non-trivial BatchNorm running statistics (so eval mode matters)."""
    g = torch.Generator().manual_seed(seed)
    net = UnetGenerator(arch)
    init_weights(net, generator=g)
    with torch.no_grad():
        for name, buf in net.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(0.1 * torch.randn(buf.shape, generator=g))
            elif name.endswith("running_var"):
                buf.copy_(0.5 + torch.rand(buf.shape, generator=g))
        for m in net.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)) and m.bias is not None:
                m.bias.normal_(0.0, 0.05, generator=g)
    return net.eval()


@pytest.fixture
def tiny_net() -> UnetGenerator:
    """A fresh tiny U-Net (num_downs 5, ngf 4, batch norm, dropout), in eval mode."""
    return tiny_generator()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A privaudit checkpoint of ``tiny_generator()`` for 32x32 images, direction AtoB. Read-only."""
    path = tmp_path_factory.mktemp("tiny_ckpt") / "tiny.pt"
    save_checkpoint(path, generator=tiny_generator(), image_size=32, direction="AtoB")
    return path


# ---------------------------------------------------------------------------------------------
# overfit teacher: a model that clearly leaks membership

OVERFIT_PAIRS = 10  # the fewest an attack accepts without --allow-small
OVERFIT_EPOCHS = 100


def build_overfit_teacher(root: Path, *, epochs: int = OVERFIT_EPOCHS, seed: int = 0) -> tuple[Path, Path, Path]:
    """Train a tiny pix2pix teacher on OVERFIT_PAIRS member pairs until it memorises them.

    Returns (checkpoint, members dir, non-members dir); non-members come from the same
    distribution (another seed), so only memorisation separates the two sets.
    """
    from privaudit.models.arch import ModelSpec
    from privaudit.training import TrainConfig, train

    members = write_pairs(root / "members", OVERFIT_PAIRS, seed=seed + 1, prefix="m")
    nonmembers = write_pairs(root / "nonmembers", OVERFIT_PAIRS, seed=seed + 2, prefix="n")
    ckpt = root / "teacher.pt"
    cfg = TrainConfig(epochs=epochs, batch_size=5, augment=False, ndf=8, seed=seed, device="cpu", lr=1e-3)  # 2 steps an epoch
    train(members, ckpt, direction="AtoB", size=32, model=ModelSpec(ngf=8, num_downs=5), config=cfg)
    return ckpt, members, nonmembers


@pytest.fixture(scope="session")
def overfit_teacher(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(checkpoint path, members dir, non-members dir) of a teacher overfit on its OVERFIT_PAIRS members. Read-only."""
    return build_overfit_teacher(tmp_path_factory.mktemp("overfit"))


# ---------------------------------------------------------------------------------------------
# KID on a CPU


@pytest.fixture(scope="module")
def fast_cpu_inception():
    """One intra-op thread, and Inception fed 75x75 instead of 299x299 (16x less work).

    With two threads on a busy shared CPU each forward can take seconds (threads waiting on each
    other). torch-fidelity resizes every input to the class attribute ``INPUT_IMAGE_SIZE``; 75 is the
    smallest InceptionV3 accepts, and nothing tested with it depends on the size except comparisons
    with ``torch_fidelity.calculate_metrics``, which set the real 299 themselves.
    A test module asks for it by name: ``pytestmark = pytest.mark.usefixtures("fast_cpu_inception")``.
    """
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(FeatureExtractorInceptionV3, "INPUT_IMAGE_SIZE", 75)
        yield
    torch.set_num_threads(before)
