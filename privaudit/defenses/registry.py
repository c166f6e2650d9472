"""The defenses by name, and ``defend``: the one place a method name becomes code.

``DEFENSES`` maps each ``--method`` to its class (Opacus's ``_ACCOUNTANTS`` is the model); each
class has its own frozen options dataclass (``Options``) and a ``run``. ``defend`` is the library
entry of ``privaudit defend``; the CLI, ``privaudit demo`` and ``benchmarks/reproduce_table2.py``
all call it.
"""

from __future__ import annotations

import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Callable

from privaudit import defaults, distributed
from privaudit.accel import check_precision
from privaudit.data.images import ImageSet, check_direction
from privaudit.data.stream import StreamedSet, Streaming
from privaudit.defenses.base import Defense, DefenseJob, DefenseResult
from privaudit.defenses.distill import AKD, DMP
from privaudit.defenses.dpsgd import DPSGD
from privaudit.defenses.gauss import Gauss
from privaudit.errors import InputError, check_seed
from privaudit.io import check_writable
from privaudit.training.loop import OnStep

DEFENSES: dict[str, type[Defense]] = {"akd": AKD, "dmp": DMP, "gauss": Gauss, "dpsgd": DPSGD}
TASKS = ("translation", "segmentation")


def _registry(task: str) -> dict[str, Any]:
    if task not in TASKS:
        raise InputError(f"unknown --task {task!r}; use translation or segmentation")
    if task == "segmentation":
        from privaudit.defenses.segmentation import SEG_DEFENSES

        return SEG_DEFENSES
    return DEFENSES


def get_defense(method: str, task: str = "translation") -> Defense:
    """The defense called ``method`` for ``task`` (``defenses.segmentation.SEG_DEFENSES`` for
    segmentation models); ``InputError`` listing the valid names for an unknown one."""
    registry = _registry(task)
    if method not in registry:
        if task == "translation" and method == "argmax":
            raise InputError("--method argmax (release labels only) is for segmentation models; for a generator choose one of " + ", ".join(DEFENSES))
        if task == "segmentation" and method == "akd":
            raise InputError("--method akd (adversarial distillation of a generator) is for image translation; for a segmentation model use dmp "
                             "(distillation from soft posteriors), or one of " + ", ".join(registry))
        raise InputError(f"unknown --method {method!r}; choose one of {', '.join(registry)}")
    return registry[method]()


def default_options(method: str, task: str = "translation") -> Any:
    """The options ``defend(method)`` uses when given none: the defense's ``default_options()``
    where it has one (akd: ``DistillOptions.sharp()``), else its ``Options()``."""
    defense = get_defense(method, task)
    make = getattr(defense, "default_options", None)
    return make() if make is not None else defense.Options()


def options_for(method: str, task: str = "translation", *, base: Any = None, **values: Any) -> Any:
    """``method``'s options from flat values (the command line's flags) on top of ``base`` (None:
    ``default_options(method)``): the values its options know, None meaning the base's; the others are
    ignored (e.g. ``sigma`` for akd)."""
    base = default_options(method, task) if base is None else base
    known = {f.name for f in fields(base)}
    return replace(base, **{k: v for k, v in values.items() if k in known and v is not None})


def defend(
    method: str,
    *,
    out: str | Path,
    teacher: str | Path | None = None,
    proxy: str | Path | None = None,
    train_data: str | Path | ImageSet | StreamedSet | None = None,
    options: Any = None,
    direction: str | None = None,
    size: int | None = None,
    seed: int = defaults.SEED,
    device: str = defaults.DEVICE,
    precision: str = defaults.PRECISION,
    deterministic: bool = defaults.DETERMINISTIC,
    resume: bool = False,
    keep_state: bool = False,
    on_step: OnStep | None = None,
    on_warning: Callable[[str], None] | None = None,
    streaming: Streaming | None = None,
    task: str | None = None,
    segmentation: Any = None,
) -> DefenseResult:
    """Harden a generator with ``method`` (akd, dmp, gauss or dpsgd) and write the checkpoint ``out``.

    ``task``: ``segmentation`` runs the segmentation defenses (argmax, gauss, dmp, dpsgd of
    ``defenses.segmentation``); None: the teacher's recorded task, or segmentation when ``options``
    are a segmentation defense's. ``segmentation``: a ``models.segnets.SegSpec`` describing a
    segmentation teacher that does not record its network (a state_dict).

    akd/dmp distil a student from ``teacher`` on the unlabelled ``proxy`` inputs; gauss re-saves
    ``teacher`` with output noise; dpsgd trains from scratch on the private pairs ``train_data`` (a
    folder, or pairs already read: an ``ImageSet`` or ``StreamedSet``). ``streaming``: when a folder of
    proxy inputs or training pairs is streamed from disk rather than read whole into memory (default
    ``Streaming()``: above the memory budget; the same seed gives the same model either way).
    ``options``: the method's options dataclass (``DEFENSES[method].Options``; None: ``default_options(method)``,
    for akd the sharper student ``DistillOptions.sharp()``, not the paper's).
    ``resume`` continues an interrupted run from ``out.state``, deleted when the run finishes unless
    ``keep_state``. ``on_step(epoch, step, steps_per_epoch, mean_losses)`` reports progress,
    ``on_warning(line)`` warnings (default: Python warnings). ``precision`` (auto, fp32, bf16) and
    ``deterministic``: how the run uses a CUDA device (``privaudit.accel``; dpsgd stays fp32). Raises ``InputError`` (and the other
    ``PrivauditError``s) before anything is written for bad settings, inputs or an unwritable ``out``.
    """
    task = resolve_defense_task(task, teacher, options, segmentation)
    defense = get_defense(method, task)
    if task == "segmentation" and distributed.launched():
        raise InputError("segmentation defenses run as one process; run privaudit defend without torchrun")
    if method == "gauss" and distributed.launched():
        raise InputError("--method gauss trains nothing, so torchrun's processes would only write the same file; run it as one process")
    if out is None:
        raise InputError("--out FILE is required: where to write the hardened checkpoint")
    check_writable(out, what="checkpoint")
    if direction is not None:
        check_direction(direction)
    options = default_options(method, task) if options is None else options
    if not isinstance(options, defense.Options):
        raise InputError(f"--method {method} takes {defense.Options.__name__}, not {type(options).__name__}")
    options.validate()
    check_seed(seed)
    check_precision(precision)
    job = DefenseJob(out=Path(out), teacher=_path(teacher), proxy=_path(proxy), train_data=train_data if isinstance(train_data, (ImageSet, StreamedSet)) else _path(train_data), direction=direction, size=size, seed=seed,
                     device=device, precision=precision, deterministic=deterministic, resume=resume, keep_state=keep_state, on_step=on_step, on_warning=on_warning,
                     streaming=streaming, segmentation=segmentation if task == "segmentation" else None)
    t0 = time.perf_counter()
    result = defense.run(options, job)
    result.seconds = time.perf_counter() - t0
    result.summary = {"method": method, **result.summary, "time": f"{result.seconds:.1f}s", "wrote": str(out)}
    return result


def _path(p: str | Path | None) -> Path | None:
    return None if p is None else Path(p)


def resolve_defense_task(task: str | None, teacher: str | Path | None, options: Any = None, spec: Any = None) -> str:
    """The task a defense runs for: ``task`` when given (checked against the teacher's record),
    else the teacher's recorded task, else segmentation for a segmentation defense's options or
    segmentation flags (``spec``), else translation."""
    from privaudit.models.segcheckpoint import resolve_task

    if task is None and teacher is None:
        from privaudit.defenses.segmentation import SegDPSGDOptions, SegDistillOptions

        if isinstance(options, (SegDPSGDOptions, SegDistillOptions)):
            return "segmentation"
    return resolve_task(teacher, task, spec)
