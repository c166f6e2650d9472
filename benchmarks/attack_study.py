"""The calibrated attacks against the defenses (issue 12): the regular teacher, DMP, AKD and DP-SGD
on facades, each attacked with the plain loss, difficulty calibration and LiRA (offline and online)
through online reference models that replay each model's own recipe.

    python benchmarks/attack_study.py --quick --out /tmp/study            # toy run: checks the pipeline
    python benchmarks/attack_study.py --data ../shared/data/facades --out runs/study   # 64 px, several CPU hours
    python benchmarks/attack_study.py --data ../shared/data/facades --out runs/study --models runs/t2cpu/seed0

DATA holds aligned A|B folders train/ (members), val/ (the distillation proxy) and test/
(non-members). The online references train on random halves of train/ + test/, so each audited
pair is IN for half of them. AKD and DMP replay the same teacher recipe and share their reference
teachers (OUT/refs/teachers). ``--models DIR`` reuses checkpoints of benchmarks/reproduce_table2.py
(regular.pt, dmp.pt, akd.pt, dpsgd_n1.pt); otherwise they are trained here with the same settings.

Resumable: every stage writes its result under OUT and a rerun reuses it; references are reused one
by one (``privaudit references`` semantics), so a killed run continues where it stopped. Everything
goes under OUT: models/, refs/<model>/, reports/<model>.json (privaudit.report/2), timings.json,
summary.md and summary.json (AUC with CI, TPR at 1% and 10% FPR, ε lower bound per attack; the
time of each reference, and the attack time with references over the plain attack's).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from privaudit import defaults
from privaudit.attacks.api import attack
from privaudit.attacks.reconstruction import AttackConfig
from privaudit.defenses import defend
from privaudit.defenses.distill import DistillOptions
from privaudit.defenses.dpsgd import DPSGDOptions
from privaudit.demo import write_splits
from privaudit.io import atomic_write_text, write_json
from privaudit.models.arch import ModelSpec
from privaudit.references import build_references
from privaudit.training import TrainConfig, train

MODELS = ("regular", "dmp", "akd", "dpsgd")
REUSE_NAMES = {"regular": "regular.pt", "dmp": "dmp.pt", "akd": "akd.pt", "dpsgd": "dpsgd_n1.pt"}  # reproduce_table2's file names
# image size, widths, (epochs, batch) of the teacher, the students and DP-SGD; references per model (DP-SGD, the others)
SCALES = {
    "quick": dict(size=32, ngf=4, ndf=4, teacher=(2, 4), student=(1, 4), dp=(1, 4), augment=False, refs=(2, 2), pairs=12),
    "cpu": dict(size=64, ngf=32, ndf=32, teacher=(100, 4), student=(50, 1), dp=(20, 16), augment=True, refs=(4, 8), pairs=None),
    # docs/results.md's 64 px models with fewer epochs: the whole study in about 2.5 CPU-core hours
    "cpu-short": dict(size=64, ngf=32, ndf=32, teacher=(30, 4), student=(20, 1), dp=(10, 16), augment=True, refs=(4, 8), pairs=None),
}
SHOWN = ("loss", "calibrated", "lira-offline", "lira-online", "reference-only")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, metavar="DIR", help="root with train/, val/ and test/ (aligned A|B); --quick makes toy data when omitted")
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    p.add_argument("--quick", action="store_true", help="toy run (32 px, ngf 4, 1-2 epochs, 12 pairs per split, 2 references)")
    p.add_argument("--scale", choices=("cpu", "cpu-short"), default="cpu",
                   help="cpu: docs/results.md's recipe (teacher 100 epochs, students 50, DP-SGD 20); cpu-short: 30, 20 and 10 epochs")
    p.add_argument("--ref-procs", type=int, default=1, metavar="N",
                   help="train each model's references in N processes (torchrun --standalone --nproc_per_node N privaudit references)")
    p.add_argument("--models", type=Path, metavar="DIR", help="reuse these checkpoints (reproduce_table2's OUT/seed<k>) instead of training")
    p.add_argument("--methods", nargs="+", choices=MODELS, default=list(MODELS), metavar="M")
    p.add_argument("--count", type=int, metavar="K", help="references per model (default: 8, DP-SGD 4; --quick 2)")
    p.add_argument("--direction", default="BtoA", choices=("AtoB", "BtoA"))
    p.add_argument("--bootstrap", type=int, default=defaults.BOOTSTRAP)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    return p.parse_args(argv)


def stage(timings: dict[str, Any], key: str, fn: Callable[[], str]) -> None:
    """Run one stage (``fn`` returns "done" or "reused"), print a line and keep its time (a reused stage keeps its first time)."""
    print(f"{key} ... ", end="", file=sys.stderr, flush=True)
    t = time.perf_counter()
    outcome = fn()
    dt = round(time.perf_counter() - t, 3)
    if outcome != "reused" or key not in timings:
        timings[key] = {"s": dt, "outcome": outcome}
    print(f"{outcome} ({dt:.1f}s)", file=sys.stderr, flush=True)


def make_model(name: str, out: Path, data: Path, s: dict[str, Any], a: argparse.Namespace, models: Path) -> str:
    if out.exists():
        return "reused"
    if a.models is not None:
        src = a.models / REUSE_NAMES[name]
        if not src.is_file():
            raise SystemExit(f"attack_study: {src} does not exist; train it with benchmarks/reproduce_table2.py or drop --models")
        shutil.copy(src, out)
        return "copied"
    common = dict(direction=a.direction, size=s["size"], seed=a.seed, device=a.device)
    part = out.with_suffix(".part.pt")
    part.unlink(missing_ok=True)
    if name == "regular":
        E, B = s["teacher"]
        train(data / "train", part, direction=a.direction, size=s["size"], model=ModelSpec(ngf=s["ngf"]),
              config=TrainConfig(epochs=E, batch_size=B, augment=s["augment"], ndf=s["ndf"], seed=a.seed, device=a.device))
    elif name == "dpsgd":
        E, B = s["dp"]
        defend("dpsgd", out=part, train_data=data / "train",
               options=DPSGDOptions(epochs=E, batch_size=B, augment=s["augment"], ndf=s["ndf"], ngf=s["ngf"], noise_multiplier=1.0), **common)
    else:
        E, B = s["student"]
        defend(name, out=part, teacher=models / "regular.pt", proxy=data / "val",
               options=DistillOptions(epochs=E, batch_size=B, augment=s["augment"], ndf=s["ndf"], lambda_l1=100.0), **common)
    part.replace(out)
    return "trained"


def run(argv: list[str] | None = None) -> dict[str, Any]:
    a = parse(argv)
    s = SCALES["quick" if a.quick else a.scale]
    a.out.mkdir(parents=True, exist_ok=True)
    data = a.data if a.data is not None else (write_splits(a.out / "data", s["pairs"], seed=2000) if a.quick else None)
    if data is None:
        raise SystemExit("attack_study: give --data DIR (train/, val/, test/) or --quick")
    models = a.out / "models"
    models.mkdir(exist_ok=True)
    tpath = a.out / "timings.json"
    timings: dict[str, Any] = json.loads(tpath.read_text()) if tpath.exists() else {}
    order = [m for m in MODELS if m in a.methods]
    if any(m in order for m in ("dmp", "akd")) and "regular" not in order and a.models is None:
        order.insert(0, "regular")  # the students distil the teacher
    config = AttackConfig(seed=a.seed, n_bootstrap=a.bootstrap)
    reports: dict[str, dict[str, Any]] = {}
    for name in order:
        ckpt = models / f"{name}.pt"
        stage(timings, f"{name}: model", lambda: make_model(name, ckpt, data, s, a, models))
        if name not in a.methods:
            continue
        count = a.count or (s["refs"][0] if name == "dpsgd" else s["refs"][1])
        refs = a.out / "refs" / name
        def build() -> str:
            before = (refs / "references.json").exists() and json.loads((refs / "references.json").read_text()).get("references")
            proxy = data / "val" if name in ("dmp", "akd") else None
            if a.ref_procs > 1:
                cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(a.ref_procs), "-m", "privaudit",
                       "references", str(ckpt), "--population", str(data / "train"), str(data / "test"), "--count", str(count), "--out", str(refs),
                       "--online", "--teacher-cache", str(a.out / "refs" / "teachers"), "--seed", str(a.seed), "--device", a.device, "--quiet",
                       *(["--proxy", str(proxy)] if proxy is not None else [])]
                subprocess.run(cmd, check=True)
            else:
                build_references(ckpt, population=[data / "train", data / "test"], count=count, out=refs, online=True, proxy=proxy,
                                 teacher_cache=a.out / "refs" / "teachers", seed=a.seed, device=a.device)
            return "reused" if before and len(before) >= count else "done"

        stage(timings, f"{name}: {count} references", build)
        timings[f"{name}: {count} references"]["per_reference_s"] = round(timings[f"{name}: {count} references"]["s"] / count, 3)
        # each reference's own training time (the manifest's; an AKD/DMP reference whose teacher came from the cache counts its student only)
        secs = [e["seconds"] for e in json.loads((refs / "references.json").read_text())["references"]]
        timings[f"{name}: {count} references"]["train_s_each"] = round(sum(secs) / len(secs), 1)
        timings[f"{name}: {count} references"]["processes"] = a.ref_procs
        rpath = a.out / "reports" / f"{name}.json"

        def plain() -> str:
            attack(ckpt, data / "train", data / "test", config, direction=a.direction, device=a.device)
            return "done"

        def calibrated() -> str:
            if rpath.exists():
                return "reused"
            report, _ = attack(ckpt, data / "train", data / "test", config, direction=a.direction, device=a.device, references=refs)
            write_json(rpath, report)
            return "done"

        rpath.parent.mkdir(exist_ok=True)
        if f"{name}: plain attack" not in timings:
            stage(timings, f"{name}: plain attack", plain)
        stage(timings, f"{name}: attacks with references", calibrated)
        reports[name] = json.loads(rpath.read_text())
        write_json(tpath, timings)
    write_json(tpath, timings)
    summary = summarise(reports, timings, count_note=a.count)
    write_json(a.out / "summary.json", summary)
    atomic_write_text(a.out / "summary.md", to_markdown(summary))
    return summary


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def summarise(reports: dict[str, dict[str, Any]], timings: dict[str, Any], count_note: int | None = None) -> dict[str, Any]:
    rows = []
    for model, r in reports.items():
        claim = (r.get("model") or {}).get("defense", {}).get("epsilon")
        for name in SHOWN:
            a = (r.get("attacks") or {}).get(name)
            if a is None:
                continue
            rows.append({"model": model, "attack": name, "strongest": name == r["attack"]["name"], "auc": a["auc"], "auc_ci95": a["auc_ci95"],
                         "tpr_1": a["tpr_at_fpr"].get("0.01"), "tpr_10": a["tpr_at_fpr"].get("0.1"), "epsilon_lb": a["epsilon_lb"],
                         "claimed_epsilon": claim})
    cost = []
    for model in reports:
        refs = next((v for k, v in timings.items() if k.startswith(f"{model}: ") and k.endswith(" references")), None)
        plain = (timings.get(f"{model}: plain attack") or {}).get("s")
        full = (timings.get(f"{model}: attacks with references") or {}).get("s")
        cost.append({"model": model, "references_s": refs and refs["s"], "per_reference_s": refs and refs.get("per_reference_s"),
                     "train_s_each": refs and refs.get("train_s_each"), "processes": refs and refs.get("processes", 1),
                     "plain_attack_s": plain, "attack_with_references_s": full,
                     "ratio": round(full / plain, 2) if plain and full else None,
                     "shift": (reports[model].get("data") or {}).get("distribution_shift", {}).get("detected")})
    return {"rows": rows, "cost": cost}


def to_markdown(summary: dict[str, Any]) -> str:
    lines = ["| model | attack | AUC % [95% CI] | TPR @ 1% FPR | TPR @ 10% FPR | ε lb (claimed ε) |", "|---|---|---|---|---|---|"]
    for r in summary["rows"]:
        lo, hi = r["auc_ci95"]
        claim = f" ({r['claimed_epsilon']:.3g})" if r["claimed_epsilon"] is not None else ""
        lines.append(f"| {r['model']} | {r['attack']}{' *' if r['strongest'] else ''} | {100 * r['auc']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] | "
                     f"{_pct(r['tpr_1'])} | {_pct(r['tpr_10'])} | {r['epsilon_lb']:.3f}{claim} |")
    lines += ["", "\\* the strongest attack (the report's verdict). reference-only is the distribution check, not an attack.", "",
              "| model | references, wall (s) | processes | wall per reference (s) | one reference's training (s) | plain attack (s) | with references (s) | ratio | shift |",
              "|---|---|---|---|---|---|---|---|---|"]
    for c in summary["cost"]:
        lines.append(f"| {c['model']} | {c['references_s']} | {c['processes']} | {c['per_reference_s']} | {c['train_s_each']} | {c['plain_attack_s']} | {c['attack_with_references_s']} | "
                     f"{c['ratio']} | {c['shift']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    run()
