"""Which torch device to run on: ``auto`` (a CUDA GPU when there is one, else the CPU) or the one named."""

from __future__ import annotations

import torch

from privaudit.errors import InputError

DEVICE_TYPES = ("cpu", "cuda")


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``auto``/None/"": CUDA when available, else CPU. InputError for an unknown or unavailable device."""
    if isinstance(device, torch.device):
        return device
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in DEVICE_TYPES:
        raise InputError(f"unknown --device {device!r}; use auto, cpu or cuda")
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InputError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
        if dev.index is not None and dev.index >= count:
            raise InputError(f"--device {device} was asked for but this machine has {count} CUDA GPU(s); use --device cuda:0 to cuda:{count - 1}")
    return dev
