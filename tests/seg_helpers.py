"""Tiny segmentation data and models for the tests: photos (A/) and palette label maps (B/)
written to tmp_path, and an overfit U-Net (trained once per session by the tests that need it).

The photos are blocks of class colours with pixel noise, so a network can learn colour → class
(what generalises); each label map also relabels a few random cells to classes the photo does not
show (what only memorisation gets right): a model that overfits its members has a lower loss on
them than on non-members.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

PALETTE = [(0, 0, 0), (128, 0, 0), (0, 128, 0), (0, 0, 128), (128, 128, 0), (0, 128, 128)]
COLOURS = np.array([(40, 40, 40), (200, 60, 60), (60, 200, 60), (60, 60, 200), (200, 200, 60), (60, 200, 200)], dtype=np.int32)


def seg_arrays(n: int, size: int = 32, num_classes: int = 4, seed: int = 0, private: float = 0.3) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` (photo (size, size, 3) uint8, labels (size, size) uint8) pairs."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        cells = rng.integers(0, num_classes, (4, 4))
        labels = np.kron(cells, np.ones((size // 4, size // 4), dtype=np.int64))
        photo = COLOURS[labels] + rng.integers(-25, 26, (size, size, 3))
        fine = size // 8
        flip = rng.random((8, 8)) < private
        relabel = rng.integers(0, num_classes, (8, 8))
        labels = np.where(np.kron(flip, np.ones((fine, fine), dtype=bool)), np.kron(relabel, np.ones((fine, fine), dtype=np.int64)), labels)
        out.append((photo.clip(0, 255).astype(np.uint8), labels.astype(np.uint8)))
    return out


def palette_image(labels: np.ndarray, palette=PALETTE) -> Image.Image:
    im = Image.fromarray(labels, mode="P")
    flat = [v for c in palette for v in c]
    im.putpalette(flat + [0] * (768 - len(flat)))
    return im


def write_seg(root: str | Path, n: int, size: int = 32, num_classes: int = 4, seed: int = 0, prefix: str = "s", label_format: str = "palette",
              private: float = 0.3) -> Path:
    """Write ``n`` pairs as ``root/A/<name>.png`` (photo) and ``root/B/<name>.png`` (label map:
    ``palette`` PNG, ``grey`` PNG of indices, or ``rgb`` colour PNG); returns ``root``."""
    root = Path(root)
    (root / "A").mkdir(parents=True, exist_ok=True)
    (root / "B").mkdir(parents=True, exist_ok=True)
    for i, (photo, labels) in enumerate(seg_arrays(n, size, num_classes, seed, private)):
        name = f"{prefix}{i:03d}.png"
        Image.fromarray(photo).save(root / "A" / name)
        if label_format == "palette":
            palette_image(labels).save(root / "B" / name)
        elif label_format == "grey":
            Image.fromarray(labels, mode="L").save(root / "B" / name)
        elif label_format == "rgb":
            Image.fromarray(np.array(PALETTE, dtype=np.uint8)[labels]).save(root / "B" / name)
        else:
            raise ValueError(label_format)
    return root


OVERFIT_N = 12
OVERFIT_EPOCHS = 60


def build_overfit_segmenter(root: Path, *, epochs: int = OVERFIT_EPOCHS, seed: int = 0, n: int = OVERFIT_N) -> tuple[Path, Path, Path]:
    """A tiny U-Net (ngf 8) trained on ``n`` members until it memorises their private cells.
    Returns (checkpoint, members, non-members)."""
    from privaudit.training.segmentation import SegTrainConfig, train_segmentation

    members = write_seg(root / "members", n, seed=seed + 1, prefix="m")
    nonmembers = write_seg(root / "nonmembers", n, seed=seed + 2, prefix="n")
    ckpt = root / "seg.pt"
    cfg = SegTrainConfig(epochs=epochs, batch_size=6, lr=2e-3, augment=False, seed=seed, device="cpu")
    train_segmentation(members, ckpt, num_classes=4, size=32, ngf=8, config=cfg)
    return ckpt, members, nonmembers
