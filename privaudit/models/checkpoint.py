"""The privaudit checkpoint format, and ``load_model``: the one entry that loads any MODEL file.

Formats accepted wherever a MODEL is:

* ``privaudit``: a self-describing dict (architecture, image size, direction, defense, provenance,
  training status, weights), written by ``save_checkpoint``;
* ``pix2pix``, ``export``, ``torchscript``: models privaudit did not write (:mod:`privaudit.models.foreign`).

Pickle-based files are always opened with ``torch.load(..., weights_only=True)`` (``safe_torch_load``):
a file that needs arbitrary objects unpickled is refused, so a model from a stranger never runs
code. ``.pt2`` and TorchScript archives are vetted member by member first (:mod:`privaudit.models.vetting`).
"""

from __future__ import annotations

import hashlib
import math
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from privaudit import __version__
from privaudit.accel import FOREIGN_FP32, check_precision, resolve_accel
from privaudit.device import resolve_device
from privaudit.errors import CheckpointError, describe_os_error, first_line
from privaudit.io import atomic_torch_save, sha256_file, utc_now
from privaudit.models import foreign, vetting
from privaudit.models.arch import ArchOverrides, UnetArch
from privaudit.models.loaded import LoadedModel
from privaudit.models.networks import UnetGenerator, clean_state_dict, unet_from_state_dict
from privaudit import defaults

CHECKPOINT_FORMAT = "privaudit.checkpoint/1"


# ----------------------------------------------------------------------------------------------
# saving


def save_checkpoint(
    path: str | Path,
    *,
    generator: UnetGenerator,
    image_size: int,
    direction: str | None,
    defense: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
) -> None:
    """Write a self-describing privaudit checkpoint atomically (temporary file, then rename).

    ``training``: ``{complete, epochs_done, epochs_total}`` (``training.training_record``) for a
    model a training run wrote; a checkpoint written after epoch k < epochs_total says it is unfinished.
    """
    # contiguous: a network trained in channels_last saves the same bytes as one trained in NCHW
    state = {k: v.detach().cpu().clone(memory_format=torch.contiguous_format) for k, v in generator.state_dict().items()}
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "arch": generator.arch.to_dict(),
        "image_size": int(image_size),
        "direction": direction,
        "defense": defense or {"method": "none"},
        "provenance": {"tool": f"privaudit {__version__}", "created": utc_now(), **(provenance or {})},
        "state_dict": state,
    }
    if training is not None:
        ckpt["training"] = dict(training)
    atomic_torch_save(path, ckpt)



# ----------------------------------------------------------------------------------------------
# loading


def _check_file(p: Path, what: str) -> None:
    """CheckpointError unless ``p`` is a file with something in it."""
    if not p.exists():
        raise CheckpointError(f"{what} {p} does not exist; check the path")
    if p.is_dir():
        raise CheckpointError(f"{what} {p} is a folder; give the model file inside it (e.g. latest_net_G.pth)")
    if p.stat().st_size == 0:
        raise CheckpointError(f"{what} {p} is empty (0 bytes); the file is truncated, copy or export it again")


def safe_torch_load(path: str | Path, *, what: str = "checkpoint") -> Any:
    """``torch.load(weights_only=True)`` with errors a user can act on."""
    p = Path(path)
    _check_file(p, what)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        try:
            data = p.read_bytes()
        except OSError:
            data = b""
        kind, detail = vetting.diagnose_pickle(data, str(exc))
        if kind == "dangerous":
            named = f" ({detail})" if detail else ""
            fix = (
                "privaudit loads tensors and plain data only, so re-save it as a state_dict "
                "(torch.save(model.state_dict(), path)) or export it with torch.export"
                if what in ("model", "checkpoint")
                else f"privaudit writes its {what} with tensors and plain data only, so this file is not one of them; delete it and start afresh"
            )
            raise CheckpointError(f"refusing to load {p}: it holds pickled Python objects{named} that could run code when loaded; {fix}") from None
        if kind == "protocol":
            raise CheckpointError(
                f"{p} was saved with pickle protocol {detail}, which the restricted unpickler cannot read; "
                "re-save it with torch.save(obj, path) and the default protocol"
            ) from None
        raise CheckpointError(f"{p} is not a PyTorch checkpoint (the restricted unpickler cannot read it); the file is corrupt or of another kind") from None
    except Exception as exc:  # torch.load raises many types on garbage (IndexError, KeyError, RuntimeError, ...)
        raise CheckpointError(f"{p} is not a readable PyTorch checkpoint ({type(exc).__name__}: {first_line(str(exc))}); the file may be truncated or of another kind") from None


def load_model(
    path: str | Path,
    *,
    overrides: ArchOverrides | None = None,
    device: str | torch.device | None = None,
    seed: int = defaults.SEED,
    precision: str = defaults.PRECISION,
    deterministic: bool = defaults.DETERMINISTIC,
) -> LoadedModel:
    """Load any supported MODEL file onto ``device`` (``auto``: a GPU when there is one), in eval mode.

    ``overrides`` correct what a file says about its U-Net; ``seed`` seeds a run-time defense's noise.
    ``precision`` (auto, fp32, bf16) and ``deterministic``: how its forward passes use a CUDA device
    (``privaudit.accel``; ``model.accel``); exported and TorchScript models always run in fp32.
    Raises CheckpointError for a file that cannot be loaded safely, InputError for bad arguments.
    """
    p = Path(path)
    dev = resolve_device(device)
    check_precision(precision)
    overrides = overrides or ArchOverrides()
    _check_file(p, "model")
    kind = vetting.zip_kind(p)
    if kind in foreign.ARCHIVE_LOADERS:
        # Read once: the bytes vetted are the bytes torch loads and the bytes hashed.
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise CheckpointError(describe_os_error(exc, action="read the model")) from None
        model = foreign.ARCHIVE_LOADERS[kind](p, data, hashlib.sha256(data).hexdigest(), dev)
    else:
        digest = sha256_file(p)
        obj = safe_torch_load(p, what="model")
        if not isinstance(obj, dict):
            raise CheckpointError(f"{p} holds a {type(obj).__name__}, not a state_dict or privaudit checkpoint; save model.state_dict() instead")
        if obj.get("format") == CHECKPOINT_FORMAT:
            model = _load_privaudit(obj, p, digest, overrides, seed)
        elif isinstance(obj.get("format"), str):
            raise CheckpointError(f"{p} has format {obj['format']!r}, which this privaudit ({__version__}) cannot read; upgrade privaudit")
        else:
            model = foreign.load_pix2pix(obj, p, digest, overrides)
    model.accel = resolve_accel(dev, precision, deterministic=deterministic, fp32_only=FOREIGN_FP32 if model.format in ("export", "torchscript") else None)
    model.accel.module(model.module)
    model.device = dev
    model.set_mode(stochastic=False)
    return model


def _load_privaudit(obj: dict[str, Any], p: Path, digest: str, overrides: ArchOverrides, seed: int) -> LoadedModel:
    """The U-Net its record describes, wrapped in the run-time part of its defense (Gauss noise)."""
    task = obj.get("task", "translation")
    if task == "segmentation":  # a segmentation network (models.segcheckpoint)
        from privaudit.models.segcheckpoint import load_privaudit_segmentation

        return load_privaudit_segmentation(obj, p, digest, seed)
    if task != "translation":
        raise CheckpointError(f"{p} records the task {_short(task)}, which this privaudit ({__version__}) does not know; upgrade privaudit")
    arch_d = obj.get("arch")
    if not isinstance(arch_d, dict) or arch_d.get("type") != "unet":
        raise CheckpointError(f"{p} records an unknown architecture {arch_d!r}; re-save it with this privaudit version")
    arch = overrides.apply(UnetArch.from_dict(arch_d, p))
    state = obj.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"{p} has no weights (state_dict missing); the file is incomplete, save it again")
    net: nn.Module = unet_from_state_dict(arch, clean_state_dict(state, p), p, overrides)
    # The metadata comes from whoever wrote the file: check each field's type, so a malformed
    # record is a CheckpointError naming the field, not a crash somewhere downstream.
    defense = obj.get("defense") or {"method": "none"}
    if not isinstance(defense, dict) or not isinstance(defense.get("method", "none"), str):
        raise CheckpointError(f"{p} records a malformed defense {_short(defense)}; re-save the model with privaudit")
    if defense.get("method") == "gauss":
        sigma = defense.get("sigma", 0.0)
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not math.isfinite(sigma) or sigma < 0:
            raise CheckpointError(f"{p} records an invalid Gauss sigma {_short(sigma)}; it must be a finite number >= 0")
        from privaudit.defenses.gauss import OutputNoise  # here: the defense module imports this one

        net = OutputNoise(net, float(sigma), seed=seed)
    size = recorded_image_size(obj, p)
    direction = obj.get("direction")
    if direction is not None and direction not in ("AtoB", "BtoA"):
        raise CheckpointError(f"{p} records an invalid direction {_short(direction)}; it must be AtoB or BtoA, re-save the model with privaudit")
    return LoadedModel(
        module=net,
        path=str(p),
        sha256=digest,
        format="privaudit",
        arch=arch.to_dict(),
        image_size=size,
        direction=direction,
        defense=defense,
        provenance=recorded_provenance(obj),
        training=_training_status(obj.get("training")),
    )


def recorded_image_size(obj: dict[str, Any], p: Path) -> int | None:
    """A checkpoint's ``image_size`` (None when absent or 0); ``CheckpointError`` when malformed."""
    size = obj.get("image_size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise CheckpointError(f"{p} records an invalid image_size {_short(size)}; it must be a positive number of pixels, re-save the model with privaudit")
    return size or None


def recorded_provenance(obj: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's ``provenance`` as a dict (a malformed one kept as a short string)."""
    provenance = obj.get("provenance") or {}
    return provenance if isinstance(provenance, dict) else {"recorded": str(provenance)[:200]}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _training_status(rec: Any) -> dict[str, Any] | None:
    """The checkpoint's ``training`` record, or None (unknown) when absent or malformed."""
    if not isinstance(rec, dict) or not isinstance(rec.get("complete"), bool):
        return None
    done, total = rec.get("epochs_done"), rec.get("epochs_total")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (done, total)):
        return None
    return {"complete": rec["complete"], "epochs_done": done, "epochs_total": total}
