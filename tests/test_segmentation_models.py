"""Segmentation models: torchvision architectures as plain state_dicts (round trip, classes read
from the last layer, nothing downloaded), the U-Net with C logits, privaudit segmentation
checkpoints (task, classes, palette, normalisation) and exported models returning {"out": ...}."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from privaudit.errors import CheckpointError, InputError
from privaudit.models.checkpoint import load_model
from privaudit.models.networks import Identity
from privaudit.models.segcheckpoint import load_segmentation_model, peek_task, resolve_task, save_segmentation_checkpoint
from privaudit.models.seginference import iter_log_posteriors
from privaudit.models.segnets import SegArch, SegInfo, SegSpec, build, normalise, unet_seg_arch

ARCH = "lraspp_mobilenet_v3_large"  # the smallest torchvision segmentation network


def _randomise_bn(net: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, buf in net.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(0.1 * torch.randn(buf.shape, generator=g))
            elif name.endswith("running_var"):
                buf.copy_(0.5 + torch.rand(buf.shape, generator=g))


@pytest.fixture(scope="module")
def lraspp(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    """A randomly initialised 3-class LR-ASPP and its plain state_dict file."""
    net = build(SegArch(name=ARCH, num_classes=3), seed=0)
    _randomise_bn(net)
    net.eval()
    path = tmp_path_factory.mktemp("tv") / "lraspp.pth"
    torch.save(net.state_dict(), path)
    return net, path


def _photos(n: int = 2, size: int = 32) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)


def test_building_downloads_nothing(monkeypatch: pytest.MonkeyPatch):
    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    net = build(SegArch(name=ARCH, num_classes=2), seed=0)
    assert net.classifier.high_classifier.out_channels == 2


def test_torchvision_state_dict_round_trip(lraspp):
    net, path = lraspp
    model = load_segmentation_model(path, SegSpec(arch=ARCH), device="cpu")
    assert model.task == "segmentation" and model.format == "state_dict"
    assert model.segmentation.num_classes == 3  # read from the classifier's weights
    assert model.segmentation.normalization["name"] == "imagenet"
    x = _photos()
    with torch.inference_mode():
        (_, logp), = list(iter_log_posteriors(model, x))
        ref = F.log_softmax(net(normalise(x, model.segmentation.normalization))["out"], 1)
    assert torch.allclose(logp, ref, atol=1e-5)
    # the ImageNet statistics are torchvision's
    assert model.segmentation.normalization["mean"] == [0.485, 0.456, 0.406]


def test_state_dict_needs_the_right_arch_and_classes(lraspp):
    _, path = lraspp
    with pytest.raises(InputError, match="pass --arch"):
        load_segmentation_model(path, SegSpec(), device="cpu")
    with pytest.raises(CheckpointError, match="3 classes, not the --num-classes 5"):
        load_segmentation_model(path, SegSpec(arch=ARCH, num_classes=5), device="cpu")
    with pytest.raises(CheckpointError, match="does not fit|no deeplabv3_mobilenet_v3_large classifier"):
        load_segmentation_model(path, SegSpec(arch="deeplabv3_mobilenet_v3_large"), device="cpu")


def test_privaudit_checkpoint_records_task_classes_palette_normalisation(tmp_path: Path, lraspp):
    net, _ = lraspp
    info = SegInfo.new(3, normalization="imagenet", classes=["sky", "wall", "door"], palette=[(0, 0, 0), (128, 0, 0), (0, 128, 0)])
    path = tmp_path / "seg.pt"
    save_segmentation_checkpoint(path, net=net, arch=SegArch(name=ARCH, num_classes=3), image_size=32, info=info)
    raw = torch.load(path, weights_only=True)
    assert raw["task"] == "segmentation"
    assert raw["segmentation"]["classes"] == ["sky", "wall", "door"]
    assert raw["segmentation"]["palette"] == [[0, 0, 0], [128, 0, 0], [0, 128, 0]]
    assert raw["segmentation"]["normalization"]["name"] == "imagenet" and raw["segmentation"]["ignore_index"] == 255
    model = load_model(path, device="cpu")  # the one entry for every MODEL reads the task
    assert model.task == "segmentation" and model.segmentation.classes == ("sky", "wall", "door")
    assert peek_task(path) == "segmentation" and resolve_task(path, None) == "segmentation"
    x = _photos()
    with torch.inference_mode():
        (_, logp), = list(iter_log_posteriors(model, x))
        ref = F.log_softmax(net(normalise(x, info.normalization))["out"], 1)
    assert torch.allclose(logp, ref, atol=1e-5)
    with pytest.raises(InputError, match="contradicts"):
        load_segmentation_model(path, SegSpec(num_classes=4), device="cpu")
    # the normalisation can be overridden, and the override is recorded
    m2 = load_segmentation_model(path, SegSpec(normalize="unit"), device="cpu")
    assert m2.segmentation.normalization["name"] == "unit" and m2.segmentation.normalization_source == "--normalize"


def test_unet_outputs_logits_and_round_trips(tmp_path: Path):
    arch = unet_seg_arch(5, 32, ngf=4)
    net = build(arch, seed=0)
    assert isinstance(net.model.model[-1], Identity)  # no Tanh: logits are not bounded to [-1, 1]
    _randomise_bn(net)
    net.eval()
    # a plain state_dict of it loads as a U-Net with C = its output channels
    sd = tmp_path / "unet.pth"
    torch.save(net.state_dict(), sd)
    model = load_segmentation_model(sd, SegSpec(num_classes=5), device="cpu")
    assert model.arch["type"] == "unet" and model.segmentation.num_classes == 5
    assert model.segmentation.normalization["name"] == "symmetric"  # the U-Net takes [-1, 1]
    x = _photos()
    with torch.inference_mode():
        (_, logp), = list(iter_log_posteriors(model, x))
        ref = F.log_softmax(net(x.float() / 127.5 - 1.0), 1)
    assert torch.allclose(logp, ref, atol=1e-5)
    with pytest.raises(CheckpointError, match="5 output channels"):
        load_segmentation_model(sd, SegSpec(num_classes=4), device="cpu")


class _DictOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": self.conv(x)}


def test_exported_model_returning_a_dict(tmp_path: Path):
    net = _DictOut().eval()
    path = tmp_path / "seg.pt2"
    torch.export.save(torch.export.export(net, (torch.randn(2, 3, 32, 32),)), path)
    with pytest.raises(InputError, match="--num-classes C and --normalize"):
        load_segmentation_model(path, SegSpec(), device="cpu")
    model = load_segmentation_model(path, SegSpec(num_classes=4, normalize="unit"), device="cpu")
    assert model.format == "export" and model.fixed_batch == 2
    x = _photos(3)
    with torch.inference_mode():
        outs = [logp for _, logp in iter_log_posteriors(model, x)]
        ref = F.log_softmax(net(x.float() / 255.0)["out"], 1)
    assert torch.allclose(torch.cat(outs), ref, atol=1e-5)
    with pytest.raises(CheckpointError, match="check --num-classes"):
        list(iter_log_posteriors(load_segmentation_model(path, SegSpec(num_classes=5, normalize="unit"), device="cpu"), x))


def test_generator_checkpoint_is_not_a_segmentation_model(tiny_checkpoint: Path):
    assert peek_task(tiny_checkpoint) == "translation"
    with pytest.raises(CheckpointError, match="image-translation generator"):
        load_segmentation_model(tiny_checkpoint, SegSpec(num_classes=3), device="cpu")
    with pytest.raises(InputError, match="--task translation"):
        resolve_task(tiny_checkpoint, "translation", SegSpec(num_classes=3))


def test_private_compatible_residual_blocks_compute_the_same_function():
    from torchvision.models.mobilenetv3 import InvertedResidual, InvertedResidualConfig
    from torchvision.models.resnet import Bottleneck

    from privaudit.defenses.segmentation import make_private_compatible

    torch.manual_seed(0)
    blocks = [Bottleneck(16, 4), InvertedResidual(InvertedResidualConfig(16, 3, 32, 16, True, "HS", 1, 1, 1.0), nn.BatchNorm2d)]
    x = torch.randn(2, 16, 8, 8)
    for block in blocks:
        block.eval()
        before = block(x.clone())
        make_private_compatible(block)
        assert type(block).__name__.startswith("OutOfPlace")
        assert torch.allclose(block(x.clone()), before, atol=1e-6)


def test_backbone_weights_a_user_supplies_fill_the_backbone(tmp_path: Path):
    from torchvision.models import mobilenet_v3_large

    from privaudit.models.segnets import load_backbone

    classifier = mobilenet_v3_large(weights=None)  # stands in for a file of ImageNet weights the user downloaded
    _randomise_bn(classifier, seed=3)
    path = tmp_path / "mobilenet.pth"
    torch.save(classifier.state_dict(), path)
    arch = SegArch(name=ARCH, num_classes=3)
    net = build(arch, seed=0)
    record = load_backbone(net, path, arch)
    assert record["path"] == str(path) and len(record["sha256"]) == 64
    want = {k.removeprefix("features."): v for k, v in classifier.state_dict().items() if k.startswith("features.")}
    got = net.backbone.state_dict()
    assert set(got) <= set(want) and all(torch.equal(got[k], want[k]) for k in got)
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="does not fit the lraspp_mobilenet_v3_large backbone"):
        load_backbone(build(arch, seed=0), tmp_path / "other.pth", arch)
