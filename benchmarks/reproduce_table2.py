"""Reproduce Table II of the AKD paper (CMP Facades): regular pix2pix, Gauss, DP-SGD, DMP and AKD,
each trained and audited over seeds, summarised next to the paper's numbers.

    python benchmarks/reproduce_table2.py --quick --out /tmp/t2                 # toy run, seconds
    python benchmarks/reproduce_table2.py --data facades --out runs/t2           # --scale cpu: 64 px, hours
    python benchmarks/reproduce_table2.py --data facades --out runs/t2 --scale paper --seeds 0 1 2 3 4 \\
        --inception-weights weights-inception-2015-12-05-6726825d.pth           # 256 px, for a GPU

DATA holds aligned A|B folders: train/ (members: the teacher's private pairs), val/ (the proxy
set: distillation reads only its inputs; its pairs serve the proxy-leakage check) and test/
(non-members). Everything goes under OUT: OUT/seed<k>/<model>.pt and .json, OUT/summary.md,
OUT/summary.json, OUT/tradeoff.png. A finished checkpoint or report is reused by the next run and
an interrupted training continues from its saved state; --force redoes everything.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from privaudit import defaults
from privaudit.attacks.reconstruction import AttackConfig
from privaudit.defenses import defend
from privaudit.defenses.distill import DistillOptions
from privaudit.defenses.dpsgd import DPSGDOptions
from privaudit.defenses.gauss import GaussOptions
from privaudit.demo import write_splits
from privaudit.device import resolve_device
from privaudit.errors import InputError, PrivauditError, WeightsError
from privaudit.evaluation.evaluate import EvaluateConfig, evaluate
from privaudit.evaluation.inception import resolve_inception_weights, vet_inception_weights
from privaudit.io import atomic_write_text, check_dir_writable, sha256_file, write_json
from privaudit.models.arch import ModelSpec
from privaudit.training import TrainConfig, train
from privaudit.report.markdown import to_markdown
from privaudit.report.plots import save_figure
from privaudit.report.tables import row

METHODS = ("regular", "gauss", "dpsgd", "dmp", "akd")
PART_OF = {"nodp": "dpsgd"}  # a control trained and reported with the method it explains
# Table II, CMP Facades (400 train / 100 proxy / 106 test), five runs: (row, AUCROC %, NKID %)
PAPER = {
    "regular": ("regular", 96.46, 5.93), "gauss": ("Gauss", 96.40, 6.49), "dp_low": ("DP-SGD σ=2.02e-3", 89.20, 8.21),
    "dp_high": ("DP-SGD σ=1.69e-2", 58.06, 12.57), "dmp": ("DMP", 57.73, 13.64), "akd": ("AKD", 57.56, 7.80),
}
# image size, widths, (epochs, batch size) of the teacher, the students and DP-SGD, default seeds
SCALES = {
    "quick": dict(size=32, ngf=4, ndf=8, teacher=(3, 4), student=(3, 1), dp=(2, 4), augment=False, seeds=[0]),
    "cpu": dict(size=64, ngf=32, ndf=32, teacher=(100, 4), student=(50, 1), dp=(20, 16), augment=True, seeds=[0, 1, 2]),
    "paper": dict(size=256, ngf=64, ndf=64, teacher=(200, 1), student=(200, 1), dp=(200, 16), augment=True, seeds=[0, 1, 2, 3, 4]),
}
# --sweep: extra trade-off points (on --sweep-seeds only). DP noise 0 is clipping alone (ε = ∞).
SWEEP = {"gauss": [0.05, 0.1, 0.2, 0.3, 0.5], "dpsgd": [0.0, 0.03, 0.1, 0.3, 1.0], "akd_lambda": [10.0, 100.0]}


# the utility keys the summary reads: an older report without one of them is evaluated again
UTILITY_KEYS = ("l1", "ssim", "sharpness")


@dataclass(frozen=True)
class Job:
    name: str  # file stem under OUT/seed<k>/
    method: str
    label: str  # the table's row
    params: dict[str, Any] = field(default_factory=dict)
    sweep: bool = False
    paper: str | None = None  # key into PAPER


def plan(a: argparse.Namespace, s: dict[str, Any]) -> list[Job]:
    """Every model to train and audit per seed, main rows first, then the --sweep extras."""
    E = s["student"][0]
    jobs = [Job("regular", "regular", "regular", paper="regular")]
    sigmas = list(dict.fromkeys(a.gauss_sigmas + (SWEEP["gauss"] if a.sweep else [])))
    jobs += [Job(f"gauss_s{x:g}", "gauss", f"Gauss σ={x:g}", {"sigma": x}, x not in a.gauss_sigmas, "gauss" if x in a.gauss_sigmas else None) for x in sigmas]
    main_dp = sorted(a.dp_noise)
    paper_dp = {main_dp[0]: "dp_low", main_dp[-1]: "dp_high"} if len(main_dp) >= 2 else {}
    noises = list(dict.fromkeys(a.dp_noise + (SWEEP["dpsgd"] if a.sweep else [])))
    jobs += [Job(f"dpsgd_n{x:g}", "dpsgd", f"DP-SGD noise={x:g}", {"noise_multiplier": x}, x not in a.dp_noise, paper_dp.get(x)) for x in noises]
    if a.sweep:  # the DP-SGD network, epochs and batch without clipping or noise: what the budget alone does
        jobs.append(Job("nodp_budget", "nodp", "no DP, DP-SGD's net and budget", {}, True))
    jobs += [Job("dmp", "dmp", "DMP", {"lambda_l1": 100.0, "epochs": E}, paper="dmp"), Job("akd", "akd", "AKD", {"lambda_l1": 100.0, "epochs": E}, paper="akd")]
    if a.sweep:
        for lam in SWEEP["akd_lambda"]:
            for ep in sorted({max(1, E // 2), E}):
                if (lam, ep) != (100.0, E):
                    jobs.append(Job(f"akd_l{lam:g}_e{ep}", "akd", f"AKD λ={lam:g}, {ep} ep", {"lambda_l1": lam, "epochs": ep}, True))
    return [j for j in jobs if PART_OF.get(j.method, j.method) in a.methods]


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, metavar="DIR", help="root with train/, val/ (proxy) and test/ (aligned A|B); --quick makes toy data when omitted")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (checkpoints, reports, summary)")
    p.add_argument("--direction", default="BtoA", choices=("AtoB", "BtoA"))
    p.add_argument("--scale", default="cpu", choices=("cpu", "paper"), help="cpu: 64 px, ngf/ndf 32; paper: 256 px, ngf/ndf 64, 200 epochs (a GPU)")
    p.add_argument("--quick", action="store_true", help="toy run (32 px, ngf 4, 2-3 epochs, 12 pairs per split): checks the pipeline, not the paper")
    p.add_argument("--seeds", type=int, nargs="+", metavar="K", help="default: 0 (quick), 0 1 2 (cpu), 0 1 2 3 4 (paper)")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), metavar="M", help=f"any of {' '.join(METHODS)} (default: all)")
    p.add_argument("--gauss-sigmas", type=float, nargs="+", default=[0.1, 0.3], metavar="σ", help="output noise std on [-1, 1] images")
    p.add_argument("--dp-noise", type=float, nargs="+", default=[1.0, 0.1], metavar="σ", help="DP-SGD noise multipliers (lowest and highest face the paper's two rows)")
    p.add_argument("--inception-weights", metavar="FILE", help="torch-fidelity Inception weights for KID (default: $PRIVAUDIT_INCEPTION_WEIGHTS or the torch hub cache; none: KID skipped)")
    p.add_argument("--sweep", action="store_true", help="extra trade-off points: AKD λ {10, 100} × epochs {E/2, E}, a Gauss σ grid, a DP noise grid")
    p.add_argument("--sweep-seeds", type=int, nargs="+", metavar="K", help="seeds that train the --sweep points (default: the first of --seeds)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--force", action="store_true", help="retrain and re-evaluate everything, even what OUT already holds")
    p.add_argument("--no-train", action="store_true", help="train nothing: summarise the checkpoints OUT holds (a model missing for a seed is left out for that seed)")
    return p.parse_args(argv)


def stage(timings: dict[str, Any], key: str, what: str, fn: Callable[[], Any], earlier: Callable[[], dict[str, Any] | None] = lambda: None) -> Any:
    """Run one stage (``fn`` returns its outcome, or (result, outcome)); print one progress line to
    stderr and record the wall time under ``key``. A reused stage also records how it was first
    done (``earlier()``: ``{"s", "outcome"}``), so the summary of a resumed run still adds up.
    Returns what ``fn`` returned."""
    print(f"{key}: {what} ... ", end="", file=sys.stderr, flush=True)
    t = time.perf_counter()
    res = fn()
    dt = time.perf_counter() - t
    outcome = res if isinstance(res, str) else res[1]
    timings[key] = {"s": round(dt, 3), "outcome": outcome}
    if outcome == "reused":
        first = earlier()
        timings[key]["first"] = first  # None: done by an older version of this script, time unknown
    print(f"{outcome} ({dt:.1f}s)", file=sys.stderr, flush=True)
    return res


def _record(path: Path, *keys: str, outcome: str | None = None) -> dict[str, Any] | None:
    """``{"s", "outcome"}`` recorded in a JSON file (``keys`` lead to it), or None."""
    try:
        v: Any = json.loads(path.read_text(encoding="utf-8"))
        for k in keys:
            v = v[k]
        return {"s": float(v["s"]), "outcome": str(v["outcome"])} if outcome is None else {"s": float(v), "outcome": outcome}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def build(final: Path, force: bool, train: Callable[[Path, bool], None], after: Path | None = None) -> str:
    """Train into ``<name>.partial.pt`` (resuming from its ``.state`` after an interruption), then
    rename it to ``final``. A finished ``final`` is reused unless ``force`` or older than ``after``
    (the teacher it was made from). The training's wall time is kept beside the checkpoint
    (``<name>.train.json``) so that a later run's summary still reports it."""
    part = final.with_name(final.stem + ".partial.pt")
    state = part.with_name(part.name + ".state")
    log = final.with_name(final.stem + ".train.json")
    if final.exists() and not force and (after is None or final.stat().st_mtime >= after.stat().st_mtime):
        return "reused"
    if force:
        part.unlink(missing_ok=True)
        state.unlink(missing_ok=True)
    resume = state.exists()
    t = time.perf_counter()
    train(part, resume)
    write_json(log, {"s": round(time.perf_counter() - t, 3), "outcome": "resumed" if resume else "trained"})  # resumed: this segment only
    os.replace(part, final)
    state.unlink(missing_ok=True)  # optimiser state is large at 256 px; a finished model needs none
    return "resumed" if resume else "trained"


def machine(device: str) -> dict[str, Any]:
    dev = resolve_device(device)
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "device": str(dev)}
    if dev.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(dev)
    return info


def find_weights(explicit: str | None) -> tuple[str | None, str | None]:
    """(weights path, None) or (None, why KID is skipped). An explicit file that is unusable is an error."""
    try:
        path = resolve_inception_weights(explicit)
    except WeightsError as exc:
        if explicit:
            raise
        return None, str(exc)
    vet_inception_weights(path)  # fail now, not after hours of training
    return str(path), None


def train_job(job: Job, seed: int, d: Path, ctx: dict[str, Any]) -> tuple[str, Callable[[Path, bool], None]]:
    """(what it does, in words; ``train(out, resume)`` writing the checkpoint ``out``)."""
    s, data, a = ctx["scale"], ctx["data"], ctx["args"]
    E, B = {"regular": s["teacher"], "dpsgd": s["dp"], "nodp": s["dp"]}.get(job.method, (job.params.get("epochs"), s["student"][1]))

    common = dict(direction=a.direction, size=s["size"], seed=seed, device=a.device)
    training = dict(epochs=E, batch_size=B, augment=s["augment"], ndf=s["ndf"])

    def run(out: Path, resume: bool) -> None:
        if job.method in ("regular", "nodp"):  # the teacher on the private pairs; nodp: DP-SGD's GroupNorm generator, ordinary Adam steps
            norm = "group" if job.method == "nodp" else defaults.NORM
            train(data / "train", out, direction=a.direction, size=s["size"], model=ModelSpec(ngf=s["ngf"], norm=norm),
                  config=TrainConfig(**training, seed=seed, device=a.device), resume=resume)
        elif job.method == "gauss":
            defend("gauss", out=out, teacher=d / "regular.pt", options=GaussOptions(sigma=job.params["sigma"]), **common)
        elif job.method == "dpsgd":  # from scratch on the private pairs
            options = DPSGDOptions(**training, ngf=s["ngf"], noise_multiplier=job.params["noise_multiplier"])
            defend("dpsgd", out=out, train_data=data / "train", options=options, resume=resume, **common)
        else:  # dmp, akd: the teacher as a black box, queried on the proxy inputs only; the student copies its U-Net
            options = DistillOptions(**training, lambda_l1=job.params["lambda_l1"])
            defend(job.method, out=out, teacher=d / "regular.pt", proxy=data / "val", options=options, resume=resume, **common)

    return (f"{job.label}, output noise" if job.method == "gauss" else f"{job.label}, {E} epochs, batch {B}"), run


def audit(job: Job, seed: int, ckpt: Path, ctx: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The report for one model, reused when OUT holds one for this very checkpoint and settings."""
    a, data, out = ctx["args"], ctx["data"], ckpt.with_suffix(".json")
    key = {"sha256": sha256_file(ckpt), "inception_weights": ctx["weights"], "seed": seed, "size": ctx["scale"]["size"]}
    if out.exists() and not a.force:
        old = json.loads(out.read_text(encoding="utf-8"))
        if old.get("benchmark", {}).get("key") == key and all(k in old.get("utility", {}) for k in UTILITY_KEYS):
            return old, "reused"
    cfg = EvaluateConfig(attack=AttackConfig(seed=seed), kid=ctx["weights"] is not None, inception_weights=ctx["weights"],
                         feature_cache=str(a.out / "kid_cache"), proxy_pairs=str(data / "val") if job.method in ("dmp", "akd") else None)
    t = time.perf_counter()
    rep = evaluate(ckpt, data / "train", data / "test", cfg, direction=a.direction, size=ctx["scale"]["size"], device=a.device)
    rep["benchmark"] = {"name": job.name, "label": job.label, "seed": seed, "key": key, "seconds": round(time.perf_counter() - t, 3)}
    write_json(out, rep)
    return rep, "evaluated"


def metrics(name: str, rep: dict[str, Any]) -> dict[str, Any]:
    r, gap = row(name, rep), rep.get("generalization_gap") or {}
    # the measured attack, as the paper averages it (a flipped row's r.auc and TPRs are the negated score's)
    return {"auc": r.auc_measured, "tpr10": (rep["attack"].get("tpr_at_fpr") or {}).get("0.1"), "nkid": r.nkid, "l1": r.l1, "ssim": r.ssim, "sharpness": (rep.get("utility") or {}).get("sharpness"),
            "gap": gap.get("gap") if gap.get("gap") is not None else gap.get("l1_gap"), "epsilon": r.epsilon,
            "proxy_auc": (rep.get("proxy_leakage") or {}).get("auc")}


def aggregate(per_seed: dict[int, dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """mean and sample std (ddof 1; None for one seed) of each metric over seeds; None where any seed lacks it."""
    mean: dict[str, Any] = {}
    std: dict[str, Any] = {}
    for k in next(iter(per_seed.values()), {}):
        vals = [m[k] for m in per_seed.values()]
        ok = all(v is not None for v in vals)
        mean[k] = float(np.mean(vals)) if ok else None
        std[k] = float(np.std(vals, ddof=1)) if ok and len(vals) > 1 else None
    return mean, std


def cell(m: dict[str, Any], s: dict[str, Any], k: str, pct: bool = False, digits: int = 3) -> str:
    if m[k] is None:
        return "–"
    f = 100.0 if pct else 1.0
    d = 2 if pct else digits
    return f"{f * m[k]:.{d}f}" + (f" ± {f * s[k]:.{d}f}" if s[k] is not None else "")


def table(models: dict[str, Any], sweep: bool, gap_kind: str) -> list[str]:
    pct_gap = gap_kind == "NKID"
    head = ["model", "seeds", "AUC %", "TPR@10%FPR %", "NKID %", "L1", "SSIM", "sharpness", f"gap ({gap_kind}{' %' if pct_gap else ''})", "ε", "proxy AUC %", "paper AUC %", "paper NKID %"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in (m for m in models.values() if m["sweep"] == sweep):
        mu, sd, pp = m["mean"], m["std"], m["paper"]
        eps = "∞" if m["epsilon_infinite"] else cell(mu, sd, "epsilon", digits=3)
        lines.append("| " + " | ".join([m["label"], str(len(m["per_seed"])), cell(mu, sd, "auc", True), cell(mu, sd, "tpr10", True), cell(mu, sd, "nkid", True),
                                        cell(mu, sd, "l1", digits=4), cell(mu, sd, "ssim"), cell(mu, sd, "sharpness"), cell(mu, sd, "gap", pct_gap, digits=4), eps,
                                        cell(mu, sd, "proxy_auc", True), f"{pp['auc']:.2f}" if pp else "–", f"{pp['nkid']:.2f}" if pp else "–"]) + " |")
    return lines


def plot(models: dict[str, Any], use_nkid: bool, path: Path) -> None:
    """Attack AUC against each utility measure (NKID when measured, test L1, test SSIM), one panel
    each, mean ± std over seeds; dotted lines join a method's settings, as in the paper's Fig. 3."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    axes_spec = ([("nkid", 100.0, "NKID % on the test set (lower is better)")] if use_nkid else []) + [
        ("l1", 1.0, "L1 on the test set (lower is better)"), ("ssim", 1.0, "SSIM on the test set (higher is better)")]
    fig, axs = plt.subplots(1, len(axes_spec), figsize=(6.2 * len(axes_spec), 5.2), squeeze=False)
    for ax, (xk, scale, xlabel) in zip(axs[0], axes_spec):
        for method in (*METHODS, "nodp"):
            pts = sorted((m for m in models.values() if m["method"] == method and m["mean"][xk] is not None), key=lambda m: m["mean"][xk])
            if not pts:
                continue
            x = [scale * m["mean"][xk] for m in pts]
            y = [100 * m["mean"]["auc"] for m in pts]
            xe = [scale * (m["std"][xk] or 0.0) for m in pts]
            ye = [100 * (m["std"]["auc"] or 0.0) for m in pts]
            color = f"C{(*METHODS, 'nodp').index(method)}"
            ax.plot(x, y, ":", color=color, lw=1)
            main = [i for i, m in enumerate(pts) if not m["sweep"]]
            sweep = [i for i, m in enumerate(pts) if m["sweep"]]
            if main:
                ax.errorbar([x[i] for i in main], [y[i] for i in main], xerr=[xe[i] for i in main], yerr=[ye[i] for i in main], fmt="o", capsize=3, color=color, label=method)
            if sweep:  # one seed each: hollow, no error bars
                ax.scatter([x[i] for i in sweep], [y[i] for i in sweep], facecolors="none", edgecolors=color, label=None if main else method)
            for m, xi, yi in zip(pts, x, y):
                if not m["sweep"]:
                    ax.annotate(m["label"], (xi, yi), textcoords="offset points", xytext=(5, 4), fontsize=7)
        if xk == "nkid":  # the paper's rows share these axes only when NKID was measured
            ax.scatter([v[2] for v in PAPER.values()], [v[1] for v in PAPER.values()], marker="x", color="grey", label="paper (Table II)")
            for lab, auc, nkid in PAPER.values():
                ax.annotate(lab, (nkid, auc), textcoords="offset points", xytext=(5, -9), fontsize=6, color="grey")
        ax.axhline(50, color="grey", lw=0.6, ls="--")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("attack AUC % (50 = chance)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle("utility-privacy trade-off: filled, labelled = Table II rows (mean ± std over seeds); hollow = sweep points (sweep seeds)")
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    try:
        return run(a, sys.argv if argv is None else ["benchmarks/reproduce_table2.py", *argv])
    except PrivauditError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 2


def run(a: argparse.Namespace, cmdline: list[str]) -> int:
    t0 = time.perf_counter()
    s = dict(SCALES["quick" if a.quick else a.scale])
    seeds = a.seeds if a.seeds is not None else s["seeds"]
    if a.data is None and not a.quick:
        raise InputError("--data DIR is required (a root with train/, val/ and test/); or pass --quick for toy data")
    for split in ("train", "val", "test") if a.data is not None else ():
        if not (a.data / split).is_dir():
            raise InputError(f"{a.data / split} is not a folder: --data needs train/ (members), val/ (proxy) and test/ (non-members)")
    if a.no_train and a.force:
        raise InputError("--no-train and --force contradict each other (--force retrains everything); drop one")
    if a.sweep_seeds is not None and not a.sweep:
        raise InputError("--sweep-seeds needs --sweep")
    if a.sweep_seeds is not None and not set(a.sweep_seeds) <= set(seeds):
        raise InputError(f"--sweep-seeds {' '.join(map(str, a.sweep_seeds))} must be among --seeds {' '.join(map(str, seeds))}")
    check_dir_writable(a.out)
    data = a.data if a.data is not None else write_splits(a.out / "data", 12, seed=1000)
    weights, kid_skip = find_weights(a.inception_weights)
    jobs = plan(a, s)
    settings = {"scale": "quick" if a.quick else a.scale, "data": str(data.resolve()), "direction": a.direction,
                **{k: v for k, v in s.items() if k != "seeds"}, "lr": defaults.LR, "dp_max_grad_norm": defaults.DP_MAX_GRAD_NORM}
    run_file = a.out / "run.json"  # what the checkpoints in OUT were trained with
    if run_file.exists() and not a.force:
        old = json.loads(run_file.read_text(encoding="utf-8"))
        diff = [k for k in settings if json.dumps(old.get(k)) != json.dumps(settings[k])]
        if diff:
            raise InputError(f"{a.out} holds models trained with other settings ({', '.join(diff)}); choose another --out or pass --force")
    write_json(run_file, settings)
    ctx = {"args": a, "scale": s, "data": data, "weights": weights}
    timings: dict[str, Any] = {}
    reports: dict[str, dict[int, dict[str, Any]]] = {j.name: {} for j in jobs}
    teacher = Job("regular", "regular", "regular (teacher)")
    to_train = ([teacher] if any(j.method not in ("dpsgd", "nodp") for j in jobs) else []) + [j for j in jobs if j.method != "regular"]
    sweep_seeds = set(a.sweep_seeds if a.sweep_seeds is not None else seeds[:1])
    for seed in seeds:
        d = a.out / f"seed{seed}"
        d.mkdir(parents=True, exist_ok=True)
        def runs_here(j: Job) -> bool:  # a sweep point only on the sweep seeds; with --no-train, only what OUT holds
            return (not j.sweep or seed in sweep_seeds) and (not a.no_train or (d / f"{j.name}.pt").exists())

        mine = [j for j in jobs if runs_here(j)]
        for job in [j for j in to_train if runs_here(j)]:
            what, train = train_job(job, seed, d, ctx)
            after = None if job.method in ("regular", "dpsgd", "nodp") else d / "regular.pt"
            ckpt = d / f"{job.name}.pt"
            stage(timings, f"seed{seed}/{job.name}/train", what, (lambda: "reused") if a.no_train else (lambda: build(ckpt, a.force, train, after)),
                  lambda: _record(ckpt.with_name(ckpt.stem + ".train.json")))
        for job in mine:
            what = "attack + utility" + (" + KID" if weights else "")
            ckpt = d / f"{job.name}.pt"
            reports[job.name][seed] = stage(timings, f"seed{seed}/{job.name}/evaluate", what, lambda: audit(job, seed, ckpt, ctx),
                                            lambda: _record(ckpt.with_suffix(".json"), "benchmark", "seconds", outcome="evaluated"))[0]
        if mine:
            atomic_write_text(d / "comparison.md", to_markdown([row(j.label, reports[j.name][seed]) for j in mine], title=f"seed {seed}"))
    write_summary(ctx, settings, seeds, sorted(sweep_seeds) if a.sweep else [], jobs, reports, timings, kid_skip, cmdline, t0)
    return 0


def write_summary(ctx: dict[str, Any], settings: dict[str, Any], seeds: list[int], sweep_seeds: list[int], jobs: list[Job], reports: dict[str, Any],
                  timings: dict[str, Any], kid_skip: str | None, cmdline: list[str], t0: float) -> None:
    """OUT/summary.md, OUT/summary.json and OUT/tradeoff.png; the main table to stdout."""
    a, s, data, weights = ctx["args"], ctx["scale"], ctx["data"], ctx["weights"]
    models: dict[str, Any] = {}
    jobs = [j for j in jobs if reports[j.name]]  # --no-train: models OUT holds for no seed
    if not jobs:
        raise InputError(f"{a.out} holds no finished model for these seeds and methods; run without --no-train first")
    for j in jobs:
        per_seed = {seed: metrics(j.label, rep) for seed, rep in reports[j.name].items()}
        mean, std = aggregate(per_seed)
        pp = PAPER.get(j.paper) if j.paper else None
        unbounded = all(((rep.get("model") or {}).get("defense") or {}).get("epsilon_infinite") is True for rep in reports[j.name].values())
        models[j.name] = {"label": j.label, "method": j.method, "params": j.params, "sweep": j.sweep, "per_seed": {str(k): v for k, v in per_seed.items()},
                          "epsilon_infinite": unbounded,
                          "mean": mean, "std": std, "paper": {"row": pp[0], "auc": pp[1], "nkid": pp[2]} if pp else None}
    use_nkid = weights is not None
    plot(models, use_nkid, a.out / "tradeoff.png")
    total = time.perf_counter() - t0
    info = machine(a.device)
    command = shlex.join([Path(sys.executable).name, *cmdline])
    gap_kind = "NKID" if use_nkid else "L1"
    counts = next(iter(reports[jobs[0].name].values()))["data"]
    options = {**settings, "seeds": seeds, "methods": a.methods, "gauss_sigmas": a.gauss_sigmas, "dp_noise": a.dp_noise, "sweep": a.sweep, "sweep_seeds": sweep_seeds, "inception_weights": weights}
    md = [f"# AKD paper, Table II (CMP Facades) reproduced: scale {settings['scale']}, seeds {' '.join(map(str, seeds))}", "",
          f"Command: `{command}`", "",
          f"Members: {counts['members']['count']} pairs in {data / 'train'}; non-members: {counts['nonmembers']['count']} in {data / 'test'}; "
          f"proxy: {data / 'val'} (direction {a.direction}, {s['size']} px).",
          "Mean ± sample std over seeds. AUC: reconstruction-loss attack (50 % = chance). ε at δ = 1/N for DP-SGD. "
          f"sharpness: Laplacian variance of the outputs over the real photos' (1 = as detailed as real, < 1 blurrier, noise raises it). gap = test − train {gap_kind} (positive: better on the training data). proxy AUC: the student attacked with the proxy pairs as members.",
          "Paper columns: Table II, AUCROC % / NKID % over five runs (its DP-SGD σ are not Opacus noise multipliers; "
          "the lowest and highest --dp-noise face its two rows).", ""]
    md += ["## Table II", ""] + table(models, False, gap_kind)
    if any(m["sweep"] for m in models.values()):
        md += ["", "## Sweep (extra trade-off points)", ""] + table(models, True, gap_kind)
    if not use_nkid:
        md += ["", f"**KID was skipped** (NKID columns show –, the plot uses test L1): {kid_skip}"]
    md += ["", "## Settings", ""] + [f"- {k}: `{json.dumps(v, ensure_ascii=False)}`" for k, v in options.items()]
    md += ["", "## Machine", ""] + [f"- {k}: `{v}`" for k, v in info.items()]
    md += ["", "## Wall time per stage", "", "| stage | outcome | seconds |", "|---|---|---|"]
    def first(v: dict[str, Any]) -> tuple[str, float]:
        if v["outcome"] != "reused":
            return v["outcome"], v["s"]
        if v.get("first") is None:
            return "reused (first time unknown)", 0.0
        return f"reused; first {v['first']['outcome']}", v["first"]["s"]

    firsts = {k: first(v) for k, v in timings.items()}
    md += [f"| {k} | {how} | {sec:.1f} |" for k, (how, sec) in firsts.items()]
    done = sum(sec for _, sec in firsts.values())
    md += [f"| **sum of stages** (as first done; a resumed training counts the segment after its resume) | | {done:.1f} |",
           f"| **this invocation** | | {total:.1f} |", ""]
    atomic_write_text(a.out / "summary.md", "\n".join(md))
    write_json(a.out / "summary.json", {"schema": "privaudit.table2/1", "command": command, "settings": options, "seeds": seeds,
                                        "kid": use_nkid, "kid_skipped": kid_skip, "machine": info, "models": models,
                                        "timings_s": timings, "total_s": round(total, 3), "stages_s": round(done, 3)})
    print("\n".join(table(models, False, gap_kind)))
    if not use_nkid:
        print("(KID skipped: no Inception weights; NKID shows –)")
    print(f"wrote {a.out / 'summary.md'} in {total:.1f}s", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
