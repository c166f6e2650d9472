"""The U-Net and PatchGAN reproduce the module tree of pytorch-CycleGAN-and-pix2pix, so reference
``*_net_G.pth`` files load key for key. The expected key lists below are written from the
reference code (models/networks.py: UnetGenerator, UnetSkipConnectionBlock, NLayerDiscriminator),
not produced by privaudit.

Reference UnetSkipConnectionBlock.model (a Sequential):
  outermost: [downconv, submodule, uprelu, upconv(bias=True), tanh]         -> params at 0, 3
  innermost: [downrelu, downconv, uprelu, upconv, upnorm]                    -> params at 1, 3, 4
  middle:    [downrelu, downconv, downnorm, submodule, uprelu, upconv, upnorm(, dropout)]
                                                                             -> params at 1, 2, 5, 6
Convolutions have a bias only with InstanceNorm (use_bias), except the outermost upconv, which
always has one. BatchNorm2d(affine, tracked) holds weight, bias, running_mean, running_var,
num_batches_tracked; InstanceNorm2d(affine=False) holds nothing.
"""

from __future__ import annotations

import pytest
import torch

from privaudit.errors import CheckpointError, InputError
from privaudit.models.arch import UnetArch, infer_unet_arch
from privaudit.models.networks import NLayerDiscriminator, UnetGenerator

# --- num_downs=5, ngf=4, norm=batch, written out in full --------------------------------------

_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _bn(prefix: str, c: int) -> list[tuple[str, tuple[int, ...]]]:
    return [(f"{prefix}.{k}", () if k == "num_batches_tracked" else (c,)) for k in _BN]


P1 = "model.model.1.model"  # block 1 (ngf -> ngf*2)
P2 = P1 + ".3.model"  # block 2 (ngf*2 -> ngf*4)
P3 = P2 + ".3.model"  # block 3 (ngf*4 -> ngf*8)
P4 = P3 + ".3.model"  # block 4: innermost (ngf*8 -> ngf*8)

UNET5_NGF4_BATCH: list[tuple[str, tuple[int, ...]]] = [
    ("model.model.0.weight", (4, 3, 4, 4)),  # outermost downconv 3 -> ngf, no bias
    (f"{P1}.1.weight", (8, 4, 4, 4)),
    *_bn(f"{P1}.2", 8),
    (f"{P2}.1.weight", (16, 8, 4, 4)),
    *_bn(f"{P2}.2", 16),
    (f"{P3}.1.weight", (32, 16, 4, 4)),
    *_bn(f"{P3}.2", 32),
    (f"{P4}.1.weight", (32, 32, 4, 4)),  # innermost downconv
    (f"{P4}.3.weight", (32, 32, 4, 4)),  # innermost upconv (ConvTranspose: in, out, k, k)
    *_bn(f"{P4}.4", 32),
    (f"{P3}.5.weight", (64, 16, 4, 4)),  # upconv takes the skip-concatenated inner_nc * 2
    *_bn(f"{P3}.6", 16),
    (f"{P2}.5.weight", (32, 8, 4, 4)),
    *_bn(f"{P2}.6", 8),
    (f"{P1}.5.weight", (16, 4, 4, 4)),
    *_bn(f"{P1}.6", 4),
    ("model.model.3.weight", (8, 3, 4, 4)),  # outermost upconv ngf*2 -> 3, with bias
    ("model.model.3.bias", (3,)),
]

UNET5_NGF4_INSTANCE: list[tuple[str, tuple[int, ...]]] = [
    ("model.model.0.weight", (4, 3, 4, 4)),
    ("model.model.0.bias", (4,)),
    (f"{P1}.1.weight", (8, 4, 4, 4)),
    (f"{P1}.1.bias", (8,)),
    (f"{P2}.1.weight", (16, 8, 4, 4)),
    (f"{P2}.1.bias", (16,)),
    (f"{P3}.1.weight", (32, 16, 4, 4)),
    (f"{P3}.1.bias", (32,)),
    (f"{P4}.1.weight", (32, 32, 4, 4)),
    (f"{P4}.1.bias", (32,)),
    (f"{P4}.3.weight", (32, 32, 4, 4)),
    (f"{P4}.3.bias", (32,)),
    (f"{P3}.5.weight", (64, 16, 4, 4)),
    (f"{P3}.5.bias", (16,)),
    (f"{P2}.5.weight", (32, 8, 4, 4)),
    (f"{P2}.5.bias", (8,)),
    (f"{P1}.5.weight", (16, 4, 4, 4)),
    (f"{P1}.5.bias", (4,)),
    ("model.model.3.weight", (8, 3, 4, 4)),
    ("model.model.3.bias", (3,)),
]


def reference_unet_keys(num_downs: int, ngf: int, norm: str, input_nc: int = 3, output_nc: int = 3) -> list[tuple[str, tuple[int, ...]]]:
    """The reference UnetGenerator's state_dict (key, shape) list, following its constructor:
    innermost (ngf*8, ngf*8), num_downs-5 middle (ngf*8, ngf*8) blocks with dropout, then
    (ngf*4, ngf*8), (ngf*2, ngf*4), (ngf, ngf*2) and the outermost (output_nc, ngf, input_nc)."""
    bias = norm == "instance"

    def norm_keys(prefix: str, c: int) -> list[tuple[str, tuple[int, ...]]]:
        return _bn(prefix, c) if norm == "batch" else []

    def conv(prefix: str, shape: tuple[int, ...], with_bias: bool, out_c: int) -> list[tuple[str, tuple[int, ...]]]:
        return [(f"{prefix}.weight", shape)] + ([(f"{prefix}.bias", (out_c,))] if with_bias else [])

    # (outer_nc, inner_nc) of the blocks from just inside the outermost to the innermost
    blocks = [(ngf, ngf * 2), (ngf * 2, ngf * 4), (ngf * 4, ngf * 8)] + [(ngf * 8, ngf * 8)] * (num_downs - 5) + [(ngf * 8, ngf * 8)]

    def block(i: int, prefix: str) -> list[tuple[str, tuple[int, ...]]]:
        outer, inner = blocks[i]
        if i == len(blocks) - 1:  # innermost
            return (
                conv(f"{prefix}.1", (inner, outer, 4, 4), bias, inner)
                + conv(f"{prefix}.3", (inner, outer, 4, 4), bias, outer)
                + norm_keys(f"{prefix}.4", outer)
            )
        return (
            conv(f"{prefix}.1", (inner, outer, 4, 4), bias, inner)
            + norm_keys(f"{prefix}.2", inner)
            + block(i + 1, f"{prefix}.3.model")
            + conv(f"{prefix}.5", (inner * 2, outer, 4, 4), bias, outer)
            + norm_keys(f"{prefix}.6", outer)
        )

    return (
        conv("model.model.0", (ngf, input_nc, 4, 4), bias, ngf)
        + block(0, "model.model.1.model")
        + conv("model.model.3", (ngf * 2, output_nc, 4, 4), True, output_nc)
    )


def _layout(net: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in net.state_dict().items()]


def test_handwritten_lists_agree_with_reference_builder():
    # The two ways of writing the reference down agree with each other before judging our code.
    assert reference_unet_keys(5, 4, "batch") == UNET5_NGF4_BATCH
    assert reference_unet_keys(5, 4, "instance") == UNET5_NGF4_INSTANCE


def test_unet5_batch_layout_matches_reference_exactly():
    net = UnetGenerator(UnetArch(num_downs=5, ngf=4, norm="batch"))
    assert _layout(net) == UNET5_NGF4_BATCH


def test_unet5_instance_layout_matches_reference_exactly():
    net = UnetGenerator(UnetArch(num_downs=5, ngf=4, norm="instance"))
    assert _layout(net) == UNET5_NGF4_INSTANCE


@pytest.mark.parametrize("num_downs", [5, 6, 7, 8])
@pytest.mark.parametrize("norm", ["batch", "instance", "none"])
def test_unet_layout_matches_reference(num_downs, norm):
    net = UnetGenerator(UnetArch(num_downs=num_downs, ngf=4, norm=norm))
    assert _layout(net) == reference_unet_keys(num_downs, 4, norm)


def test_unet7_has_dropout_in_the_middle_blocks_only():
    net = UnetGenerator(UnetArch(num_downs=7, ngf=4, norm="batch", use_dropout=True))
    drops = [n for n, m in net.named_modules() if isinstance(m, torch.nn.Dropout)]
    # The two extra (ngf*8, ngf*8) blocks: index 7 of their Sequential, as in the reference.
    assert sorted(drops) == sorted([f"{P4}.7", f"{P4}.3.model.7"])
    assert not [m for m in UnetGenerator(UnetArch(num_downs=7, ngf=4, use_dropout=False)).modules() if isinstance(m, torch.nn.Dropout)]


def test_unet_layout_for_grayscale_input():
    net = UnetGenerator(UnetArch(input_nc=1, output_nc=3, num_downs=5, ngf=4, norm="batch"))
    assert _layout(net) == reference_unet_keys(5, 4, "batch", input_nc=1, output_nc=3)


def test_unet_forward_shape_and_range():
    net = UnetGenerator(UnetArch(num_downs=5, ngf=4)).eval()
    y = net(torch.randn(2, 3, 32, 32))
    assert y.shape == (2, 3, 32, 32)
    assert y.abs().max() <= 1.0


def test_unet_too_shallow_is_rejected():
    with pytest.raises(InputError, match="at least 5"):  # a bad argument; a file's record is a CheckpointError
        UnetGenerator(UnetArch(num_downs=4, ngf=4))


# --- infer_unet_arch -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arch",
    [
        UnetArch(input_nc=3, output_nc=3, num_downs=5, ngf=4, norm="batch"),
        UnetArch(input_nc=3, output_nc=3, num_downs=7, ngf=4, norm="instance"),
        UnetArch(input_nc=3, output_nc=3, num_downs=8, ngf=8, norm="batch"),
        UnetArch(input_nc=1, output_nc=3, num_downs=6, ngf=4, norm="none"),
        UnetArch(input_nc=3, output_nc=1, num_downs=5, ngf=8, norm="group"),
    ],
    ids=lambda a: f"d{a.num_downs}-ngf{a.ngf}-{a.norm}-{a.input_nc}to{a.output_nc}",
)
def test_infer_unet_arch_recovers_the_architecture(arch):
    state = UnetGenerator(arch).state_dict()
    got = infer_unet_arch(state)
    assert (got.num_downs, got.ngf, got.norm, got.input_nc, got.output_nc) == (arch.num_downs, arch.ngf, arch.norm, arch.input_nc, arch.output_nc)
    assert got.use_dropout is True  # invisible in a state_dict; pix2pix's default


def test_infer_unet_arch_rejects_other_state_dicts():
    with pytest.raises(CheckpointError, match="not a pix2pix U-Net"):
        infer_unet_arch({"fc.weight": torch.zeros(2, 2)})


def test_infer_unet_arch_rejects_truncated_depth():
    state = UnetGenerator(UnetArch(num_downs=5, ngf=4)).state_dict()
    cut = {k: v for k, v in state.items() if not k.startswith(P3)}
    with pytest.raises(CheckpointError, match="blocks deep"):
        infer_unet_arch(cut)


# --- PatchGAN --------------------------------------------------------------------------------


def test_patchgan_output_shape_for_32px():
    # 32 -> 16 -> 8 -> 4 (three stride-2 convs), then two stride-1 k4 p1 convs: 4 -> 3 -> 2.
    d = NLayerDiscriminator(input_nc=6, ndf=8, n_layers=3, norm="batch")
    out = d(torch.randn(2, 6, 32, 32))
    assert out.shape == (2, 1, 2, 2)


def test_patchgan_layout_matches_reference():
    ndf = 8
    expected = [
        ("model.0.weight", (ndf, 6, 4, 4)),
        ("model.0.bias", (ndf,)),
        ("model.2.weight", (ndf * 2, ndf, 4, 4)),
        *_bn("model.3", ndf * 2),
        ("model.5.weight", (ndf * 4, ndf * 2, 4, 4)),
        *_bn("model.6", ndf * 4),
        ("model.8.weight", (ndf * 8, ndf * 4, 4, 4)),
        *_bn("model.9", ndf * 8),
        ("model.11.weight", (1, ndf * 8, 4, 4)),
        ("model.11.bias", (1,)),
    ]
    assert _layout(NLayerDiscriminator(input_nc=6, ndf=ndf, n_layers=3, norm="batch")) == expected
