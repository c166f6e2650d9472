"""The resume state of a training run: ``<out>.state``, written atomically after every epoch.

It holds the networks, their optimizers, the RNG states, the loss history and the run's
fingerprint (the data and settings, which must match on ``--resume``), plus what a step adds
(DP-SGD: the accountant's history and its noise generators). On the CPU a resumed run reaches
the same weights as an uninterrupted one. A finished run deletes its state unless ``keep_state``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from privaudit.errors import CheckpointError, InputError
from privaudit.io import atomic_torch_save, remove_stale_temporaries
from privaudit.models.checkpoint import safe_torch_load

TRAIN_STATE_FORMAT = "privaudit.train-state/1"


def state_path(out: Path) -> Path:
    """Where the resume state of a run writing ``out`` lives: ``<out>.state``."""
    out = Path(out)
    return out.with_name(out.name + ".state")


def discard_state(out: Path) -> None:
    """Delete the resume state of a finished run (and temporaries a killed writer left beside it).
    A failure is not worth failing a finished run for: the state is only a cache."""
    path = state_path(out)
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass
    remove_stale_temporaries(path)


def missing_state_message(path: Path, what: str = "") -> str:
    return (f"--resume: no saved state {path} from an earlier{what} run (a finished run deletes it unless trained with --keep-state); "
            "drop --resume to start afresh")


def save_state(path: Path, epoch: int, fp: dict[str, Any], G: nn.Module, D: nn.Module | None, opt_g, opt_d, history: list[dict[str, Any]], *,
               fmt: str = TRAIN_STATE_FORMAT, extra: dict[str, Any] | None = None) -> None:
    """Write what ``--resume`` needs after ``epoch`` finished epochs: networks, optimizers, RNG
    states, history (``[{epoch, losses}]``), the run's fingerprint, and a step's ``extra``."""
    state = {
        "format": fmt,
        "epoch": epoch,
        "fingerprint": fp,
        "generator": G.state_dict(),
        "discriminator": D.state_dict() if D is not None else None,
        "opt_g": opt_g.state_dict(),
        "opt_d": opt_d.state_dict() if opt_d is not None else None,
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "history": history,
        **(extra or {}),
    }
    atomic_torch_save(path, state)


def load_state(path: Path, fp: dict[str, Any], *, fmt: str = TRAIN_STATE_FORMAT, ignore: tuple[str, ...] = ("epochs", "decay_epochs"),
               what: str = "") -> dict[str, Any]:
    """The resume state in ``path``, refused (``InputError``) when missing or when its run used other
    settings or data than ``fp`` (the keys in ``ignore`` aside), and (``CheckpointError``) when it
    is no state of format ``fmt``. ``what`` (" DP-SGD") names the kind of run in messages."""
    if not path.exists():
        raise InputError(missing_state_message(path, what))
    state = safe_torch_load(path, what="training state")
    if not isinstance(state, dict) or state.get("format") != fmt:
        raise CheckpointError(f"{path} is not a privaudit{what} training state; drop --resume to start afresh")
    check_resume_fingerprint(path, state.get("fingerprint", {}), fp, ignore=ignore)
    return state


def restore(state: dict[str, Any], G: nn.Module, D: nn.Module | None, opt_g, opt_d, sched: list[torch.optim.lr_scheduler.LRScheduler]) -> int:
    """Load networks, optimizers, schedules and RNG states from a resume state; the epochs it holds."""
    G.load_state_dict(state["generator"])
    if D is not None:
        D.load_state_dict(state["discriminator"])
    opt_g.load_state_dict(state["opt_g"])
    if opt_d is not None:
        opt_d.load_state_dict(state["opt_d"])
    epoch = int(state["epoch"])
    restore_schedules(sched, epoch)
    torch.set_rng_state(state["rng_cpu"])
    if torch.cuda.is_available() and state.get("rng_cuda"):
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    return epoch


def restore_schedules(sched: list[torch.optim.lr_scheduler.LRScheduler], epoch: int) -> None:
    """Set learning-rate schedules to where ``epoch`` finished epochs left them."""
    for s in sched:
        s.last_epoch = epoch - 1
        with warnings.catch_warnings():
            # Restoring the schedule steps it before any optimizer step; torch warns, needlessly here.
            warnings.simplefilter("ignore", UserWarning)
            s.step()


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k in ("config", "train"):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# Settings that states written by earlier versions record and this one no longer has: ``amp``
# (bf16 autocast on CUDA, now ``precision``, which a run may change on resume).
RETIRED = ("amp",)


def check_resume_fingerprint(path: Path, old: dict[str, Any], new: dict[str, Any], *, ignore: tuple[str, ...] = ("epochs", "decay_epochs")) -> None:
    """Refuse ``--resume`` when the saved run used other settings or data (run length aside)."""
    a, b = _flatten(old), _flatten(new)
    skip = (*ignore, *RETIRED)
    diff = sorted(k.rsplit(".", 1)[-1] for k in set(a) | set(b) if k.rsplit(".", 1)[-1] not in skip and a.get(k) != b.get(k))
    if diff:
        raise InputError(f"--resume: the run in {path} used different settings or data ({', '.join(diff)}); use the same options or drop --resume")
