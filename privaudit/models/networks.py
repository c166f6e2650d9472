"""pix2pix networks with the module tree of pytorch-CycleGAN-and-pix2pix, and loading weights into them.

The U-Net generator and the PatchGAN discriminator reproduce the reference classes
(``UnetGenerator``, ``UnetSkipConnectionBlock``, ``NLayerDiscriminator``) layer for layer, so a
reference ``*_net_G.pth`` state_dict loads into them key for key (``model.model.0.weight``,
``model.model.1.model.1.weight``, ...).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn

from privaudit.errors import CheckpointError, InputError
from privaudit.models.arch import NORMS, ArchOverrides, UnetArch, check_norm, explain_mismatch
from privaudit import defaults


class Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def get_norm_layer(norm: str) -> Callable[[int], nn.Module]:
    """Norm layer factory as in the reference; ``group`` is what Opacus needs for DP-SGD."""
    check_norm(norm, choices=NORMS)
    if norm == "batch":
        return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    if norm == "instance":
        return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    if norm == "group":
        # GroupNorm with affine parameters stands in for BatchNorm under DP-SGD (per-sample gradients).
        return lambda c: nn.GroupNorm(min(32, c), c, affine=True)
    return lambda c: Identity()


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


class UnetGenerator(nn.Module):
    """The pix2pix U-Net: ``num_downs`` downsamplings, so an image side must be a multiple of 2**num_downs.

    Input (N, input_nc, H, W) in [-1, 1]; output (N, output_nc, H, W) in [-1, 1] (tanh).
    """

    def __init__(self, arch: UnetArch) -> None:
        super().__init__()
        arch.validate()  # InputError: the arguments; loaders check a file's record first (CheckpointError)
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

    def __init__(self, input_nc: int, ndf: int = defaults.NDF, n_layers: int = 3, norm: str = defaults.NORM) -> None:
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

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The activations after each LeakyReLU (n_layers + 1 of them), then the logits: what
        pix2pixHD's feature-matching loss compares."""
        out = []
        for layer in self.model:
            x = layer(x)
            if isinstance(layer, nn.LeakyReLU):
                out.append(x)
        return out + [x]


def patch_layers(size: int, most: int = 3) -> int:
    """The most PatchGAN layers (at most ``most``) that leave a patch map of at least 1x1 on a
    ``size``-px image: each layer halves the side, then two 4x4 convolutions take 2 px (size >= 3*2**n)."""
    for n in range(most, 0, -1):
        if size >= 3 * 2**n:
            return n
    raise InputError(f"a {size}x{size} px image is too small for a PatchGAN discriminator (6 px at least); use fewer --num-D scales or larger images")


class MultiscaleDiscriminator(nn.Module):
    """pix2pixHD's multi-scale discriminator: ``num_D`` conditional PatchGANs, the k-th on the input
    downsampled k times (3x3 average pooling, stride 2). A scale whose image is too small for three
    layers gets fewer (``patch_layers``). ``forward`` returns the logit maps, finest first."""

    def __init__(self, input_nc: int, image_size: int, num_D: int, ndf: int = defaults.NDF, norm: str = defaults.NORM) -> None:
        super().__init__()
        sizes = [image_size]
        for _ in range(num_D - 1):
            sizes.append((sizes[-1] + 1) // 2)
        self.scales = nn.ModuleList(NLayerDiscriminator(input_nc, ndf=ndf, n_layers=patch_layers(s), norm=norm) for s in sizes)

    @staticmethod
    def downsample(x: torch.Tensor) -> torch.Tensor:
        return nn.functional.avg_pool2d(x, kernel_size=3, stride=2, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for k, d in enumerate(self.scales):
            if k:
                x = self.downsample(x)
            out.append(d(x))
        return out

    def features(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        """Per scale, finest first: ``NLayerDiscriminator.features``."""
        out = []
        for k, d in enumerate(self.scales):
            if k:
                x = self.downsample(x)
            out.append(d.features(x))
        return out


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


# ----------------------------------------------------------------------------------------------
# weights from a file


def check_finite(tensors: Iterable[tuple[str, torch.Tensor]], p: Path | str) -> None:
    """CheckpointError naming the first tensor with a NaN or inf."""
    for name, t in tensors:
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise CheckpointError(f"{p} has non-finite weights (NaN or inf) in {name}; training diverged or the file is corrupt, use an earlier checkpoint")


def clean_state_dict(state: Mapping[str, Any], p: Path | str) -> dict[str, torch.Tensor]:
    """A file's state_dict as tensors only, ``module.`` (DataParallel) prefixes dropped, all finite."""
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if k == "_metadata":
            continue
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{p} entry {k!r} is a {type(v).__name__}, not a tensor; this is not a generator state_dict")
        out[k.removeprefix("module.")] = v
    if not out:
        raise CheckpointError(f"{p} holds no tensors; it is not a generator checkpoint")
    check_finite(out.items(), p)
    return out


def unet_from_state_dict(arch: UnetArch, state: Mapping[str, torch.Tensor], p: Path | str, overrides: ArchOverrides) -> UnetGenerator:
    """A ``UnetGenerator(arch)`` holding ``state``; CheckpointError saying key by key how they differ."""
    net = UnetGenerator(arch)
    expected = net.state_dict()
    if arch.norm == "instance":
        # Old pix2pix checkpoints carry InstanceNorm running stats that the layer no longer has.
        state = {k: v for k, v in state.items() if not (k.endswith(("running_mean", "running_var", "num_batches_tracked")) and k not in expected)}
    problem = explain_mismatch(expected, state)
    if problem:
        desc = f"U-Net(num_downs={arch.num_downs}, ngf={arch.ngf}, norm={arch.norm})"
        raise CheckpointError(f"{p} does not fit {desc}: {problem}; {overrides.hint()}")
    net.load_state_dict(state, strict=True)
    return net
