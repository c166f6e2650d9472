"""Inception pool features (2048-d) of uint8 images, with torch-fidelity's extractor built from
vetted weights only, and a cache for the features of fixed image sets (the real images, the
all-black set), reused across models in memory and on disk.

Images are uint8 tensors of shape (N, 3, H, W); torch-fidelity resizes them to 299x299 itself.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from privaudit.errors import DataError, InputError, PrivauditError
from privaudit.evaluation.inception import EXTRACTOR_NAME, FEATURE_LAYER, load_vetted
from privaudit.io import atomic_torch_save

BATCH_SIZE = 64  # torch-fidelity's default batch_size: same batches, bit-identical features

__all__ = ["BATCH_SIZE", "FeatureCache", "FeatureStream", "batched_features", "cached_features", "check_images", "default_cache_dir", "extract_features",
           "extractor", "resolve_device", "streamed_cached_features"]


_EXTRACTORS: dict[tuple[str, str], torch.nn.Module] = {}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` means CUDA when available, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def extractor(weights: str | os.PathLike, device: torch.device) -> tuple[torch.nn.Module, str]:
    """torch-fidelity's extractor built from the vetted bytes (never from the file again); (module, sha)."""
    sha, sd = load_vetted(weights)
    key = (sha, str(device))
    if key not in _EXTRACTORS:
        from torch_fidelity.utils import create_feature_extractor

        from privaudit.models.vetting import weights_only_loads

        buf = io.BytesIO()
        torch.save(sd, buf)  # the vetted plain tensors, never the user's file
        buf.seek(0)
        with weights_only_loads():  # torch-fidelity asks for weights_only=False; it gets True
            ex = create_feature_extractor(
                EXTRACTOR_NAME, [FEATURE_LAYER], cuda=False, feature_extractor_weights_path=buf, verbose=False
            )
        _EXTRACTORS.clear()  # one extractor (about 100 MB) at a time
        _EXTRACTORS[key] = ex.to(device)
    return _EXTRACTORS[key], sha


def check_images(x: torch.Tensor, what: str, *, min_count: int = 1) -> None:
    """InputError unless ``x`` is a uint8 (N, 3, H, W) tensor; DataError when N < ``min_count``."""
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3:
        desc = f"{x.dtype} tensor of shape {list(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputError(f"{what} images must be a uint8 tensor of shape (N, 3, H, W), got {desc}")
    if x.shape[0] < min_count:
        raise DataError(f"KID needs at least {min_count} {what} images, got {x.shape[0]}")


def extract_features(
    images: torch.Tensor, *, weights: str | os.PathLike, device: str | torch.device | None = "cpu"
) -> torch.Tensor:
    """Inception pool features: uint8 (N, 3, H, W) -> float32 (N, 2048) on the CPU.

    torch-fidelity's extractor, in batches of 64 as ``torch_fidelity.calculate_metrics`` does.
    """
    check_images(images, "input")
    device = resolve_device(device)
    ex, _ = extractor(weights, device)
    return batched_features(ex, images, device)


def batched_features(ex: torch.nn.Module, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``ex``'s features of uint8 (N, 3, H, W) ``images`` in batches of BATCH_SIZE → float32 (N, D) on the CPU."""
    out = []
    with torch.no_grad():
        for i in range(0, images.shape[0], BATCH_SIZE):
            (f,) = ex(images[i : i + BATCH_SIZE].to(device))
            out.append(f.detach().to("cpu", torch.float32))
    return torch.cat(out)


class FeatureCache:
    """Features of fixed image sets (the real images, the all-black set), reused across models.

    In memory always; on disk under ``root`` (default ``~/.cache/privaudit/features``) unless
    ``disk=False``. Keyed by sha256 of (image bytes, shape, extractor name, feature layer, weights
    sha256). Files are written atomically and read with ``weights_only=True``; an unreadable or
    ill-shaped file counts as a miss and is rewritten; a cache folder that cannot be written is skipped.
    ``hits`` / ``misses`` count lookups.
    """

    def __init__(self, root: str | os.PathLike | None = None, *, disk: bool = True) -> None:
        self.root: Path | None = (Path(root).expanduser() if root is not None else default_cache_dir()) if disk else None
        self.hits = 0
        self.misses = 0
        self._mem: dict[str, torch.Tensor] = {}

    @staticmethod
    def key(images: torch.Tensor, weights_sha256: str, *, extractor: str = EXTRACTOR_NAME, layer: str = FEATURE_LAYER) -> str:
        h = FeatureCache.hasher(list(images.shape), images.dtype, weights_sha256, extractor=extractor, layer=layer)
        h.update(images.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    @staticmethod
    def hasher(shape: list[int], dtype: torch.dtype, weights_sha256: str, *, extractor: str = EXTRACTOR_NAME, layer: str = FEATURE_LAYER) -> Any:
        """The sha256 of ``key`` before the image bytes: fed a set's bytes in order, batch by batch
        (a streamed set), it gives the key of the whole tensor of ``shape``."""
        h = hashlib.sha256()
        h.update(f"{extractor}|{layer}|{weights_sha256}|{list(shape)}|{dtype}|".encode())
        return h

    def get(self, key: str, count: int) -> torch.Tensor | None:
        """Cached features for ``key`` (shape (count, D)), or None. Counts a hit or a miss."""
        feats = self._mem.get(key)
        if feats is None and self.root is not None:
            feats = self._read(self.root / f"{key}.pt", count)
            if feats is not None:
                self._mem[key] = feats
        if feats is None:
            self.misses += 1
        else:
            self.hits += 1
        return feats

    def put(self, key: str, feats: torch.Tensor) -> None:
        self._mem[key] = feats
        if self.root is None:
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            atomic_torch_save(self.root / f"{key}.pt", feats.contiguous())
        except (OSError, PrivauditError):
            pass  # a read-only cache folder costs time, not correctness

    @staticmethod
    def _read(path: Path, count: int) -> torch.Tensor | None:
        if not path.is_file():
            return None
        try:
            feats = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            return None
        ok = isinstance(feats, torch.Tensor) and feats.dim() == 2 and feats.shape[0] == count
        return feats if ok and feats.dtype == torch.float32 else None


def default_cache_dir() -> Path:
    """Where FeatureCache keeps its files by default: ``~/.cache/privaudit/features``."""
    return Path("~/.cache/privaudit/features").expanduser()


def cached_features(
    ex: torch.nn.Module, images: torch.Tensor, sha: str, device: torch.device, cache: FeatureCache | None
) -> torch.Tensor:
    """``batched_features`` through ``cache`` (keyed by the images and the weights' sha256); no cache: computed."""
    if cache is None:
        return batched_features(ex, images, device)
    key = cache.key(images, sha)
    feats = cache.get(key, images.shape[0])
    if feats is None:
        feats = batched_features(ex, images, device)
        cache.put(key, feats)
    return feats


class FeatureStream:
    """``batched_features`` of a set whose uint8 (n, 3, H, W) images arrive in batches of any size
    (a streamed set): they are regrouped into the batches of BATCH_SIZE that ``batched_features``
    cuts from the whole set, in order, so the features are the same to the bit."""

    def __init__(self, ex: torch.nn.Module, device: torch.device, what: str) -> None:
        self.ex, self.device, self.what = ex, device, what
        self._pending: list[torch.Tensor] = []
        self._count = 0
        self._out: list[torch.Tensor] = []

    def add(self, images: torch.Tensor) -> None:
        check_images(images, self.what, min_count=0)
        self._pending.append(images)
        self._count += int(images.shape[0])
        while self._count >= BATCH_SIZE:
            self._run(BATCH_SIZE)

    def _run(self, k: int) -> None:
        batch = torch.cat(self._pending)
        head, rest = batch[:k], batch[k:]
        self._pending, self._count = ([rest] if rest.shape[0] else []), int(rest.shape[0])
        with torch.no_grad():
            (f,) = self.ex(head.to(self.device))
        self._out.append(f.detach().to("cpu", torch.float32))

    def finish(self) -> torch.Tensor:
        """float32 (N, D) on the CPU for all images added."""
        if self._count:
            self._run(self._count)
        if not self._out:
            raise DataError(f"no {self.what} images to extract features from")
        return torch.cat(self._out)


def streamed_cached_features(ex: torch.nn.Module, sha: str, device: torch.device, cache: FeatureCache | None, *, shape: list[int], key: str | None,
                             batches: Callable[[], Iterable[torch.Tensor]], what: str) -> torch.Tensor:
    """``cached_features`` of a set of uint8 images of ``shape`` (N, 3, H, W) that is read batch by
    batch: ``key`` its ``FeatureCache.key`` (computed while it was read, None: not known), ``batches()``
    an iterator over its images in order, read only when the features are not cached."""
    if cache is not None and key is not None:
        feats = cache.get(key, shape[0])
        if feats is not None:
            return feats
    stream = FeatureStream(ex, device, what)
    for b in batches():
        stream.add(b)
    feats = stream.finish()
    if cache is not None and key is not None:
        cache.put(key, feats)
    return feats
