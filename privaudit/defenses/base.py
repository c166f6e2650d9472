"""What every defense shares: the job it is given, the result it returns, the interface the
registry (``defenses.registry``) maps names to, and the training options of the trained defenses."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Protocol

from privaudit import defaults
from privaudit.data.images import ImageSet
from privaudit.data.stream import StreamedSet, Streaming
from privaudit.errors import InputError
from privaudit.models.arch import ArchOverrides
from privaudit.models.checkpoint import load_model
from privaudit.models.loaded import LoadedModel
from privaudit.data.checks import resolve_direction
from privaudit.report.build import unfinished_warnings
from privaudit.training.config import TrainConfig
from privaudit.training.loop import EpochStats, OnStep


@dataclass(frozen=True)
class DefenseJob:
    """Where a defense reads and writes, and how it runs; each method uses its part.

    ``teacher``: the model to harden (akd, dmp, gauss); ``proxy``: unlabelled proxy inputs (akd,
    dmp); ``train_data``: the private pairs (dpsgd; a folder or pairs already read). ``direction`` None: the teacher's, else AtoB.
    ``size`` None: the teacher's recorded size, else the images' own. ``on_step(epoch, step,
    steps_per_epoch, mean_losses)`` reports training progress; ``on_warning(line)`` receives
    warnings (an unfinished teacher), by default as Python warnings. ``device``, ``precision`` and
    ``deterministic``: how the training and the teacher's queries use the device (``privaudit.accel``).
    ``streaming``: when the proxy or training data are streamed from disk (None: above the default
    memory budget).
    """

    out: Path
    teacher: Path | None = None
    proxy: Path | None = None
    train_data: Path | ImageSet | StreamedSet | None = None
    direction: str | None = None
    size: int | None = None
    seed: int = defaults.SEED
    device: str = defaults.DEVICE
    precision: str = defaults.PRECISION
    deterministic: bool = defaults.DETERMINISTIC
    resume: bool = False
    keep_state: bool = False
    on_step: OnStep | None = None
    on_warning: Callable[[str], None] | None = None
    streaming: Streaming | None = None
    # segmentation: a ``models.segnets.SegSpec`` for a teacher that does not record its network (a state_dict, an exported model)
    segmentation: Any = None

    def warn(self, line: str) -> None:
        if self.on_warning is not None:
            self.on_warning(line)
        else:
            warnings.warn(line, UserWarning, stacklevel=3)


@dataclass
class DefenseResult:
    """What a defense wrote (``out``) and did: ``summary`` (label → value, in order, for a table;
    ``defend`` adds method, time and the output), the training's per-epoch mean losses (empty for
    gauss), and for dpsgd the privacy spent (a ``DPResult``)."""

    method: str
    out: Path
    summary: dict[str, str]
    history: list[EpochStats] = field(default_factory=list)
    privacy: Any = None
    seconds: float = 0.0


class Defense(Protocol):
    """A defense: a name, a one-line description, its own frozen ``Options`` dataclass (with
    ``validate()``), and ``run``, which writes the hardened checkpoint ``job.out``."""

    name: ClassVar[str]
    description: ClassVar[str]
    Options: ClassVar[type]

    def run(self, options: Any, job: DefenseJob) -> DefenseResult: ...


@dataclass(frozen=True)
class TrainingOptions:
    """The pix2pix training settings of a trained defense (defaults: ``privaudit.defaults``)."""

    epochs: int = defaults.EPOCHS
    decay_epochs: int | None = defaults.DECAY_EPOCHS
    batch_size: int = defaults.BATCH_SIZE
    lr: float = defaults.LR
    lambda_l1: float = defaults.LAMBDA_L1
    augment: bool = defaults.AUGMENT
    ndf: int = defaults.NDF

    def train_config(self, *, seed: int = defaults.SEED, device: str = defaults.DEVICE, precision: str = defaults.PRECISION,
                     deterministic: bool = defaults.DETERMINISTIC) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, lambda_l1=self.lambda_l1, decay_epochs=self.decay_epochs,
                           augment=self.augment, ndf=self.ndf, seed=seed, device=device, precision=precision, deterministic=deterministic)


def load_teacher(job: DefenseJob, method: str) -> tuple[LoadedModel, str, str]:
    """The teacher ``job.teacher`` (any MODEL format), the direction to use and where it came from
    (``model`` or ``--direction``: a model that does not record its direction needs the flag, and a
    flag that contradicts the recorded one is refused); warns (``job.warn``) when the teacher is the
    model of an unfinished training run."""
    if job.teacher is None:
        raise InputError(f"--method {method} needs the teacher MODEL as the first argument")
    teacher = load_model(job.teacher, device=job.device, seed=job.seed, overrides=ArchOverrides(), precision=job.precision, deterministic=job.deterministic)
    for line in unfinished_warnings({"path": str(job.teacher), "training": teacher.training, "defense": teacher.defense}):
        job.warn(line)
    direction, source = resolve_direction(teacher, job.direction)
    return teacher, direction, source


def teacher_record(teacher: LoadedModel) -> dict[str, Any]:
    """How the teacher was made, as a defended checkpoint records it (``defense.teacher.recipe``), so
    that ``privaudit references`` can replay the whole pipeline: the teacher's format, U-Net, image
    size, direction, its own defense, and its provenance's training config and training set (path,
    count and content hash of the whole set; never per-pair hashes, which would tell anyone holding
    a candidate image whether it was a member)."""
    record: dict[str, Any] = {"format": teacher.format, "arch": teacher.arch, "image_size": teacher.image_size, "direction": teacher.direction,
                              "defense": teacher.defense}
    for key in ("training", "trained_on", "teacher_provenance"):
        if key in (teacher.provenance or {}):
            record[key] = teacher.provenance[key]
    return record


DIRECTION_SOURCES = {"model": "recorded in the model", "--direction": "--direction"}
