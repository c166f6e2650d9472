"""Building a report (``privaudit.report/1``; ``attacks.api.add_reference_attacks`` makes it a
``/2``): its common head (schema, tool, model, data,
environment), the attack section, and the warnings a report's ``model`` section calls for.

Imports no torch itself (``base_report`` reads its version when it runs, with a model loaded).
"""

from __future__ import annotations

import platform
from typing import TYPE_CHECKING, Any

from privaudit.io import utc_now
from privaudit import __version__
from privaudit.report.schema import REPORT_SCHEMA

if TYPE_CHECKING:
    from privaudit.attacks.reconstruction import AttackResult
    from privaudit.data.checks import AuditSets
    from privaudit.models.loaded import LoadedModel



def base_report(model: LoadedModel, sets: AuditSets, *, seed: int) -> dict[str, Any]:
    """The report's common head (schema, tool, created, seed, model, data, environment)."""
    import torch

    return {
        "schema": REPORT_SCHEMA,
        "tool": {"name": "privaudit", "version": __version__},
        "created": utc_now(),
        "seed": seed,
        "model": {
            "path": model.path,
            "sha256": model.sha256,
            "format": model.format,
            "arch": model.arch,
            "image_size": sets.image_size,
            "defense": dict(model.defense),
            "training": model.training,  # {complete, epochs_done, epochs_total}; None when the file does not say
        },
        "data": sets.data(),
        "environment": {"torch": torch.__version__, "device": str(model.device), "python": platform.python_version(), "runtime": model.runtime.record()},
    }


def attack_report(model: LoadedModel, sets: AuditSets, result: AttackResult) -> dict[str, Any]:
    """A whole attack report: the head and the ``attack`` section of ``result``."""
    report = base_report(model, sets, seed=result.config.seed)
    report["attack"] = result.to_dict()
    return report


def dp_audit(report: dict[str, Any]) -> dict[str, Any] | None:
    """For a model that claims (ε, δ)-DP: ``report["dp_audit"]`` = the claim beside the measured
    lower bound of the report's attack (the strongest); ``exceeded`` is True when the bound is above
    the claim, which means the DP implementation or its accounting is wrong. None (and no key) otherwise."""
    defense = (report.get("model") or {}).get("defense") or {}
    claim = defense.get("epsilon")
    a = report.get("attack") or {}
    lb = a.get("epsilon_lb")
    if not isinstance(claim, (int, float)) or isinstance(claim, bool) or not isinstance(lb, (int, float)):
        return None
    audit = {"claimed_epsilon": claim, "delta": a.get("delta"), "epsilon_lb": lb, "attack": a.get("name"), "exceeded": bool(lb > claim)}
    report["dp_audit"] = audit
    return audit


def unfinished_warnings(model: dict[str, Any]) -> list[str]:
    """Warnings for a report's ``model`` section: the checkpoint (or the teacher it was distilled
    from) is the model of an unfinished run. Unknown (older files, foreign formats) warns nothing."""
    out = []
    for who, training in ((f"{model.get('path')}", model.get("training")), ("its teacher", ((model.get("defense") or {}).get("teacher") or {}).get("training"))):
        if isinstance(training, dict) and training.get("complete") is False:
            out.append(f"{who} is an unfinished model: its training stopped after epoch {training.get('epochs_done')} of {training.get('epochs_total')} "
                       "(interrupted or diverged); finish the run with --resume, or use a finished model")
    return out
