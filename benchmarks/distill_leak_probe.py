"""Does a richer distillation set let the student copy the teacher's leak? A fast probe on an
overfit toy teacher, beside the facades ablation (benchmarks/distill_ablation.py).

    python benchmarks/distill_leak_probe.py --out runs/leak-probe            # ~10 CPU-minutes
    python benchmarks/distill_leak_probe.py --out runs/leak-probe --seeds 0 --variants paper-30 default

The teacher memorises 16 procedural facades (the demo's generator, 32 px, ngf 8, 60 epochs, lr
1e-3: attack AUC 1.0). The proxy set is 16 more facades of the same generator and the non-members
16 others, so proxy inputs look like members: the setting in which a student that covers more of
the input space near the proxy inputs also covers more of it near the members. Each variant
distils a student (batch 4, lr 1e-3, ndf 8, no jitter), and the plain attack is run on it. The
variants (``VARIANTS``) tell apart what the richer set does from what more steps do:

* ``paper-30``: the paper's student, 30 epochs of the 16 proxy inputs (120 steps);
* ``paper-210``: the same for 210 epochs (840 steps);
* ``rich-4``: the richer set (4 augmented copies and 2 cut-and-paste inputs per proxy input, 7x)
  with the sharper student's objective, 4 epochs (112 steps: the paper's 120);
* ``objective-50``: the sharper objective on the proxy inputs alone for 50 epochs (200 steps; the
  first ``--sharp``);
* ``default``: the default student of ``defend --method akd`` (``DistillOptions.sharp()``: that
  objective on 4 augmented copies of each proxy input, as many steps as
  ``defaults.AKD_PROXY_EPOCHS`` = 30 epochs of the proxy inputs alone: 6 epochs of the 5x set, 120
  steps);
* ``default-200``: the same for as many steps as 50 epochs of the proxy inputs (10 epochs of the 5x
  set, 200 steps: the budget the default had before this probe);
* ``default-ema99``: the default with the EMA decay it had before (0.99); at 120 steps the EMA's
  warm-up, min(d, (1 + t)/(10 + t)), keeps both decays under 0.93, so it trains the same student;
* ``rich-7``: the richer set with that objective, 7 epochs (196 steps);
* ``rich-30``: the richer set for 30 epochs (840 steps, as many as ``paper-210``);
* ``data-30``: the richer set with the paper's objective, 30 epochs (840 steps);
* ``objective-30``: the sharper student's objective on the proxy inputs alone, 30 epochs.

Resumable: results go to OUT/results.json as they come, each with its options; a rerun skips what
is there with the same options (and retrains a variant whose recipe changed). Prints the
AUC and TPR at 10% FPR of every variant, mean ± sample std over the seeds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from privaudit.attacks.api import attack
from privaudit.attacks.reconstruction import AttackConfig
from privaudit.defenses import defend
from privaudit.defenses.distill import DistillOptions
from privaudit.demo import make_facades, write_aligned
from privaudit.io import write_json
from privaudit.models.arch import ModelSpec
from privaudit.training import TrainConfig, train

BASE: dict[str, Any] = dict(batch_size=4, lr=1e-3, augment=False, ndf=8)
RICH: dict[str, Any] = dict(augment_copies=4, recombine="cutpaste", recombine_copies=2)
OBJECTIVE: dict[str, Any] = dict(feature_matching=10.0, num_D=2, lambda_l1=10.0, ema=0.99)
VARIANTS: dict[str, dict[str, Any]] = {  # "default...": on top of DistillOptions.sharp(**BASE)
    "paper-30": dict(epochs=30),
    "paper-210": dict(epochs=210),
    "rich-4": dict(epochs=4, **RICH, **OBJECTIVE),
    "objective-50": dict(epochs=50, **OBJECTIVE),
    "default": {},
    "default-200": dict(proxy_epochs=50),
    "default-ema99": dict(ema=0.99),
    "rich-7": dict(epochs=7, **RICH, **OBJECTIVE),
    "rich-30": dict(epochs=30, **RICH, **OBJECTIVE),
    "data-30": dict(epochs=30, **RICH),
    "objective-30": dict(epochs=30, **OBJECTIVE),
}


def options(name: str) -> DistillOptions:
    extra = VARIANTS[name]
    return (DistillOptions.sharp if name.startswith("default") else DistillOptions)(**BASE, **extra)


def recorded(opts: DistillOptions) -> dict[str, Any]:
    """The options as JSON holds them, to tell whether a stored result is this recipe's."""
    return json.loads(json.dumps(dataclasses.asdict(opts)))


def world(root: Path) -> Path:
    for name, n, seed in (("members", 16, 1), ("nonmembers", 16, 2), ("proxy", 16, 3)):
        if not (root / name).is_dir():
            photos, labels = make_facades(n, size=32, seed=seed)
            write_aligned(root / name, photos, labels, name)
    teacher = root / "teacher.pt"
    if not teacher.exists():
        train(root / "members", teacher, direction="BtoA", size=32, model=ModelSpec(ngf=8, num_downs=5),
              config=TrainConfig(epochs=60, batch_size=4, augment=False, ndf=8, seed=0, device="cpu", lr=1e-3))
    return teacher


def audit(model: Path, root: Path) -> dict[str, float]:
    report, _ = attack(model, root / "members", root / "nonmembers", AttackConfig(n_bootstrap=0), device="cpu")
    return {"auc": report["attack"]["auc"], "tpr_10": report["attack"]["tpr_at_fpr"]["0.1"]}


def run(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], metavar="S")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS), metavar="V")
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    teacher = world(a.out)
    path = a.out / "results.json"
    results: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    if "teacher" not in results:
        results["teacher"] = audit(teacher, a.out)
    for name in a.variants:
        for seed in a.seeds:
            key = f"{name}-s{seed}"
            opts = options(name)
            if results.get(key, {}).get("options") == recorded(opts):
                continue
            model = a.out / f"{key}.pt"
            model.unlink(missing_ok=True)  # a student of another recipe
            defend("akd", out=model, teacher=teacher, proxy=a.out / "proxy", options=opts, direction="BtoA", size=32, seed=seed, device="cpu")
            results[key] = {**audit(model, a.out), "epochs": opts.resolved_epochs(), "options": recorded(opts)}
            write_json(path, results)
    write_json(path, results)
    t = results["teacher"]
    print(f"teacher: AUC {100 * t['auc']:.1f}%, TPR@10%FPR {100 * t['tpr_10']:.1f}%")
    print(f"{'variant':14s} {'epochs':>6s} {'AUC %':>14s} {'TPR@10%FPR %':>14s}")
    summary = {}
    for name in a.variants:
        rows = [results[f"{name}-s{s}"] for s in a.seeds]
        auc, tpr = np.array([r["auc"] for r in rows]), np.array([r["tpr_10"] for r in rows])
        sd = (lambda x: float(np.std(x, ddof=1)) if len(x) > 1 else 0.0)
        summary[name] = {"auc": float(auc.mean()), "auc_std": sd(auc), "tpr_10": float(tpr.mean()), "tpr_10_std": sd(tpr), "epochs": rows[0]["epochs"]}
        print(f"{name:14s} {rows[0]['epochs']:6d} {100 * auc.mean():8.1f} ± {100 * sd(auc):4.1f} {100 * tpr.mean():8.1f} ± {100 * sd(tpr):4.1f}")
    return summary


if __name__ == "__main__":
    run()
