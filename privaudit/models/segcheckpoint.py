"""Segmentation models on disk: the privaudit checkpoint with ``task: segmentation`` and every
other MODEL a segmentation audit takes.

* a privaudit checkpoint (``save_segmentation_checkpoint``): the privaudit format with
  ``task: "segmentation"``, the architecture (``SegArch``), the classes, palette, input
  normalisation and ignore index (``SegInfo``), the defense, provenance and training status;
* a plain state_dict of a torchvision segmentation architecture (``--arch NAME``; the number of
  classes is read from its last layer, or ``--num-classes``) or of the pix2pix U-Net (``--arch
  unet``; its output channels are the classes);
* a ``torch.export`` program or TorchScript file returning (N, C, H, W) logits or ``{"out": ...}``
  (``--num-classes`` and ``--normalize`` required: the file records neither).

Loading is the generators' (``models.checkpoint``): ``weights_only=True`` for pickles, archives
vetted member by member first; a file that could run code is refused.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from privaudit import __version__
from privaudit.device import resolve_device
from privaudit.errors import CheckpointError, InputError, describe_os_error
from privaudit.io import atomic_torch_save, sha256_file, utc_now
from privaudit.models import foreign, vetting
from privaudit.models.arch import infer_unet_arch
from privaudit.models.checkpoint import CHECKPOINT_FORMAT, _check_file, _short, _training_status, recorded_image_size, recorded_provenance, safe_torch_load
from privaudit.models.loaded import LoadedModel
from privaudit.models.networks import clean_state_dict
from privaudit.models.segnets import (TORCHVISION_ARCHS, Posteriors, SegArch, SegInfo, SegSpec, classifier_classes, default_normalization,
                                      load_weights, spec_error)

TASK = "segmentation"


def save_segmentation_checkpoint(
    path: str | Path,
    *,
    net: nn.Module,
    arch: SegArch,
    image_size: int,
    info: SegInfo,
    defense: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
) -> None:
    """Write a segmentation checkpoint atomically (temporary file, then rename). ``net`` is the
    network itself (returning logits), not its release layers."""
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "task": TASK,
        "arch": arch.to_dict(),
        "image_size": int(image_size),
        "direction": None,
        "segmentation": info.to_dict(),
        "defense": defense or {"method": "none"},
        "provenance": {"tool": f"privaudit {__version__}", "created": utc_now(), **(provenance or {})},
        "state_dict": state,
    }
    if training is not None:
        ckpt["training"] = dict(training)
    atomic_torch_save(path, ckpt)


def release(net: nn.Module, defense: dict[str, Any], p: Path | str, seed: int) -> nn.Module:
    """The network wrapped in what its recorded defense releases: posteriors, labels only (argmax),
    or noisy posteriors (gauss, seeded)."""
    module: nn.Module = Posteriors(net)
    method = defense.get("method", "none")
    if method == "argmax":
        from privaudit.defenses.argmax import ArgmaxRelease

        return ArgmaxRelease(module)
    if method == "gauss":
        sigma = defense.get("sigma", 0.0)
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not math.isfinite(sigma) or sigma < 0:
            raise CheckpointError(f"{p} records an invalid Gauss sigma {_short(sigma)}; it must be a finite number >= 0")
        from privaudit.defenses.segmentation import PosteriorNoise

        return PosteriorNoise(module, float(sigma), seed=seed)
    return module


def load_privaudit_segmentation(obj: dict[str, Any], p: Path, digest: str, seed: int, spec: SegSpec | None = None) -> LoadedModel:
    """A privaudit segmentation checkpoint (already read with ``weights_only=True``) as a LoadedModel.
    ``spec`` may repeat what the file records but not contradict it (normalisation and ignore index
    may be overridden)."""
    spec = spec or SegSpec()
    arch = SegArch.from_dict(obj.get("arch"), p)
    info = SegInfo.from_dict(obj.get("segmentation"), p)
    if info.num_classes != arch.num_classes:
        raise CheckpointError(f"{p} records {info.num_classes} class names but its network has {arch.num_classes} outputs; re-save it with privaudit")
    if spec.arch is not None and spec.arch != arch.name:
        raise spec_error(p, "the architecture", arch.name, "--arch", spec.arch)
    if spec.num_classes is not None and spec.num_classes != arch.num_classes:
        raise spec_error(p, "classes:", arch.num_classes, "--num-classes", spec.num_classes)
    info = info.with_overrides(normalization=spec.normalize, ignore_index=spec.ignore_index)
    state = obj.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"{p} has no weights (state_dict missing); the file is incomplete, save it again")
    net = load_weights(arch, clean_state_dict(state, p), p, "re-save the model with privaudit")
    defense = obj.get("defense") or {"method": "none"}
    if not isinstance(defense, dict) or not isinstance(defense.get("method", "none"), str):
        raise CheckpointError(f"{p} records a malformed defense {_short(defense)}; re-save the model with privaudit")
    if defense.get("method", "none") not in ("none", "argmax", "gauss", "dmp", "dpsgd"):
        raise CheckpointError(f"{p} records the defense {defense.get('method')!r}, which this privaudit ({__version__}) does not know for segmentation models; upgrade privaudit")
    return LoadedModel(
        module=release(net, defense, p, seed),
        path=str(p),
        sha256=digest,
        format="privaudit",
        arch=arch.to_dict(),
        image_size=recorded_image_size(obj, p),
        direction=None,
        defense=defense,
        provenance=recorded_provenance(obj),
        training=_training_status(obj.get("training")),
        task=TASK,
        segmentation=info,
    )


def _state_dict_model(obj: dict[str, Any], p: Path, digest: str, spec: SegSpec) -> LoadedModel:
    """A plain state_dict: a torchvision architecture (``--arch``) or the pix2pix U-Net."""
    for key in foreign.WRAPPER_KEYS:
        if isinstance(obj.get(key), dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            obj = obj[key]
            break
    state = clean_state_dict(obj, p)
    name = spec.arch
    if name is None:
        if "model.model.0.weight" in state:
            name = "unet"
        else:
            raise InputError(f"{p} is a state_dict that does not say which network it is; pass --arch with one of unet, {', '.join(TORCHVISION_ARCHS)}")
    if name == "unet":
        u = infer_unet_arch(state, p)
        if spec.num_classes is not None and spec.num_classes != u.output_nc:
            raise CheckpointError(f"{p} is a U-Net with {u.output_nc} output channels, not the --num-classes {spec.num_classes}; pass --num-classes {u.output_nc}")
        arch = SegArch(name="unet", num_classes=u.output_nc, norm=u.norm, unet=u)
    else:
        found = classifier_classes(name, state)
        if spec.num_classes is not None and found is not None and found != spec.num_classes:
            raise CheckpointError(f"{p}'s last layer has {found} classes, not the --num-classes {spec.num_classes}; pass --num-classes {found}")
        c = spec.num_classes or found
        if c is None:
            raise CheckpointError(f"{p} has no {name} classifier weights (is --arch {name} right?); pass the --arch it was trained with")
        norm = "batch" if any(k.endswith("running_mean") for k in state) else "group"
        arch = SegArch(name=name, num_classes=c, norm=norm, aux_loss=any(k.startswith("aux_classifier.") for k in state))
    net = load_weights(arch, state, p, "check --arch and --num-classes")
    info = SegInfo.new(arch.num_classes, normalization=spec.normalize or default_normalization(arch.name),
                       ignore_index=spec.ignore_index if spec.ignore_index is not None else 255)
    info = SegInfo(classes=info.classes, normalization=info.normalization, ignore_index=info.ignore_index,
                   normalization_source="--normalize" if spec.normalize else "default for the architecture")
    return LoadedModel(module=Posteriors(net), path=str(p), sha256=digest, format="state_dict", arch=arch.to_dict(), task=TASK, segmentation=info)


def load_segmentation_model(path: str | Path, spec: SegSpec | None = None, *, device: str | torch.device | None = None, seed: int = 0) -> LoadedModel:
    """Load any segmentation MODEL (see the module docstring) onto ``device``, in eval mode.

    Raises CheckpointError for a file that cannot be loaded safely or does not fit ``spec``,
    InputError for flags a file needs and lacks."""
    spec = (spec or SegSpec()).validate()
    p = Path(path)
    dev = resolve_device(device)
    _check_file(p, "model")
    kind = vetting.zip_kind(p)
    if kind in foreign.ARCHIVE_LOADERS:
        if spec.num_classes is None or spec.normalize is None:
            raise InputError(f"{p} is an exported model, which records neither its classes nor its input normalisation; pass --num-classes C and "
                             "--normalize imagenet (torchvision models) or --normalize symmetric (images in [-1, 1])")
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise CheckpointError(describe_os_error(exc, action="read the model")) from None
        base = foreign.ARCHIVE_LOADERS[kind](p, data, hashlib.sha256(data).hexdigest(), dev)
        info = SegInfo.new(spec.num_classes, normalization=spec.normalize, ignore_index=spec.ignore_index if spec.ignore_index is not None else 255)
        info = SegInfo(classes=info.classes, normalization=info.normalization, ignore_index=info.ignore_index, normalization_source="--normalize")
        model = LoadedModel(module=Posteriors(base.module), path=str(p), sha256=base.sha256, format=base.format,
                            arch={"type": base.format, "num_classes": spec.num_classes, "output_nc": spec.num_classes}, image_size=base.image_size,
                            fixed_batch=base.fixed_batch, task=TASK, segmentation=info)
    else:
        digest = sha256_file(p)
        obj = safe_torch_load(p, what="model")
        if not isinstance(obj, dict):
            raise CheckpointError(f"{p} holds a {type(obj).__name__}, not a state_dict or privaudit checkpoint; save model.state_dict() instead")
        if obj.get("format") == CHECKPOINT_FORMAT:
            if obj.get("task", "translation") != TASK:
                raise CheckpointError(f"{p} is an image-translation generator, not a segmentation model; drop --task segmentation, --arch and --num-classes")
            model = load_privaudit_segmentation(obj, p, digest, seed, spec)
        elif isinstance(obj.get("format"), str):
            raise CheckpointError(f"{p} has format {obj['format']!r}, which this privaudit ({__version__}) cannot read; upgrade privaudit")
        else:
            model = _state_dict_model(obj, p, digest, spec)
    model.module.to(dev)
    model.device = dev
    model.set_mode(stochastic=False)
    return model


def peek_task(path: str | Path) -> str:
    """The task a MODEL file records: ``segmentation`` for a privaudit segmentation checkpoint,
    else ``translation`` (every other file, including ones that cannot be read: loading them later
    says why). Reads the metadata only (tensors memory-mapped, never copied)."""
    import warnings

    p = Path(path)
    if not p.is_file() or p.stat().st_size == 0 or vetting.zip_kind(p) in foreign.ARCHIVE_LOADERS:
        return "translation"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # unreadable here; load_model explains it
        return "translation"
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT and obj.get("task") == TASK:
        return TASK
    return "translation"


TASKS = ("translation", TASK)


def resolve_task(path: str | Path | None, task: str | None, spec: SegSpec | None = None) -> str:
    """The task of an audit: ``task`` (--task) when given, else ``segmentation`` when segmentation
    flags are given (``spec``) or the file records it, else ``translation``. A flag that
    contradicts the file, or segmentation flags with --task translation, are refused."""
    if task is not None and task not in TASKS:
        raise InputError(f"unknown --task {task!r}; use translation (pix2pix generators) or segmentation")
    recorded = peek_task(path) if path is not None else "translation"
    if task == "translation":
        if spec is not None and spec.given:
            raise InputError("--arch, --num-classes, --normalize and --ignore-index are for --task segmentation; drop them or the --task translation")
        if recorded == TASK:
            raise InputError(f"--task translation contradicts {path}, a segmentation checkpoint; drop --task")
        return "translation"
    if task == TASK or (spec is not None and spec.given) or recorded == TASK:
        return TASK
    return "translation"
