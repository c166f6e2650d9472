"""A corpus of bad inputs for every command, run as one table-driven test.

Each row is a command line that must be refused the way every bad input is (DESIGN: exit codes):
exit code 2, exactly one line on stderr starting with ``privaudit: error:``, no traceback, nothing
on stdout, and nothing written: the per-case output folder (also the working directory) and the
shared fixture folder hold exactly the files they held before the run (no output, no ``*.tmp``, no
``.state``). A row may name a substring the message must contain (the flag or the file), so the
message says what to fix.

Adding a row: pick a prefix below (or write the command out), put the bad part in, give the
needle. Placeholders in braces are filled from the ``corpus`` fixture (inputs, read-only) and
``{out}`` (a fresh empty folder per case). A row's ``setup`` may put files into ``{out}`` first
(they must still be there, unchanged, afterwards).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import tiny_generator, write_pairs
from privaudit.cli.app import app
from privaudit.models.checkpoint import save_checkpoint

runner = CliRunner()

N_PAIRS = 10  # at least 10 members and non-members: no case depends on a small-set rule


@dataclass(frozen=True)
class Case:
    id: str
    argv: str  # whitespace-separated; each token is str.format-ed with the placeholders
    needle: Optional[str] = None  # a substring the one-line message must contain
    setup: Optional[Callable[[Path], None]] = None  # prepares {out} before the run


def _mkdir(name: str) -> Callable[[Path], None]:
    return lambda out: (out / name).mkdir()


def _write(name: str, text: str) -> Callable[[Path], None]:
    return lambda out: (out / name).write_text(text)


# Command prefixes that succeed as they stand (checked by test_prefixes_are_good_commands); each
# row changes one thing. Every model-reading command passes --direction explicitly.
TRAIN = "train {m} --direction AtoB --ngf 4 --ndf 4 --epochs 1 --batch-size 10 --no-augment --device cpu --quiet --out {out}/t.pt"
ATTACK = "attack {ckpt} --direction AtoB --members {m} --nonmembers {n} --bootstrap 10 --device cpu --quiet --json {out}/r.json"
AKD = "defend {ckpt} --method akd --proxy {n} --direction AtoB --epochs 1 --batch-size 10 --ndf 4 --no-augment --device cpu --quiet --out {out}/s.pt"
DMP = AKD.replace("--method akd", "--method dmp")
GAUSS = "defend {ckpt} --method gauss --sigma 0.1 --direction AtoB --device cpu --quiet --out {out}/g.pt"
DPSGD = ("defend --method dpsgd --train-data {m} --direction AtoB --ngf 4 --ndf 4 --epochs 1 --batch-size 5 --noise-multiplier 1 "
         "--no-augment --device cpu --quiet --out {out}/d.pt")
EVALUATE = "evaluate {ckpt} --direction AtoB --members {m} --nonmembers {n} --no-kid --bootstrap 10 --device cpu --quiet --json {out}/e.json"
REPORT = "report {report} --markdown {out}/c.md --plot {out}/p.png"
GATE = "gate {report} --no-policy --max-auc 1 --junit {out}/j.xml --markdown {out}/g.md"
DEMO = "demo --quick --out {out}/demo"
# {ckpt} records its U-Net, size and direction but no training config or training set: the flags and --exclude supply them
REFS = ("references {ckpt} --population {n} --count 1 --exclude {m} --epochs 1 --train-count 5 --batch-size 5 --ndf 4 --no-augment --device cpu --quiet "
        "--out {out}/refs")

PREFIXES = {"train": TRAIN, "attack": ATTACK, "akd": AKD, "dmp": DMP, "gauss": GAUSS, "dpsgd": DPSGD, "evaluate": EVALUATE, "report": REPORT, "gate": GATE,
            "references": REFS}


def _other_manifest(out: Path) -> None:
    """``{out}/refs`` holding the references of another model."""
    (out / "refs").mkdir()
    (out / "refs" / "references.json").write_text(json.dumps({"schema": "privaudit.references/1", "target": {"path": "other.pt", "sha256": "0" * 64,
                                                                                                          "recipe": {"recipe_key": "x"}},
                                                            "mode": "offline", "count": 1, "seed": 0, "population": {"key": "y"}, "references": []}))


def _swap(prefix: str, old: str, new: str) -> str:
    assert old in prefix, (old, prefix)
    return prefix.replace(old, new)


CASES: list[Case] = [
    # ---------------------------------------------------------------- train
    Case("train-data-missing", _swap(TRAIN, "{m}", "{out}/nowhere"), "nowhere"),
    Case("train-data-empty-folder", _swap(TRAIN, "{m}", "{empty_dir}"), "no images"),
    Case("train-data-is-a-file", _swap(TRAIN, "{m}", "{textfile}"), "somefile.txt"),
    Case("train-data-truncated-png", _swap(TRAIN, "{m}", "{trunc_dir}"), "broken.png"),
    Case("train-data-text-named-png", _swap(TRAIN, "{m}", "{textpng_dir}"), "notes.png"),
    Case("train-data-empty-png", _swap(TRAIN, "{m}", "{emptypng_dir}"), "empty.png"),
    Case("train-data-mixed-sizes", _swap(TRAIN, "{m}", "{mixed_dir}"), "--size"),
    Case("train-data-odd-width", _swap(TRAIN, "{m}", "{odd_dir}"), "halves"),
    Case("train-data-not-square", _swap(TRAIN, "{m}", "{nonsquare_dir}"), "square"),
    Case("train-data-unmatched-names", _swap(TRAIN, "{m}", "{unmatched_ab}"), "extra.png"),
    Case("train-data-A-B-sizes-differ", _swap(TRAIN, "{m}", "{sizes_ab}"), "--size"),
    Case("train-epochs-zero", _swap(TRAIN, "--epochs 1", "--epochs 0"), "--epochs"),
    Case("train-epochs-negative", _swap(TRAIN, "--epochs 1", "--epochs -3"), "--epochs"),
    Case("train-epochs-not-a-number", _swap(TRAIN, "--epochs 1", "--epochs abc"), "--epochs"),
    Case("train-batch-size-zero", _swap(TRAIN, "--batch-size 10", "--batch-size 0"), "--batch-size"),
    Case("train-lr-negative", TRAIN + " --lr -1", "--lr"),
    Case("train-lr-zero", TRAIN + " --lr 0", "--lr"),
    Case("train-lr-nan", TRAIN + " --lr nan", "--lr"),
    Case("train-lr-inf", TRAIN + " --lr inf", "--lr"),
    Case("train-lambda-negative", TRAIN + " --lambda-l1 -1", "--lambda-l1"),
    Case("train-seed-negative", TRAIN + " --seed -1", "--seed"),
    Case("train-seed-too-large", TRAIN + " --seed 4294967296", "--seed"),
    Case("train-size-7", TRAIN + " --size 7", "--size"),
    Case("train-size-zero", TRAIN + " --size 0", "--size"),
    Case("train-size-not-a-multiple", TRAIN + " --size 48", "--size"),
    Case("train-ngf-zero", _swap(TRAIN, "--ngf 4", "--ngf 0"), "--ngf"),
    Case("train-ndf-zero", _swap(TRAIN, "--ndf 4", "--ndf 0"), "--ndf"),
    Case("train-num-downs-zero", TRAIN + " --num-downs 0", "--num-downs"),
    Case("train-num-downs-too-deep", TRAIN + " --num-downs 6", "--size"),
    Case("train-decay-epochs-beyond-epochs", TRAIN + " --decay-epochs 5", "--decay-epochs"),
    Case("train-norm-unknown", TRAIN + " --norm layer", "'--norm': 'layer' is not one of 'batch', 'instance', 'none'"),
    Case("train-direction-unknown", _swap(TRAIN, "--direction AtoB", "--direction CtoD"), "'--direction': 'CtoD' is not one of 'AtoB', 'BtoA'"),
    Case("train-device-unknown", _swap(TRAIN, "--device cpu", "--device tpu"), "tpu"),
    Case("train-out-is-a-folder", TRAIN, "t.pt", setup=_mkdir("t.pt")),
    Case("train-out-under-a-file", _swap(TRAIN, "{out}/t.pt", "{textfile}/t.pt"), "somefile.txt"),
    Case("train-out-folder-missing", _swap(TRAIN, "{out}/t.pt", "{out}/no/such/t.pt"), "does not exist"),
    Case("train-out-option-missing", _swap(TRAIN, " --out {out}/t.pt", ""), "--out"),
    Case("train-resume-without-state", TRAIN + " --resume", "--resume"),
    Case("train-unknown-option", TRAIN + " --epoch 3", "--epoch"),
    # ---------------------------------------------------------------- attack
    Case("attack-members-missing", _swap(ATTACK, "--members {m}", "--members {out}/nowhere"), "nowhere"),
    Case("attack-nonmembers-empty-folder", _swap(ATTACK, "--nonmembers {n}", "--nonmembers {empty_dir}"), "no images"),
    Case("attack-members-truncated-png", _swap(ATTACK, "--members {m}", "--members {trunc_dir}"), "broken.png"),
    Case("attack-members-text-named-png", _swap(ATTACK, "--members {m}", "--members {textpng_dir}"), "notes.png"),
    Case("attack-pix2pix-members-mixed-sizes", _swap(ATTACK, "attack {ckpt} --direction AtoB --members {m}", "attack {pix2pix_pth} --direction AtoB --members {mixed_dir}"), "--size"),
    Case("attack-pix2pix-members-A-B-sizes-differ", _swap(ATTACK, "attack {ckpt} --direction AtoB --members {m}", "attack {pix2pix_pth} --direction AtoB --members {sizes_ab}"), "--size"),
    Case("attack-members-decompression-bomb", _swap(ATTACK, "--members {m}", "--members {bomb_dir}"), "huge.png"),
    Case("attack-members-odd-width", _swap(ATTACK, "--members {m}", "--members {odd_dir}"), "halves"),
    Case("attack-members-unmatched-names", _swap(ATTACK, "--members {m}", "--members {unmatched_ab}"), "extra.png"),
    Case("attack-model-missing", _swap(ATTACK, "{ckpt}", "{out}/nothing.pt"), "nothing.pt"),
    Case("attack-model-is-a-folder", _swap(ATTACK, "{ckpt}", "{empty_dir}"), "folder"),
    Case("attack-model-empty-file", _swap(ATTACK, "{ckpt}", "{empty_pt}"), "empty.pt"),
    Case("attack-model-text-file", _swap(ATTACK, "{ckpt}", "{text_pt}"), "notes.pt"),
    Case("attack-model-random-bytes", _swap(ATTACK, "{ckpt}", "{random_pt}"), "random.pt"),
    Case("attack-model-truncated", _swap(ATTACK, "{ckpt}", "{truncated_pt}"), "truncated.pt"),
    Case("attack-model-nan-weights", _swap(ATTACK, "{ckpt}", "{nan_pt}"), "non-finite"),
    Case("attack-model-wrong-shapes", _swap(ATTACK, "{ckpt}", "{wrong_shape_pt}"), "shape mismatch"),
    Case("attack-model-a-list", _swap(ATTACK, "{ckpt}", "{list_pt}"), "list"),
    Case("attack-model-unknown-architecture", _swap(ATTACK, "{ckpt}", "{unknown_arch_pt}"), "architecture"),
    Case("attack-model-entry-not-a-tensor", _swap(ATTACK, "{ckpt}", "{meta_tensor_pt}"), "'extra'"),
    Case("attack-model-image-size-a-string", _swap(ATTACK, "{ckpt}", "{meta_size_pt}"), "image_size"),
    Case("attack-model-image-size-negative", _swap(ATTACK, "{ckpt}", "{meta_negsize_pt}"), "image_size"),
    Case("attack-model-defense-a-string", _swap(ATTACK, "{ckpt}", "{meta_defense_pt}"), "defense"),
    Case("attack-model-gauss-sigma-a-string", _swap(ATTACK, "{ckpt}", "{meta_sigma_pt}"), "sigma"),
    Case("attack-model-direction-a-number", _swap(ATTACK, "{ckpt}", "{meta_direction_pt}"), "direction"),
    Case("attack-model-ngf-a-string", _swap(ATTACK, "{ckpt}", "{meta_ngf_pt}"), "architecture"),
    Case("attack-model-fake-torchscript", _swap(ATTACK, "{ckpt}", "{fake_ts_pt}"), "fake_ts.pt"),
    Case("attack-model-fake-export", _swap(ATTACK, "{ckpt}", "{fake_pt2}"), "fake.pt2"),
    Case("attack-model-ngf-override-mismatch", ATTACK + " --ngf 8", "--ngf"),
    Case("attack-model-num-downs-override-zero", ATTACK + " --num-downs 0", "num_downs"),
    Case("attack-norm-unknown", ATTACK + " --norm layer", "'--norm': 'layer' is not one of 'batch', 'instance', 'none'"),
    Case("attack-size-not-a-multiple", ATTACK + " --size 48", "48"),
    Case("attack-size-zero", ATTACK + " --size 0", "--size"),
    Case("attack-loss-unknown", ATTACK + " --loss l3", "'--loss': 'l3' is not one of 'l1', 'l2'"),
    Case("attack-samples-zero", ATTACK + " --stochastic --samples 0", "--samples"),
    Case("attack-samples-without-stochastic", ATTACK + " --samples 3", "--stochastic"),
    Case("attack-batch-size-zero", ATTACK + " --batch-size 0", "--batch-size"),
    Case("attack-batch-size-not-a-number", ATTACK + " --batch-size abc", "--batch-size"),
    Case("attack-bootstrap-negative", _swap(ATTACK, "--bootstrap 10", "--bootstrap -1"), "--bootstrap"),
    Case("attack-seed-negative", ATTACK + " --seed -1", "--seed"),
    Case("attack-fail-above-auc-2", ATTACK + " --fail-above-auc 2", "--fail-above-auc"),
    Case("attack-direction-unknown", _swap(ATTACK, "--direction AtoB", "--direction sideways"), "'--direction': 'sideways' is not one of 'AtoB', 'BtoA'"),
    Case("attack-device-unknown", _swap(ATTACK, "--device cpu", "--device tpu"), "tpu"),
    Case("attack-json-under-a-file", _swap(ATTACK, "{out}/r.json", "{textfile}/r.json"), "somefile.txt"),
    Case("attack-json-is-a-folder", ATTACK, "r.json", setup=_mkdir("r.json")),
    Case("attack-scores-folder-missing", ATTACK + " --scores {out}/no/s.csv", "does not exist"),
    Case("attack-json-and-scores-both-stdout", _swap(ATTACK, "--json {out}/r.json", "--json - --scores -"), "stdout"),
    Case("attack-plot-dir-stdout", ATTACK + " --plot-dir -", "--plot-dir"),
    Case("attack-plot-dir-is-a-file", ATTACK + " --plot-dir {textfile}", "somefile.txt"),
    Case("attack-members-option-missing", _swap(ATTACK, "--members {m} ", ""), "--members"),
    Case("attack-model-argument-missing", _swap(ATTACK, "attack {ckpt}", "attack"), "Missing argument"),
    # ---------------------------------------------------------------- defend (all methods)
    Case("defend-method-unknown", _swap(AKD, "--method akd", "--method pate"), "'--method': 'pate' is not one of 'akd', 'dmp', 'gauss', 'dpsgd'"),
    Case("defend-out-missing", _swap(AKD, " --out {out}/s.pt", ""), "--out"),
    Case("defend-direction-unknown", _swap(AKD, "--direction AtoB", "--direction up"), "'--direction': 'up' is not one of 'AtoB', 'BtoA'"),
    Case("defend-out-under-a-file", _swap(AKD, "{out}/s.pt", "{textfile}/s.pt"), "somefile.txt"),
    Case("defend-out-is-a-folder", AKD, "s.pt", setup=_mkdir("s.pt")),
    Case("akd-proxy-missing-option", _swap(AKD, " --proxy {n}", ""), "--proxy"),
    Case("akd-proxy-missing-folder", _swap(AKD, "--proxy {n}", "--proxy {out}/nowhere"), "nowhere"),
    Case("akd-proxy-empty-folder", _swap(AKD, "--proxy {n}", "--proxy {empty_dir}"), "no images"),
    Case("akd-proxy-truncated-png", _swap(AKD, "--proxy {n}", "--proxy {trunc_dir}"), "broken.png"),
    Case("akd-proxy-layout-unknown", AKD + " --proxy-layout zigzag", "'--proxy-layout': 'zigzag' is not one of 'auto', 'aligned', 'folders', 'inputs'"),
    Case("akd-teacher-missing-argument", _swap(AKD, "defend {ckpt}", "defend"), "MODEL"),
    Case("akd-teacher-nan-weights", _swap(AKD, "{ckpt}", "{nan_pt}"), "non-finite"),
    Case("akd-teacher-text-file", _swap(AKD, "{ckpt}", "{text_pt}"), "notes.pt"),
    Case("akd-epochs-zero", _swap(AKD, "--epochs 1", "--epochs 0"), "--epochs"),
    Case("akd-lr-negative", AKD + " --lr -1", "--lr"),
    Case("akd-ndf-zero", _swap(AKD, "--ndf 4", "--ndf 0"), "--ndf"),
    Case("akd-ngf-zero", AKD + " --ngf 0", "--ngf"),
    Case("akd-norm-unknown", AKD + " --norm layer", "'--norm': 'layer' is not one of 'batch', 'instance', 'none'"),
    Case("akd-decay-epochs-negative", AKD + " --decay-epochs -1", "--decay-epochs"),
    Case("akd-seed-negative", AKD + " --seed -1", "--seed"),
    Case("akd-size-7", AKD + " --size 7", "--size"),
    Case("akd-size-zero", AKD + " --size 0", "--size"),
    Case("akd-num-downs-zero", AKD + " --num-downs 0", "--num-downs"),
    Case("akd-resume-without-state", AKD + " --resume", "--resume"),
    Case("dmp-batch-size-zero", _swap(DMP, "--batch-size 10", "--batch-size 0"), "--batch-size"),
    Case("dmp-lambda-nan", DMP + " --lambda-l1 nan", "--lambda-l1"),
    Case("dmp-proxy-odd-width", _swap(DMP, "--proxy {n}", "--proxy {odd_dir} --proxy-layout aligned"), "halves"),
    Case("gauss-sigma-missing", _swap(GAUSS, " --sigma 0.1", ""), "--sigma"),
    Case("gauss-sigma-negative", _swap(GAUSS, "--sigma 0.1", "--sigma -1"), "sigma"),
    Case("gauss-sigma-nan", _swap(GAUSS, "--sigma 0.1", "--sigma nan"), "sigma"),
    Case("gauss-size-7", GAUSS + " --size 7", "--size"),
    Case("gauss-size-zero", GAUSS + " --size 0", "--size"),
    Case("gauss-teacher-random-bytes", _swap(GAUSS, "{ckpt}", "{random_pt}"), "random.pt"),
    Case("dpsgd-train-data-missing-option", _swap(DPSGD, " --train-data {m}", ""), "--train-data"),
    Case("dpsgd-train-data-empty-folder", _swap(DPSGD, "--train-data {m}", "--train-data {empty_dir}"), "no images"),
    Case("dpsgd-train-data-unmatched-names", _swap(DPSGD, "--train-data {m}", "--train-data {unmatched_ab}"), "extra.png"),
    Case("dpsgd-noise-multiplier-negative", _swap(DPSGD, "--noise-multiplier 1", "--noise-multiplier -1"), "--noise-multiplier"),
    Case("dpsgd-noise-and-target-epsilon", DPSGD + " --target-epsilon 5", "--target-epsilon"),
    Case("dpsgd-target-epsilon-zero", _swap(DPSGD, "--noise-multiplier 1", "--target-epsilon 0"), "--target-epsilon"),
    Case("dpsgd-max-grad-norm-zero", DPSGD + " --max-grad-norm 0", "--max-grad-norm"),
    Case("dpsgd-delta-above-one", DPSGD + " --delta 2", "--delta"),
    Case("dpsgd-batch-size-one", _swap(DPSGD, "--batch-size 5", "--batch-size 1"), "--batch-size"),
    Case("dpsgd-epochs-zero", _swap(DPSGD, "--epochs 1", "--epochs 0"), "--epochs"),
    Case("dpsgd-ngf-zero", _swap(DPSGD, "--ngf 4", "--ngf 0"), "--ngf"),
    Case("dpsgd-size-7", DPSGD + " --size 7", "--size"),
    Case("dpsgd-num-downs-zero", DPSGD + " --num-downs 0", "--num-downs"),
    Case("dpsgd-resume-without-state", DPSGD + " --resume", "--resume"),
    # ---------------------------------------------------------------- evaluate
    Case("evaluate-members-missing", _swap(EVALUATE, "--members {m}", "--members {out}/nowhere"), "nowhere"),
    Case("evaluate-model-wrong-shapes", _swap(EVALUATE, "{ckpt}", "{wrong_shape_pt}"), "shape mismatch"),
    Case("evaluate-kid-subsets-zero", EVALUATE + " --kid-subsets 0", "--kid-subsets"),
    Case("evaluate-kid-subset-size-one", EVALUATE + " --kid-subset-size 1", "--kid-subset-size"),
    Case("evaluate-repeat-zero", EVALUATE + " --repeat 0", "--repeat"),
    Case("evaluate-samples-zero", EVALUATE + " --stochastic --samples 0", "--samples"),
    Case("evaluate-bootstrap-negative", _swap(EVALUATE, "--bootstrap 10", "--bootstrap -1"), "--bootstrap"),
    Case("evaluate-loss-unknown", EVALUATE + " --loss huber", "'--loss': 'huber' is not one of 'l1', 'l2'"),
    Case("evaluate-inception-weights-missing-file", _swap(EVALUATE, "--no-kid", "--inception-weights {out}/incep.pth"), "incep.pth"),
    Case("evaluate-inception-weights-random-bytes", _swap(EVALUATE, "--no-kid", "--inception-weights {random_weights}"), "random_incep.pth is not a torch weights file"),
    Case("evaluate-inception-weights-text-file", _swap(EVALUATE, "--no-kid", "--inception-weights {textfile}"), "somefile.txt is not a torch weights file"),
    Case("evaluate-inception-weights-empty-file", _swap(EVALUATE, "--no-kid", "--inception-weights {empty_pt}"), "empty.pt"),
    Case("evaluate-inception-weights-a-generator", _swap(EVALUATE, "--no-kid", "--inception-weights {ckpt}"), "tiny.pt"),
    Case("evaluate-inception-weights-a-folder", _swap(EVALUATE, "--no-kid", "--inception-weights {empty_dir}"), "is a folder"),
    Case("evaluate-proxy-pairs-missing", EVALUATE + " --proxy-pairs {out}/nowhere", "nowhere"),
    Case("evaluate-json-under-a-file", _swap(EVALUATE, "{out}/e.json", "{textfile}/e.json"), "somefile.txt"),
    Case("evaluate-kid-subsets-not-a-number", EVALUATE + " --kid-subsets many", "--kid-subsets"),
    # ---------------------------------------------------------------- report
    Case("report-missing-file", _swap(REPORT, "{report}", "{out}/none.json"), "none.json"),
    Case("report-malformed-json", _swap(REPORT, "{report}", "{malformed_json}"), "malformed.json"),
    Case("report-empty-file", _swap(REPORT, "{report}", "{empty_json}"), "empty.json"),
    Case("report-wrong-schema", _swap(REPORT, "{report}", "{schema_json}"), "schema"),
    Case("report-json-array", _swap(REPORT, "{report}", "{array_json}"), "array.json"),
    Case("report-without-attack", _swap(REPORT, "{report}", "{noattack_json}"), "attack"),
    Case("report-auc-not-a-number", _swap(REPORT, "{report}", "{report} {badauc_json}"), "malformed"),
    Case("report-auc-nan", _swap(REPORT, "{report}", "{nanauc_json}"), "finite"),
    Case("report-binary-file", _swap(REPORT, "{report}", "{binary_json}"), "binary.json"),
    Case("report-is-a-folder", _swap(REPORT, "{report}", "{empty_dir}"), "folder"),
    Case("report-names-count", REPORT + " --names a,b", "--names"),
    Case("report-plot-to-stdout", _swap(REPORT, "--plot {out}/p.png", "--plot -"), "--plot"),
    Case("report-markdown-under-a-file", _swap(REPORT, "{out}/c.md", "{textfile}/c.md"), "somefile.txt"),
    Case("report-html-folder-missing", REPORT + " --html {out}/no/r.html", "does not exist"),
    Case("report-second-of-two-missing", _swap(REPORT, "{report}", "{report} {out}/gone.json"), "gone.json"),
    Case("report-no-reports", "report", "Missing argument"),
    # ---------------------------------------------------------------- gate
    Case("gate-report-missing", _swap(GATE, "{report}", "{out}/none.json"), "none.json"),
    Case("gate-malformed-json", _swap(GATE, "{report}", "{malformed_json}"), "malformed.json"),
    Case("gate-wrong-schema", _swap(GATE, "{report}", "{schema_json}"), "schema"),
    Case("gate-report-without-attack", _swap(GATE, "{report}", "{noattack_json}"), "auc"),
    Case("gate-auc-not-a-number", _swap(GATE, "{report}", "{badauc_json}"), "attack.auc"),
    Case("gate-auc-nan", _swap(GATE, "{report}", "{nanauc_json}"), "attack.auc"),
    Case("gate-binary-file", _swap(GATE, "{report}", "{binary_json}"), "binary.json"),
    Case("gate-no-threshold", _swap(GATE, " --max-auc 1", ""), "no thresholds"),
    Case("gate-max-auc-2", _swap(GATE, "--max-auc 1", "--max-auc 2"), "--max-auc"),
    Case("gate-max-auc-nan", _swap(GATE, "--max-auc 1", "--max-auc nan"), "--max-auc"),
    Case("gate-max-auc-not-a-number", _swap(GATE, "--max-auc 1", "--max-auc high"), "--max-auc"),
    Case("gate-max-nkid-negative", GATE + " --max-nkid -0.1", "--max-nkid"),
    Case("gate-max-nkid-on-an-attack-report", GATE + " --max-nkid 0.1", "utility.nkid"),
    Case("gate-max-epsilon-without-dp", GATE + " --max-epsilon 10", "DP-SGD"),
    Case("gate-tpr-flag-without-limit", GATE + " --max-tpr-at-fpr 0.01", "--max-tpr-at-fpr"),
    Case("gate-tpr-flag-fpr-zero", GATE + " --max-tpr-at-fpr 0=0.1", "--max-tpr-at-fpr"),
    Case("gate-tpr-flag-twice", GATE + " --max-tpr-at-fpr 0.01=0.1 --max-tpr-at-fpr 1e-2=0.2", "twice"),
    Case("gate-policy-invalid-toml", _swap(GATE, "--no-policy", "--policy {bad_toml}"), "bad.toml"),
    Case("gate-policy-unknown-key", _swap(GATE, "--no-policy", "--policy {unknown_key_toml}"), "max_aucc"),
    Case("gate-policy-wrong-type", _swap(GATE, "--no-policy --max-auc 1", "--policy {wrong_type_toml}"), "max_auc"),
    Case("gate-policy-tpr-not-a-table", _swap(GATE, "--no-policy", "--policy {tpr_scalar_toml}"), "max_tpr_at_fpr"),
    Case("gate-policy-gate-not-a-table", _swap(GATE, "--no-policy", "--policy {pyproject_toml}"), "tool.privaudit.gate"),
    Case("gate-policy-without-gate-table", _swap(GATE, "--no-policy", "--policy {notable_toml}"), "[gate]"),
    Case("gate-policy-binary-file", _swap(GATE, "--no-policy", "--policy {binary_toml}"), "binary.toml"),
    Case("gate-policy-a-folder", _swap(GATE, "--no-policy", "--policy {empty_dir}"), "folder"),
    Case("gate-policy-missing-file", _swap(GATE, "--no-policy", "--policy {out}/none.toml"), "none.toml"),
    Case("gate-policy-and-no-policy", GATE + " --policy {bad_toml}", "--no-policy"),
    Case("gate-invalid-policy-in-working-folder", _swap(GATE, "--no-policy ", ""), "privaudit.toml", setup=_write("privaudit.toml", "[gate\nmax_auc = ")),
    Case("gate-junit-under-a-file", _swap(GATE, "{out}/j.xml", "{textfile}/j.xml"), "somefile.txt"),
    Case("gate-markdown-is-a-folder", GATE, "g.md", setup=_mkdir("g.md")),
    # ---------------------------------------------------------------- references
    Case("references-model-missing", _swap(REFS, "{ckpt}", "{out}/nothing.pt"), "nothing.pt"),
    Case("references-model-argument-missing", _swap(REFS, "references {ckpt}", "references"), "Missing argument"),
    Case("references-model-text-file", _swap(REFS, "{ckpt}", "{text_pt}"), "notes.pt"),
    Case("references-pix2pix-without-recipe", _swap(REFS, "{ckpt}", "{pix2pix_pth}"), "--size"),
    Case("references-population-option-missing", _swap(REFS, " --population {n}", ""), "--population"),
    Case("references-population-missing-folder", _swap(REFS, "--population {n}", "--population {out}/nowhere"), "nowhere"),
    Case("references-second-population-missing-folder", _swap(REFS, "--population {n}", "--population {n} {out}/nowhere"), "nowhere"),
    Case("references-population-empty-folder", _swap(REFS, "--population {n}", "--population {empty_dir}"), "no images"),
    Case("references-population-truncated-png", _swap(REFS, "--population {n}", "--population {trunc_dir}"), "broken.png"),
    Case("references-population-holds-members", _swap(REFS, "--population {n}", "--population {n} {m}"), "trained on"),
    Case("references-count-missing", _swap(REFS, " --count 1", ""), "--count"),
    Case("references-count-zero", _swap(REFS, "--count 1", "--count 0"), "--count"),
    Case("references-count-negative", _swap(REFS, "--count 1", "--count -2"), "--count"),
    Case("references-count-not-a-number", _swap(REFS, "--count 1", "--count many"), "--count"),
    Case("references-online-odd-count", _swap(REFS, "--count 1 --exclude {m}", "--online --count 3"), "even --count"),
    Case("references-online-with-exclude", _swap(REFS, "--count 1", "--online --count 2"), "--exclude"),
    Case("references-no-members-to-exclude", _swap(REFS, " --exclude {m}", ""), "--exclude"),
    Case("references-exclude-missing-folder", _swap(REFS, "--exclude {m}", "--exclude {out}/nowhere"), "nowhere"),
    Case("references-out-missing", _swap(REFS, " --out {out}/refs", ""), "--out"),
    Case("references-out-is-a-file", _swap(REFS, "{out}/refs", "{textfile}"), "somefile.txt"),
    Case("references-out-under-a-file", _swap(REFS, "{out}/refs", "{textfile}/refs"), "somefile.txt"),
    Case("references-out-holds-another-models-references", REFS, "another MODEL", setup=_other_manifest),
    Case("references-teacher-cache-under-a-file", REFS + " --teacher-cache {textfile}/cache", "somefile.txt"),
    Case("references-epochs-missing", _swap(REFS, " --epochs 1", ""), "--epochs"),
    Case("references-epochs-zero", _swap(REFS, "--epochs 1", "--epochs 0"), "--epochs"),
    Case("references-train-count-zero", _swap(REFS, "--train-count 5", "--train-count 0"), "--train-count"),
    Case("references-size-contradicts-model", REFS + " --size 64", "--size"),
    Case("references-direction-contradicts-model", REFS + " --direction BtoA", "--direction"),
    Case("references-ngf-contradicts-model", REFS + " --ngf 8", "--ngf"),
    Case("references-proxy-for-a-regular-model", REFS + " --proxy {n}", "--proxy"),
    Case("references-teacher-for-a-regular-model", REFS + " --teacher {ckpt}", "--teacher"),
    Case("references-teacher-missing-file", REFS + " --teacher {out}/t.pt", "t.pt"),
    Case("references-seed-negative", REFS + " --seed -1", "--seed"),
    Case("references-device-unknown", _swap(REFS, "--device cpu", "--device tpu"), "tpu"),
    # ---------------------------------------------------------------- attack/evaluate/gate with references (issue 12)
    Case("attack-references-missing-folder", ATTACK + " --references {out}/nowhere", "nowhere"),
    Case("attack-references-without-manifest", ATTACK + " --references {empty_dir}", "references.json"),
    Case("attack-references-is-a-file", ATTACK + " --references {textfile}", "somefile.txt"),
    Case("attack-references-of-another-model", ATTACK + " --references {out}/refs", "refs", setup=_other_manifest),
    Case("attack-references-file-does-not-match-manifest", ATTACK + " --references {refs_tampered}", "does not match"),
    Case("evaluate-references-without-manifest", EVALUATE + " --references {empty_dir}", "references.json"),
    Case("evaluate-references-file-does-not-match-manifest", EVALUATE + " --references {refs_tampered}", "does not match"),
    Case("gate-attack-unknown", GATE + " --attack lira", "--attack"),
    Case("gate-attack-reference-only", GATE + " --attack reference-only", "distribution check"),
    Case("gate-attack-not-in-report", GATE + " --attack lira-online", "lira-online"),
    Case("gate-max-epsilon-lb-negative", GATE + " --max-epsilon-lb -1", "--max-epsilon-lb"),
    Case("gate-max-tpr-colon-malformed", GATE + " --max-tpr-at-fpr 0.01:x", "--max-tpr-at-fpr"),
    Case("gate-policy-attack-unknown", _swap(GATE, "--no-policy --max-auc 1", "--policy {attack_toml}"), "attack"),
    # ---------------------------------------------------------------- demo
    Case("demo-max-auc-2", DEMO + " --max-auc 2", "--max-auc"),
    Case("demo-max-auc-negative", DEMO + " --max-auc -0.1", "--max-auc"),
    Case("demo-seed-negative", DEMO + " --seed -1", "--seed"),
    Case("demo-out-is-a-file", _swap(DEMO, "{out}/demo", "{textfile}"), "somefile.txt"),
    Case("demo-out-under-a-file", _swap(DEMO, "{out}/demo", "{textfile}/demo"), "somefile.txt"),
    Case("demo-unknown-option", DEMO + " --fast", "--fast"),
    # ---------------------------------------------------------------- the command itself
    Case("unknown-command", "audit {ckpt}", "audit"),
]


# ---------------------------------------------------------------------------------------------
# fixtures: good and broken inputs, built once for the module and never written to by a case


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` pixels but holds almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _aligned_with_extra(root: Path, name: str, blob: bytes) -> Path:
    write_pairs(root, N_PAIRS, seed=3)
    (root / name).write_bytes(blob)
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> dict[str, str]:
    root = tmp_path_factory.mktemp("corpus")
    p: dict[str, Path] = {"ckpt": tiny_checkpoint}
    p["m"] = write_pairs(root / "m", N_PAIRS, seed=1, prefix="m")
    p["n"] = write_pairs(root / "n", N_PAIRS, seed=2, prefix="n")
    p["empty_dir"] = root / "empty"
    p["empty_dir"].mkdir()
    p["textfile"] = root / "somefile.txt"
    p["textfile"].write_text("not a folder, not an image, not a model\n")

    # image folders, each with one bad thing
    png = (p["m"] / "m000.png").read_bytes()
    p["trunc_dir"] = _aligned_with_extra(root / "trunc", "broken.png", png[: len(png) // 2])
    p["textpng_dir"] = _aligned_with_extra(root / "textpng", "notes.png", b"these are my notes\n")
    p["emptypng_dir"] = _aligned_with_extra(root / "emptypng", "empty.png", b"")
    p["bomb_dir"] = _aligned_with_extra(root / "bomb", "huge.png", _png_header(40000, 20000))  # 8e8 pixels declared
    p["mixed_dir"] = write_pairs(root / "mixed", N_PAIRS, seed=4)
    write_pairs(root / "mixed", 1, size=64, seed=5, prefix="big")
    rng = np.random.default_rng(0)
    for name, shape in (("odd", (32, 65, 3)), ("nonsquare", (16, 64, 3))):
        p[f"{name}_dir"] = root / name
        p[f"{name}_dir"].mkdir()
        for i in range(N_PAIRS):
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(root / name / f"{name}{i:03d}.png")
    p["unmatched_ab"] = write_pairs(root / "unmatched", N_PAIRS, layout="folders", seed=6)
    shutil.copy(root / "unmatched" / "A" / "img000.png", root / "unmatched" / "A" / "extra.png")
    p["sizes_ab"] = write_pairs(root / "sizes", N_PAIRS, layout="folders", seed=7)
    for f in (root / "sizes" / "B").iterdir():
        with Image.open(f) as im:
            im.load()
            big = im.resize((64, 64))
        big.save(f)

    # model files
    p["empty_pt"] = root / "empty.pt"
    p["empty_pt"].write_bytes(b"")
    p["text_pt"] = root / "notes.pt"
    p["text_pt"].write_text("hello, I am not a model\n")
    p["random_pt"] = root / "random.pt"
    p["random_pt"].write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    blob = tiny_checkpoint.read_bytes()
    p["truncated_pt"] = root / "truncated.pt"
    p["truncated_pt"].write_bytes(blob[: len(blob) // 2])
    net = tiny_generator()
    with torch.no_grad():
        next(net.parameters()).fill_(float("nan"))
    p["nan_pt"] = root / "nan.pt"
    save_checkpoint(p["nan_pt"], generator=net, image_size=32, direction="AtoB")
    ckpt = torch.load(tiny_checkpoint, weights_only=True)
    p["wrong_shape_pt"] = root / "wrong_shape.pt"
    torch.save({**ckpt, "arch": {**ckpt["arch"], "ngf": 8}}, p["wrong_shape_pt"])
    p["unknown_arch_pt"] = root / "unknown_arch.pt"
    torch.save({**ckpt, "arch": {"type": "transformer"}}, p["unknown_arch_pt"])
    metadata = {  # a privaudit checkpoint with one malformed field each
        "meta_tensor_pt": {"state_dict": {**ckpt["state_dict"], "extra": "hello"}},
        "meta_size_pt": {"image_size": "big"},
        "meta_negsize_pt": {"image_size": -32},
        "meta_defense_pt": {"defense": "gauss"},
        "meta_sigma_pt": {"defense": {"method": "gauss", "sigma": "x"}},
        "meta_direction_pt": {"direction": 5},
        "meta_ngf_pt": {"arch": {**ckpt["arch"], "ngf": "x"}},
    }
    for key, change in metadata.items():
        p[key] = root / f"{key}.pt"
        torch.save({**ckpt, **change}, p[key])
    p["fake_ts_pt"] = root / "fake_ts.pt"  # a zip that looks like TorchScript
    with zipfile.ZipFile(p["fake_ts_pt"], "w") as zf:
        zf.writestr("fake_ts/constants.pkl", b"junk")
        zf.writestr("fake_ts/code/model.py", b"junk")
    p["fake_pt2"] = root / "fake.pt2"  # a zip that looks like a torch.export archive
    with zipfile.ZipFile(p["fake_pt2"], "w") as zf:
        zf.writestr("fake/archive_format", b"pt2")
        zf.writestr("fake/data/sample_inputs/model.pt", b"junk")
    p["list_pt"] = root / "list.pt"
    torch.save([torch.zeros(3)], p["list_pt"])
    p["pix2pix_pth"] = root / "latest_net_G.pth"  # records neither image size nor direction
    torch.save(tiny_generator().state_dict(), p["pix2pix_pth"])
    p["random_weights"] = root / "random_incep.pth"
    p["random_weights"].write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())

    # reports and policies
    p["report"] = root / "ok.json"
    r = runner.invoke(app, ["attack", str(tiny_checkpoint), "--direction", "AtoB", "--members", str(p["m"]), "--nonmembers", str(p["n"]),
                            "--bootstrap", "10", "--device", "cpu", "--quiet", "--json", str(p["report"])])
    assert r.exit_code == 0, r.output
    good = json.loads(p["report"].read_text())
    texts = {
        "malformed_json": ("malformed.json", '{"schema": "privaudit.report/1", "attack": {'),
        "empty_json": ("empty.json", ""),
        "schema_json": ("schema.json", json.dumps({**good, "schema": "someone.else/9"})),
        "array_json": ("array.json", json.dumps([good])),
        "noattack_json": ("noattack.json", json.dumps({k: v for k, v in good.items() if k != "attack"})),
        "badauc_json": ("badauc.json", json.dumps({**good, "attack": {**good["attack"], "auc": "high"}})),
        "nanauc_json": ("nanauc.json", json.dumps({**good, "attack": {**good["attack"], "auc": float("nan")}})),
        "tpr_scalar_toml": ("tpr.toml", "[gate]\nmax_tpr_at_fpr = 0.5\n"),
        "pyproject_toml": ("pyproject.toml", "[tool.privaudit]\ngate = 3\n"),
        "notable_toml": ("notable.toml", "max_auc = 0.6\n"),
        "bad_toml": ("bad.toml", "[gate\nmax_auc = "),
        "unknown_key_toml": ("unknown.toml", "[gate]\nmax_aucc = 0.6\n"),
        "wrong_type_toml": ("wrong_type.toml", '[gate]\nmax_auc = "high"\n'),
        "attack_toml": ("attack.toml", '[gate]\nmax_auc = 0.6\nattack = "best"\n'),
    }
    for key, (name, text) in texts.items():
        p[key] = root / name
        p[key].write_text(text)
    # references (one offline reference of {ckpt}), and a copy whose reference file no longer matches its manifest
    p["refs"] = root / "refs"
    r = runner.invoke(app, _argv(REFS, {**{k: str(v) for k, v in p.items()}, "out": str(root)}))
    assert r.exit_code == 0, r.output
    p["refs_tampered"] = root / "refs_tampered"
    shutil.copytree(p["refs"], p["refs_tampered"])
    ref_file = next(f for f in p["refs_tampered"].iterdir() if f.suffix == ".pt")
    ref_file.write_bytes(ref_file.read_bytes() + b"\0")
    for key, name in (("binary_json", "binary.json"), ("binary_toml", "binary.toml")):
        p[key] = root / name
        p[key].write_bytes(bytes(range(256)))
    return {k: str(v) for k, v in p.items()}


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` → its bytes (None for a folder)."""
    return {str(f.relative_to(folder)): (None if f.is_dir() else f.read_bytes()) for f in sorted(folder.rglob("*"))}


def _argv(template: str, places: dict[str, str]) -> list[str]:
    return [token.format(**places) for token in template.split()]


def assert_refused(result, needle: str | None) -> None:
    """Exit 2, one line on stderr (``privaudit: error: ...``), no traceback, nothing on stdout."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("privaudit: error: "), lines[0]
    assert result.stdout == "", result.stdout
    if needle is not None:
        assert needle in lines[0], (needle, lines[0])


def test_the_corpus_is_large_and_its_ids_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(CASES) >= 60
    assert {c.argv.split()[0] for c in CASES} >= {"train", "attack", "defend", "evaluate", "report", "gate", "demo", "references"}
    for method in ("akd", "dmp", "gauss", "dpsgd"):
        assert any(f"--method {method}" in c.argv for c in CASES), method


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_in_one_line_and_writes_nothing(case: Case, corpus: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    out = tmp_path / "out"
    out.mkdir()
    if case.setup is not None:
        case.setup(out)
    monkeypatch.chdir(out)  # a command that writes to the working folder would show up in its snapshot
    before, fixtures_before = _snapshot(out), _snapshot(Path(corpus["m"]).parent)
    result = runner.invoke(app, _argv(case.argv, {**corpus, "out": str(out)}))
    assert_refused(result, case.needle)
    assert _snapshot(out) == before, "the command wrote to its output folder"
    assert _snapshot(Path(corpus["m"]).parent) == fixtures_before, "the command wrote next to its inputs"


@pytest.mark.parametrize("name", sorted(PREFIXES))
def test_prefixes_are_good_commands(name: str, corpus: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Each row changes one thing in a prefix; the prefix itself must succeed, or a row could pass
    for the wrong reason."""
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.chdir(out)
    result = runner.invoke(app, _argv(PREFIXES[name], {**corpus, "out": str(out)}))
    assert result.exit_code == 0, result.output
    assert [p.name for p in out.iterdir()], "the good command wrote nothing"


@pytest.mark.parametrize(
    "args, needle",
    [
        (["attack", "model.pt", "--nonmembers", "n"], "privaudit: error: Missing option '--members'; see privaudit attack --help"),
        (["train", "data", "--out", "t.pt", "--epochs", "abc"], "see privaudit train --help"),
        (["gaet", "r.json"], "privaudit: error: No such command 'gaet'"),
    ],
    ids=["missing-option", "not-an-integer", "unknown-command"],
)
def test_usage_errors_are_one_line_from_the_real_command(args: list[str], needle: str, tmp_path: Path):
    """Click's usage errors, through ``python -m privaudit`` (Click's standalone mode, not CliRunner)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "privaudit", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("privaudit: error: "), proc.stderr
    assert needle in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_no_arguments_still_prints_the_help():
    result = runner.invoke(app, [])
    assert "Commands:" in result.output and "attack" in result.output
