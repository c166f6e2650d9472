"""Defenses for segmentation models, by name (``SEG_DEFENSES``; ``defenses.registry.defend`` with
``task="segmentation"`` runs them):

* ``argmax`` (``defenses.argmax``): release labels only;
* ``gauss``: seeded zero-mean Gaussian noise of σ on the released softmax posteriors (then clipped
  at 0 and renormalised), applied at every load as the generators' Gauss is;
* ``dmp``: a student trained only on unlabelled proxy photos to match the teacher's soft posteriors
  (cross-entropy to them), the teacher queried once per proxy photo as a black box;
* ``dpsgd``: training from scratch with DP-SGD (Opacus): per-image clipped gradients, Gaussian
  noise, Poisson sampling; BatchNorm replaced by GroupNorm; ε and δ recorded.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from privaudit import defaults
from privaudit.data.images import data_fingerprint, load_inputs
from privaudit.defenses.argmax import Argmax
from privaudit.defenses.base import DefenseJob, DefenseResult, teacher_record
from privaudit.defenses.gauss import GaussOptions, check_sigma
from privaudit.errors import InputError
from privaudit.models.arch import ArchOverrides
from privaudit.models.loaded import LoadedModel, RuntimeDefense
from privaudit.models.segnets import PROB_FLOOR, SegArch, SegInfo, build, default_normalization, inner_network, logits_of, normalise, unet_seg_arch
from privaudit.training.loop import EpochStats, training_record
from privaudit.training.segmentation import SegTrainConfig, augment_batch, fit_segmentation, segmentation_loss


class PosteriorNoise(RuntimeDefense):
    """The deployed Gauss segmentation model: posteriors ``p + N(0, σ²)``, clipped at 0 and
    renormalised per pixel (uniform where all were clipped), as log-posteriors; seeded through
    ``reseed``. ``inner`` returns log-posteriors (N, C, H, W)."""

    def __init__(self, inner: nn.Module, sigma: float, seed: int = 0) -> None:
        super().__init__(sigma, seed)
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logp = self.inner(x)
        if self.sigma == 0:
            return logp
        p = logp.exp() + self.noise(logp)
        p = p.clamp_min(0.0)
        total = p.sum(1, keepdim=True)
        p = torch.where(total > 0, p / total.clamp_min(1e-30), torch.full_like(p, 1.0 / p.shape[1]))
        return p.clamp_min(PROB_FLOOR).log()


# ---------------------------------------------------------------------------------------------
# shared by the defenses of a trained teacher


def load_seg_teacher(job: DefenseJob, method: str) -> LoadedModel:
    """The segmentation teacher ``job.teacher`` (its task read from the file); warns when it is unfinished."""
    from privaudit.models.checkpoint import load_model
    from privaudit.report.build import unfinished_warnings

    if job.teacher is None:
        raise InputError(f"--method {method} needs the teacher MODEL as the first argument")
    if job.direction is not None:
        raise InputError("--direction is for image translation; a segmentation model maps A/ photos to label maps: drop --direction")
    if job.segmentation is not None:  # flags describing a teacher that does not record them (a state_dict, an exported model)
        from privaudit.models.segcheckpoint import load_segmentation_model

        teacher = load_segmentation_model(job.teacher, job.segmentation, device=job.device, seed=job.seed)
    else:
        teacher = load_model(job.teacher, device=job.device, seed=job.seed, overrides=ArchOverrides())
    if teacher.task != "segmentation":
        raise InputError(f"--method {method} on segmentation models: {job.teacher} is an image-translation generator")
    for line in unfinished_warnings({"path": str(job.teacher), "training": teacher.training, "defense": teacher.defense}):
        job.warn(line)
    return teacher


def seg_teacher_record(teacher: LoadedModel) -> dict[str, Any]:
    """``teacher_record`` with the task and classes (what references need to replay a segmentation pipeline)."""
    record = {**teacher_record(teacher), "task": "segmentation", "segmentation": teacher.segmentation.to_dict()}
    if (teacher.provenance or {}).get("backbone_weights"):
        record["backbone_weights"] = teacher.provenance["backbone_weights"]
    return record


def _net_and_arch(teacher: LoadedModel, method: str) -> tuple[nn.Module, SegArch]:
    if teacher.arch.get("type") not in ("unet", "torchvision"):
        raise InputError(f"{teacher.path} is a {teacher.format} model; --method {method} re-saves the network's weights, so give a privaudit checkpoint "
                         "or a state_dict with --arch (for an exported model add the defense in the serving code)")
    return inner_network(teacher.module), SegArch.from_dict(teacher.arch, teacher.path)


def resave(teacher: LoadedModel, job: DefenseJob, defense: dict[str, Any]) -> int:
    """Write ``job.out``: the teacher's network and classes with ``defense`` (plus the teacher's record). Returns the image size recorded."""
    from privaudit.models.segcheckpoint import save_segmentation_checkpoint

    net, arch = _net_and_arch(teacher, defense["method"])
    size = job.size or teacher.image_size or 0
    if job.size is not None and arch.unet is not None:
        from privaudit.models.arch import check_size

        check_size(job.size, arch.unet.num_downs)
    info = replace(teacher.segmentation, normalization_source="recorded")
    save_segmentation_checkpoint(job.out, net=net, arch=arch, image_size=size, info=info,
                                 defense={**defense, "teacher": {"path": teacher.path, "sha256": teacher.sha256, "recipe": seg_teacher_record(teacher)}},
                                 provenance={"from": teacher.path, **({"teacher_provenance": teacher.provenance} if teacher.provenance else {})},
                                 training=teacher.training)
    return size


class SegGauss:
    """The teacher deployed with Gaussian noise on its softmax posteriors."""

    name = "gauss"
    description = "zero-mean Gaussian noise of sigma on the released softmax posteriors (segmentation models)"
    Options = GaussOptions

    def run(self, options: GaussOptions, job: DefenseJob) -> DefenseResult:
        teacher = load_seg_teacher(job, self.name)
        sigma = check_sigma(options.sigma)  # type: ignore[arg-type]
        size = resave(teacher, job, {"method": "gauss", "sigma": sigma, "on": "softmax posteriors", "renormalised": True})
        summary = {"image size": f"{size}x{size} px" if size else "not recorded (attacks use the images' own)", "σ (on posteriors)": f"{sigma:g}",
                   "teacher": str(job.teacher)}
        return DefenseResult(method=self.name, out=job.out, summary=summary)


# ---------------------------------------------------------------------------------------------
# DMP: distillation from soft posteriors on unlabelled proxy photos


@dataclass(frozen=True)
class SegTrainingOptions:
    """The training settings of a trained segmentation defense (defaults: ``privaudit.defaults`` SEG_*)."""

    epochs: int = defaults.SEG_EPOCHS
    decay_epochs: int | None = defaults.DECAY_EPOCHS
    batch_size: int = defaults.SEG_BATCH_SIZE
    lr: float = defaults.SEG_LR
    augment: bool = defaults.SEG_AUGMENT

    def train_config(self, *, seed: int = defaults.SEED, device: str = defaults.DEVICE) -> SegTrainConfig:
        return SegTrainConfig(epochs=self.epochs, decay_epochs=self.decay_epochs, batch_size=self.batch_size, lr=self.lr, augment=self.augment, seed=seed,
                              device=device)


@dataclass(frozen=True)
class SegDistillOptions(SegTrainingOptions):
    """``defend(method="dmp", task="segmentation")``: the student's training, its U-Net's width and
    depth (None: the teacher's; the student has the teacher's architecture, with BatchNorm) and the
    proxy set's layout."""

    ngf: int | None = None
    num_downs: int | None = None
    proxy_layout: str = defaults.PROXY_LAYOUT

    def validate(self) -> None:
        self.train_config().validate()
        if self.ngf is not None and self.ngf < 1:
            raise InputError(f"--ngf must be at least 1, not {self.ngf}")


def student_seg_arch(teacher: LoadedModel, size: int, options: SegDistillOptions) -> SegArch:
    """The student's network: the teacher's (BatchNorm; a U-Net for an exported teacher), with
    ``options``' U-Net width and depth."""
    t = teacher.arch
    name = t.get("name") if t.get("type") == "torchvision" else "unet"
    c = teacher.segmentation.num_classes
    if name == "unet":
        same = t.get("type") == "unet"
        ngf = options.ngf if options.ngf is not None else (int(t["ngf"]) if same else defaults.SEG_NGF)
        depth = options.num_downs if options.num_downs is not None else (int(t["num_downs"]) if same else None)
        return unet_seg_arch(c, size, ngf=ngf, num_downs=depth, use_dropout=bool(t.get("use_dropout", False)) if same else False)
    if options.ngf is not None or options.num_downs is not None:
        raise InputError(f"--ngf and --num-downs describe a U-Net student, not {name}; drop them")
    return SegArch(name=name, num_classes=c)


class SegDMP:
    """A student distilled from the teacher's soft posteriors on unlabelled proxy photos."""

    name = "dmp"
    description = "distillation from the teacher's soft posteriors on unlabelled proxy photos (segmentation models)"
    Options = SegDistillOptions

    def run(self, options: SegDistillOptions, job: DefenseJob) -> DefenseResult:
        from privaudit.models.seginference import check_segmentation_size, posteriors
        from privaudit.models.segcheckpoint import save_segmentation_checkpoint

        teacher = load_seg_teacher(job, self.name)
        if job.proxy is None:
            raise InputError("--method dmp needs --proxy PATH: unlabelled proxy photos (a folder of photos, or A/ of a segmentation folder; labels are never read)")
        if job.size is not None:
            check_segmentation_size(teacher, job.size)
        proxy = load_inputs(job.proxy, direction="AtoB", size=teacher.image_size if job.size is None else job.size, layout=options.proxy_layout,
                            what="proxy")
        line = proxy.resize_warning("proxy photos")
        if line:
            job.warn(line)
        check_segmentation_size(teacher, proxy.size)
        arch = student_seg_arch(teacher, proxy.size, options)
        cfg = options.train_config(seed=job.seed, device=job.device)
        cfg.validate()
        targets = posteriors(teacher, proxy.inputs, seed=job.seed).half()  # the teacher's soft labels, queried once per proxy photo
        info = replace(teacher.segmentation, normalization_source="recorded")
        if teacher.arch.get("type") not in ("unet", "torchvision"):  # an exported teacher: the U-Net student takes the U-Net's inputs
            from privaudit.models.segnets import normalization_record

            info = replace(info, normalization=normalization_record(default_normalization(arch.name)))
        net = build(arch, seed=cfg.seed)
        proxy_info = {"path": proxy.path, "count": len(proxy), "layout": proxy.layout, "sha256": data_fingerprint(proxy)}
        defense = {"method": "dmp", "loss": "cross-entropy to the teacher's posteriors", "epochs": cfg.epochs, "batch_size": cfg.batch_size,
                   "teacher": {"path": teacher.path, "sha256": teacher.sha256, "format": teacher.format, "mode": "eval",
                               **({"training": teacher.training} if teacher.training is not None else {}), "recipe": seg_teacher_record(teacher)},
                   "proxy": {k: proxy_info[k] for k in ("path", "count", "layout")}}

        def save(path: Path, model: nn.Module, epoch: int) -> None:
            save_segmentation_checkpoint(path, net=model, arch=arch, image_size=proxy.size, info=info, defense={**defense, "epochs_done": epoch},
                                         provenance={"training": cfg.to_dict(), "epoch": epoch}, training=training_record(epoch, cfg.epochs))

        history = fit_segmentation(net, proxy.inputs, targets, info, cfg, out=job.out, save_model=save, resume=job.resume, keep_state=job.keep_state,
                                   on_step=job.on_step, fingerprint={"teacher": teacher.sha256, "proxy": proxy_info["sha256"], "arch": arch.to_dict(),
                                                                     "method": "dmp"})
        summary = {"image size": f"{proxy.size}x{proxy.size} px", "teacher": str(job.teacher), "proxy photos": f"{len(proxy)} ({proxy.layout})",
                   "epochs": str(cfg.epochs), "student": arch.describe()}
        return DefenseResult(method=self.name, out=job.out, summary=summary, history=history)


# ---------------------------------------------------------------------------------------------
# DP-SGD


@dataclass(frozen=True)
class SegDPSGDOptions(SegTrainingOptions):
    """``defend(method="dpsgd", task="segmentation")``: training from scratch on ``train_data``
    (``num_classes`` required) with DP-SGD. ``noise_multiplier`` None: ``defaults.DP_NOISE_MULTIPLIER``
    unless σ is solved for ``target_epsilon``; ``delta`` None: 1/N. The network always uses GroupNorm."""

    batch_size: int = defaults.SEG_DP_BATCH_SIZE
    num_classes: int | None = None
    arch: str = defaults.SEG_ARCH
    ngf: int = defaults.SEG_NGF
    num_downs: int | None = None
    normalize: str | None = None
    ignore_index: int = defaults.IGNORE_INDEX
    noise_multiplier: float | None = None
    max_grad_norm: float = defaults.DP_MAX_GRAD_NORM
    target_epsilon: float | None = None
    delta: float | None = None
    accountant: str = defaults.DP_ACCOUNTANT

    def validate(self) -> None:
        from privaudit.data.labels import check_ignore_index, check_num_classes
        from privaudit.defenses.dpsgd import ACCOUNTANTS
        from privaudit.models.segnets import check_arch_name, normalization_record

        self.train_config().validate()
        if self.num_classes is None:
            raise InputError("--method dpsgd --task segmentation trains from scratch: pass --num-classes C")
        check_num_classes(self.num_classes)
        check_arch_name(self.arch)
        check_ignore_index(self.ignore_index)
        if self.normalize is not None:
            normalization_record(self.normalize)
        if self.batch_size < 2:
            raise InputError(f"DP-SGD needs --batch-size of at least 2 (the expected Poisson batch), not {self.batch_size}")
        if self.noise_multiplier is not None and self.target_epsilon is not None:
            raise InputError("give either --noise-multiplier or --target-epsilon, not both (with --target-epsilon the noise multiplier is solved for)")
        if self.noise_multiplier is not None and not (math.isfinite(self.noise_multiplier) and self.noise_multiplier >= 0):
            raise InputError(f"--noise-multiplier must be a finite number >= 0, not {self.noise_multiplier}")
        if self.target_epsilon is not None and not (math.isfinite(self.target_epsilon) and self.target_epsilon > 0):
            raise InputError(f"--target-epsilon must be a finite number > 0, not {self.target_epsilon}")
        if not (math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0):
            raise InputError(f"--max-grad-norm must be a finite number > 0, not {self.max_grad_norm}")
        if self.delta is not None and not (math.isfinite(self.delta) and 0 < self.delta < 1):
            raise InputError(f"--delta must be between 0 and 1 (exclusive; well below 1/N is usual), not {self.delta}")
        if self.accountant not in ACCOUNTANTS:
            raise InputError(f"unknown --accountant {self.accountant!r}; choose one of {', '.join(ACCOUNTANTS)}")


def make_private_compatible(net: nn.Module) -> nn.Module:
    """Opacus's backward hooks forbid in-place edits of a hooked layer's output: activations out of
    place, the U-Net's blocks (``defenses.dpsgd``) and torchvision's residual blocks (MobileNetV3's
    ``InvertedResidual``, ResNet's ``Bottleneck``: ``x += identity``) computed out of place with the
    same function. Works in place on ``net`` and returns it."""
    from privaudit.defenses.dpsgd import make_opacus_compatible

    make_opacus_compatible(net)
    swaps = _residual_swaps()
    for m in net.modules():
        if type(m) in swaps:
            m.__class__ = swaps[type(m)]
        if hasattr(m, "inplace") and isinstance(getattr(m, "inplace"), bool):
            m.inplace = False
    return net


def _residual_swaps() -> dict[type, type]:
    from torchvision.models.mobilenetv3 import InvertedResidual
    from torchvision.models.resnet import Bottleneck

    class OutOfPlaceInvertedResidual(InvertedResidual):
        def forward(self, input: torch.Tensor) -> torch.Tensor:
            result = self.block(input)
            return result + input if self.use_res_connect else result

    class OutOfPlaceBottleneck(Bottleneck):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            identity = self.downsample(x) if self.downsample is not None else x
            return self.relu(out + identity)

    return {InvertedResidual: OutOfPlaceInvertedResidual, Bottleneck: OutOfPlaceBottleneck}


class DPSegStep:
    """The DP-SGD step of the one training loop for a segmentation network: one Poisson draw per
    step (Opacus's loader, rate q), the batch's mean of per-image losses, per-image clipping to C,
    Gaussian noise σ·C (Opacus's ``DPOptimizer``); an empty draw still steps (noise only)."""

    what = "DP-SGD training"
    state_format = "privaudit.seg-dpsgd-state/1"
    discriminator = None

    def __init__(self, pairs: Any, arch: SegArch, info: SegInfo, options: SegDPSGDOptions, cfg: SegTrainConfig, *, sigma: float, sample_rate: float,
                 steps_per_epoch: int, delta: float, device: torch.device) -> None:
        from opacus import PrivacyEngine
        from torch.utils.data import DataLoader, TensorDataset

        from privaudit.defenses.dpsgd import _check_private
        from privaudit.errors import InternalError

        net = build(arch, seed=cfg.seed)
        make_private_compatible(net)
        _check_private(net, "segmentation network")
        net.to(device).train()
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
        self.seed_base = cfg.seed * 1_000_003
        self.loader_gen = torch.Generator()
        self.noise = torch.Generator(device=device).manual_seed(self.seed_base + 11)
        self.engine = PrivacyEngine(accountant=options.accountant, secure_mode=False)
        self.net_dp, self.dp_opt, self.loader = self.engine.make_private(
            module=net, optimizer=opt, data_loader=DataLoader(TensorDataset(pairs.inputs, pairs.targets), batch_size=cfg.batch_size, generator=self.loader_gen),
            noise_generator=self.noise, noise_multiplier=sigma, max_grad_norm=options.max_grad_norm, poisson_sampling=True, loss_reduction="mean")
        if len(self.loader) != steps_per_epoch:
            raise InternalError("internal error: Opacus's Poisson loader disagrees with the planned sampling rate; please report it")
        self.generator = net
        self.optimizers = (opt, None)
        self.steps_per_epoch = steps_per_epoch
        self.info, self.cfg, self.device, self.delta = info, cfg, device, delta
        self.aug = torch.Generator()

    def batches(self, epoch: int) -> Iterator[list[torch.Tensor]]:
        self.loader_gen.manual_seed(self.seed_base + 2 * epoch + 1)
        self.aug = torch.Generator().manual_seed(self.seed_base + epoch)
        return iter(self.loader)

    def __call__(self, batch: list[torch.Tensor]) -> tuple[dict[str, float], float | None]:
        from privaudit.defenses.dpsgd import _zero_rows

        self.dp_opt.zero_grad(set_to_none=True)
        if len(batch[0]) == 0:
            _zero_rows(self.dp_opt)
            self.dp_opt.step()
            return {}, None
        x = normalise(batch[0], self.info.normalization)
        y = batch[1][:, 0].long()
        if self.cfg.augment:
            x, y = augment_batch(x, y, self.aug)
        logits = logits_of(self.net_dp(x.to(self.device)))
        loss = segmentation_loss(logits, y.to(self.device), self.info.ignore_index)
        loss.backward()
        self.dp_opt.step()
        return {"CE": loss.item()}, loss.item()

    def epoch_extras(self) -> dict[str, float]:
        from privaudit.defenses.dpsgd import _epsilon

        return {"epsilon": _epsilon(self.engine, self.delta)}

    def extra_state(self) -> dict[str, Any]:
        acc = self.engine.accountant.state_dict()
        return {"accountant": {"mechanism": acc.get("mechanism"), "history": [list(h) for h in acc.get("history", [])]}, "noise": self.noise.get_state()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        acc = state["accountant"]
        self.engine.accountant.load_state_dict({"mechanism": acc["mechanism"], "history": [tuple(h) for h in acc["history"]]})
        self.noise.set_state(state["noise"])


class SegDPSGD:
    """DP-SGD training of a segmentation network from scratch on the private pairs (no teacher)."""

    name = "dpsgd"
    description = "DP-SGD training from scratch with Opacus, GroupNorm (segmentation models)"
    Options = SegDPSGDOptions

    def run(self, options: SegDPSGDOptions, job: DefenseJob) -> DefenseResult:
        from privaudit.data.images import ImageSet
        from privaudit.data.labels import folder_palette, load_segmentation_pairs
        from privaudit.defenses.dpsgd import _expected_warnings_off, _epsilon, poisson_schedule, solve_noise_multiplier
        from privaudit.device import resolve_device
        from privaudit.models.segcheckpoint import save_segmentation_checkpoint
        from privaudit.training.loop import train_loop

        if job.train_data is None:
            raise InputError("--method dpsgd trains from scratch on the private pairs: pass --train-data PATH (A/ photos, B/ label maps)")
        if job.direction is not None:
            raise InputError("--direction is for image translation; segmentation data is A/ photos and B/ label maps: drop --direction")
        c = int(options.num_classes)  # type: ignore[arg-type]
        if options.arch == "unet" and job.size is not None:
            unet_seg_arch(c, job.size, ngf=options.ngf, num_downs=options.num_downs, norm="group")  # a --size the U-Net cannot take fails first
        info = SegInfo.new(c, normalization=options.normalize or default_normalization(options.arch), ignore_index=options.ignore_index)
        if isinstance(job.train_data, ImageSet):
            pairs = job.train_data
        else:
            pairs = load_segmentation_pairs(job.train_data, num_classes=c, size=job.size, ignore_index=options.ignore_index, what="training data")
            palette = folder_palette(job.train_data, c)
            if palette:
                info = replace(info, palette=tuple(palette))
        line = pairs.resize_warning("training data")
        if line:
            job.warn(line)
        n = len(pairs)
        arch = (unet_seg_arch(c, pairs.size, ngf=options.ngf, num_downs=options.num_downs, norm="group") if options.arch == "unet"
                else SegArch(name=options.arch, num_classes=c, norm="group"))
        cfg = options.train_config(seed=job.seed, device=job.device)
        device = resolve_device(cfg.device)
        delta = options.delta if options.delta is not None else 1.0 / n
        q, steps_per_epoch = poisson_schedule(n, cfg.batch_size)
        if options.target_epsilon is not None:
            sigma = solve_noise_multiplier(target_epsilon=options.target_epsilon, delta=delta, sample_rate=q, steps=cfg.epochs * steps_per_epoch,
                                           accountant=options.accountant)
        else:
            sigma = float(options.noise_multiplier if options.noise_multiplier is not None else defaults.DP_NOISE_MULTIPLIER)
        with _expected_warnings_off():
            step = DPSegStep(pairs, arch, info, options, cfg, sigma=sigma, sample_rate=q, steps_per_epoch=steps_per_epoch, delta=delta, device=device)
        data_sha = data_fingerprint(pairs)
        trained_on = {"path": pairs.path if isinstance(job.train_data, ImageSet) else str(job.train_data), "count": n, "sha256": data_sha}

        def record(epochs_done: int, eps: float) -> dict[str, Any]:
            return {"method": "dpsgd", "noise_multiplier": sigma, "max_grad_norm": options.max_grad_norm, "epsilon": eps if math.isfinite(eps) else None,
                    "epsilon_infinite": not math.isfinite(eps), "delta": delta, "accountant": options.accountant, "sample_rate": q,
                    "steps": epochs_done * steps_per_epoch, "mechanisms": 1, "composed_steps": epochs_done * steps_per_epoch, "sampling": "poisson",
                    "norm": "group", "epochs": epochs_done, "batch_size": cfg.batch_size, "target_epsilon": options.target_epsilon, "secure_mode": False}

        def save(path: Path, model: nn.Module, epoch: int) -> None:
            save_segmentation_checkpoint(path, net=model, arch=arch, image_size=pairs.size, info=info, defense=record(epoch, _epsilon(step.engine, delta)),
                                         provenance={"trained_on": trained_on, "training": {**cfg.to_dict(), **{k: v for k, v in asdict(options).items()
                                                                                                                 if k not in asdict(cfg)}}, "epoch": epoch},
                                         training=training_record(epoch, cfg.epochs))

        fp = {"config": {k: v for k, v in asdict(cfg).items() if k not in ("device", "epochs")}, "noise_multiplier": sigma, "delta": delta,
              "max_grad_norm": options.max_grad_norm, "data": data_sha, "arch": arch.to_dict(), "segmentation": info.to_dict()}
        with _expected_warnings_off():
            history: list[EpochStats] = train_loop(step, cfg, out=job.out, save_model=save, fingerprint=fp, resume_ignore=("epochs",),  # type: ignore[arg-type]
                                                   resume=job.resume, keep_state=job.keep_state, on_step=job.on_step)
        eps = _epsilon(step.engine, delta)
        summary = {"image size": f"{pairs.size}x{pairs.size} px", "network": arch.describe(), "ε spent": f"{eps:.4g}", "δ": f"{delta:.3g}",
                   "noise multiplier σ": f"{sigma:.4g}", "max grad norm C": f"{options.max_grad_norm:g}", "sample rate": f"{q:.4g}",
                   "steps": str(cfg.epochs * steps_per_epoch), "accountant": options.accountant}
        return DefenseResult(method=self.name, out=job.out, summary=summary, history=history,
                             privacy={"epsilon": eps, "delta": delta, "noise_multiplier": sigma, "sample_rate": q, "steps": cfg.epochs * steps_per_epoch})


SEG_DEFENSES: dict[str, type] = {"argmax": Argmax, "gauss": SegGauss, "dmp": SegDMP, "dpsgd": SegDPSGD}
