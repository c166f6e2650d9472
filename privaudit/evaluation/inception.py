"""torch-fidelity's Inception weights (``inception-v3-compat``): finding the file without
downloading anything (:func:`resolve_inception_weights`) and vetting it before torch-fidelity sees it
(:func:`vet_inception_weights`).

torch-fidelity opens weights with ``torch.load(weights_only=False)``, so a stranger's file could run
code: the file is read once, unpickled by the restricted unpickler, checked key by key against the
network, and only the vetted tensors are handed on (``load_vetted``). torch-fidelity is imported
lazily: importing this module costs only torch.
"""

from __future__ import annotations

import hashlib
import io
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from privaudit.errors import WeightsError

EXTRACTOR_NAME = "inception-v3-compat"
FEATURE_LAYER = "2048"
from privaudit.defaults import INCEPTION_WEIGHTS_FILENAME, INCEPTION_WEIGHTS_URL, WEIGHTS_ENV  # noqa: E402  (re-exported)

__all__ = [
    "EXTRACTOR_NAME",
    "FEATURE_LAYER",
    "INCEPTION_WEIGHTS_FILENAME",
    "INCEPTION_WEIGHTS_URL",
    "WEIGHTS_ENV",
    "build_inception_without_weights",
    "hub_weights_path",
    "load_vetted",
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
        if p.is_dir():
            raise WeightsError(f"Inception weights {p} (--inception-weights) is a folder; give the file {INCEPTION_WEIGHTS_FILENAME} inside it")
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

    from privaudit.models.vetting import weights_only_loads

    empty = io.BytesIO()
    torch.save({}, empty)
    empty.seek(0)
    with torch.device(device), weights_only_loads():
        model = _Unloaded(EXTRACTOR_NAME, [FEATURE_LAYER], feature_extractor_weights_path=empty)
    model._constructing = False
    return model


@lru_cache(maxsize=1)
def _expected_state() -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Key -> (shape, dtype) of FeatureExtractorInceptionV3's state_dict."""
    sd = build_inception_without_weights("meta").state_dict()
    return {k: (tuple(v.shape), v.dtype) for k, v in sd.items()}


_VETTED: dict[str, dict[str, torch.Tensor]] = {}  # weights sha256 -> vetted state dict (a few entries)


def load_vetted(path: str | os.PathLike) -> tuple[str, dict[str, torch.Tensor]]:
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

    from privaudit.models.vetting import diagnose_pickle, restricted_load

    corrupt = (
        f"Inception weights {p} is not a torch weights file or is corrupt (truncated download?); "
        f"download {INCEPTION_WEIGHTS_FILENAME} again from {INCEPTION_WEIGHTS_URL}"
    )
    if not data:
        raise WeightsError(f"Inception weights {p} is empty (0 bytes); download {INCEPTION_WEIGHTS_FILENAME} again from {INCEPTION_WEIGHTS_URL}")
    try:
        obj = restricted_load(data)
    except pickle.UnpicklingError as exc:
        kind, detail = diagnose_pickle(data, str(exc))
        if kind == "dangerous":
            named = f" ({detail})" if detail else ""
            raise WeightsError(
                f"refusing Inception weights {p}: it holds pickled Python objects{named}, which could run code; "
                f"use torch-fidelity's {INCEPTION_WEIGHTS_FILENAME}"
            ) from None
        if kind == "protocol":
            raise WeightsError(
                f"Inception weights {p} were saved with pickle protocol {detail}, which the restricted unpickler cannot read; "
                "re-save them with torch.save(state_dict, path) and the default protocol"
            ) from None
        raise WeightsError(corrupt) from None
    except Exception:  # not a torch file at all: zip/pickle/EOF errors of many kinds
        raise WeightsError(corrupt) from None
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
        if type(v) not in (torch.Tensor, torch.nn.Parameter):
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
        out[k] = v.detach()  # a plain tensor: re-saved for torch-fidelity, it pickles as tensor data only
    return out


def vet_inception_weights(path: str | os.PathLike) -> str:
    """Check an Inception weights file without running any code from it; return its sha256.

    Loads with ``torch.load(weights_only=True)`` and compares keys and shapes with torch-fidelity's
    ``FeatureExtractorInceptionV3``; raises WeightsError ("refusing ..." for pickled objects, the key for
    a mismatch, non-finite values). A file is vetted once per process (cached by sha256).
    """
    return load_vetted(path)[0]
