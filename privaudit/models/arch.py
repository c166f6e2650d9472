"""The pix2pix U-Net's description and every rule about it, each written once.

* ``UnetArch``: everything that rebuilds a U-Net (what a checkpoint records); ``validate`` holds the
  depth, width and norm rules;
* ``ModelSpec``: the flags for a new generator, made into a ``UnetArch`` for an image size;
* ``ArchOverrides``: flags that override what a model file says about its U-Net;
* image side vs depth: ``check_size`` (a side must be a positive multiple of 2**num_downs) and
  ``default_num_downs`` (pix2pix's depth for a side);
* norm layers: ``NORMS`` (what can be built), ``PLAIN_NORMS`` (what ``--norm`` offers for training
  and students), ``check_norm``, ``private_arch`` (DP-SGD's GroupNorm) and ``student_norm``;
* reading a reference state_dict: ``infer_unet_arch`` and ``explain_mismatch``.

Nothing here imports torch (state_dicts are only read for their keys and shapes), so the CLI can
list the choices without loading it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from privaudit import defaults
from privaudit.errors import CheckpointError, InputError, PrivauditError

if TYPE_CHECKING:
    import torch

NORMS = ("batch", "instance", "none", "group")
PLAIN_NORMS = ("batch", "instance", "none")  # --norm for `train` and for a student; "group" is DP-SGD's
DP_NORM = "group"  # BatchNorm mixes the samples of a batch, which per-sample gradients cannot have
MIN_NUM_DOWNS = 5  # the reference U-Net's outer four blocks plus the innermost one
MAX_DEFAULT_NUM_DOWNS = 8  # pix2pix's unet_256


def _one_of(names: Sequence[str]) -> str:
    return f"{', '.join(names[:-1])} or {names[-1]}"


def check_norm(norm: str, *, choices: Sequence[str] = PLAIN_NORMS, role: str = "", error: type[PrivauditError] = InputError, where: str = "") -> str:
    """Raise ``error`` unless ``norm`` is one of ``choices`` (by default what ``--norm`` offers);
    ``role`` (e.g. "for the student") and ``where`` (what said it) go into the message."""
    if norm not in choices:
        raise error(f"{where}invalid norm layer {norm!r} (--norm{' ' + role if role else ''}); use {_one_of(choices)}")
    return norm


def student_norm(teacher_norm: str) -> str:
    """A student's default norm is its teacher's, but a DP-SGD teacher's GroupNorm becomes BatchNorm."""
    return "batch" if teacher_norm == DP_NORM else teacher_norm


def check_size(size: int, num_downs: int, *, new: bool = False) -> int:
    """Raise InputError unless images of side ``size`` fit a U-Net with ``num_downs`` downsamplings:
    the side must be a positive multiple of 2**num_downs. ``new``: the U-Net is yet to be built, so
    ``--num-downs`` can change too."""
    step = 2**num_downs
    if size < 1 or size % step:
        lower, upper = size // step * step, max(step, (size // step + 1) * step)
        hint = f"--size {lower} or --size {upper}" if lower > 0 else f"--size {upper}"
        raise InputError(
            f"image size {size} is not a positive multiple of {step} (a U-Net with {num_downs} downsamplings); pass {hint}"
            + (" or change --num-downs" if new else "")
        )
    return size


def default_num_downs(size: int) -> int:
    """pix2pix's depth for images of side ``size``: unet_256 (8 downsamplings) at 256 px and above,
    one fewer per halving, at least 5. Raises InputError when ``size`` does not fit that depth."""
    depth = min(MAX_DEFAULT_NUM_DOWNS, max(MIN_NUM_DOWNS, size.bit_length() - 1))
    check_size(size, depth, new=True)
    return depth


@dataclass(frozen=True)
class UnetArch:
    """Everything needed to rebuild a U-Net generator."""

    input_nc: int = 3
    output_nc: int = 3
    num_downs: int = 8
    ngf: int = defaults.NGF
    norm: str = defaults.NORM
    use_dropout: bool = defaults.DROPOUT

    def to_dict(self) -> dict[str, Any]:
        return {"type": "unet", **asdict(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], p: Path | str = "checkpoint") -> "UnetArch":
        """The architecture a checkpoint records; CheckpointError naming ``p`` when it is incomplete or impossible."""
        try:
            arch = cls(
                input_nc=int(d["input_nc"]),
                output_nc=int(d["output_nc"]),
                num_downs=int(d["num_downs"]),
                ngf=int(d["ngf"]),
                norm=str(d["norm"]),
                use_dropout=bool(d["use_dropout"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{p}: the architecture record is incomplete ({exc}); re-save the model with privaudit") from None
        return arch.validate(CheckpointError, where=f"{p} records an impossible architecture: ")

    def validate(self, error: type[PrivauditError] = InputError, *, where: str = "") -> "UnetArch":
        """Raise ``error`` unless this U-Net can be built: InputError for flags and arguments (the
        default), CheckpointError for what a file says. Returns ``self``."""
        if self.num_downs < MIN_NUM_DOWNS:
            raise error(f"{where}U-Net depth num_downs={self.num_downs} (--num-downs) is too small; it must be at least {MIN_NUM_DOWNS}")
        if self.ngf < 1:
            raise error(f"{where}U-Net width ngf={self.ngf} (--ngf) must be at least 1")
        if self.input_nc < 1 or self.output_nc < 1:
            raise error(f"{where}U-Net channel counts must be positive, not {self.input_nc}->{self.output_nc}")
        check_norm(self.norm, choices=NORMS, error=error, where=where)
        return self


def private_arch(arch: UnetArch) -> UnetArch:
    """The U-Net DP-SGD trains: ``arch`` with GroupNorm, whatever norm it asks for."""
    return replace(arch, norm=DP_NORM).validate()


@dataclass(frozen=True)
class ModelSpec:
    """Architecture flags for a new generator (``num_downs`` None: pix2pix's depth for the image size)."""

    num_downs: int | None = None
    ngf: int = defaults.NGF
    norm: str = defaults.NORM
    use_dropout: bool = defaults.DROPOUT

    def build(self, size: int, input_nc: int = 3, output_nc: int = 3) -> UnetArch:
        """The U-Net for images of side ``size``; InputError naming the flag to change when it cannot be built."""
        depth = default_num_downs(size) if self.num_downs is None else self.num_downs
        arch = UnetArch(input_nc=input_nc, output_nc=output_nc, num_downs=depth, ngf=self.ngf, norm=self.norm, use_dropout=self.use_dropout).validate()
        check_size(size, depth, new=True)
        return arch


@dataclass(frozen=True)
class ArchOverrides:
    """User flags that override what a model file says about its U-Net (None = keep the file's)."""

    num_downs: int | None = None
    ngf: int | None = None
    norm: str | None = None
    use_dropout: bool | None = None

    def apply(self, arch: UnetArch) -> UnetArch:
        """``arch`` with the overrides; InputError when they make a U-Net that cannot be built."""
        if not self.any:
            return arch
        changes = {k: v for k, v in asdict(self).items() if v is not None}
        return replace(arch, **changes).validate(InputError)

    @property
    def any(self) -> bool:
        return any(v is not None for v in asdict(self).values())

    def hint(self) -> str:
        """What to do when the U-Net these overrides describe does not fit the file's weights."""
        if self.any:
            return "drop the --num-downs/--ngf/--norm overrides or give values that match the file"
        return "pass --num-downs/--ngf/--norm to match the file"


def infer_unet_arch(state: Mapping[str, "torch.Tensor"], p: Path | str = "checkpoint") -> UnetArch:
    """Infer depth, ngf, channels and norm of a reference U-Net from its state_dict keys and shapes."""
    w0 = state.get("model.model.0.weight")
    up = state.get("model.model.3.weight")
    if w0 is None or up is None or w0.ndim != 4 or up.ndim != 4:
        sample = ", ".join(list(state)[:3])
        raise CheckpointError(
            f"{p} is not a pix2pix U-Net generator state_dict (no model.model.0.weight / model.model.3.weight; keys start {sample}); "
            "export other architectures with torch.export or TorchScript"
        )
    ngf, input_nc = int(w0.shape[0]), int(w0.shape[1])
    output_nc = int(up.shape[1])
    depth = 1
    prefix = "model.model.1.model."
    if prefix + "1.weight" in state:
        depth = 2
        while prefix + "3.model.1.weight" in state:
            prefix += "3.model."
            depth += 1
    if depth < MIN_NUM_DOWNS:
        raise CheckpointError(f"{p}: found a U-Net only {depth} blocks deep; pix2pix U-Nets have at least {MIN_NUM_DOWNS} (is the file truncated?)")
    norm_prefix = "model.model.1.model.2."
    if norm_prefix + "weight" in state and norm_prefix + "running_mean" in state:
        norm = "batch"
    elif norm_prefix + "weight" in state:
        norm = "group"
    elif "model.model.1.model.1.bias" in state:
        norm = "instance"
    else:
        norm = "none"
    # Dropout has no weights, so it cannot be seen; pix2pix trains with it unless --no_dropout.
    arch = UnetArch(input_nc=input_nc, output_nc=output_nc, num_downs=depth, ngf=ngf, norm=norm, use_dropout=True)
    return arch.validate(CheckpointError, where=f"{p} holds an impossible U-Net: ")


def explain_mismatch(expected: Mapping[str, Any], got: Mapping[str, Any], limit: int = 3) -> str:
    """'' when keys and shapes agree; else a one-line, key-by-key account of the differences."""
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = [f"{k} file {tuple(got[k].shape)} vs model {tuple(expected[k].shape)}" for k in expected if k in got and got[k].shape != expected[k].shape]
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
        if items:
            more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
            parts.append(f"{len(items)} {label}: {', '.join(items[:limit])}{more}")
    return "; ".join(parts)
