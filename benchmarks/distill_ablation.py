"""Ablation of AKD's richer distillation (issue 13): each new option of `defend --method akd` alone,
a candidate default with all of them, and the paper's AKD, over several seeds, against one teacher.

    python benchmarks/distill_ablation.py --quick --out /tmp/ablation                       # toy run: checks the pipeline
    python benchmarks/distill_ablation.py --data ../shared/data/facades --out runs/ablation  # 64 px, CPU hours (see docs/defenses.md)
    python benchmarks/distill_ablation.py --data ../shared/data/facades --out runs/ablation \\
        --teacher runs/t2cpu/seed0/regular.pt --references 4 --inception-weights weights-inception-2015-12-05-6726825d.pth

DATA holds aligned A|B folders train/ (members: the teacher's private pairs), val/ (the proxy set)
and test/ (non-members). ``--teacher`` reuses a teacher (benchmarks/reproduce_table2.py's
regular.pt at --scale cpu); otherwise one is trained with that recipe (100 epochs, ngf/ndf 32).
Every student has reproduce_table2's student recipe (50 epochs, batch 1, ndf 32, pix2pix jitter).

Variants (``VARIANTS``), each trained for as many steps as the paper's student (epochs scaled down
for a larger distillation set) unless it says otherwise: ``akd`` (the paper's), ``augment`` (4
augmented copies of each proxy input), ``recombine`` (2 recombined inputs per proxy input:
cut-and-paste for label maps, CutMix for photos), ``feature-matching`` (weight 10), ``num-D-2``,
``ema`` (0.999), ``lambda-10`` (the paper's λ = 100 lowered to 10: more weight on the adversarial
term), ``objective`` (λ = 10, feature matching, 2 discriminators and an EMA of 0.99 on the proxy
inputs alone: the first ``--sharp``), ``candidate``
(the richer set and that objective together; ``--candidate KEY=VALUE,...`` changes it),
``objective-augment`` (that objective on the augmented copies alone, without recombined inputs),
``objective-augment-short`` (the same for 0.6 of the steps), its ``-l20`` (λ = 20) and ``-ema995``
(EMA 0.995: ``privaudit defend --method akd``'s default student), ``long`` (the paper's with 2x the
epochs) and ``candidate-long`` (the candidate with 2x the steps), which tell what more steps buy
with and without the richer data; on request, ``dmp`` (the paper's DMP) and ``dmp-augment`` (DMP on
4 augmented copies of each proxy input, as many steps).

``--device cuda --precision fp32`` runs on a GPU with the CPU's arithmetic (TF32 off); each run
records the device and precision it ran in (``runtime``), so runs of several machines can share a
table. benchmarks/gpu_session.sh runs more seeds on a lent GPU.

Per run (variant x seed): plain attack AUC, TPR at 1% and 10% FPR, with ``--references K`` the
strongest calibrated attack (K online references per run replaying its recipe; their reference
teachers are shared by every run, seed 0); test L1, SSIM, sharpness, NKID when Inception weights
are present; the student's L1 to the teacher on the non-member and the proxy inputs; teacher
queries; training time. Resumable: every run writes models/, reports/ and runs/<variant>-s<seed>.json
under OUT, and a rerun reuses them (an interrupted student resumes from its state). The summary goes
to OUT/summary.json, OUT/summary.md and the "Ablation" section of ``--doc`` (default
docs/defenses.md; with --quick OUT/defenses.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
from scipy import stats

from privaudit import defaults
from privaudit.accel import resolve_accel
from privaudit.attacks.reconstruction import AttackConfig
from privaudit.data.images import load_inputs
from privaudit.defenses import defend
from privaudit.defenses.distill import DistillOptions
from privaudit.defenses.distill_data import detect_input_kind
from privaudit.demo import write_splits
from privaudit.device import resolve_device
from privaudit.errors import InputError, WeightsError
from privaudit.evaluation.evaluate import EvaluateConfig, evaluate
from privaudit.io import atomic_write_text, sha256_file, write_json
from privaudit.models.arch import ModelSpec
from privaudit.models.checkpoint import safe_torch_load
from privaudit.references import build_references
from privaudit.training import TrainConfig, train
from privaudit.training.pix2pix import PLAIN_OBJECTIVE
from privaudit.training.resume import state_path

# image size, widths, (epochs, batch) of the teacher and the students, pix2pix jitter, seeds, pairs per split (quick data),
# (augmented, recombined) copies per proxy input, and the factor of the longer schedules
SCALES = {
    "quick": dict(size=32, ngf=4, ndf=4, teacher=(2, 4), student=(3, 4), augment=False, seeds=[0], pairs=12, copies=(2, 1), long=2),
    "cpu": dict(size=64, ngf=32, ndf=32, teacher=(100, 4), student=(50, 1), augment=True, seeds=[0, 1, 2], pairs=None, copies=(4, 2), long=2),
}
# name -> (method, DistillOptions fields); "recombine" is filled in for the input kind, "copies" from the scale. Every variant
# trains for as many steps as the paper's student ("S": its epochs times proxy inputs over distillation inputs, rounded),
# so that a row differs from `akd` in what the student sees or how it learns, not in how long: except `long` (the paper's
# student, `long` times the epochs) and `candidate-long` (the candidate, `long` times the steps), which say what more
# steps buy with and without the richer data.
OBJECTIVE = {"feature_matching": 10.0, "num_D": 2, "lambda_l1": 10.0, "ema": 0.99}  # the sharper objective as first found (the default now has ema 0.995)
CANDIDATE = {"augment_copies": "A", "recombine": "R", "recombine_copies": "C", **OBJECTIVE}
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "akd": ("akd", {}),
    "augment": ("akd", {"augment_copies": "A", "epochs": "S"}),
    "recombine": ("akd", {"recombine": "R", "recombine_copies": "C", "epochs": "S"}),
    "feature-matching": ("akd", {"feature_matching": 10.0}),
    "num-D-2": ("akd", {"num_D": 2}),
    "ema": ("akd", {"ema": 0.999}),
    "lambda-10": ("akd", {"lambda_l1": 10.0}),
    "objective": ("akd", dict(OBJECTIVE)),
    "candidate": ("akd", {**CANDIDATE, "epochs": "S"}),
    "objective-augment": ("akd", {**OBJECTIVE, "augment_copies": "A", "epochs": "S"}),
    "objective-augment-short": ("akd", {**OBJECTIVE, "augment_copies": "A", "epochs": "S0.6"}),
    "objective-augment-short-l20": ("akd", {**OBJECTIVE, "lambda_l1": 20.0, "augment_copies": "A", "epochs": "S0.6"}),
    "objective-augment-short-ema995": ("akd", {**OBJECTIVE, "ema": 0.995, "augment_copies": "A", "epochs": "S0.6"}),  # defaults.AKD_SHARP
    "long": ("akd", {"epochs": "L"}),
    "candidate-long": ("akd", {**CANDIDATE, "epochs": "SL"}),
    "dmp": ("dmp", {}),
    "dmp-augment": ("dmp", {"augment_copies": "A", "epochs": "S"}),
}
DEFAULT_VARIANTS = [v for v in VARIANTS if not v.startswith("dmp")]
REFERENCE_SEED = 0  # every run's references sample the population alike, so their reference teachers are shared


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, metavar="DIR", help="root with train/, val/ and test/ (aligned A|B); --quick makes toy data when omitted")
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    p.add_argument("--quick", action="store_true", help="toy run (32 px, ngf 4, 1 epoch, 12 pairs per split, one seed)")
    p.add_argument("--teacher", type=Path, metavar="T.pt", help="the teacher to distil (default: train one with the scale's recipe into OUT/teacher.pt)")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=DEFAULT_VARIANTS, metavar="V")
    p.add_argument("--candidate", metavar="KEY=VALUE,...", help="the candidate default's DistillOptions (e.g. augment_copies=4,ema=0.999)")
    p.add_argument("--seeds", nargs="+", type=int, metavar="S", help="student seeds (default: 0 1 2; --quick 0)")
    p.add_argument("--references", type=int, default=0, metavar="K", help="K online references per run for the calibrated attacks (0: plain attack only)")
    p.add_argument("--inception-weights", type=Path, metavar="FILE", help="for NKID (default: the usual places; none found: NKID is skipped)")
    p.add_argument("--doc", type=Path, metavar="FILE", help="the Markdown file whose 'Ablation' section is rewritten (default: docs/defenses.md; --quick: OUT/defenses.md)")
    p.add_argument("--no-train", action="store_true", help="summarise the runs OUT holds (of --variants and --seeds) without training the missing ones")
    p.add_argument("--direction", default="BtoA", choices=("AtoB", "BtoA"))
    p.add_argument("--bootstrap", type=int, default=defaults.BOOTSTRAP)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                   help="how the networks run on a GPU (docs/performance.md); each run records what ran")
    return p.parse_args(argv)


def _value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def variant_options(name: str, s: dict[str, Any], kind: str, candidate: str | None) -> tuple[str, DistillOptions]:
    """The method and ``DistillOptions`` of a variant at scale ``s`` for proxy inputs of ``kind``."""
    method, extra = VARIANTS[name]
    extra = dict(extra)
    if name in ("candidate", "candidate-long") and candidate:
        extra = {k.strip(): _value(v.strip()) for k, v in (item.split("=", 1) for item in candidate.split(",") if item.strip())}
        extra["epochs"] = "S" if name == "candidate" else "SL"
    fill = {"A": s["copies"][0], "C": s["copies"][1], "R": "cutpaste" if kind == "labels" else "cutmix"}
    extra = {k: fill.get(v, v) if isinstance(v, str) else v for k, v in extra.items()}
    E, B = s["student"]
    # the paper's student spelled out, so that the baseline stays the paper's whatever the defaults become
    base = dict(epochs=E, batch_size=B, augment=s["augment"], ndf=s["ndf"], lambda_l1=defaults.LAMBDA_L1, augment_copies=0, recombine="none",
                **PLAIN_OBJECTIVE)
    spec = extra.get("epochs")
    if isinstance(spec, str):  # as many steps as E ("S"), `long` x E ("SL", "L") or 0.6 x E ("S0.6") epochs of the proxy inputs: the library's rule
        factor = s["long"] if spec in ("SL", "L") else float(spec[1:] or 1)
        extra["epochs"] = DistillOptions(**{**base, **extra, "epochs": None, "proxy_epochs": factor * E}).resolved_epochs()
    return method, DistillOptions(**{**base, **extra})


def _plain(options: DistillOptions) -> dict[str, Any]:
    """The options as a run's JSON holds them."""
    return json.loads(json.dumps(vars(options)))


def changed(held: dict[str, Any], now: dict[str, Any]) -> str:
    """The fields that differ between two ``_plain`` option records."""
    return ", ".join(f"{k}: {held.get(k)!r} then, {now.get(k)!r} now" for k in sorted(set(held) | set(now)) if held.get(k) != now.get(k))


def _recordable(options: DistillOptions) -> dict[str, Any]:
    return {"epochs": options.epochs, "lambda_l1": options.lambda_l1}


def _recorded_options(ckpt: Path) -> dict[str, Any] | None:
    """The epochs and λ a (possibly unfinished) student records, to refuse resuming another variant's run."""
    try:
        d = safe_torch_load(ckpt, what="checkpoint")["defense"]
    except Exception:  # an unreadable leftover is redone by defend's own checks
        return None
    return {"epochs": d.get("epochs"), "lambda_l1": d.get("lambda_l1")}


def _device_name(device: str | None) -> str:
    """The name of the processor a checkpoint records it trained on (``provenance.runtime.device``),
    when that is this machine's kind ("cpu", or the name of CUDA device k), else "unknown"."""
    import torch

    if device == "cpu":
        return "cpu"
    if device and device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return "unknown"


def stage(what: str, fn: Callable[[], str]) -> None:
    print(f"{what} ... ", end="", file=sys.stderr, flush=True)
    t = time.perf_counter()
    outcome = fn()
    print(f"{outcome} ({time.perf_counter() - t:.1f}s)", file=sys.stderr, flush=True)


def _complete(path: Path) -> bool:
    if not path.is_file():
        return False
    ckpt = safe_torch_load(path, what="checkpoint")
    return bool(isinstance(ckpt, dict) and (ckpt.get("training") or {}).get("complete"))


def train_student(method: str, options: DistillOptions, ckpt: Path, clock: Path, teacher: Path, data: Path, s: dict[str, Any],
                  seed: int, a: argparse.Namespace) -> float:
    """Distil (or finish distilling) one student; its training seconds, summed over interrupted
    invocations (``clock``: the seconds of the epochs saved so far)."""
    before = json.loads(clock.read_text())["seconds"] if clock.exists() and state_path(ckpt).exists() else 0.0
    t0 = time.perf_counter()

    def on_step(epoch: int, step: int, steps: int, losses: dict[str, float]) -> None:
        if step == steps - 1:  # the epoch is about to be saved: so is its time
            write_json(clock, {"epochs_done": epoch + 1, "seconds": round(before + time.perf_counter() - t0, 3)})

    defend(method, out=ckpt, teacher=teacher, proxy=data / "val", options=options, direction=a.direction, size=s["size"], seed=seed,
           device=a.device, precision=a.precision, resume=state_path(ckpt).exists(), on_step=on_step, on_warning=lambda line: None)
    seconds = round(before + time.perf_counter() - t0, 3)
    write_json(clock, {"epochs_done": options.epochs, "seconds": seconds})
    return seconds


def audit(ckpt: Path, data: Path, a: argparse.Namespace, s: dict[str, Any], weights: str | None, refs: Path | None,
          teacher: Path | None, seed: int) -> dict[str, Any]:
    cfg = EvaluateConfig(attack=AttackConfig(seed=seed, n_bootstrap=a.bootstrap), kid=weights is not None, inception_weights=weights,
                         teacher=str(teacher) if teacher is not None else None, proxy=str(data / "val") if teacher is not None else None)
    return evaluate(ckpt, data / "train", data / "test", cfg, direction=a.direction, size=s["size"], device=a.device, precision=a.precision, references=refs)


def references_for(ckpt: Path, out: Path, data: Path, a: argparse.Namespace, proxy: bool) -> Path:
    build_references(ckpt, population=[data / "train", data / "test"], count=a.references, out=out, online=True, proxy=data / "val" if proxy else None,
                     teacher_cache=a.out / "refs" / "teachers", seed=REFERENCE_SEED, device=a.device, precision=a.precision)
    return out


def row(report: dict[str, Any]) -> dict[str, Any]:
    """The metrics of one audited model."""
    plain = (report.get("attacks") or {}).get("loss") or report["attack"]
    u = report.get("utility") or {}
    fid = u.get("fidelity_to_teacher") or {}
    r = {"auc": plain["auc"], "tpr_1": plain["tpr_at_fpr"].get("0.01"), "tpr_10": plain["tpr_at_fpr"].get("0.1"), "l1": u.get("l1"),
         "ssim": u.get("ssim"), "sharpness": u.get("sharpness"), "nkid": u.get("nkid"), "fid_nonmembers": fid.get("nonmembers_l1"),
         "fid_proxy": fid.get("proxy_l1")}
    if report.get("attacks"):
        strongest = report["attack"]
        r.update({"calibrated_attack": strongest.get("name"), "calibrated_auc": strongest["auc"], "calibrated_tpr_1": strongest["tpr_at_fpr"].get("0.01"),
                  "calibrated_tpr_10": strongest["tpr_at_fpr"].get("0.1")})
    return r


def run(argv: list[str] | None = None) -> dict[str, Any]:
    a = parse(argv)
    try:  # a device or precision this machine cannot run fails in one line, before anything is written
        resolve_accel(resolve_device(a.device), a.precision)
    except InputError as exc:
        print(f"distill_ablation: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    s = SCALES["quick" if a.quick else "cpu"]
    seeds = a.seeds if a.seeds is not None else s["seeds"]
    a.out.mkdir(parents=True, exist_ok=True)
    data = a.data if a.data is not None else (write_splits(a.out / "data", s["pairs"], seed=3000) if a.quick else None)
    if data is None:
        raise SystemExit("distill_ablation: give --data DIR (train/, val/, test/) or --quick")
    weights: str | None = None
    try:
        from privaudit.evaluation.inception import resolve_inception_weights

        weights = str(resolve_inception_weights(a.inception_weights))
    except WeightsError as exc:
        if a.inception_weights is not None:
            raise SystemExit(f"distill_ablation: {exc}") from None
        print("distill_ablation: no Inception weights found, NKID is skipped", file=sys.stderr)
    for sub in ("models", "reports", "runs"):
        (a.out / sub).mkdir(exist_ok=True)

    # the teacher
    teacher = a.teacher or a.out / "teacher.pt"

    def make_teacher() -> str:
        if a.teacher is not None:
            return "given"
        if _complete(teacher):
            return "reused"
        E, B = s["teacher"]
        train(data / "train", teacher, direction=a.direction, size=s["size"], model=ModelSpec(ngf=s["ngf"]),
              config=TrainConfig(epochs=E, batch_size=B, augment=s["augment"], ndf=s["ndf"], seed=0, device=a.device, precision=a.precision), resume=state_path(teacher).exists())
        return "trained"

    stage("teacher", make_teacher)
    settings = {"scale": "quick" if a.quick else "cpu", "data": str(Path(data).resolve()), "direction": a.direction, "teacher_sha256": sha256_file(teacher),
                "references": a.references, "kid": weights is not None}
    spath = a.out / "settings.json"
    if spath.exists() and json.loads(spath.read_text()) != settings:
        raise SystemExit(f"distill_ablation: {a.out} holds runs of other settings ({spath}); choose another --out")
    write_json(spath, settings)
    kind = detect_input_kind(load_inputs(data / "val", direction=a.direction, size=s["size"]).inputs)

    def audit_teacher() -> str:
        path = a.out / "reports" / "teacher.json"
        if path.exists():
            return "reused"
        refs = references_for(teacher, a.out / "refs" / "teacher", data, a, proxy=False) if a.references else None
        write_json(path, audit(teacher, data, a, s, weights, refs, None, 0))
        return "done"

    stage("teacher: audit", audit_teacher)
    teacher_row = row(json.loads((a.out / "reports" / "teacher.json").read_text()))

    runs: dict[str, list[dict[str, Any]]] = {}
    for name in a.variants:
        method, options = variant_options(name, s, kind, a.candidate)
        for seed in seeds:
            key = f"{name}-s{seed}"
            rpath = a.out / "runs" / f"{key}.json"

            def one() -> str:
                if rpath.exists():
                    held = {**_plain(DistillOptions()), **json.loads(rpath.read_text())["options"]}  # a field added since: its default
                    if held != _plain(options):
                        raise SystemExit(f"distill_ablation: {rpath} was run with other options ({changed(held, _plain(options))}); "
                                         "choose another --out, or delete that run to redo it")
                    return "reused"
                ckpt = a.out / "models" / f"{key}.pt"
                if ckpt.exists() and not rpath.exists() and _recorded_options(ckpt) not in (None, _recordable(options)):
                    raise SystemExit(f"distill_ablation: {ckpt} was distilled with other options; choose another --out, or delete it to redo it")
                clock = a.out / "models" / f"{key}.clock.json"
                seconds = json.loads(clock.read_text())["seconds"] if _complete(ckpt) and clock.exists() else \
                    train_student(method, options, ckpt, clock, teacher, data, s, seed, a)
                refs = references_for(ckpt, a.out / "refs" / key, data, a, proxy=True) if a.references else None
                report = audit(ckpt, data, a, s, weights, refs, teacher, seed)
                write_json(a.out / "reports" / f"{key}.json", report)
                defense = report["model"].get("defense") or {}
                held = safe_torch_load(ckpt, what="checkpoint")
                ck = held["defense"]
                runtime = (held.get("provenance") or {}).get("runtime") or {}
                write_json(rpath, {"variant": name, "seed": seed, "method": method, "options": {k: v for k, v in vars(options).items()},
                                   "teacher_queries": ck.get("teacher_queries"), "distillation_inputs": ck.get("distillation_inputs"),
                                   "steps": options.epochs * -(-int(ck.get("distillation_inputs") or 0) // options.batch_size),
                                   "train_s": seconds, "defense": defense.get("method"), **row(report),
                                   "runtime": {**runtime, "device_name": _device_name(runtime.get("device"))}})
                return "done"

            if a.no_train and not rpath.exists():
                continue
            stage(key, one)
            runs.setdefault(name, []).append(json.loads(rpath.read_text()))
    summary = summarise(runs, teacher_row, settings, seeds, kind)
    write_json(a.out / "summary.json", summary)
    md = to_markdown(summary)
    atomic_write_text(a.out / "summary.md", md)
    doc = a.doc or (a.out / "defenses.md" if a.quick else Path(__file__).resolve().parents[1] / "docs" / "defenses.md")
    write_section(doc, md)
    return summary


METRICS = ("auc", "tpr_1", "tpr_10", "calibrated_auc", "calibrated_tpr_1", "calibrated_tpr_10", "l1", "ssim", "sharpness", "nkid",
           "fid_nonmembers", "fid_proxy", "teacher_queries", "steps", "train_s")


def _device(run: dict[str, Any]) -> str:
    """Where a run trained, from its ``runtime`` record: "CPU", the GPU's name, plus the precision when not fp32."""
    rt = run.get("runtime") or {}
    name = rt.get("device_name") or rt.get("device") or "unrecorded"
    name = "CPU" if name == "cpu" else name.removeprefix("NVIDIA ")
    return name if rt.get("precision", "fp32") == "fp32" else f"{name}, {rt['precision']}"


def _by_device(rs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for x in rs:
        out.setdefault(_device(x), []).append(x)
    return out


def _stat(values: list[Any]) -> dict[str, float] | None:
    if not values or any(v is None for v in values):
        return None
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}


def versus(values: list[Any], base: list[Any]) -> dict[str, Any] | None:
    """A variant's mean minus the paper's student's over their seeds, with Welch's t-test (unequal
    variances, independent seeds): {"diff", "ci95": [low, high], "p"}; None with fewer than two
    seeds on either side, or a missing value."""
    if len(values) < 2 or len(base) < 2 or any(v is None for v in [*values, *base]):
        return None
    diff = float(np.mean(values) - np.mean(base))
    if np.var(values) == np.var(base) == 0:  # no spread on either side: no interval to give
        return {"diff": diff, "ci95": None, "p": None}
    with warnings.catch_warnings():  # one side without spread (two seeds alike): scipy warns, Welch's interval still holds
        warnings.simplefilter("ignore", RuntimeWarning)
        t = stats.ttest_ind(values, base, equal_var=False)
        ci = t.confidence_interval(0.95)
    return {"diff": diff, "ci95": [float(ci.low), float(ci.high)], "p": float(t.pvalue)}


def summarise(runs: dict[str, list[dict[str, Any]]], teacher: dict[str, Any], settings: dict[str, Any], seeds: list[int], kind: str) -> dict[str, Any]:
    """Mean ± sample std over seeds per variant, and whether each meets issue 13's bar against this
    run's paper AKD: AUC within 2 points above it (or lower), TPR at 10% FPR no higher, test L1 at most
    the teacher's, sharpness at least 0.9x the teacher's."""
    rows = []
    for name, rs in runs.items():
        r = {"variant": name, "seeds": [x["seed"] for x in rs], "options": rs[0]["options"], "method": rs[0]["method"]}
        r.update({m: _stat([x.get(m) for x in rs]) for m in METRICS})
        r["devices"] = {label: {"seeds": [x["seed"] for x in xs], "train_s": _stat([x.get("train_s") for x in xs])} for label, xs in _by_device(rs).items()}
        rows.append(r)
    base = next((r for r in rows if r["variant"] == "akd"), None)
    for r in rows:
        checks = {}
        if base is not None and r["auc"] and base["auc"]:
            # "within 2 points" of the paper's student, on the side that matters: a lower AUC leaks less
            checks["auc_at_most_2_points_above"] = r["auc"]["mean"] <= base["auc"]["mean"] + 0.02
        if base is not None and r["tpr_10"] and base["tpr_10"]:
            checks["tpr_10_no_higher"] = r["tpr_10"]["mean"] <= base["tpr_10"]["mean"]
        if r["l1"] and teacher.get("l1") is not None:
            checks["l1_at_most_teacher"] = r["l1"]["mean"] <= teacher["l1"]
        if r["sharpness"] and teacher.get("sharpness"):
            checks["sharpness_at_least_0.9_teacher"] = r["sharpness"]["mean"] >= 0.9 * teacher["sharpness"]
        r["bar"] = checks
        r["meets_bar"] = bool(checks) and all(checks.values()) and len(checks) == 4
        r["vs_akd"] = {m: versus([x.get(m) for x in runs[r["variant"]]], [x.get(m) for x in runs["akd"]]) for m in ("auc", "tpr_10")} \
            if base is not None and r is not base else None
    return {"settings": settings, "seeds": seeds, "input_kind": kind, "teacher": teacher, "rows": rows}


def _pm(st: dict[str, float] | None, scale: float = 1.0, digits: int = 1) -> str:
    if st is None:
        return "–"
    return f"{scale * st['mean']:.{digits}f} ± {scale * st['std']:.{digits}f}"


def _diff(d: dict[str, Any] | None) -> str:
    if d is None:
        return "–"
    if d["ci95"] is None:
        return f"{100 * d['diff']:+.1f}"
    return f"{100 * d['diff']:+.1f} ({100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f})"


def _opts(r: dict[str, Any]) -> str:
    defaults_ = vars(DistillOptions())
    o = r["options"]
    changed = [f"{k}={v}" for k, v in o.items() if k in ("augment_copies", "recombine", "recombine_copies", "feature_matching", "num_D", "ema", "augment_ops",
                                                         "input_kind") and v != defaults_.get(k) and not (k == "recombine_copies" and o.get("recombine") == "none")]
    if o.get("lambda_l1") != defaults.LAMBDA_L1:
        changed.append(f"λ={o['lambda_l1']:g}")
    return ", ".join(changed or ["the paper's"]) + f", {o['epochs']} epochs"


def to_markdown(summary: dict[str, Any]) -> str:
    t = summary["teacher"]
    calibrated = any(r.get("calibrated_auc") for r in summary["rows"])
    st = summary["settings"]
    lines = [f"Scale {st['scale']}, proxy inputs: {summary['input_kind']}, student seeds as listed per row, with the device they trained on where not all on the CPU (mean ± sample std; ± 0.0 for one seed); "
             f"teacher sha256 {st['teacher_sha256'][:12]}…: attack AUC {100 * t['auc']:.1f}%, test L1 {t['l1']:.4f}, SSIM {t['ssim']:.3f}, "
             f"sharpness {t['sharpness']:.3f}" + (f", NKID {100 * t['nkid']:.2f}%" if t.get("nkid") is not None else "") + ".", ""]
    head = ["variant", "options", "seeds", "AUC %", "TPR@1%FPR %", "TPR@10%FPR %"]
    head += ["calibrated AUC %", "cal. TPR@1% %", "cal. TPR@10% %"] if calibrated else []
    head += ["TPR@10% − akd (95% CI)"]
    head += ["test L1", "SSIM", "sharpness", "NKID %", "L1 to teacher (test / proxy)", "teacher queries", "steps", "train s", "meets the bar"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in summary["rows"]:
        devices = r["devices"]
        only_cpu = list(devices) == ["CPU"]
        seeds = " ".join(map(str, r["seeds"])) if only_cpu else "; ".join(f"{' '.join(map(str, d['seeds']))} ({k})" for k, d in devices.items())
        train_s = _pm(r["train_s"], 1, 0) if only_cpu else "; ".join(f"{_pm(d['train_s'], 1, 0)} ({k})" for k, d in devices.items())
        cells = [r["variant"], _opts(r), seeds, _pm(r["auc"], 100), _pm(r["tpr_1"], 100), _pm(r["tpr_10"], 100)]
        if calibrated:
            cells += [_pm(r["calibrated_auc"], 100), _pm(r["calibrated_tpr_1"], 100), _pm(r["calibrated_tpr_10"], 100)]
        cells.append(_diff((r.get("vs_akd") or {}).get("tpr_10")))
        fid = f"{_pm(r['fid_nonmembers'], 1, 4)} / {_pm(r['fid_proxy'], 1, 4)}"
        bar = "yes" if r["meets_bar"] else ("no (" + ", ".join(k for k, v in r["bar"].items() if not v) + ")" if r["bar"] else "–")
        cells += [_pm(r["l1"], 1, 4), _pm(r["ssim"], 1, 3), _pm(r["sharpness"], 1, 3), _pm(r["nkid"], 100, 2), fid, _pm(r["teacher_queries"], 1, 0),
                  _pm(r["steps"], 1, 0), train_s, bar]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "The bar (issue 13): AUC at most 2 points above this run's `akd` (a lower AUC leaks less) and TPR at 10% FPR no higher, test L1 at most the teacher's, "
              "sharpness at least 0.9x the teacher's (means over the seeds). 'TPR@10% − akd': the row's mean minus `akd`'s in points, with the "
              "95% confidence interval of Welch's t-test over the seeds (each row's students are trained independently of the other rows'). AUC and TPR: the plain reconstruction-loss attack, members = train/, "
              "non-members = test/" + ("; calibrated: the strongest attack with the references." if calibrated else ".")]
    return "\n".join(lines) + "\n"


BEGIN, END = "<!-- distill_ablation:begin -->", "<!-- distill_ablation:end -->"


def write_section(doc: Path, md: str) -> None:
    """Put ``md`` between the ablation markers of ``doc`` (added under a "## Ablation" heading when missing)."""
    block = f"{BEGIN}\n{md}{END}"
    text = doc.read_text(encoding="utf-8") if doc.exists() else "# Defenses\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + f"\n\n## Ablation\n\n{block}\n"
    atomic_write_text(doc, text)


if __name__ == "__main__":
    run()
