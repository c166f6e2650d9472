"""The public API (``privaudit/__init__.py``), the README's "Use it from Python" example, and the
commands calling it: each command parses its flags into a config and makes one library call."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import privaudit
from conftest import write_pairs
from privaudit import defaults
from privaudit.cli import options as o
from privaudit.cli.app import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()



def readme_example() -> str:
    """The one Python block of README.md's "Use it from Python" section."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Use it from Python\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the section should hold exactly one Python example"
    return blocks[0]


def test_the_readme_example_runs_and_agrees_with_the_commands(tiny_checkpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    shutil.copy(tiny_checkpoint, tmp_path / "teacher.pt")
    write_pairs(tmp_path / "data" / "train", 10, seed=1, prefix="m")
    write_pairs(tmp_path / "data" / "test", 10, seed=2, prefix="n")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(readme_example(), "README.md", "exec"), namespace)
    report, verdict = namespace["report"], namespace["verdict"]
    a = report["attack"]
    assert a["n_bootstrap"] == 200  # the example's config was used
    # the same numbers as `privaudit attack --bootstrap 200`, the same verdict as `privaudit gate --max-auc 0.6`
    r = runner.invoke(app, ["attack", "teacher.pt", "--members", "data/train", "--nonmembers", "data/test", "--bootstrap", "200", "--json", "cli.json", "-q"])
    assert r.exit_code == 0, r.output
    cli = json.loads((tmp_path / "cli.json").read_text())["attack"]
    assert (a["auc"], a["auc_ci95"], a["roc"]) == (cli["auc"], cli["auc_ci95"], cli["roc"])
    g = runner.invoke(app, ["gate", "cli.json", "--max-auc", "0.6", "--no-policy"])
    assert g.exit_code == (0 if verdict.passed else 1)
    assert verdict.passed == (max(a["auc"], 1 - a["auc"]) <= 0.6)
    lo, hi = a["auc_ci95"]
    assert out.getvalue().splitlines() == [f"attack AUC {a['auc']:.3f} [{lo:.3f}, {hi:.3f}]", "PASS" if verdict.passed else "FAIL: AUC"]


def test_every_public_name_resolves():
    for name in sorted(privaudit.__all__):
        assert getattr(privaudit, name) is not None, name
    assert privaudit.__version__ == "0.1.0"
    assert issubclass(privaudit.InputError, privaudit.PrivauditError)
    assert dir(privaudit) == sorted(privaudit.__all__)


def test_a_public_name_whose_module_is_missing_says_so(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(privaudit._LAZY, "ghost", "privaudit.no_such_module:ghost")
    with pytest.raises(AttributeError, match=r"privaudit\.ghost is not available in privaudit 0\.1\.0"):
        privaudit.ghost  # noqa: B018


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'attak'"):
        privaudit.attak  # noqa: B018


def test_the_public_functions_take_their_settings_by_keyword():
    import inspect

    for name in ("attack", "evaluate", "train", "load_model", "load_pairs"):
        params = list(inspect.signature(getattr(privaudit, name)).parameters.values())
        positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        assert len(positional) <= 4, (name, positional)  # the inputs (and a config) at most
        settings = [p for p in params if p.name in ("direction", "size", "device", "seed", "overrides", "allow_small", "resume")]
        assert settings and all(p.kind is p.KEYWORD_ONLY for p in settings), (name, settings)


def _capture(monkeypatch: pytest.MonkeyPatch, name: str) -> dict:
    seen: dict = {}

    def stand_in(*args, **kwargs):
        seen.update(args=args, kwargs=kwargs)
        raise privaudit.InputError("the stand-in was called")  # stops the command there: exit 2, one line

    monkeypatch.setattr(privaudit, name, stand_in)
    return seen


def test_attack_parses_into_a_config_and_calls_privaudit_attack_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    seen = _capture(monkeypatch, "attack")
    r = runner.invoke(app, ["attack", "m.pt", "--members", "a", "--nonmembers", "b", "--loss", "l2", "--direction", "BtoA", "--norm", "instance",
                            "--bootstrap", "7", "--quiet"])
    assert r.exit_code == 2 and r.stderr == "privaudit: error: the stand-in was called\n", r.output
    assert seen["args"] == (Path("m.pt"), Path("a"), Path("b"))
    kw = seen["kwargs"]
    assert kw["config"] == privaudit.AttackConfig(loss="l2", n_bootstrap=7)
    assert kw["overrides"] == privaudit.ArchOverrides(norm="instance")
    # choices reach the library as plain strings, never as the CLI's Enums (a checkpoint would pickle those)
    assert type(kw["config"].loss) is str and type(kw["direction"]) is str and type(kw["overrides"].norm) is str
    assert kw["direction"] == "BtoA" and kw["device"] == defaults.DEVICE


def test_evaluate_parses_into_a_config_and_calls_privaudit_evaluate_once(monkeypatch: pytest.MonkeyPatch):
    seen = _capture(monkeypatch, "evaluate")
    r = runner.invoke(app, ["evaluate", "m.pt", "--members", "a", "--nonmembers", "b", "--no-kid", "--repeat", "2", "--loss", "l2", "--quiet"])
    assert r.exit_code == 2 and r.stderr == "privaudit: error: the stand-in was called\n", r.output
    cfg = seen["kwargs"]["cfg"]
    assert cfg == privaudit.EvaluateConfig(attack=privaudit.AttackConfig(loss="l2"), kid=False, repeat=2)
    assert type(cfg.attack.loss) is str


# ---------------------------------------------------------------------------------------------
# One table of defaults: what --help shows is what the library uses


def _defaults(command: str) -> dict[str, object]:
    cmd = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    return {p.name: p.default for p in cmd.params}


@pytest.mark.parametrize("command", ["attack", "evaluate"])
def test_the_attack_options_default_to_the_configs_defaults(command: str):
    shown, cfg = _defaults(command), privaudit.AttackConfig()
    assert str(shown["loss"]) == cfg.loss == defaults.LOSS
    assert (shown["samples"], shown["batch_size"], shown["seed"], shown["bootstrap"]) == (cfg.samples, cfg.batch_size, cfg.seed, cfg.n_bootstrap)
    assert shown["device"] == defaults.DEVICE


def test_the_evaluate_options_default_to_the_configs_defaults():
    shown, cfg = _defaults("evaluate"), privaudit.EvaluateConfig()
    assert (shown["kid_subsets"], shown["repeat"]) == (cfg.kid_subsets, cfg.repeat)
    import inspect

    from privaudit.evaluation.kid import compute_kid

    assert cfg.kid_subset_size is None  # None: the library's default, clamped to the set sizes
    assert inspect.signature(compute_kid).parameters["subsets"].default == defaults.KID_SUBSETS


def test_the_choices_are_the_librarys():
    from privaudit.attacks.reconstruction import LOSSES
    from privaudit.data.images import DIRECTIONS
    from privaudit.defenses import DEFENSES
    from privaudit.models.arch import PLAIN_NORMS

    assert tuple(o.DirectionChoice) == DIRECTIONS
    assert tuple(o.LossChoice) == LOSSES
    from privaudit.defenses.segmentation import SEG_DEFENSES

    assert tuple(o.MethodChoice) == tuple(dict.fromkeys([*DEFENSES, *SEG_DEFENSES]))  # generators' methods, then segmentation's own (argmax)
    assert tuple(o.NormChoice) == PLAIN_NORMS  # group is DP-SGD's, not a flag


def test_every_proxy_layout_choice_is_one_load_inputs_takes(tmp_path: Path):
    from privaudit.data.images import load_inputs

    root = write_pairs(tmp_path / "p", 2)
    for layout in ("auto", "aligned", "inputs"):
        assert len(load_inputs(root, layout=layout, size=32)) == 2
    assert {c.value for c in o.LayoutChoice} == {"auto", "aligned", "inputs", "folders"}
    folders = write_pairs(tmp_path / "f", 2, layout="folders")
    assert len(load_inputs(folders, layout="folders")) == 2


def test_choices_written_into_a_checkpoint_are_plain_strings(tmp_path: Path):
    """`train --norm instance --direction BtoA` records both as strings: a checkpoint holding the CLI's
    Enums would not load (``weights_only`` refuses unknown classes)."""
    data = write_pairs(tmp_path / "d", 4)
    out = tmp_path / "t.pt"
    r = runner.invoke(app, ["train", str(data), "--out", str(out), "--direction", "BtoA", "--norm", "instance", "--ngf", "4", "--ndf", "4",
                            "--epochs", "1", "--batch-size", "4", "--no-augment", "--device", "cpu", "--quiet"])
    assert r.exit_code == 0, r.output
    model = privaudit.load_model(out, device="cpu")
    assert type(model.direction) is str and model.direction == "BtoA"
    assert type(model.arch["norm"]) is str and model.arch["norm"] == "instance"
