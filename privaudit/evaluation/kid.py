"""KID and NKID with torch-fidelity's Inception (``inception-v3-compat``, 2048-d pool features).

The KID arithmetic is torch-fidelity's own (``metric_kid.kid_features_to_metric``); this module only

* finds the Inception weights without downloading anything (:func:`resolve_inception_weights`),
* vets a weights file before torch-fidelity sees it (:func:`vet_inception_weights`): torch-fidelity
  opens weights with ``torch.load(weights_only=False)``, so a stranger's file could run code,
* caches the features of the real (ground-truth) images across models (:class:`FeatureCache`),
* clamps ``kid_subset_size`` to the set sizes and reports the value used.

Images are uint8 tensors of shape (N, 3, H, W); torch-fidelity resizes them to 299x299 itself.
torch-fidelity is imported lazily: importing this module costs only torch.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from privaudit.errors import DataError, InputError, PrivauditError, WeightsError
from privaudit.io import atomic_torch_save

EXTRACTOR_NAME = "inception-v3-compat"
FEATURE_LAYER = "2048"
INCEPTION_WEIGHTS_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
INCEPTION_WEIGHTS_FILENAME = "weights-inception-2015-12-05-6726825d.pth"
WEIGHTS_ENV = "PRIVAUDIT_INCEPTION_WEIGHTS"
DEFAULT_SUBSET_SIZE = 1000  # torch-fidelity's default kid_subset_size
BATCH_SIZE = 64  # torch-fidelity's default batch_size: same batches, bit-identical features
# KID_black at or below this fraction of the kernel sums it is the difference of is float32 round-off,
# not a distance: NKID is then refused.
BLACK_RTOL = 1e-5

__all__ = [
    "EXTRACTOR_NAME",
    "FEATURE_LAYER",
    "INCEPTION_WEIGHTS_FILENAME",
    "WEIGHTS_ENV",
    "FeatureCache",
    "KIDResult",
    "NKIDResult",
    "build_inception_without_weights",
    "compute_kid",
    "compute_nkid",
    "extract_features",
    "hub_weights_path",
    "resolve_inception_weights",
    "vet_inception_weights",
]


# ----------------------------------------------------------------------------- weights: where


def hub_weights_path() -> Path:
    """Where torch-fidelity's own download would land: ``torch.hub.get_dir()/checkpoints/<file name>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILENAME


def resolve_inception_weights(explicit: str | os.PathLike | None = None) -> Path:
    """The Inception weights file to use, without downloading.

    Order: ``explicit`` (``--inception-weights FILE``), the ``PRIVAUDIT_INCEPTION_WEIGHTS`` environment
    variable, then torch hub's checkpoint cache (:func:`hub_weights_path`). Raises WeightsError (one line:
    the expected file name and where to put it) when none is found.
    """
    hint = (
        f"run `privaudit weights fetch` (downloads {INCEPTION_WEIGHTS_FILENAME}, checks its SHA-256, puts it in "
        f"{hub_weights_path().parent}), or put that file there from {INCEPTION_WEIGHTS_URL}, "
        f"or pass --inception-weights FILE, or set {WEIGHTS_ENV}=FILE"
    )
    if explicit is not None and str(explicit) != "":
        p = Path(explicit).expanduser()
        if not p.is_file():
            raise WeightsError(f"Inception weights file {p} (--inception-weights) not found; {hint}")
        return p
    env = os.environ.get(WEIGHTS_ENV, "").strip()
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            raise WeightsError(f"Inception weights file {p} (from {WEIGHTS_ENV}) not found; {hint}")
        return p
    hub = hub_weights_path()
    if hub.is_file():
        return hub
    raise WeightsError(f"Inception weights for KID not found (evaluate never downloads); {hint}")


# ----------------------------------------------------------------------------- weights: vetting


def build_inception_without_weights(device: str | torch.device = "cpu") -> torch.nn.Module:
    """torch-fidelity's ``FeatureExtractorInceptionV3`` (features ``["2048"]``), randomly initialised.

    Its constructor always loads weights (downloading when given no path); here it is handed an empty
    in-memory state dict and its ``load_state_dict`` is skipped during construction. ``device="meta"``
    builds the shapes only (instant, no memory). The module is in eval mode with frozen parameters.
    """
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Unloaded(FeatureExtractorInceptionV3):
        _constructing = True

        def load_state_dict(self, state_dict: Any, *args: Any, **kwargs: Any) -> Any:
            if self._constructing:
                return None
            return super().load_state_dict(state_dict, *args, **kwargs)

    empty = io.BytesIO()
    torch.save({}, empty)
    empty.seek(0)
    with torch.device(device):
        model = _Unloaded(EXTRACTOR_NAME, [FEATURE_LAYER], feature_extractor_weights_path=empty)
    model._constructing = False
    return model


@lru_cache(maxsize=1)
def _expected_state() -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Key -> (shape, dtype) of FeatureExtractorInceptionV3's state_dict."""
    sd = build_inception_without_weights("meta").state_dict()
    return {k: (tuple(v.shape), v.dtype) for k, v in sd.items()}


_VETTED: dict[str, dict[str, torch.Tensor]] = {}  # weights sha256 -> vetted state dict (a few entries)


def _load_vetted(path: str | os.PathLike) -> tuple[str, dict[str, torch.Tensor]]:
    """Read ``path`` once, hash those bytes, vet them; return (sha256, plain state dict)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise WeightsError(f"cannot read Inception weights {p}: {exc.strerror or exc}") from None
    sha = hashlib.sha256(data).hexdigest()
    if sha in _VETTED:
        return sha, _VETTED[sha]
    import pickle

    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise WeightsError(
            f"refusing Inception weights {p}: it needs unpickling of arbitrary Python objects (it could run code); "
            f"use torch-fidelity's {INCEPTION_WEIGHTS_FILENAME}"
        ) from None
    except Exception as exc:  # not a torch file at all: zip/pickle/EOF errors of many kinds
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"cannot read Inception weights {p} as a torch file ({first}); use {INCEPTION_WEIGHTS_FILENAME}") from None
    sd = _check_state_dict(obj, p)
    while len(_VETTED) >= 2:
        _VETTED.pop(next(iter(_VETTED)))
    _VETTED[sha] = sd
    return sha, sd


def _check_state_dict(obj: Any, p: Path) -> dict[str, torch.Tensor]:
    """Keys, shapes, dtypes and finiteness against torch-fidelity's InceptionV3; returns a plain dict.

    ``*.num_batches_tracked`` may be absent (torch-fidelity's official file has none); it is filled with 0.
    """
    if not isinstance(obj, dict):
        raise WeightsError(f"refusing Inception weights {p}: expected a state dict of tensors, got {type(obj).__name__}")
    expected = _expected_state()
    for k, v in obj.items():
        if not isinstance(k, str) or k not in expected:
            raise WeightsError(f"Inception weights {p} do not fit torch-fidelity's InceptionV3: unexpected key {k!r}")
        if not isinstance(v, torch.Tensor):
            raise WeightsError(f"refusing Inception weights {p}: {k!r} is a {type(v).__name__}, not a tensor")
    out: dict[str, torch.Tensor] = {}
    for k, (shape, dtype) in expected.items():
        v = obj.get(k)
        if v is None:
            if k.endswith("num_batches_tracked"):
                out[k] = torch.zeros((), dtype=dtype)
                continue
            raise WeightsError(f"Inception weights {p} do not fit torch-fidelity's InceptionV3: missing key {k!r}")
        if tuple(v.shape) != shape:
            raise WeightsError(
                f"Inception weights {p} do not fit torch-fidelity's InceptionV3: key {k!r} has shape "
                f"{list(v.shape)}, expected {list(shape)}"
            )
        if dtype.is_floating_point:
            if not v.dtype.is_floating_point:
                raise WeightsError(f"Inception weights {p}: key {k!r} has dtype {v.dtype}, expected a float tensor")
            if not bool(torch.isfinite(v).all()):
                raise WeightsError(f"Inception weights {p}: key {k!r} holds non-finite values (NaN or inf)")
        out[k] = v
    return out


def vet_inception_weights(path: str | os.PathLike) -> str:
    """Check an Inception weights file without running any code from it; return its sha256.

    Loads with ``torch.load(weights_only=True)`` and compares keys and shapes with torch-fidelity's
    ``FeatureExtractorInceptionV3``; raises WeightsError ("refusing ..." for pickled objects, the key for
    a mismatch, non-finite values). A file is vetted once per process (cached by sha256).
    """
    return _load_vetted(path)[0]


# ----------------------------------------------------------------------------- features

_EXTRACTORS: dict[tuple[str, str], torch.nn.Module] = {}


def _device(device: str | torch.device | None) -> torch.device:
    """``None`` means CUDA when available, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _extractor(weights: str | os.PathLike, device: torch.device) -> tuple[torch.nn.Module, str]:
    """torch-fidelity's extractor built from the vetted bytes (never from the file again); (module, sha)."""
    sha, sd = _load_vetted(weights)
    key = (sha, str(device))
    if key not in _EXTRACTORS:
        from torch_fidelity.utils import create_feature_extractor

        buf = io.BytesIO()
        torch.save(sd, buf)  # plain tensors only: torch-fidelity's weights_only=False load is safe on these bytes
        buf.seek(0)
        ex = create_feature_extractor(
            EXTRACTOR_NAME, [FEATURE_LAYER], cuda=False, feature_extractor_weights_path=buf, verbose=False
        )
        _EXTRACTORS.clear()  # one extractor (about 100 MB) at a time
        _EXTRACTORS[key] = ex.to(device)
    return _EXTRACTORS[key], sha


def _check_images(x: torch.Tensor, what: str, *, min_count: int = 1) -> None:
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
    _check_images(images, "input")
    device = _device(device)
    ex, _ = _extractor(weights, device)
    return _features(ex, images, device)


def _features(ex: torch.nn.Module, images: torch.Tensor, device: torch.device) -> torch.Tensor:
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
        h = hashlib.sha256()
        h.update(f"{extractor}|{layer}|{weights_sha256}|{list(images.shape)}|{images.dtype}|".encode())
        h.update(images.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

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
    return Path("~/.cache/privaudit/features").expanduser()


def _cached_features(
    ex: torch.nn.Module, images: torch.Tensor, sha: str, device: torch.device, cache: FeatureCache | None
) -> torch.Tensor:
    if cache is None:
        return _features(ex, images, device)
    key = cache.key(images, sha)
    feats = cache.get(key, images.shape[0])
    if feats is None:
        feats = _features(ex, images, device)
        cache.put(key, feats)
    return feats


# ----------------------------------------------------------------------------- KID


@dataclass(frozen=True)
class KIDResult:
    """KID (mean over ``subsets`` random subsets of ``subset_size``) and its std over subsets."""

    kid: float
    kid_std: float
    subset_size: int
    subsets: int
    seed: int
    feature_extractor: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class NKIDResult:
    """NKID = KID / KID_black; KID_black is the KID of all-black images of the fake set's count and size."""

    kid: float
    kid_std: float
    kid_black: float
    kid_black_std: float
    nkid: float
    subset_size: int
    subsets: int
    seed: int
    feature_extractor: dict[str, Any] = field(default_factory=dict)

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
    return min(DEFAULT_SUBSET_SIZE if requested is None else int(requested), n_fake, n_real)


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
    _check_images(fake, "generated", min_count=2)
    _check_images(real, "real", min_count=2)
    if isinstance(subsets, bool) or int(subsets) < 1:
        raise InputError(f"KID subsets must be at least 1, got {subsets}")
    if not 0 <= int(seed) < 2**32:
        raise InputError(f"KID seed must be in [0, 2**32), got {seed}")


def _prepare(fake, real, weights, subset_size, subsets, seed, cache, device):
    """Checks, the subset size used, the vetted extractor and the (cached) real features."""
    _check_args(fake, real, subsets, seed)
    size = _subset_size(subset_size, fake.shape[0], real.shape[0])
    device = _device(device)
    ex, sha = _extractor(weights, device)
    return size, device, ex, sha, _cached_features(ex, real, sha, device, cache)


def compute_kid(
    fake: torch.Tensor,
    real: torch.Tensor,
    *,
    weights: str | os.PathLike,
    subset_size: int | None = None,
    subsets: int = 100,
    seed: int = 0,
    cache: FeatureCache | None = None,
    device: str | torch.device | None = "cpu",
) -> KIDResult:
    """KID between generated ``fake`` (input1) and ``real`` (input2) uint8 (N, 3, H, W) images.

    Same value as ``torch_fidelity.calculate_metrics(input1=fake, input2=real, kid=True,
    kid_subset_size=..., kid_subsets=subsets, rng_seed=seed)``. ``subset_size`` (default 1000) is
    clamped to the smaller set; the value used is in the result. Real features go through ``cache``.
    ``device=None``: CUDA when available, else the CPU.
    """
    size, device, ex, sha, f_real = _prepare(fake, real, weights, subset_size, subsets, seed, cache, device)
    f_fake = _features(ex, fake, device)
    kid, std = _kid(f_fake, f_real, size, int(subsets), int(seed))
    return KIDResult(kid, std, size, int(subsets), int(seed), _extractor_info(sha))


def compute_nkid(
    fake: torch.Tensor,
    real: torch.Tensor,
    *,
    weights: str | os.PathLike,
    subset_size: int | None = None,
    subsets: int = 100,
    seed: int = 0,
    cache: FeatureCache | None = None,
    device: str | torch.device | None = "cpu",
) -> NKIDResult:
    """KID of ``fake`` against ``real``, and NKID = KID / KID_black.

    KID_black: all-black uint8 images (zeros) of ``fake``'s count and size against the same real
    images, same subset size and seed (the paper's KID_max). Raises DataError if KID_black <= 0
    (real images that are themselves near black, or degenerate weights): NKID is then undefined.
    """
    size, device, ex, sha, f_real = _prepare(fake, real, weights, subset_size, subsets, seed, cache, device)
    f_black = _cached_features(ex, torch.zeros_like(fake), sha, device, cache)
    f_fake = _features(ex, fake, device)
    kid, std = _kid(f_fake, f_real, size, int(subsets), int(seed))
    kid_black, std_black = _kid(f_black, f_real, size, int(subsets), int(seed))
    if not kid_black > BLACK_RTOL * _kernel_scale(f_black, f_real):
        raise DataError(
            f"KID of all-black images against the real images is {kid_black:.3g} (about 0 or below), so NKID is "
            "undefined: the real images look black to the feature extractor (or the Inception weights are degenerate)"
        )
    return NKIDResult(kid, std, kid_black, std_black, kid / kid_black, size, int(subsets), int(seed), _extractor_info(sha))
