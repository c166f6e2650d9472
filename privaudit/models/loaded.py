"""A generator loaded for inference (``LoadedModel``), what is known about it, and its modes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from privaudit.accel import Accel
from privaudit.errors import InputError


class RuntimeDefense(nn.Module):
    """A layer a defense wraps around the model at load time (``defenses.gauss.OutputNoise``,
    ``defenses.segmentation.PosteriorNoise``): noise of scale ``sigma`` from its own seeded
    generator, which ``reseed`` resets."""

    def __init__(self, sigma: float, seed: int = 0) -> None:
        super().__init__()
        self.sigma = float(sigma)
        self._seed = seed
        self._rng: torch.Generator | None = None

    def reseed(self, seed: int) -> None:
        self._seed = seed
        self._rng = None

    def noise(self, like: torch.Tensor) -> torch.Tensor:
        """``sigma`` · N(0, 1) of ``like``'s shape, device and dtype, the next draw of the seeded stream
        (started afresh on the device of ``like`` after ``reseed`` or a device change)."""
        if self._rng is None or self._rng.device != like.device:
            self._rng = torch.Generator(device=like.device)
            self._rng.manual_seed(self._seed)
        return self.sigma * torch.randn(like.shape, generator=self._rng, device=like.device, dtype=like.dtype)


@dataclass
class LoadedModel:
    """A generator ready for inference, and what is known about it.

    ``module`` maps (N, C_in, H, W) in [-1, 1] to (N, C_out, H, W) in [-1, 1] (a segmentation
    model: see ``task``).
    """

    module: nn.Module
    path: str
    sha256: str
    format: str
    arch: dict[str, Any]
    image_size: int | None = None
    direction: str | None = None
    defense: dict[str, Any] = field(default_factory=lambda: {"method": "none"})
    provenance: dict[str, Any] = field(default_factory=dict)
    # {complete, epochs_done, epochs_total} as recorded by save_checkpoint; None: unknown (older or foreign files)
    training: dict[str, Any] | None = None
    fixed_batch: int | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    # how inference uses the device (``load_model`` sets it; ``privaudit.accel``); None: plain fp32
    accel: Accel | None = None

    @property
    def runtime(self) -> Accel:
        """The ``Accel`` the model's forward passes run with (plain fp32 on ``device`` when none was set)."""
        return self.accel if self.accel is not None and self.accel.device == self.device else Accel(device=self.device)
    # "translation" (a generator) or "segmentation" (``module`` maps normalised photos to
    # log-posteriors (N, C, H, W); ``segmentation`` holds its ``models.segnets.SegInfo``)
    task: str = "translation"
    segmentation: Any = None

    @property
    def has_dropout(self) -> bool:
        return any(_is_dropout(m) for m in self.module.modules())

    def set_mode(self, *, stochastic: bool) -> str:
        """Eval mode everywhere; with ``stochastic`` the dropout layers (pix2pix's noise z) stay on.

        Returns the mode's name for the report. InputError when this model cannot be stochastic.
        """
        if self.format == "export":
            if stochastic:
                raise InputError(f"{self.path} is a torch.export program, whose dropout is frozen at export time; drop --stochastic")
            return "exported"
        self.module.eval()
        if stochastic:
            if not self.has_dropout:
                raise InputError(f"{self.path} has no dropout layers, so --stochastic would change nothing; drop it")
            if self.format == "torchscript" and _dropout_frozen(self.module):
                raise InputError(
                    f"{self.path} is a traced TorchScript model whose dropout was frozen off at export time; drop --stochastic "
                    "(or export with torch.jit.script, which keeps it switchable)"
                )
            for m in self.module.modules():
                if _is_dropout(m):
                    m.train()
            return "stochastic-dropout"
        return "eval"

    def reseed(self, seed: int) -> None:
        """Reseed every run-time defense layer in the model, so its outputs repeat."""
        for m in self.module.modules():
            if isinstance(m, RuntimeDefense):
                m.reseed(seed)

    def describe(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "format": self.format,
            "arch": self.arch,
            "image_size": self.image_size,
            "defense": self.defense,
        }


def _is_dropout(m: nn.Module) -> bool:
    if isinstance(m, nn.Dropout):
        return True
    return "Dropout" in str(getattr(m, "original_name", ""))


def _dropout_frozen(module: nn.Module) -> bool:
    """True when a TorchScript dropout layer has ``train`` baked in as a constant (torch.jit.trace
    records the mode at trace time), so switching it to train mode would silently change nothing."""
    for m in module.modules():
        graph = getattr(m, "graph", None) if _is_dropout(m) else None
        if graph is None:
            continue
        for node in graph.nodes():
            if node.kind() in ("aten::dropout", "aten::dropout_", "aten::feature_dropout"):
                train = list(node.inputs())[2]
                if train.node().kind() == "prim::Constant":
                    return True
    return False
