"""Membership leakage of a segmentation U-Net and the four segmentation defenses (issue 15), in the
setting of Segmentations-Leak (He et al., ECCV 2020): the loss attack, the label-only attack and the
structured loss-map attack with a shadow model, against an overfit model, argmax, Gauss, DMP and
DP-SGD; utility as test mean IoU and pixel accuracy. Writes docs/segmentation.md (``--doc``).

    python benchmarks/segmentation_study.py --quick --out /tmp/segstudy              # toy data: checks the pipeline
    python benchmarks/segmentation_study.py --data ../shared/data/facades-seg --out runs/segstudy --doc docs/segmentation.md

DATA (facades-seg layout: train/, val/, test/, each A/ photos + B/ label maps) is split by file name:

* target members: the first ``--members`` of train/ (the target's training set);
* shadow members: the next ``--members`` of train/, shadow non-members: the rest of train/ (the
  attacker's own data, disjoint from the target's; the shadow replays the target's recipe);
* target non-members: test/; the DMP proxy: the photos of val/ (labels never read).

Every defended target has a shadow made the same way from the shadow model (an adaptive attacker
who knows the recipe, as ``privaudit references`` would replay it); the loss-map attack is also run
with the regular shadow (an attacker who does not know the defense).

Resumable: each stage writes its output under OUT (models/<name>.pt, reports/<name>.json,
timings.json, summary.json) and a rerun reuses it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from privaudit import defaults
from privaudit.attacks.reconstruction import AttackConfig
from privaudit.attacks.segmentation import SegAttackOptions
from privaudit.defenses import defend
from privaudit.defenses.argmax import ArgmaxOptions
from privaudit.defenses.gauss import GaussOptions
from privaudit.defenses.segmentation import SegDistillOptions, SegDPSGDOptions
from privaudit.evaluation.evaluate import EvaluateConfig, evaluate
from privaudit.io import atomic_write_text, write_json
from privaudit.training.segmentation import SegTrainConfig, train_segmentation

CLASSES = ["various", "building", "car", "door", "pavement", "road", "sky", "vegetation", "window"]
SCALES = {
    "quick": dict(size=32, ngf=8, epochs=30, dmp_epochs=20, dp_epochs=2, batch=8, dp_batch=8, sigmas=(0.1, 0.5), members=16, classes=4, lossmap_epochs=10,
                  augment=False),
    "cpu": dict(size=64, ngf=16, epochs=60, dmp_epochs=60, dp_epochs=40, batch=8, dp_batch=16, sigmas=(0.1, 0.5), members=150, classes=9,
                lossmap_epochs=40, augment=True),
}
LR = 1e-3
NOISE_MULTIPLIER = 1.0


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, metavar="DIR", help="facades-seg root (train/, val/, test/); --quick makes toy data when omitted")
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    p.add_argument("--doc", type=Path, metavar="FILE", help="write the Markdown results here (default OUT/segmentation.md)")
    p.add_argument("--quick", action="store_true", help="toy run: 32 px, few epochs, 16 members")
    p.add_argument("--members", type=int, metavar="N", help="target (and shadow) training-set size (default 150; --quick 16)")
    p.add_argument("--epochs", type=int, metavar="N", help="epochs of the target and shadow (default 60; --quick 30)")
    p.add_argument("--dmp-epochs", type=int, metavar="N", help="epochs of the DMP students (default 60; --quick 20)")
    p.add_argument("--no-augment", action="store_true", help="train without flips and jitter (the default trains with them; --quick without)")
    p.add_argument("--appendix", type=Path, metavar="SUMMARY", help="the summary.json of another run of this study, shown as a second table")
    p.add_argument("--bootstrap", type=int, default=defaults.BOOTSTRAP)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# data


def toy_data(root: Path, n: int, num_classes: int) -> Path:
    """train/ (3n), val/ (n) and test/ (n) of toy photos and palette label maps (colour blocks plus private cells)."""
    from PIL import Image

    colours = np.array([(40, 40, 40), (200, 60, 60), (60, 200, 60), (60, 60, 200)], dtype=np.int32)
    rng = np.random.default_rng(1234)
    for split, count in (("train", 3 * n), ("val", n), ("test", n)):
        if (root / split).is_dir():
            continue
        for sub in ("A", "B"):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            labels = np.kron(rng.integers(0, num_classes, (4, 4)), np.ones((8, 8), dtype=np.int64))
            photo = (colours[labels] + rng.integers(-25, 26, (32, 32, 3))).clip(0, 255).astype(np.uint8)
            flip = np.kron(rng.random((8, 8)) < 0.1, np.ones((4, 4), dtype=bool))
            labels = np.where(flip, np.kron(rng.integers(0, num_classes, (8, 8)), np.ones((4, 4), dtype=np.int64)), labels)
            Image.fromarray(photo).save(root / split / "A" / f"{i}.png")
            im = Image.fromarray(labels.astype(np.uint8), mode="P")
            im.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0, 0, 0, 128] + [0] * 756)
            im.save(root / split / "B" / f"{i}.png")
    return root


def _by_number(paths: list[Path]) -> list[Path]:
    return sorted(paths, key=lambda p: (int(p.stem) if p.stem.isdigit() else 1 << 30, p.stem))


def split_train(data: Path, out: Path, members: int) -> dict[str, Path]:
    """Symlinked folders: target members, shadow members, shadow non-members (from train/)."""
    photos = _by_number([p for p in (data / "train" / "A").iterdir() if p.is_file()])
    labels = {p.stem: p for p in (data / "train" / "B").iterdir() if p.is_file()}
    if len(photos) < 2 * members + 10:
        raise SystemExit(f"segmentation_study: train/ holds {len(photos)} pairs, fewer than 2 x --members {members} + 10")
    parts = {"target_members": photos[:members], "shadow_members": photos[members : 2 * members], "shadow_nonmembers": photos[2 * members :]}
    folders = {}
    for name, files in parts.items():
        root = out / "data" / name
        for sub in ("A", "B"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        for p in files:
            for src, sub in ((p, "A"), (labels[p.stem], "B")):
                link = root / sub / src.name
                if not link.exists():
                    link.symlink_to(src.resolve())
        folders[name] = root
    return folders


# ---------------------------------------------------------------------------------------------
# stages


def stage(timings: dict[str, Any], key: str, fn: Callable[[], str]) -> None:
    """Run one stage (``fn`` returns "done" or "reused"), print a line and keep its time (a reused stage keeps its first time)."""
    print(f"{key} ... ", end="", file=sys.stderr, flush=True)
    t, c = time.perf_counter(), time.process_time()
    outcome = fn()
    dt, dc = round(time.perf_counter() - t, 3), round(time.process_time() - c, 3)
    if outcome != "reused" or key not in timings:
        timings[key] = {"s": dt, "cpu_s": dc, "outcome": outcome}
    print(f"{outcome} ({dt:.1f}s, {dc:.1f}s CPU)", file=sys.stderr, flush=True)


def model_names(s: dict[str, Any]) -> list[str]:
    return ["regular", "argmax", *(f"gauss{sig:g}" for sig in s["sigmas"]), "dmp", "dpsgd"]


def make_model(name: str, prefix: str, members: Path, proxy: Path, models: Path, s: dict[str, Any], a: argparse.Namespace) -> str:
    """Train (or derive) ``<prefix>_<name>.pt`` (prefix: target or shadow)."""
    out = models / f"{prefix}_{name}.pt"
    if out.exists():
        return "reused"
    part = out.with_suffix(".part.pt")
    part.unlink(missing_ok=True)
    seed = a.seed + (0 if prefix == "target" else 1)
    base = models / f"{prefix}_regular.pt"
    common = dict(seed=seed, device=a.device, task="segmentation")
    if name == "regular":
        cfg = SegTrainConfig(epochs=s["epochs"], batch_size=s["batch"], lr=LR, augment=s["augment"], seed=seed, device=a.device)
        train_segmentation(members, part, num_classes=s["classes"], size=s["size"], ngf=s["ngf"], config=cfg, classes=CLASSES[: s["classes"]])
    elif name == "argmax":
        defend("argmax", out=part, teacher=base, options=ArgmaxOptions(), **common)
    elif name.startswith("gauss"):
        defend("gauss", out=part, teacher=base, options=GaussOptions(sigma=float(name[5:])), **common)
    elif name == "dmp":
        defend("dmp", out=part, teacher=base, proxy=proxy, options=SegDistillOptions(epochs=s["dmp_epochs"], batch_size=s["batch"], lr=LR, augment=s["augment"]),
               **common)
    elif name == "dpsgd":
        defend("dpsgd", out=part, train_data=members, size=s["size"],
               options=SegDPSGDOptions(num_classes=s["classes"], ngf=s["ngf"], epochs=s["dp_epochs"], batch_size=s["dp_batch"], lr=LR, augment=s["augment"],
                                       noise_multiplier=NOISE_MULTIPLIER), **common)
    part.replace(out)
    return "trained"


def audit(name: str, models: Path, folders: dict[str, Path], test: Path, reports: Path, s: dict[str, Any], a: argparse.Namespace) -> str:
    """reports/<name>.json: evaluate with the adaptive shadow, and the loss-map AUC with the regular shadow."""
    path = reports / f"{name}.json"
    if path.exists():
        return "reused"
    cfg = EvaluateConfig(attack=AttackConfig(seed=a.seed, n_bootstrap=a.bootstrap), kid=False)

    def run(shadow: str) -> dict[str, Any]:
        opts = SegAttackOptions(shadow=str(models / f"shadow_{shadow}.pt"), shadow_members=str(folders["shadow_members"]),
                                shadow_nonmembers=str(folders["shadow_nonmembers"]), lossmap_epochs=s["lossmap_epochs"])
        return evaluate(models / f"target_{name}.pt", folders["target_members"], test, cfg, device=a.device, seg_options=opts)

    report = run(name)
    if name != "regular":
        report["study"] = {"loss_map_regular_shadow": run("regular")["attacks"]["loss-map"]}
    write_json(path, report)
    return "done"


def run(argv: list[str] | None = None) -> dict[str, Any]:
    a = parse(argv)
    s = dict(SCALES["quick" if a.quick else "cpu"])
    for key in ("members", "epochs", "dmp_epochs"):
        if getattr(a, key) is not None:
            s[key] = getattr(a, key)
    if a.no_augment:
        s["augment"] = False
    a.out.mkdir(parents=True, exist_ok=True)
    settings = {**s, "sigmas": list(s["sigmas"]), "data": str(a.data), "seed": a.seed, "bootstrap": a.bootstrap, "lr": LR, "noise_multiplier": NOISE_MULTIPLIER}
    spath = a.out / "settings.json"
    if spath.exists() and json.loads(spath.read_text()) != settings:
        raise SystemExit(f"segmentation_study: {a.out} holds a study with other settings ({spath}); choose another --out")
    write_json(spath, settings)
    data = a.data if a.data is not None else (toy_data(a.out / "toy", s["members"], s["classes"]) if a.quick else None)
    if data is None:
        raise SystemExit("segmentation_study: give --data DIR (train/, val/, test/) or --quick")
    folders = split_train(data, a.out, s["members"])
    models, reports = a.out / "models", a.out / "reports"
    models.mkdir(exist_ok=True)
    reports.mkdir(exist_ok=True)
    tpath = a.out / "timings.json"
    timings: dict[str, Any] = json.loads(tpath.read_text()) if tpath.exists() else {}
    names = model_names(s)
    for name in names:
        for prefix, members in (("target", folders["target_members"]), ("shadow", folders["shadow_members"])):
            stage(timings, f"{prefix} {name}", lambda: make_model(name, prefix, members, data / "val", models, s, a))
            write_json(tpath, timings)
    for name in names:
        stage(timings, f"audit {name}", lambda: audit(name, models, folders, data / "test", reports, s, a))
        write_json(tpath, timings)
    loaded = {n: json.loads((reports / f"{n}.json").read_text()) for n in names}
    summary = summarise(loaded, timings, s, a)
    write_json(a.out / "summary.json", summary)
    appendix = json.loads(a.appendix.read_text()) if a.appendix is not None else None
    atomic_write_text(a.doc or (a.out / "segmentation.md"), to_markdown(summary, appendix))
    return summary


# ---------------------------------------------------------------------------------------------
# summary and the document


def _attack(r: dict[str, Any], name: str) -> dict[str, Any]:
    x = (r.get("attacks") or {}).get(name) or {}
    return {"auc": x.get("auc"), "auc_ci95": x.get("auc_ci95"), "tpr_10": (x.get("tpr_at_fpr") or {}).get("0.1"), "tpr_1": (x.get("tpr_at_fpr") or {}).get("0.01")}


def summarise(reports: dict[str, dict[str, Any]], timings: dict[str, Any], s: dict[str, Any], a: argparse.Namespace) -> dict[str, Any]:
    rows = []
    for name, r in reports.items():
        d = r["model"]["defense"]
        own = (timings.get(f"target {name}") or {}).get("cpu_s")
        regular_time = (timings.get("target regular") or {}).get("cpu_s")
        train_s = own if name in ("regular", "dmp", "dpsgd") else regular_time  # argmax and gauss reuse the regular model's training
        strongest = r["attack"]
        rows.append({
            "model": name, "defense": d.get("method", "none"), "sigma": d.get("sigma"), "epsilon": d.get("epsilon"), "delta": d.get("delta"),
            "loss": _attack(r, "loss"), "label_only": _attack(r, "label-only"), "loss_map": _attack(r, "loss-map"),
            "loss_map_regular_shadow": ({"auc": r["study"]["loss_map_regular_shadow"]["auc"], "auc_ci95": r["study"]["loss_map_regular_shadow"]["auc_ci95"]}
                                        if r.get("study") else None),
            "strongest": {"name": strongest["name"], "auc": strongest["auc"], "auc_effective": strongest["auc_effective"],
                          "tpr_10": strongest["tpr_at_fpr"].get("0.1")},
            "miou": r["utility"]["miou"], "pixel_accuracy": r["utility"]["pixel_accuracy"], "miou_train": r["generalization_gap"]["miou_train"],
            "miou_gap": r["generalization_gap"]["miou_gap"], "train_s": train_s, "extra_s": own if name not in ("regular", "dmp", "dpsgd") else None,
        })
    setting = {"size": s["size"], "ngf": s["ngf"], "classes": s["classes"], "members": s["members"], "epochs": s["epochs"], "dmp_epochs": s["dmp_epochs"],
               "dp_epochs": s["dp_epochs"], "batch": s["batch"], "dp_batch": s["dp_batch"], "lr": LR, "noise_multiplier": NOISE_MULTIPLIER, "augment": s["augment"],
               "lossmap_epochs": s["lossmap_epochs"], "bootstrap": a.bootstrap, "seed": a.seed, "data": str(a.data) if a.data else "toy",
               "nonmembers": reports["regular"]["data"]["nonmembers"]["count"],
               "shadow_nonmembers": reports["regular"]["segmentation"]["loss_map"]["shadow"]["nonmembers"]["count"],
               "proxy": reports["dmp"]["model"]["defense"]["proxy"]["count"]}
    total = sum(v["s"] for k, v in timings.items() if isinstance(v, dict) and "s" in v)
    cpu = sum(v.get("cpu_s") or 0.0 for k, v in timings.items() if isinstance(v, dict))
    return {"setting": setting, "rows": rows, "total_s": round(total, 1), "total_cpu_s": round(cpu, 1), "verdict": verdict(rows)}


def worst_auc(r: dict[str, Any]) -> tuple[float, str]:
    """(the highest AUC any attack reaches on the model, which attack): an AUC below 0.5 counts as
    1 − AUC (an attacker can flip the score, as the gate judges it)."""
    cands = [(max(x["auc"], 1 - x["auc"]), name) for name, x in (("loss", r["loss"]), ("label-only", r["label_only"]), ("loss-map", r["loss_map"]),
                                                                   ("loss-map, regular shadow", r["loss_map_regular_shadow"])) if x and x.get("auc") is not None]
    return max(cands)


def verdict(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The best trade-off (the lowest worst-case attack AUC among the defenses that keep at least 90%
    of the regular model's test mIoU; else the lowest overall) and the directions to compare with
    Segmentations-Leak."""
    by = {r["model"]: r for r in rows}
    reg = by["regular"]
    defenses = [r for r in rows if r["model"] != "regular"]
    keep = [r for r in defenses if r["miou"] is not None and r["miou"] >= 0.9 * reg["miou"]]
    pool = keep or defenses
    best = min(pool, key=lambda r: (worst_auc(r)[0], -(r["miou"] or 0)))
    gauss = [r for r in defenses if r["defense"] == "gauss"]
    return {
        "best": best["model"], "kept_utility": bool(keep),
        "argmax_lowers_loss": by["argmax"]["loss"]["auc"] < reg["loss"]["auc"],
        "argmax_loss_equals_label_only": abs(by["argmax"]["loss"]["auc"] - by["argmax"]["label_only"]["auc"]) < 1e-9,
        "gauss_lowers_loss": {r["model"]: r["loss"]["auc"] < reg["loss"]["auc"] for r in gauss},
        "label_only_remains": {r["model"]: r["label_only"]["auc"] for r in defenses if r["defense"] in ("argmax", "gauss")},
    }


def _p(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}"


def _auc(x: dict[str, Any] | None) -> str:
    if not x or x.get("auc") is None:
        return "–"
    lo, hi = x["auc_ci95"]
    return f"{100 * x['auc']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def _label(r: dict[str, Any]) -> str:
    if r["defense"] == "gauss":
        return f"gauss σ={r['sigma']:g}"
    if r["defense"] == "dpsgd":
        return f"dpsgd σ={NOISE_MULTIPLIER:g} (ε={r['epsilon']:.2f})"
    return {"none": "regular (overfit)"}.get(r["defense"], r["defense"])


def results_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| model | loss AUC | label-only AUC | loss-map AUC | loss-map AUC (regular shadow) | strongest: TPR @ 10% FPR | test mIoU | pixel acc. | "
             "mIoU gap | training (CPU s) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        train = "–" if r["train_s"] is None else f"{r['train_s']:.0f}"
        lines.append(f"| {_label(r)} | {_auc(r['loss'])} | {_auc(r['label_only'])} | {_auc(r['loss_map'])} | {_auc(r['loss_map_regular_shadow'])} | "
                     f"{_p(r['strongest']['tpr_10'])} ({r['strongest']['name']}) | {_p(r['miou'])} | {_p(r['pixel_accuracy'])} | {_p(r['miou_gap'])} | "
                     f"{train} |")
    return lines


def to_markdown(summary: dict[str, Any], appendix: dict[str, Any] | None = None) -> str:
    st, rows, v = summary["setting"], summary["rows"], summary["verdict"]
    by = {r["model"]: r for r in rows}
    reg = by["regular"]
    augment = ("with flips and resize-and-crop jitter (labels nearest)" if st.get("augment") else "without augmentation")
    lines = [
        "# Segmentation models: membership leakage and defenses",
        "",
        "Measured by `benchmarks/segmentation_study.py` (the numbers below are its output, `docs/segmentation.md` is written by it).",
        "",
        "## Setting",
        "",
        f"- Data: `{st['data']}` at {st['size']}×{st['size']} px ({st['classes']} classes, label maps resized with nearest neighbour). "
        f"Target members: the first {st['members']} pairs of train/; non-members: test/ ({st['nonmembers']} pairs). The attacker's shadow "
        f"data: the next {st['members']} pairs of train/ (shadow members) and the rest of train/ ({st['shadow_nonmembers']} pairs, shadow "
        f"non-members), disjoint from the target's. DMP proxy: the {st['proxy']} photos of val/ (labels never read).",
        f"- Target: the segmentation U-Net (`--arch unet`, ngf {st['ngf']}, BatchNorm, no dropout), Adam lr {st['lr']:g}, batch {st['batch']}, "
        f"{st['epochs']} epochs (learning rate decayed over the second half), {augment}. It overfits: train mIoU {_p(reg['miou_train'])}% "
        f"against {_p(reg['miou'])}% on the test set.",
        f"- Defenses: argmax (labels only); Gauss noise of σ on the softmax posteriors (clipped, renormalised, seeded); DMP, a student of the same "
        f"U-Net trained {st['dmp_epochs']} epochs on the teacher's soft posteriors of the proxy photos; DP-SGD from scratch (Opacus, GroupNorm, "
        f"noise multiplier {st['noise_multiplier']:g}, clipping 1, expected batch {st['dp_batch']}, {st['dp_epochs']} epochs, δ = 1/{st['members']}).",
        "- Attacks (`privaudit evaluate`): the per-image cross-entropy (loss), the label-only attack (per-image pixel accuracy of the released "
        "labels), and the structured loss-map attack: a small CNN trained on a shadow model's per-pixel loss maps "
        f"({st['lossmap_epochs']} epochs). The shadow replays the target's recipe, defense included, on the shadow data (an attacker who "
        "knows the recipe); the loss-map column marked *regular shadow* uses the undefended shadow instead (an attacker unaware of the defense).",
        f"- AUC in % with its 95% bootstrap interval ({st['bootstrap']} resamples); TPR at 10% FPR of the strongest attack; mIoU and pixel "
        "accuracy on the test set. Training: CPU seconds of the model's own training (one thread; argmax and Gauss re-use the regular "
        f"model's). The whole study took {summary['total_cpu_s'] / 60:.1f} min of CPU ({summary['total_s'] / 60:.1f} min of wall time on 2 "
        "cores shared with other jobs, `nice -n 19`, `OMP_NUM_THREADS=1`).",
        "",
        "## Results",
        "",
        *results_table(rows),
    ]
    best = by[v["best"]]
    w = {r["model"]: worst_auc(r) for r in rows}
    lines += ["", "## Reading", "",
              "The worst case of a model is the highest AUC any of the four attacks reaches on it (an AUC below 50% counted as 1 − AUC, as "
              "`privaudit gate` judges it).", ""]
    lines.append(f"- **Best trade-off: {_label(best)}**: the worst-case AUC falls from {_p(w['regular'][0])}% ({w['regular'][1]}) on the regular "
                 f"model to {_p(w[best['model']][0])}% ({w[best['model']][1]}), while the test mIoU is {_p(best['miou'])}% (regular {_p(reg['miou'])}%)"
                 + ("." if v["kept_utility"] else "; no defense kept 90% of the regular mIoU, so this is the lowest worst case overall."))
    argmax = by["argmax"]
    lines.append(f"- Argmax {'lowers' if v['argmax_lowers_loss'] else 'does not lower'} the loss attack (AUC {_p(reg['loss']['auc'])}% → "
                 f"{_p(argmax['loss']['auc'])}%)" + (", which becomes exactly the label-only attack (the released one-hot posteriors give each image a "
                 "loss proportional to its share of wrong pixels)" if v["argmax_loss_equals_label_only"] else "")
                 + f"; the label-only attack keeps AUC {_p(argmax['label_only']['auc'])}%, the loss-map attack {_p(argmax['loss_map']['auc'])}%, "
                 "and utility is unchanged (the labels are the model's).")
    for r in rows:
        if r["defense"] == "gauss":
            lines.append(f"- Gauss σ={r['sigma']:g}: loss AUC {_p(reg['loss']['auc'])}% → {_p(r['loss']['auc'])}%, label-only {_p(r['label_only']['auc'])}%, "
                         f"loss-map {_p(r['loss_map']['auc'])}% (regular shadow {_p((r['loss_map_regular_shadow'] or {}).get('auc'))}%); test mIoU "
                         f"{_p(r['miou'])}%.")
    dmp, dp = by["dmp"], by["dpsgd"]
    lines.append(f"- DMP: worst-case AUC {_p(w['dmp'][0])}% ({w['dmp'][1]}), test mIoU {_p(dmp['miou'])}%, mIoU gap {_p(dmp['miou_gap'])} points "
                 f"(regular {_p(reg['miou_gap'])}).")
    lines.append(f"- DP-SGD (ε = {dp['epsilon']:.2f}): worst-case AUC {_p(w['dpsgd'][0])}% ({w['dpsgd'][1]}), test mIoU {_p(dp['miou'])}%.")
    adaptive = [r for r in rows if r["loss_map_regular_shadow"] and r["loss_map"]["auc"] is not None]
    stronger = [r["model"] for r in adaptive if r["loss_map"]["auc"] >= r["loss_map_regular_shadow"]["auc"]]
    lines.append(f"- The loss-map attack reaches {_p(reg['loss_map']['auc'])}% on the regular model (the loss attack {_p(reg['loss']['auc'])}%). A shadow "
                 f"that replays the defense is at least as strong as the regular shadow against {len(stronger)} of the {len(adaptive)} defenses"
                 + (f" ({', '.join(stronger)})" if stronger else "") + ".")
    gl = v["gauss_lowers_loss"]
    lines += ["", "## Compared with Segmentations-Leak", "",
              "He et al. (ECCV 2020; Cityscapes, BDD100K, Mapillary Vistas) find that releasing only the argmax labels and adding Gaussian "
              "noise to the released posteriors weaken the attacks that read the posteriors (the loss and structured attacks), while an attacker "
              "who compares the released labels with the ground truth is left untouched by either. The directions here:",
              "",
              f"- Same direction for argmax: {'yes' if v['argmax_lowers_loss'] else 'no'} (loss AUC lower than the regular model's), and the "
              f"label-only attack remains at {_p(argmax['label_only']['auc'])}%.",
              "- Same direction for Gauss: " + ", ".join(f"{m} {'lowers' if ok else 'does not lower'} the loss attack" for m, ok in gl.items())
              + "; the label-only attack remains (" + ", ".join(f"{m} {_p(x)}%" for m, x in v["label_only_remains"].items()) + ").",
              f"- DP-SGD at ε = {dp['epsilon']:.2f}: the worst-case AUC goes from {_p(w['regular'][0])}% to {_p(w['dpsgd'][0])}% "
              f"({'lower' if w['dpsgd'][0] < w['regular'][0] else 'not lower'}) at a cost of {_p(reg['miou'] - dp['miou'])} mIoU points. DMP, which "
              "Segmentations-Leak does not evaluate, is the distillation defense of the generator study (docs/attacks.md); here it gives "
              f"{'the best' if v['best'] == 'dmp' else 'a'} trade-off.",
              "",
              "Raw reports: `OUT/reports/<model>.json` (privaudit.report/2 with utility); `OUT/summary.json`.", ""]
    if appendix is not None:
        ast_, arows = appendix["setting"], appendix["rows"]
        areg = {r["model"]: r for r in arows}["regular"]
        lines += ["## A model that memorises its members", "",
                  f"The same study with {ast_['epochs']} epochs {'with' if ast_.get('augment') else 'without'} augmentation (DMP {ast_['dmp_epochs']} "
                  f"epochs, DP-SGD {ast_['dp_epochs']}): the target reaches train mIoU {_p(areg['miou_train'])}% against {_p(areg['miou'])}% on the "
                  "test set, and every attack separates members from non-members perfectly, the label-only one included. A defense that only "
                  "changes what is released (argmax, Gauss) cannot help a model whose labels themselves give its members away; only the defenses "
                  "that change the training (DMP, DP-SGD) lower the attacks.", "", *results_table(arows), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    run()
