"""pix2pix networks with the module tree of pytorch-CycleGAN-and-pix2pix.

The U-Net generator and the PatchGAN discriminator reproduce the reference classes
(``UnetGenerator``, ``UnetSkipConnectionBlock``, ``NLayerDiscriminator``) layer for layer, so a
reference ``*_net_G.pth`` state_dict loads into them key for key (``model.model.0.weight``,
``model.model.1.model.1.weight``, ...).
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
from torch import nn

from privaudit import defaults
from privaudit.errors import CheckpointError, InputError

NORMS = ("batch", "instance", "none", "group")


class Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def get_norm_layer(norm: str) -> Callable[[int], nn.Module]:
    """Norm layer factory as in the reference; ``group`` is what Opacus needs for DP-SGD."""
    if norm == "batch":
        return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    if norm == "instance":
        return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    if norm == "group":
        # GroupNorm with affine parameters stands in for BatchNorm under DP-SGD (per-sample gradients).
        return lambda c: nn.GroupNorm(min(32, c), c, affine=True)
    if norm == "none":
        return lambda c: Identity()
    raise CheckpointError(f"unknown norm layer {norm!r}; choose one of {', '.join(NORMS)}")


def _uses_bias(norm: str) -> bool:
    # The reference gives convolutions a bias only with InstanceNorm (BatchNorm has its own shift).
    return norm == "instance"


class UnetSkipConnectionBlock(nn.Module):
    """U-Net submodule with skip connection: X -------------------identity---------------------- X
    |-- downsampling -- |submodule| -- upsampling --|"""

    def __init__(
        self,
        outer_nc: int,
        inner_nc: int,
        input_nc: int | None = None,
        submodule: nn.Module | None = None,
        outermost: bool = False,
        innermost: bool = False,
        norm: str = "batch",
        use_dropout: bool = False,
    ) -> None:
        super().__init__()
        self.outermost = outermost
        norm_layer = get_norm_layer(norm)
        use_bias = _uses_bias(norm)
        if input_nc is None:
            input_nc = outer_nc
        downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
        downrelu = nn.LeakyReLU(0.2, True)
        downnorm = norm_layer(inner_nc)
        uprelu = nn.ReLU(True)
        upnorm = norm_layer(outer_nc)

        if outermost:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1)
            model = [downconv, submodule, uprelu, upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
            model = [downrelu, downconv, uprelu, upconv, upnorm]
        else:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
            model = [downrelu, downconv, downnorm, submodule, uprelu, upconv, upnorm]
            if use_dropout:
                model += [nn.Dropout(0.5)]
        self.model = nn.Sequential(*model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


@dataclass(frozen=True)
class UnetArch:
    """Everything needed to rebuild a U-Net generator."""

    input_nc: int = 3
    output_nc: int = 3
    num_downs: int = 8
    ngf: int = 64
    norm: str = "batch"
    use_dropout: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"type": "unet", **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "UnetArch":
        try:
            return cls(
                input_nc=int(d["input_nc"]),
                output_nc=int(d["output_nc"]),
                num_downs=int(d["num_downs"]),
                ngf=int(d["ngf"]),
                norm=str(d["norm"]),
                use_dropout=bool(d["use_dropout"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint architecture record is incomplete ({exc}); re-save the model with privaudit") from None

    def validate(self) -> None:
        if self.num_downs < 5:
            raise CheckpointError(f"U-Net depth num_downs={self.num_downs} is too small; it must be at least 5")
        if self.ngf < 1 or self.input_nc < 1 or self.output_nc < 1:
            raise CheckpointError("U-Net widths and channel counts must be positive")
        if self.norm not in NORMS:
            raise CheckpointError(f"unknown norm layer {self.norm!r}; choose one of {', '.join(NORMS)}")

    @property
    def min_size(self) -> int:
        """Image side length must be a multiple of this."""
        return 2**self.num_downs


def default_num_downs(size: int) -> int:
    """pix2pix uses unet_256 (8 downsamplings) at 256 px; smaller images get a shallower U-Net."""
    if size < 32:
        raise InputError(f"--size {size} is too small for a U-Net (at least 32 px, 5 downsamplings); pass a larger --size")
    depth = min(8, int(math.log2(size)))
    if size % (2**depth):
        raise InputError(f"--size {size} is not a multiple of {2**depth}; pass --size {size // 2**depth * 2**depth} or give --num-downs")
    return depth


@dataclass(frozen=True)
class ModelSpec:
    """Architecture flags for a new generator (None = default for the image size)."""

    num_downs: int | None = None
    ngf: int = defaults.NGF
    norm: str = defaults.NORM
    use_dropout: bool = defaults.DROPOUT

    def build(self, size: int, input_nc: int = 3, output_nc: int = 3) -> UnetArch:
        if self.ngf < 1:
            raise InputError(f"--ngf must be at least 1, not {self.ngf}")
        if self.num_downs is not None and self.num_downs < 5:
            raise InputError(f"--num-downs must be at least 5 (pix2pix U-Nets downsample at least 5 times), not {self.num_downs}")
        depth = default_num_downs(size) if self.num_downs is None else self.num_downs
        arch = UnetArch(input_nc=input_nc, output_nc=output_nc, num_downs=depth, ngf=self.ngf, norm=self.norm, use_dropout=self.use_dropout)
        arch.validate()
        if size % arch.min_size:
            raise InputError(f"--size {size} is not a multiple of {arch.min_size} (a U-Net with {depth} downsamplings); change --size or --num-downs")
        return arch


class UnetGenerator(nn.Module):
    """The pix2pix U-Net: ``num_downs`` downsamplings, so an image side must be a multiple of 2**num_downs.

    Input (N, input_nc, H, W) in [-1, 1]; output (N, output_nc, H, W) in [-1, 1] (tanh).
    """

    def __init__(self, arch: UnetArch) -> None:
        super().__init__()
        arch.validate()
        self.arch = arch
        ngf, norm, drop = arch.ngf, arch.norm, arch.use_dropout
        block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, norm=norm, innermost=True)
        for _ in range(arch.num_downs - 5):
            block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, submodule=block, norm=norm, use_dropout=drop)
        block = UnetSkipConnectionBlock(ngf * 4, ngf * 8, submodule=block, norm=norm)
        block = UnetSkipConnectionBlock(ngf * 2, ngf * 4, submodule=block, norm=norm)
        block = UnetSkipConnectionBlock(ngf, ngf * 2, submodule=block, norm=norm)
        self.model = UnetSkipConnectionBlock(arch.output_nc, ngf, input_nc=arch.input_nc, submodule=block, outermost=True, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class NLayerDiscriminator(nn.Module):
    """The conditional PatchGAN of pix2pix; fed ``cat([input, output], 1)``, returns a logit map."""

    def __init__(self, input_nc: int, ndf: int = 64, n_layers: int = 3, norm: str = "batch") -> None:
        super().__init__()
        norm_layer = get_norm_layer(norm)
        use_bias = _uses_bias(norm)
        kw, padw = 4, 1
        sequence: list[nn.Module] = [nn.Conv2d(input_nc, ndf, kernel_size=kw, stride=2, padding=padw), nn.LeakyReLU(0.2, True)]
        nf_mult = 1
        for n in range(1, n_layers):
            nf_mult_prev, nf_mult = nf_mult, min(2**n, 8)
            sequence += [
                nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, kernel_size=kw, stride=2, padding=padw, bias=use_bias),
                norm_layer(ndf * nf_mult),
                nn.LeakyReLU(0.2, True),
            ]
        nf_mult_prev, nf_mult = nf_mult, min(2**n_layers, 8)
        sequence += [
            nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, kernel_size=kw, stride=1, padding=padw, bias=use_bias),
            norm_layer(ndf * nf_mult),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * nf_mult, 1, kernel_size=kw, stride=1, padding=padw),
        ]
        self.model = nn.Sequential(*sequence)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def init_weights(net: nn.Module, gain: float = 0.02, generator: torch.Generator | None = None) -> None:
    """pix2pix 'normal' init: conv weights N(0, 0.02), norm weights N(1, 0.02), biases 0."""
    for m in net.modules():
        name = m.__class__.__name__
        if hasattr(m, "weight") and m.weight is not None and ("Conv" in name or "Linear" in name):
            with torch.no_grad():
                m.weight.normal_(0.0, gain, generator=generator)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif ("BatchNorm2d" in name or "GroupNorm" in name) and getattr(m, "weight", None) is not None:
            with torch.no_grad():
                m.weight.normal_(1.0, gain, generator=generator)
            nn.init.zeros_(m.bias)
