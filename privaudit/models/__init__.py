"""Generators and discriminators, their architecture rules, and loading and saving them.

* ``arch``: the U-Net's description (``UnetArch``, ``ModelSpec``, ``ArchOverrides``) and its rules
  (image size vs depth, norm layers), once; imports no torch;
* ``networks``: the pix2pix U-Net and PatchGAN, and loading a state_dict into the U-Net;
* ``loaded``: ``LoadedModel``, a generator ready for inference, and its modes;
* ``checkpoint``: the privaudit format (``save_checkpoint``) and ``load_model``, which loads any MODEL;
* ``foreign``: pix2pix state_dicts, ``torch.export`` programs and TorchScript files;
* ``vetting``: the member-by-member checks on archives from strangers;
* ``inference``: running a loaded generator over an image set.

The public names below are imported on first use, so ``import privaudit.models.arch`` loads no torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from privaudit.models.arch import UnetArch
    from privaudit.models.checkpoint import load_model, save_checkpoint
    from privaudit.models.loaded import LoadedModel
    from privaudit.models.networks import NLayerDiscriminator, UnetGenerator

_HOME = {
    "LoadedModel": "privaudit.models.loaded",
    "load_model": "privaudit.models.checkpoint",
    "save_checkpoint": "privaudit.models.checkpoint",
    "UnetArch": "privaudit.models.arch",
    "UnetGenerator": "privaudit.models.networks",
    "NLayerDiscriminator": "privaudit.models.networks",
}

__all__ = list(_HOME)


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
