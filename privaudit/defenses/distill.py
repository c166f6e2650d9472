"""AKD and DMP: train a student on an unlabelled proxy set, using the teacher only as a black box.

AKD (Eq. 4, 5): the student discriminator D_s tells the teacher's output G_t(x) from the student's
G_s(x), conditioned on x; the student minimises the GAN term plus λ·||G_s(x) − G_t(x)||_1.
DMP (the paper's baseline): the same without D_s, λ·L1 to the teacher's outputs only.
Both are the pix2pix game with the target y replaced by G_t(x), so both run ``training.fit`` (the
plain step in the one training loop). ``AKD`` and ``DMP`` are the registry's defenses.

The proxy set is read with ``open_inputs``: the target half of an aligned image (or the target
folder) is never decoded, so private or proxy labels cannot leak into the student. The distillation
set is the proxy inputs, optionally with augmented and recombined inputs made from them alone
(``distill_data``); the teacher answers each distinct input once, and the checkpoint records how
many it answered (``defense.teacher_queries``). The objective may add pix2pixHD's feature
matching, a multi-scale discriminator and a moving average of the student's weights
(``training.pix2pix.Objective``). Everything new is off by default: the student is then the AKD paper's.
A proxy set larger than the memory budget is streamed (the proxy inputs alone then): the teacher's
outputs go to a temporary float32 file (``training.data.OutputFile``) that the decoding workers read
back batch by batch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from privaudit import defaults, distributed
from privaudit.data.images import ImageSet, data_fingerprint
from privaudit.data.stream import StreamedSet, open_inputs
from privaudit.defenses.base import DIRECTION_SOURCES, DefenseJob, DefenseResult, TrainingOptions, load_teacher, teacher_record
from privaudit.defenses.distill_data import DistillData, build_distillation_set, unique_rows
from privaudit.errors import InputError
from privaudit.models.arch import ModelSpec, UnetArch, check_norm, student_norm
from privaudit.models.checkpoint import save_checkpoint
from privaudit.models.inference import check_image_size, iter_outputs, iter_set_outputs
from privaudit.models.loaded import LoadedModel
from privaudit.models.networks import UnetGenerator, init_weights
from privaudit.training.config import TrainConfig
from privaudit.training.loop import EpochStats, OnStep, training_record
from privaudit.training.data import OutputFile, StreamedPairs
from privaudit.training.pix2pix import PLAIN_OBJECTIVE, Objective, fit, train_accel


@torch.inference_mode()
def teacher_outputs(teacher: LoadedModel, proxy: ImageSet | StreamedSet, *, batch_size: int = defaults.ATTACK_BATCH_SIZE,
                    seed: int = defaults.SEED) -> torch.Tensor | OutputFile:
    """Query the teacher once per proxy input in eval mode: float (N, C_out, H, W) in [-1, 1], on the
    CPU; for a streamed proxy set the same values in a temporary ``OutputFile`` (the caller removes it)."""
    check_image_size(teacher, proxy.size)
    teacher.set_mode(stochastic=False)
    teacher.reseed(seed)
    if not isinstance(proxy, StreamedSet):
        outs = [out.float().cpu() for _, out in iter_outputs(teacher, proxy.inputs, batch_size=batch_size)]
        return torch.cat(outs)
    rows: OutputFile | None = None
    try:
        for _, out, _ in iter_set_outputs(teacher, proxy, batch_size=batch_size, want_targets=False):
            if rows is None:
                rows = OutputFile.create(tuple(out.shape[1:]), len(proxy), what="the teacher's outputs on the proxy set")
            rows.append(out.float())
    except BaseException:
        if rows is not None:
            rows.remove()
        raise
    assert rows is not None  # a proxy set is never empty
    return rows


def query_teacher(teacher: LoadedModel, inputs: torch.Tensor, *, seed: int = defaults.SEED) -> tuple[torch.Tensor, int]:
    """The teacher's answers to the distillation inputs (uint8 (M, C, H, W)), each distinct input
    sent once (eval mode, so equal inputs get equal answers): (float (M, C_out, H, W) in [-1, 1], the
    number of inputs sent). Inputs without repeats go in their order, as ``teacher_outputs`` sends them."""
    keep, inverse = unique_rows(inputs)
    distinct = ImageSet(inputs=inputs[keep], targets=None, names=[], path="distillation set", layout="inputs")
    answers = teacher_outputs(teacher, distinct, seed=seed)
    return (answers if len(keep) == inputs.shape[0] else answers[inverse]), len(keep)


def student_arch(teacher: LoadedModel, override: UnetArch | None) -> UnetArch:
    """``override``, or else the teacher's U-Net (GroupNorm, which only DP-SGD needs, becomes BatchNorm)."""
    if override is not None:
        return override
    if teacher.arch.get("type") != "unet":
        raise InputError(f"{teacher.path} is a {teacher.format} model, so the student's architecture cannot be copied from it; pass --ngf (and --num-downs) for the student")
    d = dict(teacher.arch)
    d.pop("type", None)
    d["norm"] = student_norm(str(d.get("norm")))
    return UnetArch.from_dict(d, teacher.path)


def student_for(teacher: LoadedModel, size: int, *, ngf: int | None = None, num_downs: int | None = None, norm: str | None = None) -> UnetArch:
    """The student's U-Net for ``size`` px: the teacher's, with the given flags changed (a teacher
    that is no privaudit/pix2pix U-Net needs ``ngf`` at least)."""
    override = None
    if ngf is not None or num_downs is not None or norm is not None or teacher.arch.get("type") != "unet":
        width = int(teacher.arch.get("ngf", defaults.NGF)) if ngf is None else ngf
        spec = ModelSpec(num_downs=num_downs, ngf=width, norm=norm or student_norm(str(teacher.arch.get("norm", defaults.NORM))))
        override = spec.build(size, int(teacher.arch.get("input_nc", 3)), int(teacher.arch.get("output_nc", 3)))
    return student_arch(teacher, override)


def distill(
    teacher: LoadedModel,
    proxy: ImageSet | StreamedSet,
    out: Path,
    *,
    method: str,
    arch: UnetArch,
    cfg: TrainConfig,
    direction: str,
    resume: bool = False,
    on_step: OnStep | None = None,
    keep_state: bool = False,
    data: DistillData | None = None,
    objective: Objective | None = None,
) -> list[EpochStats]:
    """Train a student of ``arch`` on the distillation set made from the proxy inputs (``data``;
    None: the proxy inputs alone) and the teacher's answers to it, with ``objective``'s additions
    to the pix2pix objective (None: none); write ``out``. A resumed run makes the same set again from the seed.
    The resume state ``<out>.state`` is deleted when the run finishes, unless ``keep_state``."""
    if method not in ("akd", "dmp"):
        raise InputError(f"distillation method must be akd or dmp, not {method!r}")
    if proxy.has_targets:
        raise InputError("the proxy set must hold inputs only; load it with load_inputs")
    if len(proxy) == 0:
        raise InputError(f"the proxy set {proxy.path} is empty; give a folder of input images")
    cfg = replace(cfg, adversarial=method == "akd")
    accel = train_accel(cfg)
    objective = objective or Objective(**PLAIN_OBJECTIVE)
    objective.validate(adversarial=cfg.adversarial)
    data = data or DistillData(augment_copies=0, recombine="none")
    check_image_size(teacher, proxy.size)
    streamed = isinstance(proxy, StreamedSet)
    if streamed:
        data.validate()
        if data.active:
            raise InputError(f"the proxy set {proxy.path} is streamed (larger than the memory budget, or --stream), and --augment-copies/--recombine "
                             "build the distillation set in memory; raise --memory-budget, or drop those options")
    # The proxy's hash first: streamed, it decodes every file, so a bad one fails before the teacher runs.
    proxy_info = {"path": proxy.path, "count": len(proxy), "layout": proxy.layout, "sha256": data_fingerprint(proxy)}
    if streamed:
        inputs = None
        targets: Any = teacher_outputs(teacher, proxy, seed=cfg.seed)
        n_inputs = queries = len(proxy)
    else:
        data = data.resolve(proxy.inputs)
        inputs = build_distillation_set(proxy.inputs, data, cfg.seed)
        targets, queries = query_teacher(teacher, inputs, seed=cfg.seed)
        n_inputs = int(inputs.shape[0])
    try:
        torch.manual_seed(cfg.seed)
        student = UnetGenerator(arch)
        init_weights(student)
        defense: dict[str, Any] = {
            "method": method,
            "lambda_l1": cfg.lambda_l1,
            "epochs": cfg.epochs,
            "batch_size": cfg.batch_size,
            "teacher": {"path": teacher.path, "sha256": teacher.sha256, "format": teacher.format, "mode": "eval",
                        **({"training": teacher.training} if teacher.training is not None else {}), "recipe": teacher_record(teacher)},
            "proxy": {k: proxy_info[k] for k in ("path", "count", "layout")},
            "distillation_inputs": n_inputs,
            "teacher_queries": queries,
            **({"distill_data": data.record()} if data.active else {}),
            **({"objective": objective.record()} if objective.record() else {}),
        }
        fingerprint: dict[str, Any] = {"teacher": teacher.sha256, "proxy": proxy_info["sha256"], "arch": arch.to_dict(), "method": method}
        if data.active and inputs is not None:  # only then, so the states of plain runs resume as before
            fingerprint["distill_data"] = {**data.record(), "sha256": data_fingerprint(ImageSet(inputs=inputs, targets=None, names=[], path="", layout=""))}

        def save(path: Path, net: UnetGenerator, epoch: int) -> None:
            save_checkpoint(path, generator=net, image_size=proxy.size, direction=direction, defense={**defense, "epochs_done": epoch},
                            provenance={"training": cfg.to_dict(), "distributed": distributed.record(cfg.batch_size), "runtime": accel.record(),
                                        "teacher_runtime": teacher.runtime.record(), "epoch": epoch}, training=training_record(epoch, cfg.epochs))

        return fit(
            student,
            StreamedPairs(proxy, targets) if isinstance(targets, OutputFile) else inputs,  # type: ignore[arg-type]
            None if isinstance(targets, OutputFile) else targets,
            cfg,
            out=out,
            save_model=save,
            resume=resume,
            fingerprint=fingerprint,
            on_step=on_step,
            keep_state=keep_state,
            accel=accel,
            objective=objective,
        )
    finally:
        if isinstance(targets, OutputFile):
            targets.remove()


# ---------------------------------------------------------------------------------------------
# the defenses: `privaudit defend --method akd|dmp`


@dataclass(frozen=True)
class DistillOptions(TrainingOptions):
    """``defend(method="akd"|"dmp")`` settings: the student's pix2pix training (defaults: the AKD
    paper's, batch size 1), its architecture (None: the teacher's) and how the proxy set is laid out
    (auto, aligned, folders or inputs).

    The distillation set (``distill_data.DistillData``; default: the proxy inputs alone):
    ``input_kind`` (auto, labels, photos), ``augment_copies`` with ``augment_ops``, ``recombine``
    (none, auto, cutpaste, mixup, cutmix) with ``recombine_copies``. The objective
    (``training.pix2pix.Objective``; default: the paper's): ``feature_matching``, ``num_D``, ``ema``.

    ``DistillOptions()`` (``DistillOptions.paper()``) is the AKD paper's student, dmp's default and
    ``privaudit defend --method akd --paper``'s; ``DistillOptions.sharp()`` the default AKD student
    (``AKD.default_options()``, ``defaults.AKD_SHARP``, from the ablation in docs/defenses.md). ``epochs`` None: as many steps as ``proxy_epochs`` epochs of the proxy inputs
    alone would take, in epochs of the (larger) distillation set."""

    ngf: int | None = None
    num_downs: int | None = None
    norm: str | None = None
    proxy_layout: str = defaults.PROXY_LAYOUT
    input_kind: str = defaults.INPUT_KIND
    augment_copies: int = defaults.AUGMENT_COPIES
    augment_ops: tuple[str, ...] | None = None
    recombine: str = defaults.RECOMBINE
    recombine_copies: int = defaults.RECOMBINE_COPIES
    feature_matching: float = defaults.FEATURE_MATCHING
    num_D: int = defaults.NUM_D
    ema: float | None = defaults.EMA
    epochs: int | None = defaults.EPOCHS  # type: ignore[assignment]  # None: from proxy_epochs
    proxy_epochs: float = defaults.EPOCHS

    @classmethod
    def paper(cls, **given: Any) -> "DistillOptions":
        """The AKD paper's student (λ 100, 200 epochs of the proxy inputs, one PatchGAN), with the
        ``given`` fields on top."""
        return cls(**given)

    @classmethod
    def sharp(cls, **given: Any) -> "DistillOptions":
        """The default AKD student, as sharp as its teacher (``defaults.AKD_SHARP``, ``proxy_epochs`` ``defaults.AKD_PROXY_EPOCHS``)
        with the ``given`` fields on top."""
        return cls(**{**defaults.AKD_SHARP, "proxy_epochs": defaults.AKD_PROXY_EPOCHS, **given})

    def resolved_epochs(self) -> int:
        """The epochs to train: ``epochs``, or when None, as many epochs of the distillation set as
        ``proxy_epochs`` epochs of the proxy inputs alone take in steps (at least 1; the set is a
        whole multiple of the proxy inputs, so their number does not matter)."""
        if self.epochs is not None:
            return self.epochs
        return max(1, round(self.proxy_epochs / self.distill_data().rounds))

    def distill_data(self) -> DistillData:
        return DistillData(input_kind=self.input_kind, augment_copies=self.augment_copies,
                           augment_ops=tuple(self.augment_ops) if self.augment_ops is not None else None, recombine=self.recombine,
                           recombine_copies=self.recombine_copies)

    def objective(self) -> Objective:
        return Objective(feature_matching=self.feature_matching, num_D=self.num_D, ema=self.ema)

    def validate(self) -> None:
        if isinstance(self.proxy_epochs, bool) or not isinstance(self.proxy_epochs, (int, float)) or not 0 < self.proxy_epochs <= 100_000:
            raise InputError(f"proxy_epochs must be a number in (0, 100000], not {self.proxy_epochs!r}")
        (self if self.epochs is not None else replace(self, epochs=1)).train_config().validate()
        if self.norm is not None:
            check_norm(self.norm, role="for the student")
        self.distill_data().validate()
        self.objective().validate()


class Distillation:
    """A student distilled from the teacher's outputs on the proxy inputs (``distill``); AKD and
    DMP below give the method's ``name``."""

    name: str
    Options = DistillOptions

    def run(self, options: DistillOptions, job: DefenseJob) -> DefenseResult:
        options.objective().validate(adversarial=self.name == "akd")  # before the teacher or any image is read
        teacher, direction, source = load_teacher(job, self.name)
        if job.proxy is None:
            raise InputError(f"--method {self.name} needs --proxy PATH: unlabelled proxy inputs (only the input side is read)")
        if job.size is not None:
            check_image_size(teacher, job.size)  # a --size the teacher cannot take fails before any image is read
        proxy = open_inputs(job.proxy, direction=direction, size=teacher.image_size if job.size is None else job.size,
                            input_nc=int(teacher.arch.get("input_nc", 3)), layout=options.proxy_layout, streaming=job.streaming)
        line = proxy.resize_warning("proxy inputs")
        if line:
            job.warn(line)
        arch = student_for(teacher, proxy.size, ngf=options.ngf, num_downs=options.num_downs, norm=options.norm)
        options = replace(options, epochs=options.resolved_epochs())
        history = distill(teacher, proxy, job.out, method=self.name, arch=arch, cfg=options.train_config(seed=job.seed, device=job.device, precision=job.precision,
                                                                                                  deterministic=job.deterministic),
                          direction=direction, resume=job.resume, on_step=job.on_step, keep_state=job.keep_state, data=options.distill_data(),
                          objective=options.objective())
        record = _saved_defense(job.out)
        summary = {"direction": f"{direction} ({DIRECTION_SOURCES[source]})", "image size": f"{proxy.size}x{proxy.size} px",
                   "teacher": str(job.teacher), "proxy inputs": f"{len(proxy)} ({proxy.layout})", "λ": f"{options.lambda_l1:g}", "epochs": str(options.epochs),
                   "student": f"U-Net num_downs={arch.num_downs} ngf={arch.ngf} norm={arch.norm}"}
        dd = record.get("distill_data")
        if dd:
            made = [f"{dd['augment_copies']}x augmented ({','.join(dd['augment_ops'])})"] if dd["augment_copies"] else []
            made += [f"{dd['recombine_copies']}x {dd['recombine']}"] if dd["recombine"] != "none" else []
            summary["distillation set"] = f"{record.get('distillation_inputs')} inputs: the proxy's + {' + '.join(made)} ({dd['input_kind']})"
        if record.get("objective"):
            summary["objective"] = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in record["objective"].items())
        if "teacher_queries" in record:
            summary["teacher queries"] = str(record["teacher_queries"])
        return DefenseResult(method=self.name, out=job.out, summary=summary, history=history)


def _saved_defense(path: Path) -> dict[str, Any]:
    """The ``defense`` record of the checkpoint just written (under torchrun only rank 0 has to have it)."""
    from privaudit.models.checkpoint import safe_torch_load

    if not distributed.is_main() or not Path(path).is_file():
        return {}
    ckpt = safe_torch_load(path, what="checkpoint")
    return ckpt.get("defense") or {} if isinstance(ckpt, dict) else {}


class AKD(Distillation):
    """Adversarial knowledge distillation: a student and its discriminator learn from the teacher's
    outputs on an unlabelled proxy set."""

    name = "akd"
    description = "adversarial knowledge distillation on an unlabelled proxy set (the AKD paper; by default the sharper student of docs/defenses.md)"

    @staticmethod
    def default_options() -> DistillOptions:
        """The student ``defend("akd")`` trains when given no options: ``DistillOptions.sharp()``."""
        return DistillOptions.sharp()


class DMP(Distillation):
    """Distillation to the teacher's outputs with λ·L1 only, no discriminator."""

    name = "dmp"
    description = "distillation to the teacher's outputs with L1 only, no discriminator (DMP-style)"
