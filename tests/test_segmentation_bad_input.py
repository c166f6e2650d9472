"""Bad input for the segmentation commands, as in ``test_bad_input_corpus``: each row is refused
with exit code 2, one line on stderr naming the problem and the fix, no traceback, nothing on
stdout, and nothing written (the output folder and the fixtures are unchanged)."""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from privaudit.cli.app import app
from privaudit.models.segcheckpoint import save_segmentation_checkpoint
from privaudit.models.segnets import SegInfo, build, unet_seg_arch
from seg_helpers import PALETTE, write_seg
from test_bad_input_corpus import _argv, _snapshot, assert_refused

runner = CliRunner()


@dataclass(frozen=True)
class Case:
    id: str
    argv: str
    needle: Optional[str] = None
    setup: Optional[Callable[[Path], None]] = None


TRAIN = "train {m} --task segmentation --num-classes 4 --size 32 --ngf 4 --epochs 1 --no-augment --device cpu --quiet --out {out}/t.pt"
ATTACK = "attack {seg} --members {m} --nonmembers {n} --bootstrap 10 --device cpu --quiet --json {out}/r.json"
EVALUATE = "evaluate {seg} --members {m} --nonmembers {n} --bootstrap 10 --device cpu --quiet --json {out}/e.json"
DMP = "defend {seg} --method dmp --proxy {n} --epochs 1 --no-augment --device cpu --quiet --out {out}/s.pt"
DPSGD = "defend --method dpsgd --task segmentation --train-data {m} --num-classes 4 --size 32 --ngf 4 --epochs 1 --batch-size 5 --noise-multiplier 1 --no-augment --device cpu --quiet --out {out}/d.pt"
SHADOW = " --shadow {shadow} --shadow-members {n} --shadow-nonmembers {m}"
PREFIXES = {"train": TRAIN, "attack": ATTACK, "attack-shadow": ATTACK + SHADOW, "evaluate": EVALUATE, "dmp": DMP, "dpsgd": DPSGD,
            "argmax": "defend {seg} --method argmax --device cpu --quiet --out {out}/a.pt", "gauss": "defend {seg} --method gauss --sigma 0.1 --device cpu --quiet --out {out}/g.pt",
            "gate": "gate {ev} --no-policy --min-miou 0",
            "attack-rgb-with-the-model-palette": ATTACK.replace("{n}", "{rgb}")}  # colour label maps read through the checkpoint's palette

CASES = [
    # --- training
    Case("train-no-num-classes", TRAIN.replace("--task segmentation --num-classes 4", "--task segmentation"), "--num-classes"),
    Case("train-one-class", TRAIN.replace("--num-classes 4", "--num-classes 1"), "--num-classes"),
    Case("train-labels-above-classes", TRAIN.replace("--num-classes 4", "--num-classes 2"), "pass the right --num-classes or --ignore-index"),
    Case("train-rgb-labels", TRAIN.replace("{m}", "{rgb}"), "colour (RGB) label map"),
    Case("train-jpeg-labels", TRAIN.replace("{m}", "{jpeg}"), "lossy compression"),
    Case("train-size-mismatch", TRAIN.replace("{m}", "{mismatch}"), "a label map must have its photo's size"),
    Case("train-no-B", TRAIN.replace("{m}", "{noB}"), "no A/ and B/"),
    Case("train-missing-folder", TRAIN.replace("{m}", "{out}/nope"), "does not exist"),
    Case("train-direction", TRAIN + " --direction AtoB", "drop --direction"),
    Case("train-norm", TRAIN + " --norm instance", "drop --norm"),
    Case("train-unknown-arch", TRAIN + " --arch unet2", "--arch"),
    Case("train-backbone-for-unet", TRAIN + " --backbone-weights {seg}", "torchvision architectures"),
    Case("train-ngf-for-torchvision", TRAIN.replace("--task segmentation", "--arch lraspp_mobilenet_v3_large"), "drop them"),
    Case("train-bad-ignore-index", TRAIN + " --ignore-index 300", "--ignore-index"),
    Case("train-task-translation", TRAIN.replace("--task segmentation", "--task translation"), "--task segmentation"),
    Case("train-unwritable-out", TRAIN.replace("{out}/t.pt", "{out}/no/such/dir/t.pt"), "t.pt"),
    Case("train-class-names-count", TRAIN + " --classes a,b", "one name per class"),
    # --- attack
    Case("attack-loss-flag", ATTACK + " --loss l2", "drop --loss"),
    Case("attack-direction", ATTACK + " --direction AtoB", "drop --direction"),
    Case("attack-stochastic", ATTACK + " --stochastic", "drop it"),
    Case("attack-shadow-incomplete", ATTACK + " --shadow {shadow}", "--shadow-members"),
    Case("attack-shadow-is-target", ATTACK + SHADOW.replace("{shadow}", "{seg}"), "the audited model itself"),
    Case("attack-shadow-on-generator", "attack {gen} --direction AtoB --members {gm} --nonmembers {gn} --bootstrap 10 --device cpu --quiet" + SHADOW,
         "segmentation models"),
    Case("attack-labels-above-classes", ATTACK.replace("{n}", "{six}"), "--num-classes"),
    Case("attack-rgb-labels-not-in-palette", ATTACK.replace("{n}", "{rgb_other}"), "not in the palette"),
    Case("attack-contradicting-classes", ATTACK + " --num-classes 5", "contradicts"),
    Case("attack-task-translation", ATTACK + " --task translation", "--task translation contradicts"),
    Case("attack-state-dict-no-arch", ATTACK.replace("{seg}", "{tvsd}") + " --task segmentation", "pass --arch"),
    Case("attack-state-dict-wrong-arch", ATTACK.replace("{seg}", "{tvsd}") + " --arch deeplabv3_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large"),
    Case("attack-export-no-classes", ATTACK.replace("{seg}", "{pt2}") + " --task segmentation", "--num-classes C and --normalize"),
    Case("attack-nan-weights", ATTACK.replace("{seg}", "{nan}"), "non-finite weights"),
    Case("attack-truncated", ATTACK.replace("{seg}", "{trunc}"), "trunc.pt"),
    Case("attack-pickled-code", ATTACK.replace("{seg}", "{evil}"), "refusing to load"),
    Case("attack-bad-label-score", ATTACK + " --label-score dice", "--label-score"),
    Case("attack-generator-flags-on-seg", ATTACK + " --ngf 8", "--arch"),
    Case("attack-too-few", ATTACK.replace("{n}", "{few}"), "--allow-small"),
    Case("attack-same-sets", ATTACK.replace("{n}", "{m}"), "same folder"),
    Case("attack-lossmap-epochs", ATTACK + SHADOW + " --lossmap-epochs 0", "--lossmap-epochs"),
    Case("attack-malformed-record", ATTACK.replace("{seg}", "{badrecord}"), "malformed segmentation section"),
    # --- evaluate
    Case("evaluate-repeat-zero", EVALUATE + " --repeat 0", "--repeat"),
    Case("evaluate-proxy-shares-pairs", EVALUATE + " --proxy-pairs {m}", "proxy"),
    # --- defend
    Case("argmax-on-generator", "defend {gen} --method argmax --direction AtoB --device cpu --quiet --out {out}/a.pt", "segmentation models"),
    Case("akd-on-segmentation", "defend {seg} --method akd --proxy {n} --epochs 1 --device cpu --quiet --out {out}/a.pt", "use dmp"),
    Case("dmp-without-proxy", DMP.replace("--proxy {n} ", ""), "--proxy"),
    Case("dmp-direction", DMP + " --direction AtoB", "drop --direction"),
    Case("gauss-without-sigma", "defend {seg} --method gauss --device cpu --quiet --out {out}/g.pt", "--sigma"),
    Case("gauss-on-export", "defend {pt2} --method gauss --sigma 0.1 --num-classes 4 --normalize unit --device cpu --quiet --out {out}/g.pt", "serving code"),
    Case("dpsgd-without-classes", DPSGD.replace("--num-classes 4 ", ""), "--num-classes"),
    Case("dpsgd-batch-one", DPSGD.replace("--batch-size 5", "--batch-size 1"), "--batch-size"),
    Case("dpsgd-both-noise-and-target", DPSGD + " --target-epsilon 5", "not both"),
    Case("dpsgd-norm", DPSGD + " --norm batch", "drop --norm"),
    # --- gate
    Case("gate-min-miou-without-utility", "gate {rep} --no-policy --min-miou 0.5", "utility.miou"),
    Case("gate-min-miou-out-of-range", "gate {ev} --no-policy --min-miou 1.5", "--min-miou"),
]


def _save_seg(path: Path, *, nan: bool = False, bad_record: bool = False) -> Path:
    arch = unet_seg_arch(4, 32, ngf=4)
    net = build(arch, seed=0)
    if nan:
        with torch.no_grad():
            next(net.parameters())[0].fill_(math.nan)
    save_segmentation_checkpoint(path, net=net, arch=arch, image_size=32, info=SegInfo.new(4, normalization="symmetric", palette=PALETTE[:4]))
    if bad_record:
        obj = torch.load(path, weights_only=True)
        obj["segmentation"]["classes"] = "abc"
        torch.save(obj, path)
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> dict[str, str]:
    from conftest import write_pairs

    root = tmp_path_factory.mktemp("segbad")
    p: dict[str, Path] = {"m": write_seg(root / "m", 10, seed=1, prefix="m"), "n": write_seg(root / "n", 10, seed=2, prefix="n")}
    p["rgb"] = write_seg(root / "rgb", 10, seed=3, label_format="rgb")
    p["rgb_other"] = write_seg(root / "rgbo", 10, seed=4, label_format="rgb", num_classes=6)  # colours 4 and 5 are not in a 4-class palette
    p["six"] = write_seg(root / "six", 10, seed=5, num_classes=6, prefix="x")
    p["few"] = write_seg(root / "few", 3, seed=6, prefix="f")
    p["jpeg"] = write_seg(root / "jpeg", 10, seed=7)
    (p["jpeg"] / "B" / "s000.png").unlink()
    Image.fromarray(np.zeros((32, 32), np.uint8), mode="L").save(p["jpeg"] / "B" / "s000.jpg")
    p["mismatch"] = write_seg(root / "mis", 10, seed=8)
    Image.fromarray(np.zeros((16, 16), np.uint8), mode="L").save(p["mismatch"] / "B" / "s003.png")
    p["noB"] = root / "noB"
    (p["noB"] / "A").mkdir(parents=True)
    p["seg"] = _save_seg(root / "seg.pt")
    p["shadow"] = _save_seg(root / "shadow.pt")
    torch.save(torch.load(p["shadow"], weights_only=True) | {"provenance": {"note": "shadow"}}, p["shadow"])  # another sha256
    p["nan"] = _save_seg(root / "nan.pt", nan=True)
    p["badrecord"] = _save_seg(root / "bad.pt", bad_record=True)
    p["trunc"] = root / "trunc.pt"
    p["trunc"].write_bytes(p["seg"].read_bytes()[:200])
    p["evil"] = root / "evil.pt"
    p["evil"].write_bytes(pickle.dumps({"state_dict": {}, "hook": print}))
    from privaudit.models.segnets import SegArch

    tv = build(SegArch(name="lraspp_mobilenet_v3_large", num_classes=4), seed=0)
    p["tvsd"] = root / "tv.pth"
    torch.save(tv.state_dict(), p["tvsd"])

    class DictOut(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            return {"out": self.conv(x)}

    p["pt2"] = root / "seg.pt2"
    torch.export.save(torch.export.export(DictOut().eval(), (torch.randn(2, 3, 32, 32),)), p["pt2"])
    p["gen"] = tiny_checkpoint
    p["gm"] = write_pairs(root / "gm", 10, seed=1, prefix="m")
    p["gn"] = write_pairs(root / "gn", 10, seed=2, prefix="n")
    p["rep"] = root / "attack.json"
    r = runner.invoke(app, _argv(ATTACK.replace("{out}/r.json", str(p["rep"])), {k: str(v) for k, v in p.items()} | {"out": str(root)}))
    assert r.exit_code == 0, r.output
    p["ev"] = root / "ev.json"
    r = runner.invoke(app, _argv(EVALUATE.replace("{out}/e.json", str(p["ev"])), {k: str(v) for k, v in p.items()} | {"out": str(root)}))
    assert r.exit_code == 0, r.output
    return {k: str(v) for k, v in p.items()}


def test_case_ids_are_unique():
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_segmentation_input_is_refused_in_one_line_and_writes_nothing(case: Case, corpus: dict[str, str], tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch):
    out = tmp_path / "out"
    out.mkdir()
    if case.setup is not None:
        case.setup(out)
    monkeypatch.chdir(out)
    before, fixtures_before = _snapshot(out), _snapshot(Path(corpus["m"]).parent)
    result = runner.invoke(app, _argv(case.argv, {**corpus, "out": str(out)}))
    assert_refused(result, case.needle)
    assert _snapshot(out) == before, "the command wrote to its output folder"
    assert _snapshot(Path(corpus["m"]).parent) == fixtures_before, "the command wrote next to its inputs"


@pytest.mark.parametrize("name", sorted(PREFIXES))
def test_prefixes_are_good_commands(name: str, corpus: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Each row changes one thing in a prefix; the prefix itself must succeed."""
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.chdir(out)
    result = runner.invoke(app, _argv(PREFIXES[name], {**corpus, "out": str(out)}))
    assert result.exit_code == 0, result.output
