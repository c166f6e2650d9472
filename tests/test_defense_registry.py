"""The defenses registry and ``defend``: one dispatch for the CLI, the demo and the benchmarks;
defaults defined once (privaudit/defaults.py) and read by the configs and the command line."""

from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path

import pytest
import torch

from conftest import write_pairs
from privaudit import defaults
from privaudit.cli.defend import defend as defend_command
from privaudit.cli.train import train as train_command
from privaudit.defenses import DEFENSES, defend, get_defense, options_for
from privaudit.defenses.distill import DistillOptions
from privaudit.defenses.dpsgd import DPConfig, DPSGDOptions
from privaudit.defenses.gauss import GaussOptions
from privaudit.errors import InputError
from privaudit.models.checkpoint import load_model
from privaudit.models.arch import ModelSpec
from privaudit.training import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]


def test_the_registry_names_every_method_once_with_its_own_options() -> None:
    assert list(DEFENSES) == ["akd", "dmp", "gauss", "dpsgd"]
    assert {name: DEFENSES[name].Options for name in DEFENSES} == {"akd": DistillOptions, "dmp": DistillOptions, "gauss": GaussOptions,
                                                                    "dpsgd": DPSGDOptions}
    for name, cls in DEFENSES.items():
        assert cls.name == name and cls.description
        assert dataclasses.is_dataclass(cls.Options) and cls.Options.__dataclass_params__.frozen


def test_an_unknown_method_lists_the_valid_ones(tmp_path: Path) -> None:
    for call in (lambda: get_defense("magic"), lambda: defend("magic", out=tmp_path / "o.pt"), lambda: options_for("magic", sigma=0.1)):
        with pytest.raises(InputError, match=r"unknown --method 'magic'; choose one of akd, dmp, gauss, dpsgd"):
            call()
    with pytest.raises(TypeError):
        defend(method="akd", out=tmp_path / "o.pt", teacher=None, proxy=None, epochs=3)  # options only as the method's dataclass
    with pytest.raises(InputError, match="--method gauss takes GaussOptions, not DistillOptions"):
        defend("gauss", out=tmp_path / "o.pt", options=DistillOptions())
    assert list(tmp_path.iterdir()) == []


def test_options_for_keeps_what_the_method_knows_and_none_means_default() -> None:
    flags = dict(sigma=0.2, epochs=7, batch_size=None, ngf=None, norm=None, noise_multiplier=None, max_grad_norm=2.0, proxy_layout="inputs")
    assert options_for("gauss", **flags) == GaussOptions(sigma=0.2)
    assert options_for("akd", **flags) == DistillOptions.sharp(epochs=7, proxy_layout="inputs")  # akd's default student
    assert options_for("akd", base=DistillOptions.paper(), **flags) == DistillOptions(epochs=7, proxy_layout="inputs")
    assert options_for("dmp", **flags) == DistillOptions(epochs=7, proxy_layout="inputs")
    dp = options_for("dpsgd", **flags)
    assert dp == DPSGDOptions(epochs=7, max_grad_norm=2.0)
    assert (dp.batch_size, dp.ngf) == (defaults.DP_BATCH_SIZE, defaults.NGF)
    assert dp.dp_config(seed=3).noise_multiplier == defaults.DP_NOISE_MULTIPLIER  # σ's default, unless ε is the target
    assert DPSGDOptions(target_epsilon=2.0).dp_config().noise_multiplier is None


def test_defaults_are_defined_once_and_read_by_configs_and_command_line() -> None:
    tc = TrainConfig()
    assert (tc.epochs, tc.batch_size, tc.lr, tc.beta1, tc.lambda_l1, tc.decay_epochs, tc.augment, tc.ndf, tc.seed, tc.device) == (
        defaults.EPOCHS, defaults.BATCH_SIZE, defaults.LR, defaults.BETA1, defaults.LAMBDA_L1, defaults.DECAY_EPOCHS, defaults.AUGMENT, defaults.NDF,
        defaults.SEED, defaults.DEVICE)
    dp = DPConfig()
    assert (dp.train.batch_size, dp.noise_multiplier, dp.max_grad_norm, dp.accountant) == (
        defaults.DP_BATCH_SIZE, defaults.DP_NOISE_MULTIPLIER, defaults.DP_MAX_GRAD_NORM, defaults.DP_ACCOUNTANT)
    assert DistillOptions().train_config() == TrainConfig()
    assert DPSGDOptions().dp_config() == DPConfig()
    assert (ModelSpec().ngf, ModelSpec().norm, ModelSpec().use_dropout) == (defaults.NGF, defaults.NORM, defaults.DROPOUT)
    train_flags = inspect.signature(train_command).parameters
    defend_flags = inspect.signature(defend_command).parameters
    for name, value in {"epochs": tc.epochs, "batch_size": tc.batch_size, "lr": tc.lr, "lambda_l1": tc.lambda_l1, "ndf": tc.ndf, "seed": tc.seed,
                        "device": tc.device, "augment": tc.augment, "decay_epochs": tc.decay_epochs, "ngf": ModelSpec().ngf, "norm": ModelSpec().norm,
                        "dropout": ModelSpec().use_dropout}.items():
        assert train_flags[name].default == value, name
    for name in ("epochs", "lr", "lambda_l1", "ndf", "seed", "device", "augment", "decay_epochs"):
        assert defend_flags[name].default == train_flags[name].default, name
    assert defend_flags["max_grad_norm"].default == dp.max_grad_norm and defend_flags["proxy_layout"].default == DistillOptions().proxy_layout
    assert defend_flags["batch_size"].default is None  # per method: DistillOptions 1, DPSGDOptions 8


def test_library_defend_and_the_command_write_the_same_student(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from privaudit.cli.app import app

    proxy = write_pairs(tmp_path / "proxy", 4, seed=4)
    options = DistillOptions(epochs=2, batch_size=2, ndf=8, norm="instance")
    warnings_seen: list[str] = []
    result = defend("dmp", out=tmp_path / "lib.pt", teacher=tiny_checkpoint, proxy=proxy, options=options, device="cpu", on_warning=warnings_seen.append)
    assert result.method == "dmp" and result.out == tmp_path / "lib.pt" and len(result.history) == 2 and warnings_seen == []
    assert list(result.summary) == ["method", "direction", "image size", "teacher", "proxy inputs", "λ", "epochs", "student", "teacher queries", "time", "wrote"]
    assert result.summary["teacher queries"] == "4"  # the proxy inputs, each sent once
    assert result.summary["student"] == "U-Net num_downs=5 ngf=4 norm=instance"
    r = CliRunner().invoke(app, ["defend", str(tiny_checkpoint), "--method", "dmp", "--proxy", str(proxy), "--out", str(tmp_path / "cli.pt"), "--epochs", "2",
                                 "--batch-size", "2", "--ndf", "8", "--norm", "instance", "--device", "cpu", "--quiet"])
    assert r.exit_code == 0, r.output
    a, b = (torch.load(tmp_path / f, weights_only=True)["state_dict"] for f in ("lib.pt", "cli.pt"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert load_model(tmp_path / "lib.pt").defense["method"] == "dmp"


def test_train_returns_what_it_wrote(tmp_path: Path) -> None:
    data = write_pairs(tmp_path / "d", 3)
    result = train(data, tmp_path / "m.pt", model=ModelSpec(ngf=4), config=TrainConfig(epochs=2, batch_size=2, ndf=4, device="cpu"))
    assert (result.pairs, result.image_size, result.arch.num_downs, result.arch.ngf) == (3, 32, 5, 4)
    assert [h.epoch for h in result.history] == [1, 2] and set(result.history[-1].losses) == {"D_real", "D_fake", "G_GAN", "G_L1"}
    assert load_model(tmp_path / "m.pt").training == {"complete": True, "epochs_done": 2, "epochs_total": 2}


def _privaudit_imports(tree: ast.AST) -> list[tuple[str, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("privaudit"):
            found += [(node.module, a.name) for a in node.names]
    return found


@pytest.mark.parametrize("script", sorted((REPO / "benchmarks").glob("*.py")), ids=lambda p: p.name)
def test_benchmarks_use_public_entries_only(script: Path) -> None:
    tree = ast.parse(script.read_text(encoding="utf-8"))
    modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names} | {
        n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not any(m == "importlib" or m.startswith("importlib.") for m in modules)  # no benchmark loads another by path
    private = [f"{m}.{name}" for m, name in _privaudit_imports(tree) if name.startswith("_") or any(part.startswith("_") for part in m.split("."))]
    assert private == []
    # no monkeypatching of library modules either (``module.attr = ...``)
    assigned = [ast.unparse(t) for n in ast.walk(tree) if isinstance(n, ast.Assign) for t in n.targets
                if isinstance(t, ast.Attribute) and not (isinstance(t.value, ast.Name) and t.value.id == "self")]  # an object's own state is fine
    assert assigned == []


def test_the_table2_benchmark_dispatches_defenses_through_the_registry() -> None:
    src = (REPO / "benchmarks" / "reproduce_table2.py").read_text(encoding="utf-8")
    imported = {name for _, name in _privaudit_imports(ast.parse(src))}
    assert "defend" in imported and "train" in imported
    assert not imported & {"distill", "train_dpsgd", "add_output_noise", "train_regular", "fit"}


def test_the_train_and_defend_commands_import_no_torch_until_they_run() -> None:
    import os
    import subprocess
    import sys

    code = "import sys, privaudit.cli.train, privaudit.cli.defend; assert 'torch' not in sys.modules, 'torch imported'"
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
