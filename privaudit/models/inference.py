"""Running a loaded generator over a uint8 image set, batched, with checks on what comes out."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import torch

from privaudit.data.images import to_float
from privaudit.errors import CheckpointError, InputError, first_line
from privaudit.models.arch import check_size
from privaudit.models.loaded import LoadedModel
from privaudit import defaults


def check_image_size(model: LoadedModel, size: int) -> None:
    """Raise InputError when images of side ``size`` cannot go through the model."""
    if model.image_size is not None and model.format == "export" and size != model.image_size:
        raise InputError(f"{model.path} was exported for {model.image_size}x{model.image_size} images, not {size}x{size}; pass --size {model.image_size}")
    num_downs = model.arch.get("num_downs")  # a U-Net's; other architectures say nothing
    if num_downs:
        check_size(size, int(num_downs))


def iter_outputs(
    model: LoadedModel,
    inputs: torch.Tensor,
    *,
    batch_size: int = defaults.ATTACK_BATCH_SIZE,
    on_batch: Callable[[int], None] | None = None,
) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield ``(slice, outputs)`` for consecutive batches of ``inputs`` (uint8, N×C×H×W).

    Outputs are float32 tensors in [-1, 1] on the model's device, whatever precision the forward
    pass ran in (``model.runtime``: bf16 autocast, channels_last and pinned copies on CUDA), so
    losses computed from them are float32. Call under ``torch.inference_mode``.
    A model exported for a fixed batch size gets exactly that size (the last batch padded).
    """
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, not {batch_size}")
    n = int(inputs.shape[0])
    bs = model.fixed_batch or batch_size
    for start in range(0, n, bs):
        sl = slice(start, min(start + bs, n))
        yield sl, _forward(model, inputs[sl], bs, on_batch)


def iter_set_outputs(
    model: LoadedModel,
    images: Any,
    *,
    batch_size: int = defaults.ATTACK_BATCH_SIZE,
    on_batch: Callable[[int], None] | None = None,
    want_targets: bool = True,
) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor | None]]:
    """``iter_outputs`` over an image set (``ImageSet``, or a ``StreamedSet`` decoded batch by batch
    with the same batches): ``(slice, outputs, uint8 targets of the batch or None)``."""
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, not {batch_size}")
    bs = model.fixed_batch or batch_size
    for sl, x, y in images.batches(bs, want_y=want_targets):
        yield sl, _forward(model, x, bs, on_batch), y


def _forward(model: LoadedModel, inputs: torch.Tensor, bs: int, on_batch: Callable[[int], None] | None) -> torch.Tensor:
    """The model's checked float32 outputs on one uint8 batch (padded to ``bs`` for a fixed-batch export)."""
    count = int(inputs.shape[0])
    accel = model.runtime
    x = to_float(accel.batch(inputs))  # uint8 to the device, floats there
    if model.fixed_batch and x.shape[0] < bs:
        pad = x[-1:].expand(bs - x.shape[0], *x.shape[1:])
        x = torch.cat([x, pad])
    try:
        with accel.active(), accel.autocast():
            out = model.module(x)
    except RuntimeError as exc:
        raise CheckpointError(f"{model.path} failed on input of shape {tuple(x.shape)}: {first_line(str(exc))}; check --size and the model's channels") from None
    out = out[:count]
    if not isinstance(out, torch.Tensor) or out.ndim != 4 or out.shape[0] != count or out.shape[-2:] != x.shape[-2:]:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise CheckpointError(f"{model.path} returned {shape} for input {tuple(x.shape)}; a generator must return an image batch of the input's size")
    out = out.float()  # bf16 under autocast: every loss downstream is float32
    if not torch.isfinite(out).all():
        raise CheckpointError(f"{model.path} produced NaN or inf outputs; the weights are broken, use an earlier checkpoint")
    if on_batch:
        on_batch(count)
    return out
