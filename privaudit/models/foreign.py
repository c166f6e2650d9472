"""Models privaudit did not write: a pix2pix state_dict, a ``torch.export`` program, a TorchScript file.

* ``pix2pix``: a bare ``*_net_G.pth`` state_dict of the reference U-Net (already read with
  ``weights_only=True``); depth, width, channels and norm are inferred from its keys and shapes;
* ``export``: a ``.pt2`` of any architecture, vetted member by member (:mod:`privaudit.models.vetting`)
  and loaded with torch's unrestricted paths closed;
* ``torchscript``: a TorchScript file of any architecture (older exports), vetted the same way.

The archive loaders take the file's bytes: the bytes vetted are the bytes torch loads (and hashed).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from privaudit.errors import CheckpointError, first_line
from privaudit.models import vetting
from privaudit.models.arch import ArchOverrides, infer_unet_arch
from privaudit.models.loaded import LoadedModel
from privaudit.models.networks import check_finite, clean_state_dict, unet_from_state_dict

WRAPPER_KEYS = ("state_dict", "model", "netG", "generator")  # where training scripts nest a generator's weights


def load_pix2pix(obj: dict[str, Any], p: Path, digest: str, overrides: ArchOverrides) -> LoadedModel:
    """A reference U-Net from its state_dict (or a dict wrapping one under ``WRAPPER_KEYS``)."""
    for key in WRAPPER_KEYS:
        if isinstance(obj.get(key), dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            obj = obj[key]
            break
    state = clean_state_dict(obj, p)
    arch = overrides.apply(infer_unet_arch(state, p))
    net = unet_from_state_dict(arch, state, p, overrides)
    return LoadedModel(module=net, path=str(p), sha256=digest, format="pix2pix", arch=arch.to_dict())


def load_torchscript(p: Path, data: bytes, digest: str, dev: torch.device) -> LoadedModel:
    vetting.vet_torchscript_archive(p, data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.jit.load(io.BytesIO(data), map_location=dev)
    except Exception as exc:  # torch.jit raises many types for a bad archive
        raise CheckpointError(f"{p} looks like TorchScript but cannot be loaded ({first_line(str(exc))}); export it again") from None
    _check_finite_module(module, p)
    return LoadedModel(module=module, path=str(p), sha256=digest, format="torchscript", arch={"type": "torchscript"})


def load_export(p: Path, data: bytes, digest: str, dev: torch.device) -> LoadedModel:
    vetting.vet_export_archive(p, data)
    refused: list[str] = []
    try:
        with warnings.catch_warnings(), _quiet_torch_logs(), vetting.guarded_export_load() as refused:
            warnings.simplefilter("ignore")
            program = torch.export.load(io.BytesIO(data))
            module = program.module()
    except Exception as exc:  # torch.export raises many types for a bad archive
        if refused or vetting.is_guard_refusal(exc):
            raise vetting.refusal(p, f"torch.export.load tried {(refused or [str(exc)])[0]} on it", vetting.EXPORT_FIX) from None
        raise CheckpointError(f"{p} looks like a torch.export program but cannot be loaded ({first_line(str(exc))}); export it again") from None
    if refused:  # torch caught the guard's exception and went on
        raise vetting.refusal(p, f"torch.export.load tried {refused[0]} on it", vetting.EXPORT_FIX)
    _check_finite_module(module, p)
    fixed_batch = size = None
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in set(program.graph_signature.user_inputs):
            val = node.meta.get("val")
            shape = getattr(val, "shape", None)
            if shape is not None and len(shape) == 4:
                fixed_batch = shape[0] if isinstance(shape[0], int) else None
                size = shape[2] if isinstance(shape[2], int) and shape[2] == shape[3] else None
            break
    return LoadedModel(module=module, path=str(p), sha256=digest, format="export", arch={"type": "export"}, image_size=size, fixed_batch=fixed_batch)


ARCHIVE_LOADERS = {"torchscript": load_torchscript, "export": load_export}  # vetting.zip_kind -> loader


def _check_finite_module(module: nn.Module, p: Path) -> None:
    check_finite(list(module.named_parameters()) + list(module.named_buffers()), p)


@contextlib.contextmanager
def _quiet_torch_logs() -> Iterator[None]:
    """torch.export.load logs whole tracebacks (as warnings) for archives it cannot read; privaudit says it in one line."""
    logger = logging.getLogger("torch.export")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)
