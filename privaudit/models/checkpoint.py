"""Loading and saving generators safely.

Formats accepted wherever a MODEL is:

* ``privaudit``: a self-describing dict (architecture, image size, defense, provenance, weights);
* ``pix2pix``: a bare ``*_net_G.pth`` state_dict of the reference U-Net; depth, width, channels and
  norm layer are inferred from its keys and shapes;
* ``export``: a ``torch.export`` program (``.pt2``) of any architecture;
* ``torchscript``: a TorchScript file of any architecture (older exports).

Pickle-based files are always opened with ``torch.load(..., weights_only=True)``: a file that needs
arbitrary objects unpickled is refused, so a model from a stranger never runs code. ``.pt2`` and
TorchScript archives are vetted member by member first (:mod:`privaudit.models.vetting`), and a
``.pt2`` is loaded with torch's unrestricted paths closed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import math
import pickle
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from privaudit import __version__
from privaudit.errors import CheckpointError, describe_os_error
from privaudit.io import atomic_torch_save, sha256_file
from privaudit.models import vetting
from privaudit.models.networks import NORMS, UnetArch, UnetGenerator

CHECKPOINT_FORMAT = "privaudit.checkpoint/1"


# ----------------------------------------------------------------------------------------------
# the deployed model: a generator plus whatever a defense adds at inference time


class OutputNoise(nn.Module):
    """Gauss defense: ``clamp(G(x) + N(0, sigma^2), -1, 1)``, seeded through ``reseed``.

    The clamp is what a deployed model does when it turns outputs into images.
    """

    def __init__(self, generator: nn.Module, sigma: float, seed: int = 0) -> None:
        super().__init__()
        self.generator = generator
        self.sigma = float(sigma)
        self._seed = seed
        self._rng: torch.Generator | None = None

    def reseed(self, seed: int) -> None:
        self._seed = seed
        self._rng = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.generator(x)
        if self.sigma == 0:
            return out
        if self._rng is None or self._rng.device != out.device:
            self._rng = torch.Generator(device=out.device)
            self._rng.manual_seed(self._seed)
        noise = torch.randn(out.shape, generator=self._rng, device=out.device, dtype=out.dtype)
        return (out + self.sigma * noise).clamp(-1.0, 1.0)


@dataclass
class LoadedModel:
    """A generator ready for inference, and what is known about it.

    ``module`` maps (N, C_in, H, W) in [-1, 1] to (N, C_out, H, W) in [-1, 1].
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

    @property
    def has_dropout(self) -> bool:
        return any(_is_dropout(m) for m in self.module.modules())

    def set_mode(self, *, stochastic: bool) -> str:
        """Eval mode everywhere; with ``stochastic`` the dropout layers (pix2pix's noise z) stay on.

        Returns the mode's name for the report.
        """
        if self.format == "export":
            if stochastic:
                raise CheckpointError(
                    f"{self.path} is a torch.export program, whose dropout is frozen at export time; drop --stochastic"
                )
            return "exported"
        self.module.eval()
        if stochastic:
            if not self.has_dropout:
                raise CheckpointError(f"{self.path} has no dropout layers, so --stochastic would change nothing; drop it")
            if self.format == "torchscript" and _dropout_frozen(self.module):
                raise CheckpointError(
                    f"{self.path} is a traced TorchScript model whose dropout was frozen off at export time; drop --stochastic "
                    "(or export with torch.jit.script, which keeps it switchable)"
                )
            for m in self.module.modules():
                if _is_dropout(m):
                    m.train()
            return "stochastic-dropout"
        return "eval"

    def reseed(self, seed: int) -> None:
        for m in self.module.modules():
            if isinstance(m, OutputNoise):
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


@dataclass(frozen=True)
class ArchOverrides:
    """User flags that override what is inferred from a pix2pix state_dict (None = infer)."""

    num_downs: int | None = None
    ngf: int | None = None
    norm: str | None = None
    use_dropout: bool | None = None

    def apply(self, arch: UnetArch) -> UnetArch:
        return UnetArch(
            input_nc=arch.input_nc,
            output_nc=arch.output_nc,
            num_downs=self.num_downs if self.num_downs is not None else arch.num_downs,
            ngf=self.ngf if self.ngf is not None else arch.ngf,
            norm=self.norm if self.norm is not None else arch.norm,
            use_dropout=self.use_dropout if self.use_dropout is not None else arch.use_dropout,
        )

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.num_downs, self.ngf, self.norm, self.use_dropout))


# ----------------------------------------------------------------------------------------------
# saving


def save_checkpoint(
    path: str | Path,
    *,
    generator: UnetGenerator,
    image_size: int,
    direction: str | None,
    defense: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
) -> None:
    """Write a self-describing privaudit checkpoint atomically (temporary file, then rename).

    ``training``: ``{complete, epochs_done, epochs_total}`` (``training.training_record``) for a
    model a training run wrote; a checkpoint written after epoch k < epochs_total says it is unfinished.
    """
    state = {k: v.detach().cpu().clone() for k, v in generator.state_dict().items()}
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "arch": generator.arch.to_dict(),
        "image_size": int(image_size),
        "direction": direction,
        "defense": defense or {"method": "none"},
        "provenance": {"tool": f"privaudit {__version__}", "created": _now(), **(provenance or {})},
        "state_dict": state,
    }
    if training is not None:
        ckpt["training"] = dict(training)
    atomic_torch_save(path, ckpt)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------------------------
# loading


def safe_torch_load(path: str | Path, *, what: str = "checkpoint") -> Any:
    """``torch.load(weights_only=True)`` with errors a user can act on."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{what} {p} does not exist; check the path")
    if p.is_dir():
        raise CheckpointError(f"{what} {p} is a folder; give the model file inside it (e.g. latest_net_G.pth)")
    if p.stat().st_size == 0:
        raise CheckpointError(f"{what} {p} is empty (0 bytes); the file is truncated, copy or export it again")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        try:
            data = p.read_bytes()
        except OSError:
            data = b""
        kind, detail = vetting.diagnose_pickle(data, str(exc))
        if kind == "dangerous":
            named = f" ({detail})" if detail else ""
            fix = (
                "privaudit loads tensors and plain data only, so re-save it as a state_dict "
                "(torch.save(model.state_dict(), path)) or export it with torch.export"
                if what in ("model", "checkpoint")
                else f"privaudit writes its {what} with tensors and plain data only, so this file is not one of them; delete it and start afresh"
            )
            raise CheckpointError(f"refusing to load {p}: it holds pickled Python objects{named} that could run code when loaded; {fix}") from None
        if kind == "protocol":
            raise CheckpointError(
                f"{p} was saved with pickle protocol {detail}, which the restricted unpickler cannot read; "
                "re-save it with torch.save(obj, path) and the default protocol"
            ) from None
        raise CheckpointError(f"{p} is not a PyTorch checkpoint (the restricted unpickler cannot read it); the file is corrupt or of another kind") from None
    except Exception as exc:  # torch.load raises many types on garbage (IndexError, KeyError, RuntimeError, ...)
        raise CheckpointError(f"{p} is not a readable PyTorch checkpoint ({type(exc).__name__}: {_first_line(str(exc))}); the file may be truncated or of another kind") from None


def _first_line(msg: str) -> str:
    line = msg.strip().splitlines()[0] if msg.strip() else "unknown error"
    return line[:160]


@contextlib.contextmanager
def _quiet_torch_logs() -> Iterator[None]:
    """torch.export.load logs whole tracebacks (as warnings) for archives it cannot read; privaudit says it in one line."""
    logger = logging.getLogger("torch.export")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def resolve_device(device: str | None = None) -> torch.device:
    """``auto``/None: CUDA when available, else CPU."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise CheckpointError(f"unknown device {device!r}; use auto, cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CheckpointError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    return dev


def load_model(
    path: str | Path,
    *,
    overrides: ArchOverrides | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
) -> LoadedModel:
    """Load any supported MODEL file. Raises CheckpointError with an actionable message."""
    p = Path(path)
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    if not p.exists():
        raise CheckpointError(f"model {p} does not exist; check the path")
    if p.is_dir():
        raise CheckpointError(f"model {p} is a folder; give the model file inside it (e.g. latest_net_G.pth)")
    kind = vetting.zip_kind(p)
    if kind in ("torchscript", "export"):
        # Read once: the bytes vetted are the bytes torch loads and the bytes hashed.
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise CheckpointError(describe_os_error(exc, action="read the model")) from None
        digest = hashlib.sha256(data).hexdigest()
        load = _load_torchscript if kind == "torchscript" else _load_export
        model = load(p, data, digest, dev)
    else:
        digest = sha256_file(p)
        obj = safe_torch_load(p, what="model")
        model = _from_object(obj, p, digest, overrides or ArchOverrides(), dev, seed)
    model.module.to(dev)
    model.device = dev
    model.set_mode(stochastic=False)
    return model


def _from_object(obj: Any, p: Path, digest: str, overrides: ArchOverrides, dev: torch.device, seed: int) -> LoadedModel:
    if not isinstance(obj, dict):
        raise CheckpointError(f"{p} holds a {type(obj).__name__}, not a state_dict or privaudit checkpoint; save model.state_dict() instead")
    if obj.get("format") == CHECKPOINT_FORMAT:
        return _load_privaudit(obj, p, digest, overrides, seed)
    if isinstance(obj.get("format"), str):
        raise CheckpointError(f"{p} has format {obj['format']!r}, which this privaudit ({__version__}) cannot read; upgrade privaudit")
    for key in ("state_dict", "model", "netG", "generator"):
        if isinstance(obj.get(key), dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            obj = obj[key]
            break
    state = _clean_state_dict(obj, p)
    arch = overrides.apply(infer_unet_arch(state, p))
    net = _build_and_load(arch, state, p, overrides)
    return LoadedModel(module=net, path=str(p), sha256=digest, format="pix2pix", arch=arch.to_dict())


def _load_privaudit(obj: dict[str, Any], p: Path, digest: str, overrides: ArchOverrides, seed: int) -> LoadedModel:
    arch_d = obj.get("arch")
    if not isinstance(arch_d, dict) or arch_d.get("type") != "unet":
        raise CheckpointError(f"{p} records an unknown architecture {arch_d!r}; re-save it with this privaudit version")
    arch = overrides.apply(UnetArch.from_dict(arch_d))
    state = obj.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"{p} has no weights (state_dict missing); the file is incomplete, save it again")
    net: nn.Module = _build_and_load(arch, _clean_state_dict(state, p), p, overrides)
    # The metadata comes from whoever wrote the file: check each field's type, so a malformed
    # record is a CheckpointError naming the field, not a crash somewhere downstream.
    defense = obj.get("defense") or {"method": "none"}
    if not isinstance(defense, dict) or not isinstance(defense.get("method", "none"), str):
        raise CheckpointError(f"{p} records a malformed defense {_short(defense)}; re-save the model with privaudit")
    if defense.get("method") == "gauss":
        sigma = defense.get("sigma", 0.0)
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not math.isfinite(sigma) or sigma < 0:
            raise CheckpointError(f"{p} records an invalid Gauss sigma {_short(sigma)}; it must be a finite number >= 0")
        net = OutputNoise(net, float(sigma), seed=seed)
    size = obj.get("image_size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise CheckpointError(f"{p} records an invalid image_size {_short(size)}; it must be a positive number of pixels, re-save the model with privaudit")
    direction = obj.get("direction")
    if direction is not None and direction not in ("AtoB", "BtoA"):
        raise CheckpointError(f"{p} records an invalid direction {_short(direction)}; it must be AtoB or BtoA, re-save the model with privaudit")
    provenance = obj.get("provenance") or {}
    return LoadedModel(
        module=net,
        path=str(p),
        sha256=digest,
        format="privaudit",
        arch=arch.to_dict(),
        image_size=size or None,
        direction=direction,
        defense=defense,
        provenance=provenance if isinstance(provenance, dict) else {"recorded": str(provenance)[:200]},
        training=_training_status(obj.get("training")),
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _training_status(rec: Any) -> dict[str, Any] | None:
    """The checkpoint's ``training`` record, or None (unknown) when absent or malformed."""
    if not isinstance(rec, dict) or not isinstance(rec.get("complete"), bool):
        return None
    done, total = rec.get("epochs_done"), rec.get("epochs_total")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (done, total)):
        return None
    return {"complete": rec["complete"], "epochs_done": done, "epochs_total": total}


def _clean_state_dict(state: dict[str, Any], p: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if k == "_metadata":
            continue
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{p} entry {k!r} is a {type(v).__name__}, not a tensor; this is not a generator state_dict")
        key = k[len("module."):] if k.startswith("module.") else k
        out[key] = v
    if not out:
        raise CheckpointError(f"{p} holds no tensors; it is not a generator checkpoint")
    for k, v in out.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise CheckpointError(f"{p} has non-finite weights (NaN or inf) in {k}; training diverged or the file is corrupt, use an earlier checkpoint")
    return out


def infer_unet_arch(state: dict[str, torch.Tensor], p: Path | str = "checkpoint") -> UnetArch:
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
    if depth < 5:
        raise CheckpointError(f"{p}: found a U-Net only {depth} blocks deep; pix2pix U-Nets have at least 5 (is the file truncated?)")
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
    return UnetArch(input_nc=input_nc, output_nc=output_nc, num_downs=depth, ngf=ngf, norm=norm, use_dropout=True)


def _build_and_load(arch: UnetArch, state: dict[str, torch.Tensor], p: Path, overrides: ArchOverrides) -> UnetGenerator:
    if arch.norm not in NORMS:
        raise CheckpointError(f"unknown --norm {arch.norm!r}; choose one of {', '.join(NORMS)}")
    net = UnetGenerator(arch)
    if arch.norm == "instance":
        # Old pix2pix checkpoints carry InstanceNorm running stats that the layer no longer has.
        state = {k: v for k, v in state.items() if not (k.endswith(("running_mean", "running_var", "num_batches_tracked")) and k not in net.state_dict())}
    problem = explain_mismatch(net.state_dict(), state)
    if problem:
        hint = "drop the --num-downs/--ngf/--norm overrides or give values that match the file" if overrides.any else "pass --num-downs/--ngf/--norm to match the file"
        desc = f"U-Net(num_downs={arch.num_downs}, ngf={arch.ngf}, norm={arch.norm})"
        raise CheckpointError(f"{p} does not fit {desc}: {problem}; {hint}")
    net.load_state_dict(state, strict=True)
    return net


def explain_mismatch(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor], limit: int = 3) -> str:
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


def _load_torchscript(p: Path, data: bytes, digest: str, dev: torch.device) -> LoadedModel:
    vetting.vet_torchscript_archive(p, data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.jit.load(io.BytesIO(data), map_location=dev)
    except Exception as exc:  # torch.jit raises many types for a bad archive
        raise CheckpointError(f"{p} looks like TorchScript but cannot be loaded ({_first_line(str(exc))}); export it again") from None
    _check_finite_module(module, p)
    return LoadedModel(module=module, path=str(p), sha256=digest, format="torchscript", arch={"type": "torchscript"})


def _load_export(p: Path, data: bytes, digest: str, dev: torch.device) -> LoadedModel:
    vetting.vet_export_archive(p, data)
    refused: list[str] = []
    try:
        with warnings.catch_warnings(), _quiet_torch_logs(), vetting.guarded_export_load() as refused:
            warnings.simplefilter("ignore")
            program = torch.export.load(io.BytesIO(data))
            module = program.module()
    except Exception as exc:  # torch.export raises many types for a bad archive
        if refused or vetting.is_guard_refusal(exc):
            raise vetting.refusal(p, f"torch.export.load tried {(refused or [str(exc)])[0]} on it", vetting.EXPORT_FIX) from None
        raise CheckpointError(f"{p} looks like a torch.export program but cannot be loaded ({_first_line(str(exc))}); export it again") from None
    if refused:  # torch caught the guard's exception and went on
        raise vetting.refusal(p, f"torch.export.load tried {refused[0]} on it", vetting.EXPORT_FIX)
    _check_finite_module(module, p)
    fixed_batch = size = None
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in set(program.graph_signature.user_inputs):
            val = node.meta.get("val")
            shape = getattr(val, "shape", None)
            if shape is not None and len(shape) == 4:
                fixed_batch = shape[0] if isinstance(shape[0], int) else None
                size = shape[2] if isinstance(shape[2], int) and shape[2] == shape[3] else None
            break
    return LoadedModel(module=module, path=str(p), sha256=digest, format="export", arch={"type": "export"}, image_size=size, fixed_batch=fixed_batch)


def _check_finite_module(module: nn.Module, p: Path) -> None:
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise CheckpointError(f"{p} has non-finite weights (NaN or inf) in {name}; use an earlier checkpoint")
