"""Segmentation networks: torchvision's segmentation architectures and the pix2pix U-Net with C
output channels, what a checkpoint records about them, and the layer that turns a network's
output into the posteriors a deployed model releases.

* ``SegArch``: the architecture (``unet`` or a torchvision name), its classes and norm layer;
  ``build`` makes the network, randomly initialised: no weights are ever downloaded;
* ``SegInfo``: what a segmentation checkpoint records beside its weights: class names, palette,
  the input normalisation and the ignore index;
* ``Posteriors``: wraps a network that returns (N, C, H, W) logits (or torchvision's
  ``{"out": logits}``) and returns log-posteriors; the defenses replace it by what they release
  (``defenses.argmax.ArgmaxRelease``, ``defenses.segmentation.PosteriorNoise``).

Inputs: uint8 photos scaled to [0, 1] and normalised with the recorded mean and std
(``NORMALIZATIONS``): torchvision's ImageNet statistics for torchvision networks, mean = std = 0.5
(images in [-1, 1]) for the U-Net, as for generators.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from privaudit import defaults
from privaudit.errors import CheckpointError, InputError, PrivauditError
from privaudit.models.arch import UnetArch, check_size, default_num_downs, explain_mismatch
from privaudit.models.networks import Identity, UnetGenerator, init_weights

TORCHVISION_ARCHS = ("fcn_resnet50", "fcn_resnet101", "deeplabv3_resnet50", "deeplabv3_resnet101", "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large")
SEG_ARCHS = ("unet", *TORCHVISION_ARCHS)
NORMALIZATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # torchvision's weight transforms
    "symmetric": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # [-1, 1], as pix2pix
    "unit": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),  # [0, 1]
}
SEG_NORMS = ("batch", "group")
# Released posteriors are clamped to this before the log: a defense that releases labels only
# (one-hot) or noisy posteriors gives each wrong pixel a finite loss of -log(PROB_FLOOR) ≈ 27.6.
PROB_FLOOR = 1e-12
LOG_FLOOR = math.log(PROB_FLOOR)


def check_arch_name(name: str) -> str:
    if name not in SEG_ARCHS:
        raise InputError(f"unknown --arch {name!r}; choose unet or a torchvision segmentation architecture: {', '.join(TORCHVISION_ARCHS)}")
    return name


def default_normalization(arch_name: str) -> str:
    return "symmetric" if arch_name == "unet" else "imagenet"


def normalization_record(name: str) -> dict[str, Any]:
    if name not in NORMALIZATIONS:
        raise InputError(f"unknown --normalize {name!r}; use imagenet (torchvision models), symmetric (images in [-1, 1], the U-Net) or unit ([0, 1])")
    mean, std = NORMALIZATIONS[name]
    return {"name": name, "mean": list(mean), "std": list(std)}


@dataclass(frozen=True)
class SegArch:
    """A segmentation network: ``name`` (``unet`` or a torchvision architecture), ``num_classes``,
    ``norm`` (batch; group for DP-SGD, whose per-sample gradients BatchNorm would mix), and for the
    U-Net its ``unet`` record (output_nc = num_classes), for torchvision nets ``aux_loss``."""

    name: str
    num_classes: int
    norm: str = "batch"
    unet: UnetArch | None = None
    aux_loss: bool = False

    def to_dict(self) -> dict[str, Any]:
        if self.name == "unet":
            assert self.unet is not None
            return self.unet.to_dict()
        return {"type": "torchvision", "name": self.name, "num_classes": self.num_classes, "norm": self.norm, "aux_loss": self.aux_loss,
                "input_nc": 3, "output_nc": self.num_classes}

    @classmethod
    def from_dict(cls, d: Any, p: Path | str = "checkpoint") -> "SegArch":
        """The architecture a checkpoint records; CheckpointError naming ``p`` when it is malformed."""
        if not isinstance(d, Mapping):
            raise CheckpointError(f"{p} records no architecture; re-save the model with privaudit")
        if d.get("type") == "unet":
            u = UnetArch.from_dict(d, p)
            return cls(name="unet", num_classes=u.output_nc, norm=u.norm, unet=u)
        if d.get("type") == "torchvision":
            name, c, norm, aux = d.get("name"), d.get("num_classes"), d.get("norm", "batch"), d.get("aux_loss", False)
            if name not in TORCHVISION_ARCHS or isinstance(c, bool) or not isinstance(c, int) or c < 2 or norm not in SEG_NORMS or not isinstance(aux, bool):
                raise CheckpointError(f"{p} records an impossible segmentation architecture {dict(d)!r:.120}; re-save the model with privaudit")
            return cls(name=name, num_classes=c, norm=norm, aux_loss=aux)
        raise CheckpointError(f"{p} records an unknown architecture {d.get('type')!r}; re-save it with this privaudit version")

    def describe(self) -> str:
        if self.unet is not None:
            u = self.unet
            return f"U-Net(num_downs={u.num_downs}, ngf={u.ngf}, norm={u.norm}) → {self.num_classes} classes"
        return f"{self.name} ({self.norm} norm) → {self.num_classes} classes"


def unet_seg_arch(num_classes: int, size: int, *, ngf: int = defaults.SEG_NGF, num_downs: int | None = None, norm: str = "batch",
                  use_dropout: bool = False) -> SegArch:
    """The U-Net for ``num_classes`` classes at ``size`` px (depth: pix2pix's for the size)."""
    depth = default_num_downs(size) if num_downs is None else num_downs
    u = UnetArch(input_nc=3, output_nc=num_classes, num_downs=depth, ngf=ngf, norm=norm, use_dropout=use_dropout).validate()
    check_size(size, depth, new=True)
    return SegArch(name="unet", num_classes=num_classes, norm=norm, unet=u)


class SegmentationUnet(UnetGenerator):
    """The pix2pix U-Net returning logits: the outermost Tanh (which would bound every logit to
    [-1, 1] and cap the confidence) is an identity. Same module tree and keys as the generator."""

    def __init__(self, arch: UnetArch) -> None:
        super().__init__(arch)
        self.model.model[-1] = Identity()


def build(arch: SegArch, *, seed: int | None = None) -> nn.Module:
    """The network of ``arch``, randomly initialised (seeded with ``seed`` when given). A torchvision
    network is built with ``weights=None, weights_backbone=None``: nothing is downloaded."""
    if seed is not None:
        torch.manual_seed(seed)
    if arch.name == "unet":
        assert arch.unet is not None
        net: nn.Module = SegmentationUnet(arch.unet)
        init_weights(net)
        return net
    from torchvision.models import segmentation as tvs

    kwargs: dict[str, Any] = {"weights": None, "weights_backbone": None, "num_classes": arch.num_classes}
    if not arch.name.startswith("lraspp"):
        kwargs["aux_loss"] = arch.aux_loss
    net = getattr(tvs, arch.name)(**kwargs)
    if arch.norm == "group":
        net = group_norm(net)
    return net


def group_norm(net: nn.Module) -> nn.Module:
    """``net`` with every BatchNorm replaced by GroupNorm (Opacus's ``ModuleValidator.fix``), so
    that per-sample gradients exist (DP-SGD)."""
    from opacus.validators import ModuleValidator

    return ModuleValidator.fix(net)


def classifier_classes(name: str, state: Mapping[str, torch.Tensor]) -> int | None:
    """The number of classes a torchvision segmentation state_dict's last layer outputs, or None."""
    key = "classifier.high_classifier.weight" if name.startswith("lraspp") else "classifier.4.weight"
    w = state.get(key)
    return int(w.shape[0]) if w is not None and w.ndim == 4 else None


def load_weights(arch: SegArch, state: Mapping[str, torch.Tensor], p: Path | str, hint: str = "") -> nn.Module:
    """``build(arch)`` holding ``state``; CheckpointError saying key by key how they differ."""
    net = build(arch)
    problem = explain_mismatch(net.state_dict(), state)
    if problem:
        raise CheckpointError(f"{p} does not fit {arch.describe()}: {problem}" + (f"; {hint}" if hint else ""))
    net.load_state_dict(state, strict=True)
    return net


def load_backbone(net: nn.Module, path: Path, arch: SegArch) -> dict[str, Any]:
    """Copy a user-supplied backbone file (a torchvision ResNet or MobileNetV3 state_dict) into the
    backbone of a torchvision segmentation ``net``; every backbone weight must be filled. Returns
    what the checkpoint records (path and sha256)."""
    from privaudit.io import sha256_file
    from privaudit.models.checkpoint import safe_torch_load
    from privaudit.models.networks import clean_state_dict

    if arch.name == "unet":
        raise InputError("--backbone-weights is for torchvision architectures; the U-Net has no pretrained backbone")
    obj = safe_torch_load(path, what="model")
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state_dict; save the backbone's state_dict()")
    state = clean_state_dict(obj, path)
    backbone = net.backbone  # type: ignore[attr-defined]
    want = backbone.state_dict()
    if arch.name.startswith(("deeplabv3_mobilenet", "lraspp")):
        state = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    got = {k: v for k, v in state.items() if k in want}
    missing = [k for k in want if k not in got or got[k].shape != want[k].shape]
    if missing:
        raise CheckpointError(f"{path} does not fit the {arch.name} backbone ({len(missing)} weights missing or of another shape, e.g. {missing[0]}); "
                              "give the ImageNet state_dict of the matching torchvision classifier (resnet50/101 or mobilenet_v3_large)")
    backbone.load_state_dict(got, strict=True)
    return {"path": str(path), "sha256": sha256_file(path)}


def logits_of(out: Any) -> torch.Tensor:
    """The logits in what a segmentation network returns: a tensor, torchvision's ``{"out": ...}``
    or a tuple whose first item is the logits."""
    if isinstance(out, Mapping):
        if "out" not in out:
            raise CheckpointError(f"the model returned a dict with keys {', '.join(map(str, out))[:80]} but no 'out'; a segmentation model returns "
                                  "(N, C, H, W) logits or {'out': logits}")
        out = out["out"]
    elif isinstance(out, (tuple, list)) and out:
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise CheckpointError(f"the model returned a {type(out).__name__}; a segmentation model returns (N, C, H, W) logits or {{'out': logits}}")
    return out


class Posteriors(nn.Module):
    """What an undefended segmentation model releases: log-posteriors ``log_softmax(logits)``,
    float32 (N, C, H, W), from a network returning logits or ``{"out": logits}``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(logits_of(self.net(x)).float(), dim=1)


def inner_network(module: nn.Module) -> nn.Module:
    """The network under the release layers (``Posteriors`` and the defenses' wrappers)."""
    while hasattr(module, "inner"):
        module = module.inner  # type: ignore[assignment]
    return module.net if isinstance(module, Posteriors) else module


@dataclass(frozen=True)
class SegInfo:
    """What a segmentation checkpoint records beside its architecture: the class names (their
    number is C), their palette colours (or None), the input normalisation and the ignore index."""

    classes: tuple[str, ...]
    normalization: dict[str, Any]
    ignore_index: int = defaults.IGNORE_INDEX
    palette: tuple[tuple[int, int, int], ...] | None = None
    normalization_source: str = "recorded"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "classes": list(self.classes), "palette": [list(c) for c in self.palette] if self.palette else None,
                "normalization": dict(self.normalization), "ignore_index": self.ignore_index}

    @classmethod
    def new(cls, num_classes: int, *, normalization: str, ignore_index: int = defaults.IGNORE_INDEX, classes: Sequence[str] | None = None,
            palette: Sequence[Sequence[int]] | None = None) -> "SegInfo":
        names = tuple(str(c) for c in classes) if classes else tuple(str(k) for k in range(num_classes))
        if len(names) != num_classes:
            raise InputError(f"--classes names {len(names)} classes but --num-classes is {num_classes}; give one name per class")
        pal = tuple((int(r), int(g), int(b)) for r, g, b in palette) if palette else None
        return cls(classes=names, normalization=normalization_record(normalization), ignore_index=ignore_index, palette=pal)

    @classmethod
    def from_dict(cls, d: Any, p: Path | str) -> "SegInfo":
        """The record of a checkpoint, every field type-checked (the file comes from anyone)."""
        bad = CheckpointError(f"{p} records a malformed segmentation section; re-save the model with privaudit")
        if not isinstance(d, Mapping):
            raise bad
        classes, norm, ignore, palette = d.get("classes"), d.get("normalization"), d.get("ignore_index", defaults.IGNORE_INDEX), d.get("palette")
        if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) for c in classes):
            raise bad
        if isinstance(ignore, bool) or not isinstance(ignore, int) or not 0 <= ignore <= 255:
            raise bad
        if not isinstance(norm, Mapping) or not all(isinstance(norm.get(k), list) and len(norm[k]) == 3 and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in norm[k]) for k in ("mean", "std")):
            raise bad
        if any(v <= 0 for v in norm["std"]):
            raise bad
        pal = None
        if palette is not None:
            if not isinstance(palette, list) or not all(isinstance(c, list) and len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c) for c in palette):
                raise bad
            pal = tuple((c[0], c[1], c[2]) for c in palette)
        return cls(classes=tuple(classes), normalization={"name": str(norm.get("name", "custom")), "mean": list(norm["mean"]), "std": list(norm["std"])},
                   ignore_index=ignore, palette=pal)

    def with_overrides(self, *, normalization: str | None = None, ignore_index: int | None = None) -> "SegInfo":
        changes: dict[str, Any] = {}
        if normalization is not None:
            changes["normalization"] = normalization_record(normalization)
            changes["normalization_source"] = "--normalize"
        if ignore_index is not None:
            changes["ignore_index"] = ignore_index
        return replace(self, **changes) if changes else self


def normalise(x: torch.Tensor, info: Mapping[str, Any]) -> torch.Tensor:
    """uint8 (N, 3, H, W) photos → float, scaled to [0, 1] and normalised with ``info``'s mean and std."""
    mean = torch.tensor(info["mean"], dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(info["std"], dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    return (x.float() / 255.0 - mean) / std


def release_layers(module: nn.Module) -> list[str]:
    """Names of the release layers around a network, outermost first (for messages)."""
    names = []
    while hasattr(module, "inner"):
        names.append(type(module).__name__)
        module = module.inner  # type: ignore[assignment]
    return names


@dataclass
class SegSpec:
    """What the command line says about a segmentation model (None: what the file records, else the default).

    ``arch``: a torchvision architecture or ``unet`` (a state_dict needs it); ``num_classes``;
    ``normalize``: imagenet, symmetric or unit; ``ignore_index``: the label value of unlabelled pixels."""

    arch: str | None = None
    num_classes: int | None = None
    normalize: str | None = None
    ignore_index: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> "SegSpec":
        from privaudit.data.labels import check_ignore_index, check_num_classes

        if self.arch is not None:
            check_arch_name(self.arch)
        if self.num_classes is not None:
            check_num_classes(self.num_classes)
        if self.normalize is not None:
            normalization_record(self.normalize)
        if self.ignore_index is not None:
            check_ignore_index(self.ignore_index)
        return self

    @property
    def given(self) -> bool:
        return any(v is not None for v in (self.arch, self.num_classes, self.normalize, self.ignore_index))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("extra")
        return d


def spec_error(p: Path | str, what: str, recorded: Any, flag: str, given: Any) -> PrivauditError:
    return InputError(f"{flag} {given} contradicts {p}, which records {what} {recorded}; drop {flag}")
