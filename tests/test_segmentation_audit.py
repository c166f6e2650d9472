"""The segmentation audit end to end on a tiny overfit U-Net: the attacks (loss, label-only, the
structured loss-map attack with a shadow model), each defense lowering the attack, the CLI
(train, attack, evaluate, defend), the report comparison and ``gate --min-miou``.

The data (``seg_helpers``): photos whose colours give the classes, label maps with a few private
cells only memorisation gets right. The target overfits its 16 members: its loss separates them
from non-members almost perfectly, while its labels (pixel accuracy) separate them less.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import privaudit
from privaudit.attacks.segmentation import SegAttackOptions
from privaudit.cli.app import app
from privaudit.defenses import defend
from privaudit.defenses.argmax import ArgmaxOptions
from privaudit.defenses.gauss import GaussOptions
from privaudit.defenses.segmentation import SegDistillOptions, SegDPSGDOptions
from privaudit.models.checkpoint import load_model
from privaudit.training.segmentation import SegTrainConfig, train_segmentation
from seg_helpers import write_seg

runner = CliRunner()
N = 16
PRIVATE = 0.05  # private cells per label map: memorised, not generalised
CFG = SegTrainConfig(epochs=60, batch_size=8, lr=2e-3, augment=False, seed=0, device="cpu")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Target (trained on ``members``), its shadow (the attacker's own members and non-members,
    same recipe), and unlabelled proxy photos."""
    root = tmp_path_factory.mktemp("segaudit")
    w = {name: write_seg(root / name, N, seed=seed, private=PRIVATE, prefix=name[:2]) for name, seed in
         (("members", 1), ("nonmembers", 2), ("shadow_members", 3), ("shadow_nonmembers", 4), ("proxy", 5))}
    w["target"] = root / "target.pt"
    train_segmentation(w["members"], w["target"], num_classes=4, size=32, ngf=8, config=CFG, classes=["a", "b", "c", "d"])
    w["shadow"] = root / "shadow.pt"
    train_segmentation(w["shadow_members"], w["shadow"], num_classes=4, size=32, ngf=8, config=CFG)
    w["root"] = root
    return w


def _attack(model: Path, w: dict[str, Path], shadow: Path | None = None) -> dict:
    opts = SegAttackOptions(shadow=str(shadow), shadow_members=str(w["shadow_members"]), shadow_nonmembers=str(w["shadow_nonmembers"])) if shadow else None
    report, _ = privaudit.attack(model, w["members"], w["nonmembers"], config=privaudit.AttackConfig(n_bootstrap=200), seg_options=opts, device="cpu")
    return report


@pytest.fixture(scope="module")
def target_report(world) -> dict:
    return _attack(world["target"], world, shadow=world["shadow"])


def test_target_leaks_and_the_report_says_so(target_report):
    r = target_report
    assert r["schema"] == "privaudit.report/2" and r["task"] == "segmentation" and r["model"]["task"] == "segmentation"
    assert set(r["attacks"]) == {"loss", "label-only", "loss-map"}
    assert r["attacks"]["loss"]["loss"] == "cross-entropy"
    assert r["attacks"]["loss"]["auc"] > 0.9
    assert r["attacks"]["loss"]["member_loss"]["mean"] < r["attacks"]["loss"]["nonmember_loss"]["mean"]
    assert r["model"]["segmentation"]["classes"] == ["a", "b", "c", "d"]
    assert r["attack"]["name"] in r["attacks"]
    privaudit.report.schema.validate_report(r)


def test_structured_loss_map_attack_beats_chance(target_report):
    lm = target_report["attacks"]["loss-map"]
    assert lm["auc"] > 0.75
    assert lm["auc_ci95"][0] > 0.5  # the interval excludes chance
    info = target_report["segmentation"]["loss_map"]
    assert info["source"] == "shadow" and info["trained_on"] == {"members": N, "nonmembers": N}


def test_loss_map_attack_is_chance_on_a_model_that_did_not_see_the_members(world):
    # the shadow model never saw the target's members: the same CNN on its maps cannot separate them
    report = _attack(world["shadow"], world, shadow=world["target"])
    assert abs(report["attacks"]["loss-map"]["auc"] - 0.5) < 0.2
    assert abs(report["attacks"]["loss"]["auc"] - 0.5) < 0.2


def test_argmax_reduces_the_loss_attack_to_the_label_only_one(world, target_report):
    out = world["root"] / "argmax.pt"
    defend("argmax", out=out, teacher=world["target"], options=ArgmaxOptions(), device="cpu")
    r = _attack(out, world)
    loss, label = r["attacks"]["loss"], r["attacks"]["label-only"]
    assert loss["auc"] == pytest.approx(label["auc"], abs=1e-12)  # CE = -log(floor) × the share of wrong pixels
    assert loss["auc"] < target_report["attacks"]["loss"]["auc"] - 0.05
    assert r["model"]["defense"]["method"] == "argmax"
    # utility is the teacher's: argmax keeps the labels
    m = load_model(out, device="cpu")
    assert m.defense["method"] == "argmax"


def test_gauss_noise_is_seeded_applied_at_load_and_lowers_the_loss_attack(world, target_report):
    out = world["root"] / "gauss.pt"
    defend("gauss", out=out, teacher=world["target"], options=GaussOptions(sigma=0.5), device="cpu", seed=0)
    r1, r2 = _attack(out, world), _attack(out, world)
    assert r1["attacks"]["loss"]["auc"] == r2["attacks"]["loss"]["auc"]  # same seed, same noise
    assert r1["attacks"]["loss"]["auc"] < target_report["attacks"]["loss"]["auc"] - 0.05
    assert r1["model"]["defense"]["sigma"] == 0.5
    from privaudit.defenses.segmentation import PosteriorNoise

    model = load_model(out, device="cpu")
    assert isinstance(model.module, PosteriorNoise)
    x = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    from privaudit.models.seginference import iter_log_posteriors

    with torch.inference_mode():
        (_, logp), = list(iter_log_posteriors(model, x))
    assert torch.allclose(logp.exp().sum(1), torch.ones(1, 32, 32), atol=1e-4)  # still posteriors
    # evaluate --repeat draws the noise with seeds seed, seed+1: the loss AUC differs between draws
    cfg = privaudit.EvaluateConfig(attack=privaudit.AttackConfig(n_bootstrap=0), kid=False, repeat=2)
    rep = privaudit.evaluate(out, world["members"], world["nonmembers"], cfg, device="cpu")["repeats"]
    assert rep["n"] == 2 and rep["seeds"] == [0, 1] and rep["runs"][0]["auc"] != rep["runs"][1]["auc"]


def test_dmp_student_on_proxy_photos_lowers_the_attack(world, target_report):
    out = world["root"] / "dmp.pt"
    result = defend("dmp", out=out, teacher=world["target"], proxy=world["proxy"],
                    options=SegDistillOptions(epochs=40, batch_size=8, lr=2e-3, augment=False), device="cpu", task="segmentation")
    assert result.history
    r = _attack(out, world)
    assert r["attack"]["auc_effective"] < target_report["attack"]["auc_effective"] - 0.15
    d = r["model"]["defense"]
    assert d["method"] == "dmp" and d["proxy"]["count"] == N and d["teacher"]["recipe"]["task"] == "segmentation"


def test_dpsgd_lowers_the_attack_and_records_epsilon(world, target_report):
    out = world["root"] / "dp.pt"
    result = defend("dpsgd", out=out, train_data=world["members"], size=32, device="cpu", task="segmentation",
                    options=SegDPSGDOptions(num_classes=4, ngf=8, epochs=4, batch_size=8, lr=2e-3, augment=False, noise_multiplier=1.0))
    eps = result.privacy["epsilon"]
    assert 0 < eps < 100
    raw = torch.load(out, weights_only=True)
    assert raw["defense"]["method"] == "dpsgd" and raw["defense"]["epsilon"] == pytest.approx(eps)
    assert raw["arch"]["norm"] == "group" and not any(k.endswith("running_mean") for k in raw["state_dict"])  # GroupNorm, no BatchNorm
    r = _attack(out, world)
    assert r["attack"]["auc_effective"] < target_report["attack"]["auc_effective"] - 0.15
    assert r["dp_audit"]["claimed_epsilon"] == pytest.approx(eps) and r["dp_audit"]["exceeded"] is False


def test_dpsgd_on_a_torchvision_architecture_replaces_batchnorm(tmp_path: Path):
    data = write_seg(tmp_path / "d", 6, seed=9)
    out = tmp_path / "dp.pt"
    defend("dpsgd", out=out, train_data=data, size=32, device="cpu", task="segmentation",
           options=SegDPSGDOptions(num_classes=4, arch="lraspp_mobilenet_v3_large", epochs=1, batch_size=3, noise_multiplier=1.0, augment=False))
    raw = torch.load(out, weights_only=True)
    assert raw["arch"]["type"] == "torchvision" and raw["arch"]["norm"] == "group"
    assert not any(k.endswith("running_mean") for k in raw["state_dict"])
    model = load_model(out, device="cpu")  # rebuilt with GroupNorm from the record
    assert model.segmentation.normalization["name"] == "imagenet"


def test_cli_train_attack_evaluate_report_gate(world, tmp_path: Path):
    ckpt = tmp_path / "cli.pt"
    r = runner.invoke(app, ["train", str(world["members"]), "--task", "segmentation", "--num-classes", "4", "--size", "32", "--ngf", "8", "--epochs", "2",
                            "--no-augment", "--device", "cpu", "--quiet", "--out", str(ckpt)])
    assert r.exit_code == 0, r.output
    assert torch.load(ckpt, weights_only=True)["segmentation"]["palette"][:2] == [[0, 0, 0], [128, 0, 0]]  # the label maps' palette
    rep = tmp_path / "a.json"
    r = runner.invoke(app, ["attack", str(ckpt), "--members", str(world["members"]), "--nonmembers", str(world["nonmembers"]), "--bootstrap", "20",
                            "--device", "cpu", "--quiet", "--json", str(rep), "--label-score", "iou"])
    assert r.exit_code == 0, r.output
    assert "attack loss-map skipped" in r.output  # no shadow: said on stderr, not silently left out
    a = json.loads(rep.read_text())
    assert a["segmentation"]["label_score"] == "iou" and "loss-map" not in a["attacks"]
    ev = tmp_path / "e.json"
    r = runner.invoke(app, ["evaluate", str(world["target"]), "--members", str(world["members"]), "--nonmembers", str(world["nonmembers"]),
                            "--bootstrap", "20", "--device", "cpu", "--quiet", "--json", str(ev)])
    assert r.exit_code == 0, r.output
    e = json.loads(ev.read_text())
    u, g = e["utility"], e["generalization_gap"]
    assert set(u["iou_per_class"]) == {"a", "b", "c", "d"}
    assert 0 < u["miou"] <= 1 and 0 < u["pixel_accuracy"] <= 1
    assert g["miou_gap"] == pytest.approx(g["miou_train"] - g["miou_test"]) and g["gap"] == g["miou_gap"] and g["miou_gap"] > 0
    md = tmp_path / "c.md"
    r = runner.invoke(app, ["report", str(ev), str(rep), "--markdown", str(md)])
    assert r.exit_code == 0, r.output
    text = md.read_text()
    assert "| mIoU | pixel acc. | gap (mIoU) |" in text and f"{100 * u['miou']:.2f}%" in text
    assert "NKID" not in text.split("\n")[2]  # a segmentation comparison has no NKID column
    ok = runner.invoke(app, ["gate", str(ev), "--no-policy", "--min-miou", f"{u['miou'] - 0.01:.4f}"])
    assert ok.exit_code == 0, ok.output
    low = runner.invoke(app, ["gate", str(ev), "--no-policy", "--min-miou", f"{u['miou'] + 0.01:.4f}", "--junit", str(tmp_path / "j.xml")])
    assert low.exit_code == 1, low.output
    assert "is below the lower limit" in (tmp_path / "j.xml").read_text()
    pinned = runner.invoke(app, ["gate", str(ev), "--no-policy", "--max-auc", "0.99", "--attack", "label-only"])
    assert pinned.exit_code in (0, 1) and "label-only" in pinned.output
    none = runner.invoke(app, ["gate", str(rep), "--no-policy", "--min-miou", "0.5"])
    assert none.exit_code == 2 and "utility.miou" in none.output  # an attack report has no utility: refused, never passed


def test_cli_defend_methods(world, tmp_path: Path):
    for argv in (["argmax"], ["gauss", "--sigma", "0.2"], ["dmp", "--proxy", str(world["proxy"]), "--epochs", "1", "--no-augment"]):
        out = tmp_path / f"{argv[0]}.pt"
        r = runner.invoke(app, ["defend", str(world["target"]), "--method", *argv, "--device", "cpu", "--quiet", "--out", str(out)])
        assert r.exit_code == 0, r.output
        assert torch.load(out, weights_only=True)["defense"]["method"] == argv[0]
    out = tmp_path / "dp.pt"
    r = runner.invoke(app, ["defend", "--method", "dpsgd", "--task", "segmentation", "--train-data", str(world["members"]), "--num-classes", "4",
                            "--size", "32", "--ngf", "8", "--epochs", "1", "--batch-size", "8", "--noise-multiplier", "1", "--no-augment", "--device", "cpu",
                            "--quiet", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert torch.load(out, weights_only=True)["defense"]["epsilon"] > 0


def test_references_give_calibrated_and_loss_map_attacks(world, tmp_path: Path):
    refs = tmp_path / "refs"
    cfg = SegTrainConfig(epochs=20, batch_size=8, lr=2e-3, augment=False, seed=0, device="cpu")
    small = tmp_path / "small.pt"
    train_segmentation(world["members"], small, num_classes=4, size=32, ngf=4, config=cfg)
    r = runner.invoke(app, ["references", str(small), "--population", str(world["members"]), str(world["nonmembers"]), "--online", "--count", "2",
                            "--device", "cpu", "--quiet", "--out", str(refs)])
    assert r.exit_code == 0, r.output
    report, result = privaudit.attack(small, world["members"], world["nonmembers"], config=privaudit.AttackConfig(n_bootstrap=20), references=refs,
                                      device="cpu")
    assert {"loss", "label-only", "loss-map", "calibrated", "reference-only"} <= set(report["attacks"])
    assert report["segmentation"]["loss_map"]["source"] == "references"
    assert report["references"]["mode"] == "online" and "lira-online" in report["references"]["skipped"]
    # the calibrated score is the references' mean OUT CE minus the target's CE
    sm, _ = result.scores["calibrated"]
    assert np.all(np.isfinite(sm))


def test_resumed_training_reaches_the_same_weights(tmp_path: Path):
    data = write_seg(tmp_path / "d", 6, seed=11)
    cfg = SegTrainConfig(epochs=3, batch_size=4, lr=2e-3, decay_epochs=0, augment=True, seed=0, device="cpu")  # constant lr: 2 + 1 epochs = 3
    straight, resumed = tmp_path / "straight.pt", tmp_path / "resumed.pt"
    train_segmentation(data, straight, num_classes=4, size=32, ngf=4, config=cfg)
    train_segmentation(data, resumed, num_classes=4, size=32, ngf=4, config=SegTrainConfig(**{**cfg.__dict__, "epochs": 2}), keep_state=True)
    assert torch.load(resumed, weights_only=True)["training"] == {"complete": True, "epochs_done": 2, "epochs_total": 2}
    train_segmentation(data, resumed, num_classes=4, size=32, ngf=4, config=cfg, resume=True)
    a, b = torch.load(straight, weights_only=True)["state_dict"], torch.load(resumed, weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
