"""The GPU path: how one run uses a CUDA device, resolved once (``resolve_accel``); all of it off on the CPU.

* **precision** (``--precision``): ``auto`` is bfloat16 autocast on a CUDA GPU with native bf16
  (Ampere and later) and fp32 everywhere else; ``fp32`` is IEEE float32 (TF32 off for convolutions
  and matrix products, so it is the reference the faster path is compared with); ``bf16`` insists
  on autocast and is refused where the device has none (the CPU included). Only the networks'
  forward passes run under autocast: every loss, and so every attack score, is computed in float32
  outside it. A run that must not use bf16 (DP-SGD) passes ``fp32_only``, the reason, which the
  record keeps.
* **channels_last** memory format for the networks and image batches, with bf16 on CUDA: the
  tensor-core convolutions work in NHWC, and a NCHW network would be transposed around every one.
* **cuDNN autotuning** (``torch.backends.cudnn.benchmark``) on CUDA: the fastest convolution
  algorithm per shape is measured once. It makes runs of the same seed differ in the last bits;
  ``deterministic`` turns it off and selects deterministic algorithms instead
  (``torch.use_deterministic_algorithms(True, warn_only=True)``, cuDNN deterministic, and
  ``CUBLAS_WORKSPACE_CONFIG`` when unset).
* **pinned memory** and non-blocking host-to-device copies for batches going to a CUDA device.

The process-wide switches (cuDNN, TF32, deterministic algorithms) are set only inside
``Accel.active()`` and restored afterwards, so a program that imports privaudit keeps its own
settings. ``Accel.record()`` is what checkpoints (``provenance.runtime``) and reports
(``environment.runtime``) say was used.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import nn

from privaudit.errors import InputError

PRECISIONS = ("auto", "fp32", "bf16")

# Why DP-SGD runs in fp32 whatever --precision auto would choose (checked by tests/test_gpu_path.py
# with Opacus on the CPU's bf16 autocast: clipped norms up to 1.0065·C).
DPSGD_FP32 = ("DP-SGD runs in fp32: under bf16 autocast Opacus computes the per-sample gradients and their norms in bfloat16, so a clipped "
              "per-sample gradient can exceed the clipping norm C (by up to about 1%) and the recorded epsilon would not hold")
# Why a model privaudit did not build runs as it was exported.
FOREIGN_FP32 = "exported and TorchScript models run as they were exported, in fp32"


@dataclass(frozen=True)
class Accel:
    """What a run does on its device. ``precision``: the one used (fp32 or bf16); ``requested``:
    the one asked for (auto, fp32 or bf16); ``note``: why they differ from what ``auto`` gives
    elsewhere (DP-SGD, a foreign model, a GPU without bf16), else None."""

    device: torch.device
    precision: str = "fp32"
    requested: str = "auto"
    channels_last: bool = False
    cudnn_benchmark: bool = False
    deterministic: bool = False
    pin_memory: bool = False
    note: str | None = None

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def bf16(self) -> bool:
        return self.precision == "bf16"

    def autocast(self) -> AbstractContextManager[Any]:
        """bfloat16 autocast for the forward passes of a bf16 run; a no-op otherwise."""
        if not self.bf16:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def module(self, net: nn.Module) -> nn.Module:
        """``net`` on the device, in channels_last when the run uses it (in place, like ``Module.to``)."""
        net.to(self.device)
        if self.channels_last:
            net.to(memory_format=torch.channels_last)
        return net

    def batch(self, t: torch.Tensor) -> torch.Tensor:
        """A host tensor on the device: through pinned memory and a non-blocking copy on CUDA, in
        channels_last when the run uses it (4-d tensors). Unchanged on the CPU."""
        if self.pin_memory and t.device.type == "cpu":
            t = t.pin_memory()
        t = t.to(self.device, non_blocking=self.pin_memory)
        if self.channels_last and t.ndim == 4:
            t = t.contiguous(memory_format=torch.channels_last)
        return t

    @contextmanager
    def active(self) -> Iterator[None]:
        """Set the process-wide switches this run needs (cuDNN autotuning or deterministic
        algorithms, IEEE fp32) for the duration of the block, and restore the caller's afterwards.
        Nothing on the CPU."""
        if not self.cuda:
            yield
            return
        cudnn = torch.backends.cudnn
        saved = (cudnn.benchmark, cudnn.deterministic, torch.are_deterministic_algorithms_enabled(),
                 torch.is_deterministic_algorithms_warn_only_enabled(), _tf32())
        try:
            cudnn.benchmark = self.cudnn_benchmark
            if self.deterministic:
                # cuBLAS is deterministic only with a fixed workspace, read when its handle is made
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
                cudnn.deterministic = True
                torch.use_deterministic_algorithms(True, warn_only=True)
            if self.precision == "fp32" and saved[4] is not None:
                _set_tf32((False, False))
            yield
        finally:
            cudnn.benchmark, cudnn.deterministic = saved[0], saved[1]
            torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])
            if saved[4] is not None:
                _set_tf32(saved[4])

    def record(self) -> dict[str, Any]:
        """What a checkpoint's ``provenance.runtime`` and a report's ``environment.runtime`` say."""
        d: dict[str, Any] = {"device": str(self.device), "precision": self.precision, "requested_precision": self.requested,
                             "channels_last": self.channels_last, "cudnn_benchmark": self.cudnn_benchmark, "deterministic": self.deterministic,
                             "pin_memory": self.pin_memory}
        if self.note:
            d["note"] = self.note
        return d


def check_precision(precision: str) -> str:
    """``precision`` if it is one of ``PRECISIONS``; InputError naming them otherwise."""
    if precision not in PRECISIONS:
        raise InputError(f"unknown --precision {precision!r}; use auto, fp32 or bf16")
    return precision


def bf16_supported(device: torch.device) -> bool:
    """True for a CUDA GPU with native bfloat16 arithmetic (compute capability 8.0 and later)."""
    if device.type != "cuda":
        return False
    return bool(torch.cuda.is_bf16_supported(including_emulation=False))


def resolve_accel(device: torch.device, precision: str = "auto", *, deterministic: bool = False, fp32_only: str | None = None) -> Accel:
    """The GPU path for a run on ``device`` (already resolved: ``privaudit.device.resolve_device``).

    ``precision``: auto, fp32 or bf16 (see the module's docstring). ``fp32_only``: why this run
    must not use bf16; auto then gives fp32 with that reason recorded, and bf16 is refused with it.
    InputError for an unknown precision, or bf16 where it cannot run.
    """
    check_precision(precision)
    if device.type != "cuda":
        if precision == "bf16":
            raise InputError("--precision bf16 runs on CUDA GPUs only; on the CPU use --precision fp32 (or auto, which is fp32 there)")
        return Accel(device=device, precision="fp32", requested=precision, deterministic=deterministic)
    note = None
    if fp32_only is not None:
        if precision == "bf16":
            raise InputError(f"--precision bf16 is refused: {fp32_only}; use --precision fp32 (or auto)")
        used, note = "fp32", fp32_only if precision == "auto" else None
    elif precision == "fp32":
        used = "fp32"
    elif bf16_supported(device):
        used = "bf16"
    elif precision == "bf16":
        raise InputError(f"--precision bf16 needs a GPU with native bfloat16 (compute capability 8.0 or later), which {torch.cuda.get_device_name(device)} "
                         "is not; use --precision fp32 (or auto)")
    else:
        used, note = "fp32", f"{torch.cuda.get_device_name(device)} has no native bfloat16, so auto chose fp32"
    return Accel(device=device, precision=used, requested=precision, channels_last=used == "bf16", cudnn_benchmark=not deterministic,
                 deterministic=deterministic, pin_memory=True, note=note)


def _tf32() -> tuple[bool, bool] | None:
    """Whether cuDNN convolutions and CUDA matmuls may use TF32 for float32 (torch's defaults: True,
    False); None when the caller set torch's newer per-operator ``fp32_precision`` flags in a way
    the two switches cannot describe (torch then refuses to read them), which are left alone."""
    try:
        return bool(torch.backends.cudnn.allow_tf32), bool(torch.backends.cuda.matmul.allow_tf32)
    except RuntimeError:
        return None


def _set_tf32(values: tuple[bool, bool]) -> None:
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = values
