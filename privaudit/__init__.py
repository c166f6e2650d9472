"""privaudit: audit image-to-image translation models for membership leakage and harden them.

The library behind the ``privaudit`` command, one function per command::

    import privaudit

    report, result = privaudit.attack("teacher.pt", "data/train", "data/test", config=privaudit.AttackConfig())
    print(report["attack"]["auc"])

``attack``, ``train``, ``defend`` and ``evaluate`` are what the commands of the same name call
(segmentation models: ``train_segmentation``, and ``task="segmentation"`` with a ``SegSpec``);
``load_model``, ``load_pairs`` and ``load_report`` read a model, image pairs and a JSON report
(``open_pairs``: the pairs streamed from disk when they exceed the memory budget, see ``Streaming``); the
config classes hold each call's settings (their defaults are ``privaudit.defaults``). The release
gate is ``privaudit.gate`` (``GatePolicy``, ``evaluate_gate``). Every failure the user can fix is a
``PrivauditError``.

Each name is imported when first used (PEP 562), so ``import privaudit`` imports no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from privaudit.errors import (  # noqa: E402  (plain Python, no heavy imports)
    CheckpointError,
    DataError,
    EnvironmentProblem,
    InputError,
    PrivauditError,
    ReportError,
    TrainingError,
    WeightsError,
)

# Where each public name lives: "module:attribute". The one place to update when a module moves.
_LAZY: dict[str, str] = {
    # one call per command
    "attack": "privaudit.attacks.api:attack",
    "train": "privaudit.training:train",
    "defend": "privaudit.defenses.registry:defend",
    "evaluate": "privaudit.evaluation.evaluate:evaluate",
    # reading models, images and reports
    "load_model": "privaudit.models.checkpoint:load_model",
    "load_pairs": "privaudit.data.images:load_pairs",
    "open_pairs": "privaudit.data.stream:open_pairs",
    "load_report": "privaudit.report.schema:load_report",
    # the settings of each call
    "AttackConfig": "privaudit.attacks.reconstruction:AttackConfig",
    "EvaluateConfig": "privaudit.evaluation.evaluate:EvaluateConfig",
    "TrainConfig": "privaudit.training:TrainConfig",
    "ModelSpec": "privaudit.models.arch:ModelSpec",
    "ArchOverrides": "privaudit.models.arch:ArchOverrides",
    "Streaming": "privaudit.data.stream:Streaming",
    # segmentation models (attack/evaluate/defend take task="segmentation" and these)
    "SegSpec": "privaudit.models.segnets:SegSpec",
    "SegAttackOptions": "privaudit.attacks.segmentation:SegAttackOptions",
    "SegTrainConfig": "privaudit.training.segmentation:SegTrainConfig",
    "train_segmentation": "privaudit.training.segmentation:train_segmentation",
    "load_segmentation_pairs": "privaudit.data.labels:load_segmentation_pairs",
}

__all__ = [
    "__version__",
    *_LAZY,
    "PrivauditError",
    "InputError",
    "DataError",
    "CheckpointError",
    "WeightsError",
    "ReportError",
    "EnvironmentProblem",
    "TrainingError",
]


def __getattr__(name: str) -> Any:
    """Import a public name on first use (PEP 562) and keep it."""
    try:
        module_name, attribute = _LAZY[name].split(":")
    except KeyError:
        raise AttributeError(f"module 'privaudit' has no attribute {name!r}") from None
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise  # a dependency is missing, not privaudit's module: say which
        raise AttributeError(f"privaudit.{name} is not available in privaudit {__version__} (no module {module_name})") from None
    value = getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
